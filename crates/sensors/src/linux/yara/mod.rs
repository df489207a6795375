//! The `yara` sensor behind `win_yara_events` on Linux: files created or modified under a YARA
//! category's paths are scanned with the rules of the category's groups (osquery's `yara` and
//! `file_paths` config shape, see `docs/yara.md`), and each category with matching rules
//! becomes a row.
//!
//! The sensor does not watch files itself: the fanotify file sensor (`linux::files`) asks the
//! [`YaraQueue`] which folders matter ([`YaraQueue::roots`]) and which paths are wanted
//! ([`YaraQueue::wants`]), and [`YaraQueue::submit`]s a [`ScanRequest`] for each file created or
//! closed after writing. Requests wait in a bounded queue (`watchpost.yara_queue_len`; overflow
//! is counted as lost) for the worker thread, so scanning never slows the event path. A path
//! already waiting is not queued twice: its one scan reads the newest contents.
//!
//! Rules are compiled with yara-x when the config loads and on every reconfigure; the compiled
//! rules, categories and limits are swapped in at once (queued requests are kept and scanned
//! with the new rules). A rule file that is missing or does not compile is reported with its
//! line (health `last_error`, state `degraded`) and left out; the rest keeps working.
//!
//! The agent never scans in a loop: scanning only reads (fanotify reports no close-after-write
//! for it), and requests for files the agent itself wrote are ignored.

mod config;
mod paths;
mod rules;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use arc_swap::{ArcSwap, ArcSwapOption};
use md5::{Digest, Md5};
use watchpost_catalog::{Event, Table};

pub use config::YaraError;
use config::{CategorySpec, YaraSpec};
pub use paths::{PathPattern, PatternError};
use rules::{RuleGroup, Target};

use crate::{Sensor, SensorContext, SensorError, SensorHealth, SensorState, catalog_table, column_index};

const NAME: &str = "yara";
const TABLE: &str = "win_yara_events";
/// The `action` of a file the file sensor saw created.
pub const FILE_CREATED: &str = "FILE Created";
/// The `action` of an existing file the file sensor saw written.
pub const FILE_MODIFIED: &str = "FILE Modified";

/// A file the file sensor saw created or modified (closed after writing) under a YARA
/// category's paths, to be scanned off the event path.
#[derive(Clone, Debug)]
pub struct ScanRequest {
    pub path: PathBuf,
    /// Acting process, when known. Not a column of `win_yara_events`; requests from the agent's
    /// own process are ignored.
    pub pid: Option<u32>,
    /// `FILE Created` or `FILE Modified`: the `action` of the row.
    pub action: &'static str,
}

/// A config put in force: categories, compiled groups and limits, swapped as one.
struct Setup {
    /// Categories with at least one group that has rules.
    categories: Vec<CategorySpec>,
    groups: BTreeMap<String, RuleGroup>,
    problems: Vec<YaraError>,
    queue_len: usize,
    max_scan_bytes: u64,
}

impl Setup {
    fn build(config: &watchpost_config::Config) -> Setup {
        let options = &config.sensor_options;
        if options.disabled_tables.iter().any(|table| table == "win_yara_events") {
            // Nothing is wanted, so the file sensor queues nothing and no rule is compiled.
            return Setup {
                categories: Vec::new(),
                groups: BTreeMap::new(),
                problems: Vec::new(),
                queue_len: 0,
                max_scan_bytes: options.yara_scan_max_bytes,
            };
        }
        let sections = &config.sections;
        let (spec, mut problems) = YaraSpec::parse(sections.yara.as_ref(), sections.file_paths.as_ref());
        let mut groups = BTreeMap::new();
        for (name, files) in &spec.groups {
            let (group, group_problems) = RuleGroup::compile(name, files);
            problems.extend(group_problems);
            groups.insert(name.clone(), group);
        }
        let categories = spec
            .categories
            .into_iter()
            .filter(|category| {
                category.groups.iter().any(|g| groups.get(g).is_some_and(|group| group.loaded_files > 0))
            })
            .collect();
        Setup {
            categories,
            groups,
            problems,
            queue_len: usize::try_from(options.yara_queue_len).unwrap_or(usize::MAX),
            max_scan_bytes: options.yara_scan_max_bytes,
        }
    }

    fn covering<'s>(&'s self, path: &'s Path) -> impl Iterator<Item = &'s CategorySpec> {
        self.categories.iter().filter(move |c| c.patterns.iter().any(|p| p.matches(path)))
    }

    fn state(&self) -> SensorState {
        if self.problems.is_empty() {
            SensorState::Running
        } else {
            let reasons: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
            SensorState::Degraded(reasons.join("; "))
        }
    }

    fn mode(&self) -> String {
        let rules = self.groups.values().filter(|g| g.loaded_files > 0).count();
        format!("yara-x: {} categories, {rules} rule groups, fed by the files sensor", self.categories.len())
    }
}

/// Requests waiting for the worker, and the paths among them (to queue each path once).
#[derive(Default)]
struct Pending {
    requests: VecDeque<ScanRequest>,
    paths: HashSet<PathBuf>,
    stopping: bool,
}

