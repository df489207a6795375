//! The `image_loads` sensor behind `win_image_load_events` and `win_image_load_process_map` on
//! Linux: every executable file mapping of a process — the main image and the loader mapped by
//! the kernel at exec, the shared libraries ld.so maps, `dlopen`ed modules, any `mmap` with
//! `PROT_EXEC` of a file — with its path, from perf side-band records (`PERF_RECORD_MMAP2` of a
//! dummy software event per CPU, see [`perf`]). Health mode `perf`.
//!
//! Rows: one in each table per reported load. `win_image_load_events`: action `IMAGE_LOAD`,
//! `pid`, `process_guid` (from the shared process cache), `image_path` (the kernel's name for the
//! mapped file, ` (deleted)` appended when it was deleted), `md5` of the file (cached per device,
//! inode, mtime and size; files over `file_hash_max_bytes` get none), `uid` (user name of the
//! process's effective uid), and in place of Authenticode, dpkg's word on the file
//! (`sign_info`, `trust_info`, see [`dpkg::Verdict`]); the certificate columns stay empty.
//! `win_image_load_process_map` adds where: `image_base` (hex start of the executable mapping),
//! `image_size` (its length in bytes) and `image_memory_mode` (its protection, e.g. `r-x`).
//!
//! Which loads are reported is `watchpost.image_load_dedup`: `process` (default) once per process
//! instance and image (device, inode, path) — an exec starts a fresh address space, so the new
//! image's loads are reported again —, `image` once per image system-wide (the original's
//! behaviour), `none` every executable mapping (a library with several executable segments, or
//! one mapped twice, makes several rows). The remembered sets are freed at process exit.
//!
//! Work is split so the ring reader never waits on disk: the reader thread decodes, attributes
//! (process cache lookups while the process still lives) and de-duplicates; a second thread
//! hashes and asks dpkg, through a bounded queue (a full queue counts as lost events).
//!
//! Not covered: mappings made before the sensor started (nothing is read from `/proc/*/maps`),
//! CPUs brought online later, and the agent's own mappings (dropped on purpose).

mod dedup;
pub mod dpkg;
pub mod hashes;
pub mod perf;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use watchpost_catalog::{Event, Stamp, Table};
use watchpost_config::{Config, ImageLoadDedup};

use self::dedup::{Dedup, ImageKey};
use self::dpkg::PackageIndex;
use self::hashes::FileHashes;
use self::perf::{Mapping, SideBand, SideBandRings};
use super::process_cache::{ProcessCache, ProcessInfo};
use super::sensor_thread::SensorThread;
use crate::{Sensor, SensorContext, SensorError, SensorState, catalog_table, column_index};

const NAME: &str = "image_loads";
const EVENTS_TABLE: &str = "win_image_load_events";
const MAP_TABLE: &str = "win_image_load_process_map";
const TABLES: &[&str] = &[EVENTS_TABLE, MAP_TABLE];
/// The longest a record waits in a quiet ring, and a stop request waits to be noticed.
const POLL_MS: i32 = 100;
/// Loads waiting for their hash.
const QUEUE: usize = 4096;
/// How often the de-duplication sets of vanished processes are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// How long a load of a process that is already gone waits for the process sensor to put the
/// process in the cache (it reads its own ring every 100 ms); then it is reported without.
const ATTRIBUTION_WAIT: Duration = Duration::from_secs(1);
/// Loads that may wait for attribution at once; more are reported without.
const MAX_UNATTRIBUTED: usize = 4096;

/// Settings that `reconfigure` changes under the running threads.
struct Settings {
    dedup: Mutex<ImageLoadDedup>,
    hash_max_bytes: AtomicU64,
}

impl Settings {
    fn from_config(config: &Config) -> Settings {
        Settings {
            dedup: Mutex::new(config.sensor_options.image_load_dedup),
            hash_max_bytes: AtomicU64::new(config.sensor_options.file_hash_max_bytes),
        }
    }

