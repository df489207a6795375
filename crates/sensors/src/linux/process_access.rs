//! The `process_access` sensor behind `win_process_open_events` and `win_remote_thread_events`
//! on Linux: one process inspecting or modifying another, from the syscall tracepoints of
//! `ptrace`, `process_vm_readv`, `process_vm_writev`, `openat` and `openat2`
//! (`bpf/process_access.bpf.c`). Classic tracepoints need tracefs: the sensor mounts it at
//! `/sys/kernel/tracing` when it is not mounted (and leaves it mounted).
//!
//! Rows (one per syscall *attempt*, taken at syscall entry, so refused attempts show too):
//! - `win_process_open_events`, action `PROC_OPEN`: `PTRACE_ATTACH`, `PTRACE_SEIZE`,
//!   `VM_READ` (process_vm_readv), `VM_WRITE` (process_vm_writev), and opens of
//!   `/proc/<pid>/mem` as `PROC_MEM_READ`, `PROC_MEM_WRITE` or `PROC_MEM_READ|PROC_MEM_WRITE`
//!   by the open mode. `granted_access` is that name and `granted_access_value` a hex bit mask
//!   (see [`Access`]): `0x10` and `0x20` are Windows' PROCESS_VM_READ/WRITE, the ptrace and
//!   `/proc/PID/mem` bits are watchpost's own.
//! - `win_remote_thread_events`, action the mechanism: `PTRACE_POKETEXT`, `PTRACE_POKEDATA`,
//!   `PTRACE_POKEUSER`, `PTRACE_SETREGS`, `PTRACE_SETREGSET`, `VM_WRITE`. `module_name` is the
//!   file mapped at the written address (for SETREGS/SETREGSET on x86_64: the new instruction
//!   pointer) per the target's `/proc/PID/maps`, empty for anonymous memory; `function_name` is
//!   the code symbol of that file holding the address (`name`, or `name+0xOFFSET` inside it; see
//!   [`symbols`]), empty when the file has no symbol there (stripped executables keep only
//!   their exported functions).
//!
//! Not covered: `/proc/PID/mem` named relative to a directory descriptor (`openat(procfd,
//! "PID/mem")`), through `/proc/PID/task/TID/mem`, or with the legacy `open` syscall (glibc's
//! `open` uses openat); writes through an opened `/proc/PID/mem` are not injection rows (the
//! address is only known at `pwrite`). The caller's own `/proc/self/mem` and `/proc/<own
//! pid>/mem` are not reported. The pid argument is taken as seen in the root pid namespace
//! (callers inside a container are misattributed). The agent's own calls are dropped.

mod symbols;

use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use watchpost_catalog::{Event, Table};

use super::bpf;
use super::process::{clock_ticks_per_second, process_guid};
use super::process_cache::ProcessCache;
use super::process_records::boottime_to_ticks;
use super::sensor_thread::{Ready, SensorThread};
use crate::{Sensor, SensorContext, SensorError, SensorState, catalog_table, column_index};

const OPEN_TABLE: &str = "win_process_open_events";
const THREAD_TABLE: &str = "win_remote_thread_events";
const TABLES: &[&str] = &[OPEN_TABLE, THREAD_TABLE];
const NAME: &str = "process_access";

const KIND_PTRACE: u32 = 1;
const KIND_VM_READ: u32 = 2;
const KIND_VM_WRITE: u32 = 3;
const KIND_PROC_MEM: u32 = 4;
const PTRACE_POKETEXT: u64 = 4;
const PTRACE_POKEDATA: u64 = 5;
const PTRACE_POKEUSER: u64 = 6;
const PTRACE_SETREGS: u64 = 13;
const PTRACE_ATTACH: u64 = 16;
const PTRACE_SETREGSET: u64 = 0x4205;
const PTRACE_SEIZE: u64 = 0x4206;
/// Bytes of `struct access_event`.
const RECORD: usize = 48;

/// Access kinds of `win_process_open_events`: the `granted_access` text and value bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    VmRead,
    VmWrite,
    PtraceAttach,
    PtraceSeize,
    /// An open of `/proc/PID/mem`, by its access mode.
    ProcMem {
        read: bool,
        write: bool,
    },
}

