//! Sensors that work the same on every platform, and pieces the platform ones share.

pub(crate) mod file_id;
pub(crate) mod follow;
pub(crate) mod lines;
pub mod mem_perf;
pub mod tail;
