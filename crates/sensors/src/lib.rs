//! Sensors: what turns OS activity into catalog events (evented tables) or computes rows when a
//! snapshot table is queried.
//!
//! Data flows one way: sensor -> filter -> store -> query. A [`Sensor`] knows nothing of filters
//! or the store; it delivers [`Event`]s into the [`EventSink`] the agent hands it in a
//! [`SensorContext`], and reports its health through a shared [`SensorHealth`]. A
//! [`SnapshotTable`] computes its rows on demand.
//!
//! Portable sensors and the platform-independent halves of the others (decoders, scorers, data
//! tables) live in `common/`: the log tailer behind `win_logger_events`, MSR decoding, the
//! endpoint-protection product list, PowerShell log parsing and obfuscation scoring, uevent
//! decoding. Platform code lives in `linux/` and `windows/`. On Linux: BPF sensors for process
//! events (`process_events`, with the shared `process_cache` every other sensor attributes
//! with), process access (`process_access`) and sockets, DNS and HTTP (`network`, with packet
//! capture); perf side-band records for image loads (`image_loads`); fanotify for file events,
//! timestomping and new executables (`files`), which feeds the YARA scanner (`yara`); uevents
//! for removable media; and the procfs/devfs snapshot tables. [`platform_sensors`] and
//! [`platform_snapshots`] list what this build offers. User-facing descriptions of each source
//! are in `docs/` (process-telemetry, file-monitoring, yara, network).

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use watchpost_catalog::{Event, GenerateError, QueryContext, Row, Stamper, Table};

pub mod common;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(windows)]
pub mod windows;

pub use common::mem_perf::MemoryStatus;
pub use common::tail::TailSensor;

/// Where sensors deliver events. The agent's implementation applies filters, counts, and queues
/// for the store. `emit` never blocks for long; returns false when the event was dropped (the
/// sink counts it).
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event) -> bool;
}

/// What a sensor is doing, as the status table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SensorState {
    Starting,
    Running,
    /// Running, but some of its work fails (e.g. one watched file is unreadable).
    Degraded(String),
    /// Not producing events at all.
    Failed(String),
    Stopped,
}

impl fmt::Display for SensorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SensorState::Starting => f.write_str("starting"),
            SensorState::Running => f.write_str("running"),
            SensorState::Degraded(reason) => write!(f, "degraded: {reason}"),
            SensorState::Failed(reason) => write!(f, "failed: {reason}"),
            SensorState::Stopped => f.write_str("stopped"),
        }
    }
}

/// A copy of a sensor's health at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// [`SensorState`] as text: `running`, `degraded: REASON`, ...
    pub state: String,
    /// How the sensor gets its data, e.g. `notify+poll`, `procfs`.
    pub mode: String,
    /// Events the sensor itself lost (kernel overruns, oversized lines), not counting sink drops.
    pub lost: u64,
    pub last_error: Option<String>,
    /// Unix seconds of `last_error`.
    pub last_error_time: Option<i64>,
}

/// A sensor's health, shared between the sensor's threads and the status table.
#[derive(Debug)]
pub struct SensorHealth {
    name: String,
    state: Mutex<SensorState>,
    mode: Mutex<String>,
    lost: AtomicU64,
    last_error: Mutex<Option<(i64, String)>>,
}

