//! The `process` sensor behind `win_process_events` on Linux, and the keeper of the shared
//! [`ProcessCache`].
//!
//! **BPF mode** (health mode `bpf`): `bpf/process.bpf.c` hooks the `sched_process_exec`,
//! `sched_process_exit` and `sched_process_fork` tracepoints (tp_btf) and copies, in the kernel
//! and at the moment of the event, the pid, real parent, effective uid, start times, the file
//! executed and argv (up to 4 KiB), so processes that exit microseconds after exec are complete.
//! Userspace makes the row: the path is the executed file made absolute (against the process's,
//! else its parent's, cwd) and canonical (`/bin/true` -> `/usr/bin/true`, as `/proc/PID/exe`
//! shows it); for a script it is the interpreter. `owner_uid` is the name of the *effective*
//! uid. `PROC_CREATE` at every exec, `PROC_TERMINATE` when the last thread of a process that
//! exec'd (or was running when the sensor started) exits; processes that fork without exec get
//! no rows (they run their parent's image) but enter the cache. Records the kernel could not
//! queue (full ring buffer) are counted in the health's `lost` figure.
//!
//! **Fallback** (mode `netlink+procfs`, state degraded): when the BPF programs cannot be loaded
//! (not root, old kernel, BPF refused), the netlink process connector says which pid exec'd or
//! exited and `/proc` is read after the fact, which misses path and command line of processes
//! that are already gone.
//!
//! Feedback: the sensor never starts processes, so its own activity makes no process events;
//! nothing is dropped.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use watchpost_catalog::{Event, Table};

use super::bpf;
use super::proc_connector::{ConnectorEvent, ProcConnector};
use super::process::{clock_ticks_per_second, process_guid};
use super::process_cache::{Origin, ProcessCache, ProcessInfo, join_args};
use super::process_records::{ProcessRecord, RecordHeader, boottime_to_ticks, decode};
use super::sensor_thread::{Ready, SensorThread};
use crate::{Sensor, SensorContext, SensorError, SensorState, catalog_table, column_index};

const TABLE: &str = "win_process_events";
const TABLES: &[&str] = &[TABLE];
const NAME: &str = "process";
/// How often the threads look at the stop flag (and the kernel's lost counter).
const POLL: Duration = Duration::from_millis(100);
/// Canonical paths are cached this long (links such as `/bin` rarely change).
const CANONICAL_CACHE_TTL: Duration = Duration::from_secs(10);

/// Switches for tests; production uses the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessOptions {
    /// Do not try BPF: use the netlink fallback as if BPF had been refused.
    pub force_fallback: bool,
}

/// The process sensor.
pub struct ProcessSensor {
    cache: Arc<ProcessCache>,
    options: ProcessOptions,
    running: Option<SensorThread>,
}

impl Default for ProcessSensor {
    /// A sensor keeping the agent's shared cache ([`ProcessCache::shared`]).
    fn default() -> ProcessSensor {
        ProcessSensor::new(ProcessCache::shared(), ProcessOptions::default())
    }
}

impl ProcessSensor {
    pub fn new(cache: Arc<ProcessCache>, options: ProcessOptions) -> ProcessSensor {
        ProcessSensor { cache, options, running: None }
    }

    /// The cache this sensor keeps current.
    pub fn cache(&self) -> &Arc<ProcessCache> {
        &self.cache
    }
}

#[derive(Clone, Copy)]
struct Columns {
    table: &'static Table,
    action: usize,
    pid: usize,
    process_guid: usize,
    path: usize,
    cmdline: usize,
    parent_pid: usize,
    parent_process_guid: usize,
    parent_path: usize,
    owner_uid: usize,
}

impl Columns {
    fn resolve() -> Result<Columns, SensorError> {
        let table = catalog_table(TABLE)?;
        let at = |column| column_index(table, TABLE, column);
        Ok(Columns {
            table,
            action: at("action")?,
            pid: at("pid")?,
            process_guid: at("process_guid")?,
            path: at("path")?,
            cmdline: at("cmdline")?,
            parent_pid: at("parent_pid")?,
            parent_process_guid: at("parent_process_guid")?,
            parent_path: at("parent_path")?,
            owner_uid: at("owner_uid")?,
        })
    }
}

