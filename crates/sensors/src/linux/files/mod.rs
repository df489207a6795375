//! The `files` sensor behind `win_file_events`, `win_file_timestomp_events` and
//! `win_pefile_events` on Linux, and the feeder of the YARA scanner.
//!
//! **Source** (health mode `fanotify`): one fanotify group in FID mode (directory handle + name,
//! the object's handle, both sides of renames) with one `FAN_MARK_FILESYSTEM` mark per
//! filesystem that holds a folder in scope or a YARA root ([`marks`]). Every event on a marked
//! filesystem carries the acting pid; events outside the scope ([`scope::Scope`]) are dropped
//! here, in userspace. Directory handles become paths through `open_by_handle_at` on a
//! descriptor kept per filesystem plus `/proc/self/fd` (cached per directory, forgotten when a
//! directory is renamed); a deleted file is named by its directory's handle and its name. The
//! marks are re-planned every [`REFRESH`] (new mounts, changed YARA roots) and at
//! `reconfigure`, which only adds and removes the marks that changed, on the same group, so
//! events of unchanged filesystems flow on.
//!
//! **Rows** (files only; directories are not reported):
//! - `win_file_events`: `FILE_CREATE`, `FILE_WRITE` (a file closed after it was modified or
//!   truncated; with `md5`/`sha256` and `hashed = 1` when hashing succeeded), `FILE_DELETE`,
//!   `FILE_RENAME` (`target_path` reads `NEW [Orig: OLD]`; reported when either side is in
//!   scope). `pe_file` is `YES`/`NO` by the file's first bytes (`MZ` or `\x7fELF`), NULL when
//!   the file could not be read (a deleted file the sensor never saw).
//! - `win_file_timestomp_events`: action `FILE_TIMESTOMP` when an attribute change set a file's
//!   modification time backwards; the rule is [`state::timestomp`].
//! - `win_pefile_events`: `FILE Created` / `FILE Modified` when an executable is closed after
//!   writing (`FILE Created` when the sensor saw it created first).
//!
//! `pid` is the acting process (thread group), `process_name` its executable and `uid` its
//! effective user name, from the shared [`ProcessCache`]; `process_guid` identifies it. The
//! agent's own events are dropped (its store writes would otherwise come back).
//!
//! Hashes are computed by one worker from a descriptor opened when the event was handled, up to
//! `file_hash_max_bytes`, through a queue of [`hashing::QUEUE_LEN`] files: a full queue, a larger
//! file or a file already gone gives `hashed = 0`.
//!
//! The kernel merges events on one file that are still queued (create, writes, close and delete
//! of a short-lived file can arrive as one event); the parts are reported in the order create,
//! write, attribute change, delete. A full kernel queue (16384 events) loses events: counted in
//! the health's `lost`. Events in a folder that was already deleted when they were handled
//! cannot be named (and may not be in scope at all) and are dropped uncounted; folders created
//! while the sensor runs are named when they are created, so this only hits folders that
//! existed before it started.

mod emit;
mod fanotify;
mod hashing;
mod marks;
pub mod scope;
pub mod state;

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libc::{
    FAN_ATTRIB, FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE, FAN_MODIFY, FAN_ONDIR, FAN_Q_OVERFLOW, FAN_RENAME,
};
use watchpost_catalog::{Event, Table};

use self::emit::{ActorColumns, Emitter};
use self::fanotify::{Entry, Fanotify, FileId, Fsid, Record, decode, path_of};
use self::hashing::{HashJob, HashSlots, PendingRow};
use self::marks::{Marks, parse_mountinfo, plan};
use self::scope::Scope;
use self::state::{FileStates, FileTimes, Seen, Timestamp, timestomp};
use super::process_cache::ProcessCache;
use super::sensor_thread::SensorThread;
use super::yara::{ScanRequest, YaraQueue};
use crate::{Sensor, SensorContext, SensorError, SensorHealth, SensorState, catalog_table, column_index};

