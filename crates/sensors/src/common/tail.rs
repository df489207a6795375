//! The `tail` log sensor behind `win_logger_events` (the original's `win_logger_plugin`): every
//! line appended to a watched file becomes an event with `logger_name`, `logger_watch_file` (the
//! path as configured) and `log_entry` (the line without its `\n` / `\r\n`, non-UTF-8 bytes
//! replaced by U+FFFD). With patterns, only lines that some pattern matches are kept.
//!
//! How it watches: one thread follows all files (see `follow.rs` for rotation and
//! truncation). It polls every [`POLL_INTERVAL`] and is woken earlier by file-system
//! notifications (the `notify` crate on the files' directories) where those work, so lines
//! usually arrive within milliseconds and at worst after one poll interval; the status mode is
//! `notify+poll`, or `poll` when notifications are unavailable.
//!
//! Lines longer than [`MAX_LINE_BYTES`] are emitted cut to that length and counted in the
//! sensor's `lost` figure (the rest of the line is dropped).
//!
//! Only lines appended after [`Sensor::start`] (or, for a file added by
//! [`Sensor::reconfigure`], after that call) are reported; a file that does not exist then is
//! read from its beginning once it appears. Unreadable files are reported through the health
//! (state `degraded`) and retried on every poll while the other files are followed.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use notify::Watcher;
use watchpost_catalog::{Event, Table};

pub use super::follow::MAX_LINE_BYTES;
use super::follow::{FollowError, FollowedFile};
use super::lines::Line;
use crate::{Sensor, SensorContext, SensorError, SensorHealth, SensorState, catalog_table, column_index};
use watchpost_config::{Config, LineMatcher, WatchFile};

/// The safety-net poll period (notifications can be missing: network shares, Wine, overflow).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes read from one file before the others get their turn.
const READ_BUDGET: u64 = 4 * 1024 * 1024;
/// Notifications for a busy file come per write; polls they trigger are spaced at least this much.
const MIN_WAKE_GAP: Duration = Duration::from_millis(10);
/// How often directories that could not be watched (e.g. not created yet) are tried again.
const REWATCH_INTERVAL: Duration = Duration::from_secs(10);

const TABLE: &str = "win_logger_events";
const TABLES: &[&str] = &[TABLE];

/// One configured watch file, with its patterns compiled.
#[derive(Clone, Debug)]
struct WatchSpec {
    logger_name: String,
    path: String,
    matcher: LineMatcher,
}

/// A watch file whose patterns do not compile.
#[derive(Clone, Debug)]
struct BadPattern {
    path: String,
    reason: String,
}

impl From<BadPattern> for SensorError {
    fn from(bad: BadPattern) -> SensorError {
        SensorError::BadPattern { path: bad.path, reason: bad.reason }
    }
}

fn compile(config: &Config) -> Result<Vec<WatchSpec>, BadPattern> {
    config.logger.iter().map(compile_one).collect()
}

fn compile_one(watch: &WatchFile) -> Result<WatchSpec, BadPattern> {
    let matcher = watch
        .matcher()
        .map_err(|error| BadPattern { path: watch.path.clone(), reason: error.to_string() })?;
    Ok(WatchSpec { logger_name: watch.logger_name.clone(), path: watch.path.clone(), matcher })
}

/// The `tail` sensor. Built from the config's `win_logger_plugin` watch files.
pub struct TailSensor {
    /// The config in force, or the first problem with it (reported by `start`).
    specs: Result<Vec<WatchSpec>, BadPattern>,
    running: Option<Running>,
}

struct Running {
    control: Sender<Control>,
    thread: JoinHandle<()>,
    health: Arc<SensorHealth>,
}

enum Control {
    /// New watch files; the worker answers on the channel once their start positions are fixed.
    Reconfigure(Vec<WatchSpec>, Sender<()>),
    Stop,
}

impl TailSensor {
    pub fn from_config(config: &Config) -> TailSensor {
        TailSensor { specs: compile(config), running: None }
    }
}

