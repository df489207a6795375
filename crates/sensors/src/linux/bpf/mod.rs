//! The BPF programs of the Linux sensors (C sources next to this file, compiled by build.rs
//! into libbpf-rs skeletons) and what their loaders share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, RingBufferBuilder};

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

/// Drives a sensor's ring buffer until `stop`: says on `ready` whether it could be read, marks
/// the sensor running in `bpf` mode, hands every record to `handle`, and after each poll adds
/// what the kernel counted in `lost` to the sensor's lost figure. A poll error fails the sensor.
pub(crate) fn drive_ring_buffer(
    events: &dyn MapCore,
    lost: &dyn MapCore,
    health: &crate::SensorHealth,
    stop: &AtomicBool,
    ready: &crossbeam_channel::Sender<Result<(), String>>,
    mut handle: impl FnMut(&[u8]),
) {
    let mut builder = RingBufferBuilder::new();
    let added = builder
        .add(events, |data: &[u8]| {
            handle(data);
            0
        })
        .map(|_| ());
    let ring = match added.and_then(|()| builder.build()) {
        Ok(ring) => ring,
        Err(error) => {
            // The receiver waits in `start`; if it is gone there is nobody to tell.
            let _ = ready.send(Err(format!("cannot read the BPF ring buffer: {error}")));
            return;
        }
    };
    health.set_mode("bpf");
    health.set_state(crate::SensorState::Running);
    let _ = ready.send(Ok(()));
    let mut lost_seen = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Err(error) = ring.poll(POLL)
            && error.kind() != libbpf_rs::ErrorKind::Interrupted
        {
            health.record_error(format!("BPF ring buffer: {error}"));
            health.set_state(crate::SensorState::Failed(format!("BPF ring buffer: {error}")));
            return;
        }
        report_lost(lost, &mut lost_seen, health);
    }
}

/// How long one ring-buffer poll waits: the longest a stop request waits to be noticed.
const POLL: Duration = Duration::from_millis(100);

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