const NAME: &str = "files";
const FILE_TABLE: &str = "win_file_events";
const TIMESTOMP_TABLE: &str = "win_file_timestomp_events";
const PEFILE_TABLE: &str = "win_pefile_events";
const TABLES: &[&str] = &[FILE_TABLE, TIMESTOMP_TABLE, PEFILE_TABLE];
/// How often the marks are re-planned (new mounts, YARA roots) and losses are reported.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long a wait for events lasts before the stop flag is looked at.
const POLL_MS: i32 = 200;
/// The same while rows wait for their process ([`emit::SETTLE`]).
const SETTLE_POLL_MS: i32 = 20;
const READ_BUFFER: usize = 256 * 1024;
/// Files remembered between events (times, created/written flags), per generation.
const FILE_STATES: usize = 32_768;
/// Directory paths cached; the cache is emptied when full.
const DIR_PATHS: usize = 16_384;

/// What the config sets for the sensor.
#[derive(Clone, Debug)]
pub struct FileOptions {
    pub scope: Scope,
    /// Larger files are not hashed.
    pub hash_max_bytes: u64,
}

impl FileOptions {
    /// The options of `config`, and the problems of its path sections (the usable entries apply).
    pub fn from_config(config: &watchpost_config::Config) -> (FileOptions, Vec<String>) {
        let sections = &config.sections;
        let (scope, problems) =
            Scope::from_sections(sections.win_include_paths.as_ref(), sections.win_exclude_paths.as_ref());
        (FileOptions { scope, hash_max_bytes: config.sensor_options.file_hash_max_bytes }, problems)
    }
}

/// The file sensor.
pub struct FileSensor {
    cache: Arc<ProcessCache>,
    yara: YaraQueue,
    options: FileOptions,
    problems: Vec<String>,
    running: Option<Running>,
}

struct Running {
    thread: SensorThread,
    shared: Arc<Shared>,
}

impl FileSensor {
    /// A sensor attributing through the agent's shared cache ([`ProcessCache::shared`]).
    pub fn from_config(config: &watchpost_config::Config, yara: YaraQueue) -> FileSensor {
        let (options, problems) = FileOptions::from_config(config);
        let mut sensor = FileSensor::new(ProcessCache::shared(), yara, options);
        sensor.problems = problems;
        sensor
    }

    pub fn new(cache: Arc<ProcessCache>, yara: YaraQueue, options: FileOptions) -> FileSensor {
        FileSensor { cache, yara, options, problems: Vec::new(), running: None }
    }
}

impl Sensor for FileSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let columns = Columns::resolve()?;
        for problem in &self.problems {
            ctx.health.record_error(problem.clone());
        }
        let fanotify = Fanotify::new().map_err(|e| {
            let reason = format!(
                "fanotify_init: {e} (needs root or CAP_SYS_ADMIN, and Linux 5.17 or later for rename events)"
            );
            ctx.health.set_state(SensorState::Failed(reason.clone()));
            SensorError::Source { sensor: NAME, reason }
        })?;
        ctx.health.set_mode("fanotify");
        let shared = Arc::new(Shared {
            fanotify,
            options: Mutex::new(Arc::new(self.options.clone())),
            marks: Mutex::new(Marks::default()),
            mount_fds: Mutex::new(Arc::new(HashMap::new())),
            yara: self.yara.clone(),
            health: Arc::clone(&ctx.health),
        });
        shared.remark(true);

        let (jobs, queue) = crossbeam_channel::bounded(hashing::QUEUE_LEN);
        let emitter = Arc::new(Emitter::new(Arc::clone(&ctx.sink), Arc::clone(&self.cache)));
        let worker_emitter = Arc::clone(&emitter);
        let worker = std::thread::Builder::new()
            .name("watchpost-filehash".into())
            .spawn(move || hashing::run_worker(queue, worker_emitter))
            .map_err(|source| SensorError::Spawn { sensor: NAME, source })?;
        let handler = Handler {
            ctx: ctx.clone(),
            columns,
            emitter,
            yara: self.yara.clone(),
            own_pid: std::process::id(),
            dirs: HashMap::new(),
            files: FileStates::new(FILE_STATES),
            jobs,
            unresolved: 0,
            overflows: 0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reader_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("watchpost-files".into())
            .spawn(move || run(handler, &reader_shared, &flag, worker))
            .map_err(|source| SensorError::Spawn { sensor: NAME, source })?;
        self.running = Some(Running { thread: SensorThread::new(stop, thread, ctx.health), shared });
        Ok(())
    }

    fn reconfigure(&mut self, config: &watchpost_config::Config) -> Result<(), SensorError> {
        let (options, problems) = FileOptions::from_config(config);
        self.options = options.clone();
        self.problems = problems;
        if let Some(running) = &self.running {
            for problem in &self.problems {
                running.shared.health.record_error(problem.clone());
            }
            // New filesystems are marked before the new scope applies to what they report;
            // unchanged marks stay, so their events are not interrupted.
            *lock(&running.shared.options) = Arc::new(options);
            running.shared.remark(true);
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.thread.stop("the file sensor thread");
        }
    }
}