impl Sensor for TailSensor {
    fn name(&self) -> &'static str {
        "tail"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let specs = self.specs.clone()?;
        let columns = LoggerColumns::resolve()?;
        let (control, control_rx) = crossbeam_channel::unbounded();
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let watcher = DirWatcher::new(wake.clone());
        ctx.health.set_mode(if watcher.is_some() { "notify+poll" } else { "poll" });
        let mut worker = Worker {
            ctx: ctx.clone(),
            columns,
            entries: Vec::new(),
            watcher,
            _wake: wake,
            scratch: vec![0; 64 * 1024],
        };
        // Start positions are fixed here, before `start` returns, so that a line appended right
        // after it is reported.
        worker.apply(specs);
        let thread = std::thread::Builder::new()
            .name("watchpost-tail".into())
            .spawn(move || worker.run(&control_rx, &wake_rx))
            .map_err(|source| SensorError::Spawn { sensor: "tail", source })?;
        self.running = Some(Running { control, thread, health: ctx.health });
        Ok(())
    }

    fn reconfigure(&mut self, config: &Config) -> Result<(), SensorError> {
        let specs = compile(config)?;
        self.specs = Ok(specs.clone());
        let Some(running) = &self.running else { return Ok(()) };
        let (ack, ack_rx) = crossbeam_channel::bounded(1);
        running
            .control
            .send(Control::Reconfigure(specs, ack))
            .map_err(|_| SensorError::ThreadGone { sensor: "tail" })?;
        ack_rx.recv().map_err(|_| SensorError::ThreadGone { sensor: "tail" })
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            // A send error means the thread already ended; joining is all that is left.
            let _ = running.control.send(Control::Stop);
            if running.thread.join().is_err() {
                running.health.record_error("the tail thread panicked");
            }
            running.health.set_state(SensorState::Stopped);
        }
    }
}

impl Drop for TailSensor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Positions of the `win_logger_events` columns.
#[derive(Clone, Copy)]
struct LoggerColumns {
    table: &'static Table,
    logger_name: usize,
    watch_file: usize,
    log_entry: usize,
}

impl LoggerColumns {
    fn resolve() -> Result<LoggerColumns, SensorError> {
        let table = catalog_table(TABLE)?;
        Ok(LoggerColumns {
            table,
            logger_name: column_index(table, TABLE, "logger_name")?,
            watch_file: column_index(table, TABLE, "logger_watch_file")?,
            log_entry: column_index(table, TABLE, "log_entry")?,
        })
    }
}

struct Entry {
    spec: WatchSpec,
    file: FollowedFile,
    /// The error last reported for this file, so a persisting problem is reported once.
    reported: Option<String>,
}

struct Worker {
    ctx: SensorContext,
    columns: LoggerColumns,
    entries: Vec<Entry>,
    watcher: Option<DirWatcher>,
    /// Keeps the wake channel connected when there is no watcher.
    _wake: Sender<()>,
    scratch: Vec<u8>,
}

impl Worker {
    fn run(mut self, control: &Receiver<Control>, wake: &Receiver<()>) {
        let mut last_rewatch = Instant::now();
        loop {
            let round_started = Instant::now();
            let more = self.poll_all();
            if let Some(watcher) = &mut self.watcher
                && last_rewatch.elapsed() >= REWATCH_INTERVAL
            {
                watcher.retry_failed();
                last_rewatch = Instant::now();
            }
            let timeout = if more { Duration::ZERO } else { POLL_INTERVAL };
            select! {
                recv(control) -> message => match message {
                    Ok(Control::Reconfigure(specs, ack)) => {
                        self.apply(specs);
                        // The caller may have given up waiting; nothing to do then.
                        let _ = ack.send(());
                    }
                    Ok(Control::Stop) | Err(_) => break,
                },
                recv(wake) -> _ => {
                    let since = round_started.elapsed();
                    if since < MIN_WAKE_GAP {
                        std::thread::sleep(MIN_WAKE_GAP - since);
                    }
                }
                default(timeout) => {}
            }
        }
    }

