//! The BPF programs of the Linux sensors (C sources next to this file, compiled by build.rs
//! into libbpf-rs skeletons) and what their loaders share.

use libbpf_rs::{MapCore, MapFlags};

/// Skeleton of `process.bpf.c`: exec/exit/fork tracepoints into a ring buffer.
#[allow(clippy::all, clippy::pedantic)]
pub(crate) mod process {
    include!(concat!(env!("OUT_DIR"), "/process.skel.rs"));
}

/// Slot 0 of a BPF array map of u64 counters (the programs' `lost` maps); 0 when unreadable.
pub(crate) fn read_counter(map: &dyn MapCore) -> u64 {
    match map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(bytes)) => bytes.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes),
        _ => 0,
    }
}

/// Adds to `health`'s lost figure what the kernel counter `map` gained since `seen`.
pub(crate) fn report_lost(map: &dyn MapCore, seen: &mut u64, health: &crate::SensorHealth) {
    let now = read_counter(map);
    if now > *seen {
        health.add_lost(now - *seen);
        health.record_error(format!("the kernel ring buffer was full: {} events lost so far", now));
        *seen = now;
    }
}

/// Skeleton of `process_access.bpf.c`: ptrace and process_vm_readv/writev tracepoints.
#[allow(clippy::all, clippy::pedantic)]
pub(crate) mod process_access {
    include!(concat!(env!("OUT_DIR"), "/process_access.skel.rs"));
}

/// Where tracefs is normally mounted; classic `tracepoint/` programs need it (libbpf reads the
/// tracepoint ids from `events/`).
const TRACEFS: &str = "/sys/kernel/tracing";
/// The older place, under debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Makes sure tracefs is mounted, mounting it at `/sys/kernel/tracing` when neither it nor the
/// debugfs copy is there (needs CAP_SYS_ADMIN). The mount is left in place for other tools.
pub(crate) fn ensure_tracefs() -> Result<(), String> {
    let mounted = |root: &str| std::path::Path::new(root).join("events").is_dir();
    if mounted(TRACEFS) || mounted(DEBUGFS_TRACING) {
        return Ok(());
    }
    let source = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are NUL-terminated strings that outlive the call; no data argument.
    let result =
        unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return Err(format!("tracefs is not mounted and mounting it at {TRACEFS} failed: {error}"));
    }
    log::info!("mounted tracefs at {TRACEFS} for the syscall tracepoints");
    Ok(())
}