/// Turns lifecycle facts into cache updates and rows; shared by both modes.
struct Tracker {
    ctx: SensorContext,
    columns: Columns,
    cache: Arc<ProcessCache>,
    ticks_per_second: u64,
    canonical: HashMap<String, String>,
    canonical_since: Instant,
}

impl Tracker {
    fn new(ctx: SensorContext, columns: Columns, cache: Arc<ProcessCache>) -> Tracker {
        Tracker {
            ctx,
            columns,
            cache,
            ticks_per_second: clock_ticks_per_second(),
            canonical: HashMap::new(),
            canonical_since: Instant::now(),
        }
    }

    fn ticks(&self, nanoseconds: u64) -> u64 {
        boottime_to_ticks(nanoseconds, self.ticks_per_second)
    }

    fn handle_record(&mut self, data: &[u8]) {
        match decode(data) {
            Ok(ProcessRecord::Exec { header, filename, args, args_truncated: _ }) => {
                let path = self.absolute_path(&filename, header.pid, header.ppid);
                let uid = header.uid;
                let info = ProcessInfo {
                    pid: header.pid,
                    start_time: self.ticks(header.start_boottime_ns),
                    guid: process_guid(header.pid, self.ticks(header.start_boottime_ns)),
                    path,
                    cmdline: join_args(&args),
                    uid,
                    user: self.cache.user_name(uid),
                    parent_pid: header.ppid,
                    parent_guid: process_guid(header.ppid, self.ticks(header.parent_start_boottime_ns)),
                    origin: Origin::Execed,
                    exec_id: Some(header.exec_id),
                };
                self.exec(info);
            }
            Ok(ProcessRecord::Exit { header, exit_code: _ }) => {
                self.exit(header.pid, Some(self.ticks(header.start_boottime_ns)));
            }
            Ok(ProcessRecord::Fork { header }) => self.fork(&header),
            Err(error) => self.ctx.health.record_error(error.to_string()),
        }
    }

    /// The file execve ran, absolute and canonical where it still exists.
    fn absolute_path(&mut self, filename: &str, pid: u32, ppid: u32) -> String {
        let absolute = if filename.starts_with('/') || filename.is_empty() {
            PathBuf::from(filename)
        } else {
            let root = self.cache.proc_root();
            let cwd = std::fs::read_link(root.join(pid.to_string()).join("cwd"))
                .or_else(|_| std::fs::read_link(root.join(ppid.to_string()).join("cwd")));
            match cwd {
                Ok(cwd) => cwd.join(filename),
                Err(_) => return filename.to_string(),
            }
        };
        let key = absolute.to_string_lossy().into_owned();
        if self.canonical_since.elapsed() > CANONICAL_CACHE_TTL || self.canonical.len() > 4096 {
            self.canonical.clear();
            self.canonical_since = Instant::now();
        }
        if let Some(known) = self.canonical.get(&key) {
            return known.clone();
        }
        match std::fs::canonicalize(&absolute) {
            Ok(canonical) => {
                let canonical = canonical.to_string_lossy().into_owned();
                self.canonical.insert(key, canonical.clone());
                canonical
            }
            // Deleted since (or never readable): keep what execve was given.
            Err(_) => key,
        }
    }

    fn exec(&mut self, info: ProcessInfo) {
        let parent_path = self.cache.lookup(info.parent_pid).map(|parent| parent.path.clone());
        let info = self.cache.insert(info);
        self.emit("PROC_CREATE", &info, parent_path);
    }