    /// Puts `specs` in force. Files already followed (same path) keep their position; new ones
    /// start at their current end.
    fn apply(&mut self, specs: Vec<WatchSpec>) {
        let mut old: Vec<Option<Entry>> = self.entries.drain(..).map(Some).collect();
        for spec in specs {
            let kept = old.iter_mut().find_map(|slot| match slot {
                Some(entry) if entry.spec.path == spec.path => slot.take(),
                _ => None,
            });
            let entry = match kept {
                Some(mut entry) => {
                    entry.spec = spec;
                    entry
                }
                None => {
                    let (file, opened) = FollowedFile::new(&spec.path);
                    let mut entry = Entry { spec, file, reported: None };
                    if let Err(error) = opened {
                        report(&self.ctx.health, &mut entry, error);
                    }
                    entry
                }
            };
            self.entries.push(entry);
        }
        if let Some(watcher) = &mut self.watcher {
            watcher.watch_only(self.entries.iter().map(|e| e.file.path()));
        }
        self.update_state();
    }

    /// One round over all files; true when some file has more to read right away.
    fn poll_all(&mut self) -> bool {
        let mut more = false;
        let Worker { ctx, columns, entries, scratch, .. } = self;
        for entry in entries.iter_mut() {
            let Entry { spec, file, reported } = entry;
            let mut on_line = |line: Line<'_>| emit_line(ctx, columns, spec, line);
            match file.poll(READ_BUDGET, scratch, &mut on_line) {
                Ok(has_more) => {
                    more |= has_more;
                    if reported.take().is_some() {
                        log::info!("sensor tail: {} is readable again", spec.path);
                    }
                }
                Err(error) => report(&ctx.health, entry, error),
            }
        }
        self.update_state();
        more
    }

    fn update_state(&self) {
        let failing: Vec<&str> =
            self.entries.iter().filter(|e| e.reported.is_some()).map(|e| e.spec.path.as_str()).collect();
        self.ctx.health.set_state(if failing.is_empty() {
            SensorState::Running
        } else {
            SensorState::Degraded(format!("cannot read {}", failing.join(", ")))
        });
    }
}

fn report(health: &SensorHealth, entry: &mut Entry, error: FollowError) {
    let message = error.to_string();
    if entry.reported.as_ref() != Some(&message) {
        health.record_error(message.clone());
        entry.reported = Some(message);
    }
}

fn emit_line(ctx: &SensorContext, columns: &LoggerColumns, spec: &WatchSpec, line: Line<'_>) {
    if line.truncated {
        ctx.health.add_lost(1);
    }
    let text = String::from_utf8_lossy(line.bytes);
    if !spec.matcher.keep(&text) {
        return;
    }
    let mut event = Event::new(columns.table, ctx.stamper.stamp());
    event.set(columns.logger_name, spec.logger_name.as_str());
    event.set(columns.watch_file, spec.path.as_str());
    event.set(columns.log_entry, text.into_owned());
    // A false return is a drop the sink has already counted.
    ctx.sink.emit(event);
}

/// Watches the directories of the followed files and wakes the worker when one of the files
/// changes. Directories, not files, so that creation and rotation are seen too.
struct DirWatcher {
    watcher: notify::RecommendedWatcher,
    /// File names (without directory) of the followed files; events for others are ignored.
    names: Arc<Mutex<HashSet<OsString>>>,
    watched: BTreeSet<PathBuf>,
    failed: BTreeSet<PathBuf>,
}

