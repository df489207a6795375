//! Linux (and other Unix) implementations of platform sensors and snapshot tables.

pub mod mem_perf;