/// `granted_access_value` bit of a `/proc/PID/mem` open for reading.
pub const PROC_MEM_READ: u32 = 0x4_0000;
/// `granted_access_value` bit of a `/proc/PID/mem` open for writing.
pub const PROC_MEM_WRITE: u32 = 0x8_0000;

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::VmRead => "VM_READ",
            Access::VmWrite => "VM_WRITE",
            Access::PtraceAttach => "PTRACE_ATTACH",
            Access::PtraceSeize => "PTRACE_SEIZE",
            Access::ProcMem { read: true, write: true } => "PROC_MEM_READ|PROC_MEM_WRITE",
            Access::ProcMem { write: true, .. } => "PROC_MEM_WRITE",
            Access::ProcMem { .. } => "PROC_MEM_READ",
        }
    }

    pub fn value(self) -> u32 {
        match self {
            Access::VmRead => 0x10,
            Access::VmWrite => 0x20,
            Access::PtraceAttach => 0x1_0000,
            Access::PtraceSeize => 0x2_0000,
            Access::ProcMem { read, write } => {
                (if read { PROC_MEM_READ } else { 0 }) | (if write { PROC_MEM_WRITE } else { 0 })
            }
        }
    }
}

/// One decoded `struct access_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    pub kind: u32,
    pub pid: u32,
    pub uid: u32,
    pub target: u32,
    pub start_boottime_ns: u64,
    pub request: u64,
    pub address: u64,
    /// The caller's `self_exec_id` (see the process records).
    pub exec_id: u64,
}

impl AccessRecord {
    pub fn decode(data: &[u8]) -> Option<AccessRecord> {
        if data.len() < RECORD {
            return None;
        }
        let u32_at = |at: usize| data.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        let u64_at = |at: usize| data.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        Some(AccessRecord {
            kind: u32_at(0)?,
            pid: u32_at(4)?,
            uid: u32_at(8)?,
            target: u32_at(12)?,
            start_boottime_ns: u64_at(16)?,
            request: u64_at(24)?,
            address: u64_at(32)?,
            exec_id: u64_at(40)?,
        })
    }

    /// What the record means for `win_process_open_events`, if anything.
    pub fn access(&self) -> Option<Access> {
        match (self.kind, self.request) {
            (KIND_VM_READ, _) => Some(Access::VmRead),
            (KIND_VM_WRITE, _) => Some(Access::VmWrite),
            (KIND_PTRACE, PTRACE_ATTACH) => Some(Access::PtraceAttach),
            (KIND_PTRACE, PTRACE_SEIZE) => Some(Access::PtraceSeize),
            // The open mode: O_RDONLY 0, O_WRONLY 1, O_RDWR 2 (3 is not a valid mode).
            (KIND_PROC_MEM, mode) => Some(Access::ProcMem { read: mode != 1, write: mode == 1 || mode == 2 }),
            _ => None,
        }
    }

    /// The `win_remote_thread_events` action of the record, if it is one.
    pub fn injection(&self) -> Option<&'static str> {
        match (self.kind, self.request) {
            (KIND_VM_WRITE, _) => Some("VM_WRITE"),
            (KIND_PTRACE, PTRACE_POKETEXT) => Some("PTRACE_POKETEXT"),
            (KIND_PTRACE, PTRACE_POKEDATA) => Some("PTRACE_POKEDATA"),
            (KIND_PTRACE, PTRACE_POKEUSER) => Some("PTRACE_POKEUSER"),
            (KIND_PTRACE, PTRACE_SETREGS) => Some("PTRACE_SETREGS"),
            (KIND_PTRACE, PTRACE_SETREGSET) => Some("PTRACE_SETREGSET"),
            _ => None,
        }
    }
}

/// The file mapped at `address` per a `/proc/PID/maps` text; `None` for anonymous or pseudo
/// mappings (`[heap]`, `[stack]`, ...) and unmapped addresses.
pub fn module_at(maps: &str, address: u64) -> Option<String> {
    symbols::mapping_at(maps, address).map(|m| m.path).filter(|p| p.starts_with('/'))
}