impl Drop for FileSensor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the event thread and `reconfigure` share.
struct Shared {
    fanotify: Fanotify,
    options: Mutex<Arc<FileOptions>>,
    marks: Mutex<Marks>,
    mount_fds: Mutex<Arc<HashMap<Fsid, Arc<File>>>>,
    yara: YaraQueue,
    health: Arc<SensorHealth>,
}

impl Shared {
    fn options(&self) -> Arc<FileOptions> {
        Arc::clone(&lock(&self.options))
    }

    fn mount_fds(&self) -> Arc<HashMap<Fsid, Arc<File>>> {
        Arc::clone(&lock(&self.mount_fds))
    }

    /// Marks the filesystems of the scope and the YARA roots as mounted now; unless `force`, only
    /// when that plan changed since the last time.
    fn remark(&self, force: bool) {
        let mut folders = self.options().scope.roots();
        folders.extend(self.yara.roots());
        let mounts = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => parse_mountinfo(&text),
            Err(error) => {
                self.health.record_error(format!("cannot read /proc/self/mountinfo: {error}"));
                return;
            }
        };
        let plan = plan(&folders, &mounts);
        let mut marks = lock(&self.marks);
        if !force && marks.plan() == &plan {
            return;
        }
        let problems = marks.apply(&self.fanotify, &plan);
        *lock(&self.mount_fds) = Arc::new(marks.mount_fds());
        for problem in &problems {
            self.health.record_error(format!("cannot watch {problem}"));
        }
        let state = if problems.is_empty() {
            SensorState::Running
        } else if marks.mount_points().is_empty() {
            SensorState::Failed(format!("no filesystem could be watched: {}", problems.join("; ")))
        } else {
            SensorState::Degraded(format!("not watched: {}", problems.join("; ")))
        };
        drop(marks);
        self.health.set_state(state);
    }
}

/// A poisoned lock is used as is: the data behind these locks is replaced whole, never left
/// half-updated.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(mut handler: Handler, shared: &Shared, stop: &AtomicBool, worker: JoinHandle<()>) {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut last_refresh = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_refresh.elapsed() >= REFRESH {
            shared.remark(false);
            handler.report_losses();
            last_refresh = Instant::now();
        }
        handler.emitter.flush(false);
        // Rows waiting for their process to settle are looked at again soon.
        let timeout = if handler.emitter.is_waiting() { SETTLE_POLL_MS } else { POLL_MS };
        match shared.fanotify.wait(timeout) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                shared.health.record_error(format!("fanotify poll: {error}"));
                std::thread::sleep(Duration::from_millis(u64::from(POLL_MS.unsigned_abs())));
                continue;
            }
        }
        // Drain what is queued, re-reading the options for each batch.
        while !stop.load(Ordering::Relaxed) {
            let n = match shared.fanotify.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) => {
                    shared.health.record_error(format!("fanotify read: {error}"));
                    break;
                }
            };
            let options = shared.options();
            let mounts = shared.mount_fds();
            for record in decode(&buffer[..n]) {
                match record {
                    Ok(record) => handler.handle(&record, &options, &mounts),
                    Err(error) => shared.health.record_error(error.to_string()),
                }
            }
        }
    }
    handler.report_losses();
    let emitter = Arc::clone(&handler.emitter);
    // The worker ends when its queue's sender (in the handler) is gone.
    drop(handler);
    if worker.join().is_err() {
        shared.health.record_error("the file hash worker panicked");
    }
    emitter.flush(true);
}