    fn apply(&self, config: &Config) {
        *self.dedup.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            config.sensor_options.image_load_dedup;
        self.hash_max_bytes.store(config.sensor_options.file_hash_max_bytes, Ordering::Relaxed);
    }

    fn dedup(&self) -> ImageLoadDedup {
        *self.dedup.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The image load sensor.
pub struct ImageLoadSensor {
    cache: Arc<ProcessCache>,
    settings: Arc<Settings>,
    running: Option<SensorThread>,
}

impl ImageLoadSensor {
    /// A sensor attributing through the agent's shared cache ([`ProcessCache::shared`]).
    pub fn from_config(config: &Config) -> ImageLoadSensor {
        ImageLoadSensor::new(ProcessCache::shared(), config)
    }

    pub fn new(cache: Arc<ProcessCache>, config: &Config) -> ImageLoadSensor {
        ImageLoadSensor { cache, settings: Arc::new(Settings::from_config(config)), running: None }
    }
}

/// A load that passed de-duplication, waiting for its file to be hashed.
struct PendingLoad {
    stamps: (Stamp, Stamp),
    mapping: Mapping,
    guid: Option<String>,
    user: Option<String>,
}

#[derive(Clone, Copy)]
struct Columns {
    events: &'static Table,
    action: usize,
    pid: usize,
    process_guid: usize,
    image_path: usize,
    md5: usize,
    uid: usize,
    sign_info: usize,
    trust_info: usize,
    map: &'static Table,
    map_pid: usize,
    map_process_guid: usize,
    map_image_path: usize,
    map_md5: usize,
    image_base: usize,
    image_size: usize,
    image_memory_mode: usize,
}

impl Columns {
    fn resolve() -> Result<Columns, SensorError> {
        let events = catalog_table(EVENTS_TABLE)?;
        let map = catalog_table(MAP_TABLE)?;
        let event_column = |name| column_index(events, EVENTS_TABLE, name);
        let map_column = |name| column_index(map, MAP_TABLE, name);
        Ok(Columns {
            events,
            action: event_column("action")?,
            pid: event_column("pid")?,
            process_guid: event_column("process_guid")?,
            image_path: event_column("image_path")?,
            md5: event_column("md5")?,
            uid: event_column("uid")?,
            sign_info: event_column("sign_info")?,
            trust_info: event_column("trust_info")?,
            map,
            map_pid: map_column("pid")?,
            map_process_guid: map_column("process_guid")?,
            map_image_path: map_column("image_path")?,
            map_md5: map_column("md5")?,
            image_base: map_column("image_base")?,
            image_size: map_column("image_size")?,
            image_memory_mode: map_column("image_memory_mode")?,
        })
    }
}

/// The ring reader's state.
struct Reader {
    ctx: SensorContext,
    cache: Arc<ProcessCache>,
    settings: Arc<Settings>,
    dedup: Dedup,
    own_pid: u32,
    queue: Sender<PendingLoad>,
    /// Loads dropped because the hashing queue was full, since the last report.
    dropped: u64,
    /// Loads waiting for their process to reach the cache, oldest first.
    unattributed: VecDeque<(Instant, (Stamp, Stamp), Mapping)>,
}

impl Reader {
    fn handle(&mut self, record: SideBand) {
        match record {
            SideBand::Mapped(mapping) => self.mapped(mapping),
            SideBand::Exec { pid } => self.dedup.exec(pid),
            SideBand::Exit { pid, tid } if pid == tid => self.dedup.exit(pid),
            SideBand::Exit { .. } => {}
            SideBand::Lost(count) => {
                self.ctx.health.add_lost(count);
                self.ctx.health.record_error(format!(
                    "the kernel's perf ring was full: {count} side-band records (image loads) lost"
                ));
            }
        }
    }

    fn mapped(&mut self, mapping: Mapping) {
        let executable = mapping.protection & libc::PROT_EXEC as u32 != 0;
        // Pseudo mappings: `[vdso]`, `//anon` (JIT code).
        if mapping.pid == self.own_pid
            || !executable
            || !mapping.path.starts_with('/')
            || mapping.path.starts_with("//")
        {
            return;
        }
        let stamps = (self.ctx.stamper.stamp(), self.ctx.stamper.stamp());
        match self.cache.lookup_live(mapping.pid) {
            Some(process) => self.decide(stamps, mapping, Some(&process)),
            // Gone already, and its exec is still on its way to the cache through the process
            // sensor: wait for it a little.
            None if self.unattributed.len() < MAX_UNATTRIBUTED => {
                self.unattributed.push_back((Instant::now(), stamps, mapping));
            }
            None => self.decide(stamps, mapping, None),
        }
    }

    /// Attributes the loads whose process the cache now knows, or that waited long enough.
    fn retry_unattributed(&mut self) {
        for _ in 0..self.unattributed.len() {
            let Some((since, stamps, mapping)) = self.unattributed.pop_front() else { break };
            match self.cache.get(mapping.pid) {
                Some(process) => self.decide(stamps, mapping, Some(&process)),
                None if since.elapsed() < ATTRIBUTION_WAIT => {
                    self.unattributed.push_back((since, stamps, mapping))
                }
                None => self.decide(stamps, mapping, None),
            }
        }
    }

    /// De-duplicates the load and queues it for hashing.
    fn decide(&mut self, stamps: (Stamp, Stamp), mapping: Mapping, process: Option<&ProcessInfo>) {
        let key = ImageKey { device: mapping.device(), inode: mapping.inode, path: mapping.path.clone() };
        if !self.dedup.first_load(mapping.pid, process.map(|p| p.start_time), &key) {
            return;
        }
        let load = PendingLoad {
            stamps,
            guid: process.map(|p| p.guid.clone()),
            user: process.map(|p| p.user.clone()),
            mapping,
        };
        match self.queue.try_send(load) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            // The hashing thread is gone: the run loop notices and stops.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            self.ctx.health.add_lost(self.dropped);
            self.ctx.health.record_error(format!(
                "{} image loads dropped: the hashing queue was full (slow disk?)",
                self.dropped
            ));
            self.dropped = 0;
        }
    }

    fn run(&mut self, rings: &mut SideBandRings, stop: &AtomicBool) {
        let mut raw = Vec::new();
        let mut batch = Vec::new();
        let mut pruned = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Err(error) = rings.wait_and_drain(POLL_MS, &mut raw) {
                let reason = format!("polling the perf rings failed: {error}");
                self.ctx.health.record_error(reason.clone());
                self.ctx.health.set_state(SensorState::Failed(reason));
                return;
            }
            self.dedup.set_mode(self.settings.dedup());
            // The CPUs' rings are read one after the other: put their records back in time
            // order, so an exit or exec is applied after the mappings that preceded it.
            batch.extend(raw.drain(..).filter_map(|record| perf::decode(&record)));
            batch.sort_by_key(|(time, _)| *time);
            self.retry_unattributed();
            for (_, record) in batch.drain(..) {
                self.handle(record);
            }
            self.report_dropped();
            if pruned.elapsed() > PRUNE_EVERY {
                pruned = Instant::now();
                let cache = Arc::clone(&self.cache);
                self.dedup.prune(|pid, start_time| {
                    let stat = super::process::read_stat(cache.proc_root(), pid);
                    stat.is_some_and(|stat| start_time.is_none_or(|start| start == stat.start_time))
                });
            }
        }
    }
}

