//! Linux (and other Unix) implementations of platform sensors and snapshot tables.

#[cfg(target_os = "linux")]
pub(crate) mod bpf;
#[cfg(target_os = "linux")]
pub mod epp;
pub mod mem_perf;
#[cfg(target_os = "linux")]
pub mod msr;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "linux")]
pub mod obfuscated_ps;
#[cfg(target_os = "linux")]
pub mod proc_connector;
#[cfg(target_os = "linux")]
pub mod process;
#[cfg(target_os = "linux")]
pub mod process_access;
#[cfg(target_os = "linux")]
pub mod process_cache;
#[cfg(target_os = "linux")]
pub mod process_events;
#[cfg(target_os = "linux")]
pub mod process_handles;
#[cfg(target_os = "linux")]
pub mod process_perf;
#[cfg(target_os = "linux")]
pub mod process_records;
#[cfg(target_os = "linux")]
pub mod removable_media;
#[cfg(target_os = "linux")]
mod sensor_thread;
#[cfg(target_os = "linux")]
pub mod users;