/// The thread group (process) of thread `tid`; `tid` itself when it cannot be read.
fn thread_group(proc_root: &Path, tid: u32) -> u32 {
    std::fs::read_to_string(proc_root.join(tid.to_string()).join("status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(tid)
}

/// The process access sensor.
pub struct ProcessAccessSensor {
    cache: Arc<ProcessCache>,
    running: Option<SensorThread>,
}

impl Default for ProcessAccessSensor {
    /// A sensor attributing through the agent's shared cache ([`ProcessCache::shared`]).
    fn default() -> ProcessAccessSensor {
        ProcessAccessSensor::new(ProcessCache::shared())
    }
}

impl ProcessAccessSensor {
    pub fn new(cache: Arc<ProcessCache>) -> ProcessAccessSensor {
        ProcessAccessSensor { cache, running: None }
    }
}

#[derive(Clone, Copy)]
struct SharedColumns {
    table: &'static Table,
    action: usize,
    src_pid: usize,
    src_process_guid: usize,
    target_pid: usize,
    target_process_guid: usize,
    src_path: usize,
    target_path: usize,
    owner_uid: usize,
}

impl SharedColumns {
    fn resolve(name: &'static str) -> Result<SharedColumns, SensorError> {
        let table = catalog_table(name)?;
        let at = |column| column_index(table, name, column);
        Ok(SharedColumns {
            table,
            action: at("action")?,
            src_pid: at("src_pid")?,
            src_process_guid: at("src_process_guid")?,
            target_pid: at("target_pid")?,
            target_process_guid: at("target_process_guid")?,
            src_path: at("src_path")?,
            target_path: at("target_path")?,
            owner_uid: at("owner_uid")?,
        })
    }
}

#[derive(Clone, Copy)]
struct Columns {
    open: SharedColumns,
    granted_access: usize,
    granted_access_value: usize,
    thread: SharedColumns,
    function_name: usize,
    module_name: usize,
}

impl Columns {
    fn resolve() -> Result<Columns, SensorError> {
        let open = SharedColumns::resolve(OPEN_TABLE)?;
        let thread = SharedColumns::resolve(THREAD_TABLE)?;
        Ok(Columns {
            open,
            granted_access: column_index(open.table, OPEN_TABLE, "granted_access")?,
            granted_access_value: column_index(open.table, OPEN_TABLE, "granted_access_value")?,
            thread,
            function_name: column_index(thread.table, THREAD_TABLE, "function_name")?,
            module_name: column_index(thread.table, THREAD_TABLE, "module_name")?,
        })
    }
}

struct Worker {
    ctx: SensorContext,
    columns: Columns,
    cache: Arc<ProcessCache>,
    own_pid: u32,
    ticks_per_second: u64,
    symbols: symbols::Symbolizer,
}

impl Worker {
    fn handle(&mut self, data: &[u8]) {
        let Some(record) = AccessRecord::decode(data) else {
            self.ctx.health.record_error(format!(
                "malformed process access record ({} bytes): BPF program and sensor disagree",
                data.len()
            ));
            return;
        };
        if record.pid == self.own_pid {
            return;
        }
        let access = record.access();
        let injection = record.injection();
        if access.is_none() && injection.is_none() {
            return;
        }
        let root = self.cache.proc_root();
        let src_start = boottime_to_ticks(record.start_boottime_ns, self.ticks_per_second);
        let src_guid = process_guid(record.pid, src_start);
        let src = self.cache.lookup_instance(record.pid, src_start, record.exec_id as u32);
        let target_pid = thread_group(root, record.target);
        let target = self.cache.lookup_live(target_pid);
        let user = self.cache.user_name(record.uid);
        let fill = |event: &mut Event, c: &SharedColumns, action: &str| {
            let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
            event.set(c.action, action);
            event.set(c.src_pid, record.pid);
            event.set(c.src_process_guid, src_guid.clone());
            event.set(c.src_path, src.as_ref().and_then(|s| text(&s.path)));
            event.set(c.target_pid, target_pid);
            event.set(c.target_process_guid, target.as_ref().map(|t| t.guid.clone()));
            event.set(c.target_path, target.as_ref().and_then(|t| text(&t.path)));
            event.set(c.owner_uid, user.clone());
        };
        if let Some(access) = access {
            let c = &self.columns;
            let mut event = Event::new(c.open.table, self.ctx.stamper.stamp());
            fill(&mut event, &c.open, "PROC_OPEN");
            event.set(c.granted_access, access.name());
            event.set(c.granted_access_value, format!("{:#x}", access.value()));
            self.ctx.sink.emit(event);
        }
        if let Some(action) = injection {
            let c = &self.columns;
            let maps = (record.address != 0)
                .then(|| std::fs::read_to_string(root.join(target_pid.to_string()).join("maps")).ok())
                .flatten();
            let module = maps.as_deref().and_then(|maps| module_at(maps, record.address));
            let function = maps
                .as_deref()
                .filter(|_| module.is_some())
                .and_then(|maps| self.symbols.function_at(root, target_pid, maps, record.address));
            let mut event = Event::new(c.thread.table, self.ctx.stamper.stamp());
            fill(&mut event, &c.thread, action);
            event.set(c.module_name, module.unwrap_or_default());
            event.set(c.function_name, function.unwrap_or_default());
            self.ctx.sink.emit(event);
        }
    }
}

fn load_programs(
    object: &mut MaybeUninit<libbpf_rs::OpenObject>,
) -> Result<bpf::process_access::ProcessAccessSkel<'_>, String> {
    bpf::ensure_tracefs()?;
    let open =
        bpf::process_access::ProcessAccessSkelBuilder::default().open(object).map_err(|e| e.to_string())?;
    let mut skel = open.load().map_err(|e| e.to_string())?;
    skel.attach().map_err(|e| e.to_string())?;
    Ok(skel)
}

fn run(mut worker: Worker, stop: &AtomicBool, ready: &Ready) {
    let mut object = MaybeUninit::uninit();
    let skel = match load_programs(&mut object) {
        Ok(skel) => skel,
        Err(error) => {
            // The receiver waits in `start`; if it is gone there is nobody to tell.
            let _ = ready.send(Err(error));
            return;
        }
    };
    let health = Arc::clone(&worker.ctx.health);
    bpf::drive_ring_buffer(skel.object(), &skel.maps.events, &skel.maps.lost, &health, stop, ready, |data| {
        worker.handle(data)
    });
}

impl Sensor for ProcessAccessSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let worker = Worker {
            ctx: ctx.clone(),
            columns: Columns::resolve()?,
            cache: Arc::clone(&self.cache),
            own_pid: std::process::id(),
            ticks_per_second: clock_ticks_per_second(),
            symbols: symbols::Symbolizer::default(),
        };
        let started = SensorThread::spawn_when_ready(NAME, "watchpost-ptrace", Arc::clone(&ctx.health), {
            move |stop, ready| run(worker, stop, ready)
        })?;
        match started {
            Ok(thread) => {
                self.running = Some(thread);
                Ok(())
            }
            Err(reason) => {
                let reason = match reason {
                    Some(reason) => format!("cannot load the BPF programs: {reason}"),
                    None => "the BPF loader thread ended early".to_string(),
                };
                ctx.health.set_state(SensorState::Failed(reason.clone()));
                Err(SensorError::Source { sensor: NAME, reason })
            }
        }
    }

    fn reconfigure(&mut self, _config: &watchpost_config::Config) -> Result<(), SensorError> {
        // Nothing of the config applies to this sensor (filters are applied by the agent).
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop("the process access thread");
        }
    }
}

