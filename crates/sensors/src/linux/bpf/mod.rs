//! The BPF programs of the Linux sensors (C sources next to this file, compiled by build.rs
//! into libbpf-rs skeletons) and what their loaders share.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, Object, RingBufferBuilder};

use super::sensor_thread::Ready;

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

/// What the kernel lost of a sensor's events, added to its health's `lost` figure as it grows:
/// - records the ring buffer had no room for (slot 0 of the programs' `lost` array map);
/// - runs of its programs the kernel skipped (`recursion_misses`): a tracing program is not
///   re-entered on a CPU where it is already running, so an event raised by an interrupt or
///   softirq that arrives while the program runs on that CPU is never seen by it.
#[derive(Debug, Default)]
pub(crate) struct KernelLosses {
    full_seen: u64,
    missed_seen: u64,
    checked: Option<Instant>,
    /// The programs take every record a skipped run could have given from a second source
    /// (network.bpf.c): skipped runs are logged, not counted as lost.
    misses_recovered: bool,
}

/// How often the kernel's loss counters are read.
const LOSSES_CHECK: Duration = Duration::from_secs(1);

impl KernelLosses {
    /// For programs whose skipped runs lose nothing (see `misses_recovered`).
    pub(crate) fn with_recovered_misses() -> KernelLosses {
        KernelLosses { misses_recovered: true, ..KernelLosses::default() }
    }

    /// Reads the kernel's counters, at most once per [`LOSSES_CHECK`] (each read is a syscall
    /// per map or program, and this is called after every ring-buffer poll).
    pub(crate) fn report(&mut self, object: &Object, lost: &dyn MapCore, health: &crate::SensorHealth) {
        if self.checked.is_some_and(|at| at.elapsed() < LOSSES_CHECK) {
            return;
        }
        self.checked = Some(Instant::now());
        let full = read_counter(lost);
        if full > self.full_seen {
            health.add_lost(full - self.full_seen);
            health.record_error(format!("the kernel ring buffer was full: {full} events lost so far"));
            self.full_seen = full;
        }
        let missed = skipped_runs(object);
        if missed > self.missed_seen && self.misses_recovered {
            log::debug!("BPF programs skipped {missed} runs so far; their records came from a second source");
            self.missed_seen = missed;
        } else if missed > self.missed_seen {
            health.add_lost(missed - self.missed_seen);
            health.record_error(format!(
                "the kernel skipped {missed} runs of BPF programs so far (the program was already \
                 running on that CPU, interrupted): their events are lost"
            ));
            self.missed_seen = missed;
        }
    }
}

/// The runs the kernel skipped of every program of `object`, summed. libbpf-rs reads
/// `recursion_misses` only while listing every program of the system, so the info is asked for
/// directly.
fn skipped_runs(object: &Object) -> u64 {
    object
        .progs()
        .filter_map(|program| {
            let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
            let mut length = std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_prog_info>() as u32;
            // SAFETY: `info` is a writable bpf_prog_info of `length` bytes; the kernel writes at
            // most that many; no array fields are requested (all their pointers are 0).
            let result = unsafe {
                libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(
                    program.as_fd().as_raw_fd(),
                    (&raw mut info).cast(),
                    &mut length,
                )
            };
            (result == 0).then_some(info.recursion_misses)
        })
        .sum()
}

/// Drives a sensor's ring buffer until `stop`: says on `ready` whether it could be read, marks
/// the sensor running in `bpf` mode, hands every record to `handle`, and after each poll adds
/// what the kernel lost (see [`KernelLosses`]) to the sensor's lost figure. A poll error fails
/// the sensor.
pub(crate) fn drive_ring_buffer(
    object: &Object,
    events: &dyn MapCore,
    lost: &dyn MapCore,
    health: &crate::SensorHealth,
    stop: &AtomicBool,
    ready: &Ready,
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
    let mut losses = KernelLosses::default();
    while !stop.load(Ordering::Relaxed) {
        // `poll` reads only a ring that signalled; records submitted without a wakeup are read
        // by the `consume` after each timeout.
        if let Err(error) = ring.poll(POLL).and_then(|()| ring.consume())
            && error.kind() != libbpf_rs::ErrorKind::Interrupted
        {
            health.record_error(format!("BPF ring buffer: {error}"));
            health.set_state(crate::SensorState::Failed(format!("BPF ring buffer: {error}")));
            return;
        }
        losses.report(object, lost, health);
    }
}

/// How long one ring-buffer poll waits: the longest a stop request waits to be noticed, and a
/// record submitted without a wakeup (fork and exit records, see process.bpf.c) waits to be
/// read.
const POLL: Duration = Duration::from_millis(50);

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