struct Shared {
    setup: ArcSwap<Setup>,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// The running sensor's health; `None` before the first start.
    health: ArcSwapOption<SensorHealth>,
    /// Requests lost before there was a health to count them in.
    lost_before_start: AtomicU64,
    skipped_for_size: AtomicU64,
    own_pid: u32,
}

impl Shared {
    fn new(setup: Setup) -> Shared {
        Shared {
            setup: ArcSwap::from_pointee(setup),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            health: ArcSwapOption::empty(),
            lost_before_start: AtomicU64::new(0),
            skipped_for_size: AtomicU64::new(0),
            own_pid: std::process::id(),
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves the queue consistent (every change is one step).
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle the file sensor uses to feed the YARA scanner. Cheap to clone. The default
/// handle wants nothing.
#[derive(Clone)]
pub struct YaraQueue {
    shared: Arc<Shared>,
}

impl Default for YaraQueue {
    fn default() -> YaraQueue {
        YaraQueue { shared: Arc::new(Shared::new(Setup::build(&watchpost_config::Config::default()))) }
    }
}

impl fmt::Debug for YaraQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YaraQueue")
            .field("roots", &self.roots())
            .field("waiting", &self.shared.pending().requests.len())
            .finish()
    }
}

impl YaraQueue {
    /// Whether `path` is under some category's `file_paths` (so it should be submitted).
    pub fn wants(&self, path: &Path) -> bool {
        self.shared.setup.load().covering(path).next().is_some()
    }

    /// Queues a file for scanning; false when the queue is full (the scanner counts it lost).
    /// A path already waiting, or a file the agent itself wrote, is accepted and not queued.
    pub fn submit(&self, request: ScanRequest) -> bool {
        let shared = &self.shared;
        if request.pid == Some(shared.own_pid) {
            return true;
        }
        let capacity = shared.setup.load().queue_len;
        let mut pending = shared.pending();
        if pending.paths.contains(&request.path) {
            return true;
        }
        if pending.requests.len() >= capacity {
            drop(pending);
            match shared.health.load().as_ref() {
                Some(health) => health.add_lost(1),
                None => {
                    shared.lost_before_start.fetch_add(1, Ordering::Relaxed);
                }
            }
            return false;
        }
        pending.paths.insert(request.path.clone());
        pending.requests.push_back(request);
        drop(pending);
        shared.wake.notify_one();
        true
    }

    /// The folders the YARA config covers, so the file sensor marks their filesystems: the
    /// literal part of each pattern (`/home` for `/home/%/Downloads`), sorted, without repeats.
    pub fn roots(&self) -> Vec<PathBuf> {
        let setup = self.shared.setup.load();
        let mut roots: Vec<PathBuf> =
            setup.categories.iter().flat_map(|c| c.patterns.iter().map(|p| p.root().to_path_buf())).collect();
        roots.sort();
        roots.dedup();
        roots
    }

    /// Requests waiting for the worker.
    pub fn waiting(&self) -> usize {
        self.shared.pending().requests.len()
    }
}

#[derive(Clone, Copy)]
struct Columns {
    table: &'static Table,
    target_path: usize,
    md5: usize,
    category: usize,
    action: usize,
    matches: usize,
    count: usize,
}

impl Columns {
    fn resolve() -> Result<Columns, SensorError> {
        let table = catalog_table(TABLE)?;
        let at = |column| column_index(table, TABLE, column);
        Ok(Columns {
            table,
            target_path: at("target_path")?,
            md5: at("md5")?,
            category: at("category")?,
            action: at("action")?,
            matches: at("matches")?,
            count: at("count")?,
        })
    }
}

/// Why a file was not scanned.
enum Unscanned {
    TooLarge(u64),
    NotRegular,
    Io(std::io::Error),
}

/// The contents of `path` if it is a regular file of at most `max` bytes. Opened non-blocking
/// so a FIFO put in a file's place cannot stall the worker.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, Unscanned> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(Unscanned::Io)?;
    let metadata = file.metadata().map_err(Unscanned::Io)?;
    if !metadata.is_file() {
        return Err(Unscanned::NotRegular);
    }
    if metadata.len() > max {
        return Err(Unscanned::TooLarge(metadata.len()));
    }
    let mut data = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // One byte over the limit tells a file that grew since `metadata` from one that fits.
    file.take(max.saturating_add(1)).read_to_end(&mut data).map_err(Unscanned::Io)?;
    if data.len() as u64 > max {
        return Err(Unscanned::TooLarge(data.len() as u64));
    }
    Ok(data)
}

struct Worker {
    shared: Arc<Shared>,
    ctx: SensorContext,
    columns: Columns,
}

impl Worker {
    fn run(&self) {
        while let Some(request) = self.next() {
            self.scan(&request);
        }
    }

