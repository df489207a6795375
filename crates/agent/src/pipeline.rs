//! The filter stage and the queue to the store writer.
//!
//! Sensors call [`Pipeline::emit`] on their own threads. The current [`FilterSet`] is read with
//! one atomic load per event, so a config reload swaps it atomically: each event is judged by
//! exactly one filter set. Kept events go through a bounded queue to the writer thread, which
//! appends them to the store in batches; a full queue drops the event and counts it as lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use watchpost_catalog::{Event, TableId, catalog};
use watchpost_filters::{FilterSet, Verdict};
use watchpost_sensors::EventSink;
use watchpost_store::Store;

use crate::status::{ErrorSlot, unix_now};

/// Queue between sensors and the store writer: room for a few seconds of a heavy burst.
const QUEUE_CAPACITY: usize = 65_536;
/// The writer commits at least this often: a crash loses at most this much of captured events.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
const MAX_BATCH: usize = 4_096;
/// How long the writer naps between takes while it gathers a batch: at most this many
/// wakeups a second under load; the queue holds far more than arrives in one nap.
const GATHER_NAP: Duration = Duration::from_millis(20);
/// How often expired events are removed from the store.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(10);

/// Per-table counters since start.
#[derive(Default)]
pub struct TableCounters {
    pub captured: AtomicU64,
    pub filtered: AtomicU64,
    pub stored: AtomicU64,
    /// Dropped because the queue was full or the store refused the batch.
    pub lost: AtomicU64,
}

/// What the pipeline and its writer count, shared with the status table.
pub struct PipelineStats {
    tables: Vec<TableCounters>,
    /// Per table id: `watchpost.disabled_tables` names it; its events are not captured.
    disabled: Vec<AtomicBool>,
    pub store_error: ErrorSlot,
    /// Set by [`Writer::finish`]: commit what is queued and stop, even if a sensor still holds
    /// a handle to the pipeline.
    closing: AtomicBool,
}

impl PipelineStats {
    pub fn table(&self, table: TableId) -> &TableCounters {
        &self.tables[usize::from(table.0)]
    }

    pub fn is_disabled(&self, table: TableId) -> bool {
        self.disabled[usize::from(table.0)].load(Ordering::Relaxed)
    }
}

pub struct Pipeline {
    filters: ArcSwap<FilterSet>,
    stats: Arc<PipelineStats>,
    queue: Sender<Event>,
}

impl Pipeline {
    /// Creates the pipeline and starts the writer thread that feeds `store`. The writer stops
    /// once every handle to the pipeline is gone and the queue is empty.
    pub fn start(filters: FilterSet, store: Arc<Store>) -> std::io::Result<(Arc<Pipeline>, Writer)> {
        let (tx, rx) = bounded(QUEUE_CAPACITY);
        let stats = Arc::new(PipelineStats {
            tables: catalog().tables().iter().map(|_| TableCounters::default()).collect(),
            disabled: catalog().tables().iter().map(|_| AtomicBool::new(false)).collect(),
            store_error: ErrorSlot::default(),
            closing: AtomicBool::new(false),
        });
        let writer_stats = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&rx, &store, &writer_stats))?;
        let writer = Writer { handle, stats: Arc::clone(&stats) };
        let pipeline = Arc::new(Pipeline { filters: ArcSwap::from_pointee(filters), stats, queue: tx });
        Ok((pipeline, writer))
    }

    /// Puts a new filter set in force for every event judged from now on.
    pub fn swap_filters(&self, filters: FilterSet) {
        self.filters.store(Arc::new(filters));
    }

    /// Stops capturing the events of the tables named (table names the catalog does not know
    /// are ignored: the config has validated them) and resumes all others.
    pub fn set_disabled_tables(&self, names: &[String]) {
        for table in catalog().tables() {
            let disabled = names.contains(&table.name);
            self.stats.disabled[usize::from(table.id.0)].store(disabled, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }
}

impl EventSink for Pipeline {
    fn emit(&self, event: Event) -> bool {
        // A sensor with several tables keeps running while some of them are disabled.
        if self.stats.is_disabled(event.table) {
            return true;
        }
        let counters = self.stats.table(event.table);
        counters.captured.fetch_add(1, Ordering::Relaxed);
        if self.filters.load().judge(&event) == Verdict::Drop {
            counters.filtered.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        match self.queue.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                counters.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The store writer thread.
pub struct Writer {
    handle: JoinHandle<()>,
    stats: Arc<PipelineStats>,
}

impl Writer {
    /// Commits everything queued so far and stops the writer. Stop the sensors first: events
    /// emitted after this are not stored.
    pub fn finish(self) {
        self.stats.closing.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
    }
}

fn write_loop(rx: &Receiver<Event>, store: &Store, stats: &PipelineStats) {
    let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
    let mut last_expire = Instant::now();
    let mut open = true;
    while open {
        // Block for the first event of a batch (or the interval, for expiry and closing)...
        match rx.recv_timeout(COMMIT_INTERVAL) {
            Ok(event) => batch.push(event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        // ...then gather the rest of it in naps rather than being woken for every event: under
        // load a wakeup per event cost more CPU than storing the event.
        let deadline = Instant::now() + COMMIT_INTERVAL;
        while open && !batch.is_empty() && batch.len() < MAX_BATCH {
            batch.extend(rx.try_iter().take(MAX_BATCH - batch.len()));
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.len() >= MAX_BATCH || left.is_zero() || stats.closing.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(left.min(GATHER_NAP));
        }
        if !batch.is_empty() {
            commit(store, stats, &mut batch);
        }
        if stats.closing.load(Ordering::SeqCst) && rx.is_empty() {
            open = false;
        }
        if last_expire.elapsed() >= EXPIRE_INTERVAL {
            last_expire = Instant::now();
            if let Err(e) = store.expire(unix_now()) {
                stats.store_error.record(format!("expiring events: {e}"));
            }
        }
    }
}

fn commit(store: &Store, stats: &PipelineStats, batch: &mut Vec<Event>) {
    match store.append(batch) {
        Ok(_) => {
            for event in batch.iter() {
                stats.table(event.table).stored.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(e) => {
            for event in batch.iter() {
                stats.table(event.table).lost.fetch_add(1, Ordering::Relaxed);
            }
            stats.store_error.record(format!("appending {} events: {e}", batch.len()));
        }
    }
    batch.clear();
}
