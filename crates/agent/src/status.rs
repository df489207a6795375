//! The `watchpost_status` table: one row per sensor and table, plus rows for the config and the
//! store, so an operator sees at a glance what runs, what was dropped and why.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use watchpost_catalog::{Platform, Row, TableKind, Value, catalog};
use watchpost_sensors::SensorHealth;
use watchpost_store::TableStats;

use crate::pipeline::PipelineStats;

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The last error of a component, with when it happened.
#[derive(Default)]
pub struct ErrorSlot(Mutex<Option<(i64, String)>>);

impl ErrorSlot {
    /// Keeps `message` as the last error; logs it unless it repeats the previous one (a
    /// config that stays broken is retried every few seconds).
    pub fn record(&self, message: String) {
        let Ok(mut slot) = self.0.lock() else { return };
        if slot.as_ref().is_none_or(|(_, previous)| *previous != message) {
            log::error!("{message}");
        }
        *slot = Some((unix_now(), message));
    }

    pub fn clear(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    pub fn get(&self) -> Option<(i64, String)> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// A running sensor as the status table sees it.
pub struct SensorEntry {
    pub name: &'static str,
    pub tables: &'static [&'static str],
    pub health: std::sync::Arc<SensorHealth>,
}

/// Everything the status rows are computed from.
pub struct StatusInputs<'a> {
    pub sensors: &'a [SensorEntry],
    /// Snapshot tables with a source on this platform, and whether it can answer here.
    pub snapshots: &'a [(&'static str, Result<(), String>)],
    pub pipeline: &'a PipelineStats,
    pub store: &'a [TableStats],
    pub config_error: Option<(i64, String)>,
    pub config_source: &'a str,
}

struct StatusRow {
    sensor: String,
    table: String,
    state: String,
    mode: String,
    captured: u64,
    filtered: u64,
    stored: u64,
    evicted: u64,
    lost: u64,
    retained: u64,
    error: Option<(i64, String)>,
}

impl StatusRow {
    fn new(sensor: &str, table: &str, state: &str, mode: &str) -> StatusRow {
        StatusRow {
            sensor: sensor.to_string(),
            table: table.to_string(),
            state: state.to_string(),
            mode: mode.to_string(),
            captured: 0,
            filtered: 0,
            stored: 0,
            evicted: 0,
            lost: 0,
            retained: 0,
            error: None,
        }
    }

    fn into_row(self) -> Row {
        let (error_time, error) = self.error.map_or((0, String::new()), |(t, m)| (t, m));
        vec![
            Value::from(self.sensor),
            Value::from(self.table),
            Value::from(self.state),
            Value::from(self.mode),
            Value::from(self.captured),
            Value::from(self.filtered),
            Value::from(self.stored),
            Value::from(self.evicted),
            Value::from(self.lost),
            Value::from(self.retained),
            Value::from(error),
            Value::from(error_time),
        ]
    }
}

pub fn rows(inputs: &StatusInputs<'_>) -> Vec<Row> {
    let platform = Platform::current();
    let mut rows = Vec::new();
    let mut config = StatusRow::new(
        "config",
        "",
        if inputs.config_error.is_some() { "error" } else { "ok" },
        inputs.config_source,
    );
    config.error = inputs.config_error.clone();
    rows.push(config);

    let mut store_row = StatusRow::new("store", "", "running", "");
    store_row.error = inputs.pipeline.store_error.get();
    if store_row.error.is_some() {
        store_row.state = "degraded".into();
    }
    for table in catalog().for_platform(platform) {
        match table.kind {
            TableKind::Evented => {
                let counters = inputs.pipeline.table(table.id);
                let stats = inputs.store.iter().find(|s| s.table == table.id);
                let sensor = inputs.sensors.iter().find(|s| s.tables.contains(&table.name.as_str()));
                let mut row = match sensor {
                    Some(sensor) => {
                        let health = sensor.health.snapshot();
                        let mut row = StatusRow::new(sensor.name, &table.name, &health.state, &health.mode);
                        row.lost = health.lost;
                        row.error =
                            health.last_error.map(|m| (health.last_error_time.unwrap_or_default(), m));
                        row
                    }
                    None => {
                        StatusRow::new("", &table.name, "not_available", "no sensor on this platform yet")
                    }
                };
                if inputs.pipeline.is_disabled(table.id) {
                    row.state = "disabled".into();
                    row.mode = "watchpost.disabled_tables".into();
                }
                row.captured = counters.captured.load(Ordering::Relaxed);
                row.filtered = counters.filtered.load(Ordering::Relaxed);
                row.stored = counters.stored.load(Ordering::Relaxed);
                row.lost += counters.lost.load(Ordering::Relaxed);
                if let Some(stats) = stats {
                    row.evicted = stats.evicted_max + stats.evicted_expiry;
                    row.retained = stats.retained;
                }
                store_row.captured += row.captured;
                store_row.filtered += row.filtered;
                store_row.stored += row.stored;
                store_row.evicted += row.evicted;
                store_row.retained += row.retained;
                store_row.lost += counters.lost.load(Ordering::Relaxed);
                rows.push(row);
            }
            TableKind::Snapshot => {
                let source = inputs.snapshots.iter().find(|(name, _)| *name == table.name);
                let row = match source {
                    Some((_, Ok(()))) => {
                        StatusRow::new("snapshot", &table.name, "available", "computed at query time")
                    }
                    Some((_, Err(reason))) => {
                        let mut row = StatusRow::new(
                            "snapshot",
                            &table.name,
                            "not_available",
                            "computed at query time",
                        );
                        row.error = Some((0, reason.clone()));
                        row
                    }
                    None => StatusRow::new(
                        "snapshot",
                        &table.name,
                        "not_available",
                        "no source on this platform yet",
                    ),
                };
                rows.push(row);
            }
            TableKind::Status => {}
        }
    }
    rows.insert(1, store_row);
    rows.into_iter().map(StatusRow::into_row).collect()
}