#[derive(Clone, Copy)]
struct Columns {
    file: &'static Table,
    file_action: usize,
    file_path: usize,
    file_hash: HashSlots,
    file_pe: usize,
    file_actor: ActorColumns,
    stomp: &'static Table,
    stomp_action: usize,
    stomp_path: usize,
    stomp_old: usize,
    stomp_new: usize,
    stomp_hash: HashSlots,
    stomp_pe: usize,
    stomp_actor: ActorColumns,
    pe: &'static Table,
    pe_action: usize,
    pe_path: usize,
    pe_hash: HashSlots,
    pe_actor: ActorColumns,
}

impl Columns {
    fn resolve() -> Result<Columns, SensorError> {
        let (file, stomp, pe) =
            (catalog_table(FILE_TABLE)?, catalog_table(TIMESTOMP_TABLE)?, catalog_table(PEFILE_TABLE)?);
        let actor = |table: &Table, name: &'static str| -> Result<ActorColumns, SensorError> {
            Ok(ActorColumns {
                uid: column_index(table, name, "uid")?,
                pid: column_index(table, name, "pid")?,
                process_guid: column_index(table, name, "process_guid")?,
                process_name: column_index(table, name, "process_name")?,
            })
        };
        let f = |column| column_index(file, FILE_TABLE, column);
        let s = |column| column_index(stomp, TIMESTOMP_TABLE, column);
        let p = |column| column_index(pe, PEFILE_TABLE, column);
        Ok(Columns {
            file,
            file_action: f("action")?,
            file_path: f("target_path")?,
            file_hash: HashSlots { md5: f("md5")?, sha256: Some(f("sha256")?), hashed: f("hashed")? },
            file_pe: f("pe_file")?,
            file_actor: actor(file, FILE_TABLE)?,
            stomp,
            stomp_action: s("action")?,
            stomp_path: s("target_path")?,
            stomp_old: s("old_timestamp")?,
            stomp_new: s("new_timestamp")?,
            stomp_hash: HashSlots { md5: s("md5")?, sha256: None, hashed: s("hashed")? },
            stomp_pe: s("pe_file")?,
            stomp_actor: actor(stomp, TIMESTOMP_TABLE)?,
            pe,
            pe_action: p("action")?,
            pe_path: p("target_path")?,
            pe_hash: HashSlots { md5: p("md5")?, sha256: None, hashed: p("hashed")? },
            pe_actor: actor(pe, PEFILE_TABLE)?,
        })
    }
}

fn yes_no(executable: bool) -> &'static str {
    if executable { "YES" } else { "NO" }
}

/// The object of an event, opened on first use (`O_PATH`: no data read, no device opened).
struct Target<'a> {
    object: Option<FileId<'a>>,
    mounts: &'a HashMap<Fsid, Arc<File>>,
    opened: Option<Option<Opened>>,
}

struct Opened {
    handle: File,
    meta: Metadata,
}

impl Target<'_> {
    /// The file, when it still exists and is a regular file.
    fn regular_file(&mut self) -> Option<&Opened> {
        if self.opened.is_none() {
            let opened = self.object.and_then(|object| {
                let mount = self.mounts.get(&object.fsid)?;
                let handle = object.open_path(mount.as_fd()).ok()?;
                let meta = handle.metadata().ok()?;
                Some(Opened { handle, meta })
            });
            self.opened = Some(opened);
        }
        self.opened.as_ref().and_then(Option::as_ref).filter(|o| o.meta.file_type().is_file())
    }
}