    fn exit(&mut self, pid: u32, start_time: Option<u64>) {
        let Some(info) = self.cache.get(pid) else { return };
        if start_time.is_some_and(|start| start != info.start_time) {
            // An instance the cache never saw; nothing to report about it.
            return;
        }
        if info.origin != Origin::Forked {
            let parent_path = self
                .cache
                .get(info.parent_pid)
                .filter(|parent| parent.guid == info.parent_guid || info.parent_guid.is_empty())
                .map(|parent| parent.path.clone());
            self.emit("PROC_TERMINATE", &info, parent_path);
        }
        self.cache.mark_exited(pid, info.start_time);
    }

    fn fork(&mut self, child: &RecordHeader) {
        let parent = self.cache.lookup(child.ppid);
        let start_time = self.ticks(child.start_boottime_ns);
        let parent_guid = process_guid(child.ppid, self.ticks(child.parent_start_boottime_ns));
        self.cache.insert(ProcessInfo {
            pid: child.pid,
            start_time,
            guid: process_guid(child.pid, start_time),
            path: parent.as_ref().map(|p| p.path.clone()).unwrap_or_default(),
            cmdline: parent.as_ref().map(|p| p.cmdline.clone()).unwrap_or_default(),
            uid: child.uid,
            user: self.cache.user_name(child.uid),
            parent_pid: child.ppid,
            parent_guid,
            origin: Origin::Forked,
            exec_id: Some(child.exec_id),
        });
    }

    fn handle_connector(&mut self, event: ConnectorEvent) {
        match event {
            ConnectorEvent::Fork { parent_tgid, child_tgid } => {
                // After the fact: the child may already be gone (or exec'd).
                if let Some(mut info) = self.cache.read_proc(child_tgid, Origin::Forked) {
                    if let Some(parent) = self.cache.get(parent_tgid) {
                        info.path = parent.path.clone();
                        info.cmdline = parent.cmdline.clone();
                    }
                    self.cache.insert(info);
                }
            }
            ConnectorEvent::Exec { tgid } => {
                let info = self.cache.read_proc(tgid, Origin::Execed).unwrap_or_else(|| {
                    // Gone already: what the cache knew from its fork is all there is.
                    let known = self.cache.get(tgid);
                    ProcessInfo {
                        pid: tgid,
                        start_time: known.as_ref().map_or(0, |k| k.start_time),
                        guid: known.as_ref().map(|k| k.guid.clone()).unwrap_or_default(),
                        path: String::new(),
                        cmdline: String::new(),
                        uid: known.as_ref().map_or(0, |k| k.uid),
                        user: known.as_ref().map(|k| k.user.clone()).unwrap_or_default(),
                        parent_pid: known.as_ref().map_or(0, |k| k.parent_pid),
                        parent_guid: known.as_ref().map(|k| k.parent_guid.clone()).unwrap_or_default(),
                        origin: Origin::Execed,
                        exec_id: None,
                    }
                });
                self.exec(info);
            }
            ConnectorEvent::Exit { tgid, exit_code: _ } => self.exit(tgid, None),
        }
    }

    fn emit(&self, action: &str, info: &ProcessInfo, parent_path: Option<String>) {
        let c = &self.columns;
        let mut event = Event::new(c.table, self.ctx.stamper.stamp());
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        event.set(c.action, action);
        event.set(c.pid, info.pid);
        event.set(c.process_guid, text(&info.guid));
        event.set(c.path, text(&info.path));
        event.set(c.cmdline, text(&info.cmdline));
        event.set(c.parent_pid, info.parent_pid);
        event.set(c.parent_process_guid, text(&info.parent_guid));
        event.set(c.parent_path, parent_path.filter(|p| !p.is_empty()));
        event.set(c.owner_uid, text(&info.user));
        self.ctx.sink.emit(event);
    }
}

fn load_process_programs(
    object: &mut MaybeUninit<libbpf_rs::OpenObject>,
) -> Result<bpf::process::ProcessSkel<'_>, libbpf_rs::Error> {
    let open = bpf::process::ProcessSkelBuilder::default().open(object)?;
    let mut skel = open.load()?;
    skel.attach()?;
    Ok(skel)
}