    /// The next request; `None` when the sensor stops.
    fn next(&self) -> Option<ScanRequest> {
        let mut pending = self.shared.pending();
        loop {
            if pending.stopping {
                return None;
            }
            if let Some(request) = pending.requests.pop_front() {
                // From now on a new write to the path queues a new scan.
                pending.paths.remove(&request.path);
                return Some(request);
            }
            pending = self.shared.wake.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn scan(&self, request: &ScanRequest) {
        let health = &self.ctx.health;
        let setup = self.shared.setup.load_full();
        let path = request.path.as_path();
        let categories: Vec<&CategorySpec> = setup.covering(path).collect();
        if categories.is_empty() {
            // The config changed while it waited.
            return;
        }
        let data = match read_bounded(path, setup.max_scan_bytes) {
            Ok(data) => data,
            Err(Unscanned::TooLarge(size)) => {
                let skipped = self.shared.skipped_for_size.fetch_add(1, Ordering::Relaxed) + 1;
                health.record_error(format!(
                    "not scanned: {} is {size} bytes, over watchpost.yara_scan_max_bytes ({}); \
                     {skipped} files skipped for size so far",
                    path.display(),
                    setup.max_scan_bytes
                ));
                return;
            }
            Err(Unscanned::NotRegular) => return,
            // Short-lived files are often gone before their turn.
            Err(Unscanned::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("yara: {} is gone before its scan", path.display());
                return;
            }
            Err(Unscanned::Io(error)) => {
                health.record_error(format!("cannot read {} to scan it: {error}", path.display()));
                return;
            }
        };
        let md5: String = Md5::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        let target = Target { path, data: &data, md5: &md5 };
        log::debug!("yara: scanning {} ({}, pid {:?})", path.display(), request.action, request.pid);
        let mut hits_by_group: HashMap<&str, Vec<String>> = HashMap::new();
        for category in categories {
            let mut matches: Vec<String> = Vec::new();
            for group_name in &category.groups {
                let hits = hits_by_group.entry(group_name.as_str()).or_insert_with(|| {
                    let Some(group) = setup.groups.get(group_name) else {
                        return Vec::new();
                    };
                    group.scan(&target).unwrap_or_else(|error| {
                        health.record_error(format!(
                            "scanning {} with yara group {group_name}: {error}",
                            path.display()
                        ));
                        Vec::new()
                    })
                });
                for hit in hits.iter() {
                    if !matches.contains(hit) {
                        matches.push(hit.clone());
                    }
                }
            }
            if matches.is_empty() {
                continue;
            }
            let c = &self.columns;
            let mut event = Event::new(c.table, self.ctx.stamper.stamp());
            event.set(c.target_path, path.to_string_lossy().into_owned());
            event.set(c.md5, md5.as_str());
            event.set(c.category, category.name.as_str());
            event.set(c.action, request.action);
            event.set(c.count, matches.len() as u64);
            event.set(c.matches, matches.join(","));
            self.ctx.sink.emit(event);
        }
    }
}

struct Running {
    thread: JoinHandle<()>,
    health: Arc<SensorHealth>,
}

/// The YARA sensor: owns the compiled config and the worker thread.
pub struct YaraSensor {
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl YaraSensor {
    /// Compiles the rules of `config` (problems show in the health once started).
    pub fn from_config(config: &watchpost_config::Config) -> YaraSensor {
        YaraSensor { shared: Arc::new(Shared::new(Setup::build(config))), running: None }
    }

    /// The handle the file sensor feeds.
    pub fn queue(&self) -> YaraQueue {
        YaraQueue { shared: Arc::clone(&self.shared) }
    }

    /// The configuration problems of the config in force (missing or broken rule files, ...).
    pub fn problems(&self) -> Vec<YaraError> {
        self.shared.setup.load().problems.clone()
    }

    fn report(setup: &Setup, health: &SensorHealth) {
        for problem in &setup.problems {
            health.record_error(problem.to_string());
        }
        health.set_mode(setup.mode());
        health.set_state(setup.state());
    }
}

impl Sensor for YaraSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let worker =
            Worker { shared: Arc::clone(&self.shared), ctx: ctx.clone(), columns: Columns::resolve()? };
        let health = Arc::clone(&ctx.health);
        self.shared.health.store(Some(Arc::clone(&health)));
        health.add_lost(self.shared.lost_before_start.swap(0, Ordering::Relaxed));
        self.shared.pending().stopping = false;
        let thread = std::thread::Builder::new()
            .name("watchpost-yara".into())
            .spawn(move || worker.run())
            .map_err(|source| SensorError::Spawn { sensor: NAME, source })?;
        YaraSensor::report(&self.shared.setup.load(), &health);
        self.running = Some(Running { thread, health });
        Ok(())
    }

    fn reconfigure(&mut self, config: &watchpost_config::Config) -> Result<(), SensorError> {
        let setup = Arc::new(Setup::build(config));
        self.shared.setup.store(Arc::clone(&setup));
        if let Some(running) = &self.running {
            YaraSensor::report(&setup, &running.health);
        }
        Ok(())
    }

    fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        self.shared.pending().stopping = true;
        self.shared.wake.notify_all();
        if running.thread.join().is_err() {
            running.health.record_error("the yara scan thread panicked");
        }
        running.health.set_state(SensorState::Stopped);
    }
}

impl Drop for YaraSensor {
    fn drop(&mut self) {
        self.stop();
    }
}
