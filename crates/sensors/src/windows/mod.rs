//! Windows implementations of platform sensors and snapshot tables.

pub mod mem_perf;