impl SensorHealth {
    /// Fresh health in state `Starting`; `name` prefixes logged errors.
    pub fn new(name: impl Into<String>) -> SensorHealth {
        SensorHealth {
            name: name.into(),
            state: Mutex::new(SensorState::Starting),
            mode: Mutex::new(String::new()),
            lost: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn set_state(&self, state: SensorState) {
        *lock(&self.state) = state;
    }

    pub fn state(&self) -> SensorState {
        lock(&self.state).clone()
    }

    pub fn set_mode(&self, mode: impl Into<String>) {
        *lock(&self.mode) = mode.into();
    }

    pub fn add_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }

    /// Remembers `message` as the last error (with the current time) and logs it.
    pub fn record_error(&self, message: impl Into<String>) {
        let message = message.into();
        log::warn!("sensor {}: {message}", self.name);
        *lock(&self.last_error) = Some((unix_now(), message));
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let last_error = lock(&self.last_error).clone();
        HealthSnapshot {
            state: self.state().to_string(),
            mode: lock(&self.mode).clone(),
            lost: self.lost.load(Ordering::Relaxed),
            last_error_time: last_error.as_ref().map(|(time, _)| *time),
            last_error: last_error.map(|(_, message)| message),
        }
    }
}

/// Health is diagnostic data: a panic elsewhere while holding the lock must not take the status
/// table down with it, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What a sensor gets when it starts.
#[derive(Clone)]
pub struct SensorContext {
    pub sink: Arc<dyn EventSink>,
    pub health: Arc<SensorHealth>,
    pub stamper: &'static Stamper,
}

/// Why a sensor could not start or take a new config.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("table {0} is missing from the catalog (watchpost build is inconsistent)")]
    UnknownTable(&'static str),
    #[error("table {table} has no column {column} (watchpost build is inconsistent)")]
    MissingColumn { table: &'static str, column: &'static str },
    #[error("watch file {path}: bad file_regex_pattern: {reason}")]
    BadPattern { path: String, reason: String },
    #[error("could not start the {sensor} thread: {source}")]
    Spawn { sensor: &'static str, source: std::io::Error },
    #[error("the {sensor} sensor cannot get its events: {reason}")]
    Source { sensor: &'static str, reason: String },
    #[error("the {sensor} thread has exited; restart the sensor")]
    ThreadGone { sensor: &'static str },
}

/// Something that produces events for evented tables.
pub trait Sensor: Send {
    fn name(&self) -> &'static str;
    /// The evented tables it feeds.
    fn tables(&self) -> &'static [&'static str];
    /// Spawns the sensor's threads and returns quickly.
    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError>;
    /// Puts a new config in force; no events are lost for the parts that did not change.
    fn reconfigure(&mut self, config: &watchpost_config::Config) -> Result<(), SensorError>;
    /// Stops and joins the sensor's threads.
    fn stop(&mut self);
}

/// A table whose rows are computed when it is queried.
pub trait SnapshotTable: Send + Sync {
    fn table(&self) -> &'static str;
    fn generate(&self, context: &QueryContext) -> Result<Vec<Row>, GenerateError>;
    /// Whether the table can produce rows on this host; `Err(reason)` says what is missing
    /// (e.g. a device or a privilege) for the status table. `generate` then returns no rows.
    fn availability(&self) -> Result<(), String> {
        Ok(())
    }
    /// Puts a new config in force (most tables have no settings).
    fn reconfigure(&self, _config: &watchpost_config::Config) {}
}

/// The catalog entry of a table a sensor of this crate serves.
pub(crate) fn catalog_table(name: &'static str) -> Result<&'static Table, SensorError> {
    watchpost_catalog::catalog().table(name).ok_or(SensorError::UnknownTable(name))
}

/// The position of `column` in the catalog table `table_name`.
pub(crate) fn column_index(
    table: &Table,
    table_name: &'static str,
    column: &'static str,
) -> Result<usize, SensorError> {
    table.column_index(column).ok_or(SensorError::MissingColumn { table: table_name, column })
}

/// The catalog entry of snapshot table `table_name` and the positions of `names` in it, for
/// building rows; a missing table or column is a build inconsistency.
pub(crate) fn snapshot_columns<const N: usize>(
    table_name: &'static str,
    names: [&'static str; N],
) -> Result<(&'static Table, [usize; N]), GenerateError> {
    let internal = |e: SensorError| GenerateError::Internal(e.to_string());
    let table = catalog_table(table_name).map_err(internal)?;
    let mut positions = [0; N];
    for (slot, name) in positions.iter_mut().zip(names) {
        *slot = column_index(table, table_name, name).map_err(internal)?;
    }
    Ok((table, positions))
}

/// The sensors this platform has, configured from `config`.
pub fn platform_sensors(config: &watchpost_config::Config) -> Vec<Box<dyn Sensor>> {
    #[allow(unused_mut)] // Only Linux adds more.
    let mut sensors: Vec<Box<dyn Sensor>> = vec![Box::new(TailSensor::from_config(config))];
    #[cfg(target_os = "linux")]
    {
        let yara = linux::yara::YaraSensor::from_config(config);
        let files = linux::files::FileSensor::from_config(config, yara.queue());
        sensors.extend([
            Box::new(linux::removable_media::RemovableMediaSensor::from_config(config)) as Box<dyn Sensor>,
            Box::new(linux::process_events::ProcessSensor::default()),
            Box::new(linux::process_access::ProcessAccessSensor::default()),
            Box::new(linux::image_loads::ImageLoadSensor::from_config(config)),
            // Before the file sensor: on a reload it asks the YARA sensor for its new roots.
            Box::new(yara),
            Box::new(files),
            Box::new(linux::network::NetworkSensor::from_config(config)),
        ]);
    }
    sensors
}

/// The snapshot tables this platform has, configured from `config`.
#[cfg_attr(not(target_os = "linux"), allow(unused_variables))] // Only Linux tables have settings.
pub fn platform_snapshots(config: &watchpost_config::Config) -> Vec<Box<dyn SnapshotTable>> {
    #[allow(unused_mut)] // Only Linux adds more.
    let mut tables: Vec<Box<dyn SnapshotTable>> = vec![Box::new(common::mem_perf::MemPerf)];
    #[cfg(target_os = "linux")]
    tables.extend([
        Box::new(linux::process_handles::ProcessHandles::default()) as Box<dyn SnapshotTable>,
        Box::new(linux::process_perf::ProcessPerf::default()),
        Box::new(linux::msr::MsrTable::default()),
        Box::new(linux::epp::EppTable::default()),
        Box::new(linux::obfuscated_ps::ObfuscatedPs::from_config(config)),
    ]);
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_snapshot_reports_what_was_recorded() {
        let health = SensorHealth::new("test");
        assert_eq!(health.snapshot().state, "starting");
        health.set_state(SensorState::Degraded("one file unreadable".into()));
        health.set_mode("poll");
        health.add_lost(2);
        health.add_lost(3);
        health.record_error("permission denied");
        let snapshot = health.snapshot();
        assert_eq!(snapshot.state, "degraded: one file unreadable");
        assert_eq!(snapshot.mode, "poll");
        assert_eq!(snapshot.lost, 5);
        assert_eq!(snapshot.last_error.as_deref(), Some("permission denied"));
        assert!(snapshot.last_error_time.is_some_and(|t| t > 1_600_000_000));
    }

    #[test]
    fn platform_lists_the_tail_sensor_and_mem_perf() {
        let sensors = platform_sensors(&watchpost_config::Config::default());
        let names: Vec<&str> = sensors.iter().map(|s| s.name()).collect();
        #[cfg(target_os = "linux")]
        assert_eq!(
            names,
            [
                "tail",
                "removable_media",
                "process",
                "process_access",
                "image_loads",
                "yara",
                "files",
                "network"
            ]
        );
        #[cfg(windows)]
        assert_eq!(names, ["tail"]);
        assert_eq!(sensors[0].tables(), ["win_logger_events"]);
        let snapshots = platform_snapshots(&watchpost_config::Config::default());
        let tables: Vec<&str> = snapshots.iter().map(|s| s.table()).collect();
        #[cfg(target_os = "linux")]
        assert_eq!(
            tables,
            [
                "win_mem_perf",
                "win_process_handles",
                "win_process_perf",
                "win_msr",
                "win_epp_table",
                "win_obfuscated_ps"
            ]
        );
        #[cfg(windows)]
        assert_eq!(tables, ["win_mem_perf"]);
    }
}