impl DirWatcher {
    fn new(wake: Sender<()>) -> Option<DirWatcher> {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let handler_names = Arc::clone(&names);
        let handler = move |event: notify::Result<notify::Event>| {
            let relevant = match event {
                // Opens and reads, including the sensor's own: waking on them would loop.
                Ok(event) if is_read_access(&event.kind) => false,
                Ok(event) => {
                    let names = handler_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.contains(n)))
                }
                // E.g. an event queue overflow: a poll round sorts it out.
                Err(_) => true,
            };
            if relevant {
                // Full means a wake is already pending.
                let _ = wake.try_send(());
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => {
                Some(DirWatcher { watcher, names, watched: BTreeSet::new(), failed: BTreeSet::new() })
            }
            Err(error) => {
                log::info!("sensor tail: no file notifications ({error}); polling only");
                None
            }
        }
    }

    /// Watches exactly the directories of `files`.
    fn watch_only<'a>(&mut self, files: impl Iterator<Item = &'a Path>) {
        let mut dirs = BTreeSet::new();
        let mut names = HashSet::new();
        for file in files {
            dirs.insert(directory_of(file));
            if let Some(name) = file.file_name() {
                names.insert(name.to_os_string());
            }
        }
        *self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = names;
        for gone in self.watched.difference(&dirs).cloned().collect::<Vec<_>>() {
            // The directory may be gone already, which removed the watch anyway.
            let _ = self.watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        self.failed.clear();
        for dir in dirs {
            if !self.watched.contains(&dir) {
                self.watch(dir);
            }
        }
    }

    fn retry_failed(&mut self) {
        for dir in std::mem::take(&mut self.failed) {
            self.watch(dir);
        }
    }

    fn watch(&mut self, dir: PathBuf) {
        match self.watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(dir);
            }
            // Usually the directory does not exist yet; polling covers the file meanwhile.
            Err(_) => {
                self.failed.insert(dir);
            }
        }
    }
}

fn is_read_access(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, notify::EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use watchpost_catalog::Stamper;

    use super::*;
    use crate::EventSink;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl EventSink for Collect {
        fn emit(&self, event: Event) -> bool {
            let table = catalog_table(TABLE).unwrap();
            let entry = event.values[table.column_index("log_entry").unwrap()].as_str().unwrap().to_string();
            self.0.lock().unwrap().push(entry);
            true
        }
    }

    /// A worker driven by hand (no thread), so the order of reconfigure and polls is exact.
    fn worker(sink: Arc<Collect>) -> Worker {
        let ctx =
            SensorContext { sink, health: Arc::new(SensorHealth::new("tail")), stamper: Stamper::global() };
        Worker {
            ctx,
            columns: LoggerColumns::resolve().unwrap(),
            entries: Vec::new(),
            watcher: None,
            _wake: crossbeam_channel::bounded(1).0,
            scratch: vec![0; 1024],
        }
    }

    fn spec(path: &Path, patterns: &[&str]) -> WatchSpec {
        compile_one(&WatchFile {
            logger_name: "tail".into(),
            path: path.to_str().unwrap().into(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        })
        .unwrap()
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn reconfigure_keeps_unread_lines_of_unchanged_files_and_applies_new_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        append(&a, "history\n");
        append(&b, "b history\n");
        let sink = Arc::new(Collect::default());
        let mut worker = worker(sink.clone());
        worker.apply(vec![spec(&a, &[])]);
        append(&a, "unread when the config changes\n");
        worker.apply(vec![spec(&a, &[]), spec(&b, &[])]);
        append(&b, "b 1\n");
        worker.poll_all();
        assert_eq!(*sink.0.lock().unwrap(), ["unread when the config changes", "b 1"]);

        worker.apply(vec![spec(&a, &["keep.*"])]);
        append(&a, "drop me\nkeep me\n");
        append(&b, "b no longer watched\n");
        worker.poll_all();
        assert_eq!(*sink.0.lock().unwrap(), ["unread when the config changes", "b 1", "keep me"]);
    }

    #[test]
    fn opens_do_not_wake_the_worker_but_writes_do() {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        // The worker opens every followed file each round; waking on opens would make it spin.
        assert!(is_read_access(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(is_read_access(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!is_read_access(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!is_read_access(&EventKind::Modify(ModifyKind::Any)));
        assert!(!is_read_access(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn a_persisting_error_is_recorded_once_and_cleared_when_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("becomes-a-file");
        std::fs::create_dir(&path).unwrap();
        let mut worker = worker(Arc::default());
        worker.apply(vec![spec(&path, &[])]);
        let first = worker.ctx.health.snapshot();
        assert!(first.state.starts_with("degraded"), "{first:?}");
        worker.poll_all();
        worker.poll_all();
        assert_eq!(worker.ctx.health.snapshot().last_error_time, first.last_error_time);
        assert!(worker.entries[0].reported.is_some());

        std::fs::remove_dir(&path).unwrap();
        append(&path, "now a file\n");
        worker.poll_all();
        assert_eq!(worker.ctx.health.snapshot().state, "running");
    }
}
