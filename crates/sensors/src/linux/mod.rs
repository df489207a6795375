//! Linux (and other Unix) implementations of platform sensors and snapshot tables.

#[cfg(target_os = "linux")]
pub mod epp;
pub mod mem_perf;
#[cfg(target_os = "linux")]
pub mod msr;
#[cfg(target_os = "linux")]
pub mod obfuscated_ps;
#[cfg(target_os = "linux")]
pub mod process;
#[cfg(target_os = "linux")]
pub mod process_handles;
#[cfg(target_os = "linux")]
pub mod process_perf;
#[cfg(target_os = "linux")]
pub mod removable_media;