impl Opened {
    fn times(&self) -> FileTimes {
        FileTimes {
            modified: Timestamp::new(self.meta.mtime(), self.meta.mtime_nsec()),
            changed: Timestamp::new(self.meta.ctime(), self.meta.ctime_nsec()),
        }
    }

    /// The same file opened for reading, without touching its access time.
    fn read(&self) -> Option<File> {
        let proc_path = format!("/proc/self/fd/{}", self.handle.as_raw_fd());
        let open = |flags| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&proc_path);
        // O_NOATIME is refused (EPERM) for files of other users without CAP_FOWNER.
        open(libc::O_NOATIME | libc::O_NONBLOCK).or_else(|_| open(libc::O_NONBLOCK)).ok()
    }
}

/// Why an event's path is unknown.
enum Unresolved {
    /// Its filesystem is not (or no longer) marked: not of interest.
    NotWatched,
    /// Its directory was gone before the event was handled.
    Gone,
}

/// The event thread's state.
struct Handler {
    ctx: SensorContext,
    columns: Columns,
    emitter: Arc<Emitter>,
    yara: YaraQueue,
    own_pid: u32,
    /// Directory handle key -> path.
    dirs: HashMap<fanotify::FileKey, Arc<str>>,
    files: FileStates,
    jobs: crossbeam_channel::Sender<HashJob>,
    /// Events dropped since the last report because their path could not be read.
    unresolved: u64,
    overflows: u64,
}