impl Drop for ProcessAccessSensor {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d4c6a00000-55d4c6a02000 r--p 00000000 fe:01 1311 /usr/bin/sleep
55d4c6a02000-55d4c6a06000 r-xp 00002000 fe:01 1311 /usr/bin/sleep
55d4c7000000-55d4c7021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7f0000001000-7f0000002000 r-xp 00000000 fe:01 99 /tmp/my lib.so (deleted)
";

    #[test]
    fn the_module_is_the_file_mapped_at_the_address() {
        assert_eq!(module_at(MAPS, 0x55d4c6a02010).as_deref(), Some("/usr/bin/sleep"));
        assert_eq!(module_at(MAPS, 0x55d4c7000010), None, "heap");
        assert_eq!(module_at(MAPS, 0x7f0000000010), None, "anonymous");
        assert_eq!(module_at(MAPS, 0x7f0000001000).as_deref(), Some("/tmp/my lib.so"));
        assert_eq!(module_at(MAPS, 0x10), None, "unmapped");
    }

    #[test]
    fn records_map_to_accesses_and_injections() {
        let mut data = Vec::new();
        for value in [KIND_PTRACE, 10, 0, 11] {
            data.extend(value.to_ne_bytes());
        }
        for value in [5_000_000u64, PTRACE_POKETEXT, 0x1000, 3] {
            data.extend(value.to_ne_bytes());
        }
        let record = AccessRecord::decode(&data).unwrap();
        assert_eq!((record.pid, record.target, record.address, record.exec_id), (10, 11, 0x1000, 3));
        assert_eq!(record.access(), None);
        assert_eq!(record.injection(), Some("PTRACE_POKETEXT"));
        let attach = AccessRecord { request: PTRACE_ATTACH, ..record.clone() };
        assert_eq!((attach.access(), attach.injection()), (Some(Access::PtraceAttach), None));
        let write = AccessRecord { kind: KIND_VM_WRITE, request: 0, ..record.clone() };
        assert_eq!((write.access(), write.injection()), (Some(Access::VmWrite), Some("VM_WRITE")));
        assert!(AccessRecord::decode(&data[..47]).is_none());
    }

    #[test]
    fn proc_mem_opens_map_to_read_and_write_access() {
        let open = |mode| AccessRecord {
            kind: KIND_PROC_MEM,
            pid: 10,
            uid: 0,
            target: 11,
            start_boottime_ns: 1,
            request: mode,
            address: 0,
            exec_id: 1,
        };
        let named = |mode| open(mode).access().map(|a| (a.name(), a.value()));
        assert_eq!(named(0), Some(("PROC_MEM_READ", 0x4_0000)));
        assert_eq!(named(1), Some(("PROC_MEM_WRITE", 0x8_0000)));
        assert_eq!(named(2), Some(("PROC_MEM_READ|PROC_MEM_WRITE", 0xc_0000)));
        assert_eq!(open(2).injection(), None, "an open writes nothing yet");
    }
}
