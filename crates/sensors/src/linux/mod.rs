//! Linux implementations of platform sensors and snapshot tables.

pub(crate) mod bpf;
pub mod epp;
pub mod files;
pub mod image_loads;
pub mod mem_perf;
pub mod msr;
mod netlink;
pub mod network;
pub mod obfuscated_ps;
pub mod proc_connector;
pub mod process;
pub mod process_access;
pub mod process_cache;
pub mod process_events;
pub mod process_handles;
pub mod process_perf;
pub mod process_records;
pub mod removable_media;
mod sensor_thread;
pub mod users;
pub mod yara;