/// The hashing thread's state.
struct Enricher {
    ctx: SensorContext,
    columns: Columns,
    settings: Arc<Settings>,
    hashes: FileHashes,
    packages: PackageIndex,
}

impl Enricher {
    fn run(&mut self, queue: &Receiver<PendingLoad>) {
        for load in queue {
            self.emit(load);
        }
    }

    fn emit(&mut self, load: PendingLoad) {
        let PendingLoad { stamps, mapping, guid, user } = load;
        let file_path = mapping.path.strip_suffix(" (deleted)").unwrap_or(&mapping.path);
        let map_file = || {
            let end = mapping.address.saturating_add(mapping.length);
            PathBuf::from(format!("/proc/{}/map_files/{:x}-{end:x}", mapping.pid, mapping.address))
        };
        let max_bytes = self.settings.hash_max_bytes.load(Ordering::Relaxed);
        let md5 = self.hashes.md5(Path::new(file_path), map_file, mapping.device(), mapping.inode, max_bytes);
        let verdict = self.packages.verdict(&mapping.path, md5.as_ref());
        // Lower-case hex, as md5sum prints it.
        let md5 = md5.as_ref().map(hex::encode);
        let c = &self.columns;

        let mut event = Event::new(c.events, stamps.0);
        event.set(c.action, "IMAGE_LOAD");
        event.set(c.pid, mapping.pid);
        event.set(c.process_guid, guid.clone());
        event.set(c.image_path, mapping.path.as_str());
        event.set(c.md5, md5.clone());
        event.set(c.uid, user);
        event.set(c.sign_info, verdict.sign_info());
        event.set(c.trust_info, verdict.trust_info());
        self.ctx.sink.emit(event);

        let mut event = Event::new(c.map, stamps.1);
        event.set(c.map_pid, mapping.pid);
        event.set(c.map_process_guid, guid);
        event.set(c.map_image_path, mapping.path.as_str());
        event.set(c.map_md5, md5);
        event.set(c.image_base, format!("{:#x}", mapping.address));
        event.set(c.image_size, mapping.length.to_string());
        event.set(c.image_memory_mode, mapping.mode());
        self.ctx.sink.emit(event);
    }
}