/// Loads and attaches the BPF programs, seeds the cache, says so on `ready`, then forwards
/// ring-buffer records to `tracker` until `stop`.
fn run_bpf(mut tracker: Tracker, stop: &AtomicBool, ready: &Ready) {
    let mut object = MaybeUninit::uninit();
    let skel = match load_process_programs(&mut object) {
        Ok(skel) => skel,
        Err(error) => {
            // The receiver waits in `start`; if it is gone there is nobody to tell.
            let _ = ready.send(Err(error.to_string()));
            return;
        }
    };
    // Seeded after attaching, so that no process falls between the two.
    if let Err(error) = tracker.cache.seed_from_proc() {
        tracker.ctx.health.record_error(format!("cannot seed the process cache from /proc: {error}"));
    }
    let health = Arc::clone(&tracker.ctx.health);
    bpf::drive_ring_buffer(skel.object(), &skel.maps.events, &skel.maps.lost, &health, stop, ready, |data| {
        tracker.handle_record(data)
    });
}

/// The fallback: process-connector notifications and `/proc` reads.
fn run_connector(mut tracker: Tracker, connector: ProcConnector, stop: &AtomicBool) {
    let health = Arc::clone(&tracker.ctx.health);
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match connector.receive(&mut buffer) {
            Ok(events) => events.into_iter().for_each(|event| tracker.handle_connector(event)),
            Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                health.add_lost(1);
                health.record_error("process connector socket overrun: events were lost");
            }
            Err(error) => {
                health.record_error(format!("process connector: {error}"));
                health.set_state(SensorState::Failed(format!("process connector: {error}")));
                return;
            }
        }
    }
}

impl ProcessSensor {
    fn spawn(&self, name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, SensorError> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|source| SensorError::Spawn { sensor: NAME, source })
    }

    fn start_fallback(&mut self, ctx: SensorContext, columns: Columns, why: &str) -> Result<(), SensorError> {
        let connector = ProcConnector::open(POLL).map_err(|e| SensorError::Source {
            sensor: NAME,
            reason: format!("no BPF ({why}) and no netlink process connector ({e}): run as root"),
        })?;
        let tracker = Tracker::new(ctx.clone(), columns, Arc::clone(&self.cache));
        if let Err(error) = self.cache.seed_from_proc() {
            ctx.health.record_error(format!("cannot seed the process cache from /proc: {error}"));
        }
        ctx.health.set_mode("netlink+procfs");
        ctx.health.set_state(SensorState::Degraded(format!(
            "no BPF: {why}; using the netlink proc connector: short-lived processes may miss path/cmdline"
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = self.spawn("watchpost-proc-cn", move || run_connector(tracker, connector, &flag))?;
        self.running = Some(SensorThread::new(stop, thread, ctx.health));
        Ok(())
    }
}

impl Sensor for ProcessSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let columns = Columns::resolve()?;
        if self.options.force_fallback {
            return self.start_fallback(ctx, columns, "disabled by the sensor's options");
        }
        let tracker = Tracker::new(ctx.clone(), columns, Arc::clone(&self.cache));
        let started = SensorThread::spawn_when_ready(NAME, "watchpost-process", Arc::clone(&ctx.health), {
            move |stop, ready| run_bpf(tracker, stop, ready)
        })?;
        match started {
            Ok(thread) => {
                self.running = Some(thread);
                Ok(())
            }
            Err(reason) => {
                let why = reason.unwrap_or_else(|| "the BPF loader thread ended early".to_string());
                ctx.health.record_error(format!("cannot load the process BPF programs: {why}"));
                self.start_fallback(ctx, columns, &why)
            }
        }
    }

    fn reconfigure(&mut self, _config: &watchpost_config::Config) -> Result<(), SensorError> {
        // Nothing of the config applies to this sensor (filters are applied by the agent).
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop("the process sensor thread");
        }
    }
}

impl Drop for ProcessSensor {
    fn drop(&mut self) {
        self.stop();
    }
}
