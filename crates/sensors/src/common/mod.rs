//! Sensors that work the same on every platform, and pieces the platform ones share.

pub mod epp;
pub(crate) mod file_id;
pub(crate) mod follow;
pub(crate) mod lines;
pub mod mem_perf;
pub mod msr;
pub mod obfuscation;
pub mod ps_log;
pub mod tail;
pub mod uevent;