impl Sensor for ImageLoadSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let columns = Columns::resolve()?;
        let mut rings = SideBandRings::open().map_err(|error| {
            let reason = error.to_string();
            ctx.health.set_state(SensorState::Failed(reason.clone()));
            SensorError::Source { sensor: NAME, reason }
        })?;
        let (queue, pending) = crossbeam_channel::bounded(QUEUE);
        let mut reader = Reader {
            ctx: ctx.clone(),
            cache: Arc::clone(&self.cache),
            settings: Arc::clone(&self.settings),
            dedup: Dedup::new(self.settings.dedup()),
            own_pid: std::process::id(),
            queue,
            dropped: 0,
            unattributed: VecDeque::new(),
        };
        let mut enricher = Enricher {
            ctx: ctx.clone(),
            columns,
            settings: Arc::clone(&self.settings),
            hashes: FileHashes::default(),
            packages: PackageIndex::default(),
        };
        ctx.health.set_mode("perf");
        ctx.health.set_state(SensorState::Running);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("watchpost-imgload".into())
            .spawn(move || {
                std::thread::scope(|scope| {
                    let hashing = std::thread::Builder::new()
                        .name("watchpost-imghash".into())
                        .spawn_scoped(scope, move || enricher.run(&pending));
                    if let Err(error) = hashing {
                        let reason = format!("cannot start the hashing thread: {error}");
                        reader.ctx.health.set_state(SensorState::Failed(reason));
                        return;
                    }
                    reader.run(&mut rings, &flag);
                    // Dropping the reader closes the queue: the hashing thread finishes what is
                    // queued and ends, and the scope joins it.
                    drop(reader);
                });
            })
            .map_err(|source| SensorError::Spawn { sensor: NAME, source })?;
        self.running = Some(SensorThread::new(stop, thread, ctx.health));
        Ok(())
    }

    fn reconfigure(&mut self, config: &Config) -> Result<(), SensorError> {
        self.settings.apply(config);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop("the image load thread");
        }
    }
}

impl Drop for ImageLoadSensor {
    fn drop(&mut self) {
        self.stop();
    }
}