impl Handler {
    fn handle(&mut self, record: &Record<'_>, options: &FileOptions, mounts: &HashMap<Fsid, Arc<File>>) {
        let mask = record.mask;
        if mask & FAN_Q_OVERFLOW != 0 {
            self.overflows += 1;
            return;
        }
        if mask & FAN_ONDIR != 0 {
            self.directory_changed(record, mounts);
            return;
        }
        if u32::try_from(record.pid) == Ok(self.own_pid) {
            return;
        }
        if mask & FAN_RENAME != 0 {
            self.renamed(record, options, mounts);
            return;
        }
        let Some(entry) = record.entry else { return };
        let path = match self.path(entry, mounts) {
            Ok(path) => path,
            Err(Unresolved::Gone) => {
                self.unresolved += 1;
                return;
            }
            Err(Unresolved::NotWatched) => return,
        };
        let reported = options.scope.contains(&path);
        let scanned = self.yara.wants(Path::new(&path));
        let (true, Some(object)) = (reported || scanned, record.object) else { return };
        let key = object.key();
        let pid = record.pid.unsigned_abs();
        // A deleted file cannot be opened by handle; do not try.
        let mut target = Target { object: (mask & FAN_DELETE == 0).then_some(object), mounts, opened: None };

        if mask & FAN_CREATE != 0 {
            let file = target.regular_file();
            let hard_link = file.is_some_and(|f| f.meta.nlink() > 1);
            let state = self.files.entry(key.clone());
            state.created = true;
            if let Some(file) = file {
                state.seen = Some(Seen { times: file.times(), judged: false });
                state.executable =
                    Some(file.meta.len() >= 2 && file.read().is_some_and(|f| hashing::is_executable(&f)));
            }
            let executable = state.executable;
            // A hard link brings content without a write.
            if scanned && hard_link && mask & FAN_CLOSE_WRITE == 0 {
                self.submit(&path, pid, "FILE Created");
            }
            if reported {
                self.emit_file_row("FILE_CREATE", path.clone(), executable, pid);
            }
        }
        if mask & FAN_MODIFY != 0 {
            self.files.entry(key.clone()).written = true;
        }
        if mask & FAN_CLOSE_WRITE != 0 {
            self.closed_after_write(key.clone(), mask, &path, &mut target, pid, reported, scanned, options);
        }
        if mask & FAN_ATTRIB != 0 && reported {
            self.attributes_changed(key.clone(), &path, &mut target, pid, options);
        }
        if mask & FAN_DELETE != 0 {
            let executable = self.files.remove(&key).and_then(|s| s.executable);
            if reported {
                self.emit_file_row("FILE_DELETE", path, executable, pid);
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // One event's parts; a struct would only rename them.
    fn closed_after_write(
        &mut self,
        key: fanotify::FileKey,
        mask: u64,
        path: &str,
        target: &mut Target<'_>,
        pid: u32,
        reported: bool,
        scanned: bool,
        options: &FileOptions,
    ) {
        let state = self.files.entry(key);
        let written = std::mem::take(&mut state.written) || mask & FAN_MODIFY != 0;
        let created = std::mem::take(&mut state.created);
        if !written {
            return;
        }
        let action = if created { "FILE Created" } else { "FILE Modified" };
        let opened = target.regular_file();
        let readable = opened.and_then(Opened::read);
        if let Some(file) = opened {
            state.seen = Some(Seen { times: file.times(), judged: false });
        }
        let executable = readable.as_ref().map(hashing::is_executable);
        if executable.is_some() {
            state.executable = executable;
        }
        let size = opened.map_or(u64::MAX, |o| o.meta.len());
        if scanned && opened.is_some() {
            self.submit(path, pid, action);
        }
        if !reported {
            return;
        }
        let c = self.columns;
        let mut rows = vec![PendingRow {
            event: self.file_row("FILE_WRITE", path.to_string(), executable),
            slots: c.file_hash,
            pid,
            actor: c.file_actor,
        }];
        if executable == Some(true) {
            let mut event = Event::new(c.pe, self.ctx.stamper.stamp());
            event.set(c.pe_action, action);
            event.set(c.pe_path, path);
            rows.push(PendingRow { event, slots: c.pe_hash, pid, actor: c.pe_actor });
        }
        self.hash_and_emit(readable.filter(|_| size <= options.hash_max_bytes), rows);
    }

    fn attributes_changed(
        &mut self,
        key: fanotify::FileKey,
        path: &str,
        target: &mut Target<'_>,
        pid: u32,
        options: &FileOptions,
    ) {
        let Some(file) = target.regular_file() else { return };
        let state = self.files.entry(key);
        let now = file.times();
        let verdict = timestomp(state.seen, now);
        state.seen = Some(Seen { times: now, judged: true });
        let Some(old) = verdict else { return };
        let readable = file.read();
        let executable = readable.as_ref().map(hashing::is_executable);
        let size = file.meta.len();
        let c = self.columns;
        let mut event = Event::new(c.stomp, self.ctx.stamper.stamp());
        event.set(c.stomp_action, "FILE_TIMESTOMP");
        event.set(c.stomp_path, path);
        event.set(c.stomp_old, old.map(Timestamp::to_text).unwrap_or_default());
        event.set(c.stomp_new, now.modified.to_text());
        event.set(c.stomp_pe, executable.map(yes_no));
        let rows = vec![PendingRow { event, slots: c.stomp_hash, pid, actor: c.stomp_actor }];
        self.hash_and_emit(readable.filter(|_| size <= options.hash_max_bytes), rows);
    }

    fn renamed(&mut self, record: &Record<'_>, options: &FileOptions, mounts: &HashMap<Fsid, Arc<File>>) {
        let (Some(from), Some(to)) = (record.renamed_from, record.renamed_to) else { return };
        let (old, new) = match (self.path(from, mounts), self.path(to, mounts)) {
            (Ok(old), Ok(new)) => (old, new),
            (Err(Unresolved::NotWatched), _) | (_, Err(Unresolved::NotWatched)) => return,
            _ => {
                self.unresolved += 1;
                return;
            }
        };
        let reported = options.scope.contains(&old) || options.scope.contains(&new);
        let scanned = self.yara.wants(Path::new(&new));
        if !reported && !scanned {
            return;
        }
        let pid = record.pid.unsigned_abs();
        let mut target = Target { object: record.object, mounts, opened: None };
        let file = target.regular_file();
        let executable = file.and_then(Opened::read).map(|f| hashing::is_executable(&f));
        if scanned && file.is_some() {
            self.submit(&new, pid, "FILE Created");
        }
        if reported {
            self.emit_file_row("FILE_RENAME", format!("{new} [Orig: {old}]"), executable, pid);
        }
    }

    /// Keeps the directory path cache true (a renamed directory changes the paths below it),
    /// and names new directories at once, so that files in a folder created and removed quickly
    /// can still be named after the folder is gone.
    fn directory_changed(&mut self, record: &Record<'_>, mounts: &HashMap<Fsid, Arc<File>>) {
        if record.mask & FAN_RENAME != 0 {
            self.dirs.clear();
            return;
        }
        let Some(object) = record.object else { return };
        if record.mask & FAN_CREATE != 0
            && record.mask & FAN_DELETE == 0
            && let Some(entry) = record.entry
            && let Ok(path) = self.path(entry, mounts)
        {
            self.remember_dir(object.key(), path.into());
        }
        if record.mask & FAN_DELETE != 0 {
            self.dirs.remove(&object.key());
        }
    }

    fn remember_dir(&mut self, key: fanotify::FileKey, path: Arc<str>) {
        if self.dirs.len() >= DIR_PATHS {
            self.dirs.clear();
        }
        self.dirs.insert(key, path);
    }

    /// The path of a directory entry.
    fn path(&mut self, entry: Entry<'_>, mounts: &HashMap<Fsid, Arc<File>>) -> Result<String, Unresolved> {
        let key = entry.dir.key();
        let dir = match self.dirs.get(&key) {
            Some(dir) => Arc::clone(dir),
            None => {
                let mount = mounts.get(&entry.dir.fsid).ok_or(Unresolved::NotWatched)?;
                let dir = entry.dir.open_path(mount.as_fd()).map_err(|_| Unresolved::Gone)?;
                let dir: Arc<str> = path_of(&dir).map_err(|_| Unresolved::Gone)?.into();
                self.remember_dir(key, Arc::clone(&dir));
                dir
            }
        };
        let name = String::from_utf8_lossy(entry.name);
        Ok(if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") })
    }

    fn emit_file_row(&self, action: &str, path: String, executable: Option<bool>, pid: u32) {
        let event = self.file_row(action, path, executable);
        self.emitter.emit(event, pid, self.columns.file_actor);
    }

    /// A `win_file_events` row without its process and hashes (`hashed = 0`).
    fn file_row(&self, action: &str, path: String, executable: Option<bool>) -> Event {
        let c = self.columns;
        let mut event = Event::new(c.file, self.ctx.stamper.stamp());
        event.set(c.file_action, action);
        event.set(c.file_path, path);
        event.set(c.file_hash.hashed, 0i64);
        event.set(c.file_pe, executable.map(yes_no));
        event
    }

    /// Hands `rows` to the hash worker with `file`, or emits them unhashed.
    fn hash_and_emit(&self, file: Option<File>, rows: Vec<PendingRow>) {
        let rows = match file {
            Some(file) => match self.jobs.try_send(HashJob { file, rows }) {
                Ok(()) => return,
                Err(refused) => refused.into_inner().rows,
            },
            None => rows,
        };
        for row in rows {
            row.emit(None, &self.emitter);
        }
    }

    fn submit(&self, path: &str, pid: u32, action: &'static str) {
        // A full scanner queue is the scanner's to count.
        let _ = self.yara.submit(ScanRequest { path: path.into(), pid: Some(pid), action });
    }

    fn report_losses(&mut self) {
        let health = &self.ctx.health;
        if self.overflows > 0 {
            health.add_lost(self.overflows);
            health.record_error(format!(
                "the kernel's fanotify queue overflowed {} time(s): events were lost",
                self.overflows
            ));
        }
        if self.unresolved > 0 {
            // Not counted as lost: most are elsewhere on a marked filesystem (builds removing
            // temporary folders), and which were in scope cannot be told.
            log::debug!(
                "files: {} event(s) dropped: their folder was deleted before its path could be read",
                self.unresolved
            );
        }
        (self.overflows, self.unresolved) = (0, 0);
    }
}
