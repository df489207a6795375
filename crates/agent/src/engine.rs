//! [`Engine`]: the one [`TableSource`] behind every query, whether it comes from osquery core or
//! from watchpost's own SQL host. Evented tables read the store, snapshot tables ask their
//! source, and `watchpost_status` reports the agent's counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use watchpost_catalog::{
    GenerateError, Op, QueryContext, ReadMode, Row, Table, TableKind, TableSource, Value,
};
use watchpost_sensors::SnapshotTable;
use watchpost_store::{ReadQuery, Store};

use crate::pipeline::PipelineStats;
use crate::status::{self, ErrorSlot, SensorEntry, StatusInputs, unix_now};

pub struct Engine {
    store: Arc<Store>,
    snapshots: HashMap<&'static str, Box<dyn SnapshotTable>>,
    pub(crate) read_mode: ArcSwap<ReadMode>,
    pub(crate) sensors: Mutex<Vec<SensorEntry>>,
    pub(crate) pipeline: Arc<PipelineStats>,
    pub(crate) config_error: Arc<ErrorSlot>,
    config_source: String,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<Store>,
        snapshots: Vec<Box<dyn SnapshotTable>>,
        read_mode: ReadMode,
        pipeline: Arc<PipelineStats>,
        config_error: Arc<ErrorSlot>,
        config_source: String,
    ) -> Engine {
        Engine {
            store,
            snapshots: snapshots.into_iter().map(|s| (s.table(), s)).collect(),
            read_mode: ArcSwap::from_pointee(read_mode),
            sensors: Mutex::new(Vec::new()),
            pipeline,
            config_error,
            config_source,
        }
    }

    /// Hands a new config to the snapshot tables that have settings.
    pub(crate) fn reconfigure_snapshots(&self, config: &watchpost_config::Config) {
        for table in self.snapshots.values() {
            table.reconfigure(config);
        }
    }

    fn read_events(&self, table: &Table, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let mode = **self.read_mode.load();
        let query = ReadQuery::from_context(context, unix_now(), mode)?;
        let consumer = query.consumer.clone();
        let events = self
            .store
            .read(table.id, &query)
            .map_err(|e| GenerateError::Internal(format!("reading {} from the store: {e}", table.name)))?;
        let consumer_slot = table.envelope.map(|e| e.consumer);
        Ok(events
            .into_iter()
            .map(|event| {
                let mut row = event.into_row(table);
                // SQLite re-checks `consumer = 'x'` on every row: echo the name back.
                if let (Some(slot), Some(name)) = (consumer_slot, &consumer) {
                    row[slot] = Value::from(name.as_str());
                }
                row
            })
            .collect())
    }

    fn status_rows(&self) -> Result<Vec<Row>, GenerateError> {
        let store =
            self.store.stats().map_err(|e| GenerateError::Internal(format!("store statistics: {e}")))?;
        let sensors =
            self.sensors.lock().map_err(|_| GenerateError::Internal("sensor list poisoned".into()))?;
        let snapshots: Vec<(&'static str, Result<(), String>)> =
            self.snapshots.iter().map(|(name, source)| (*name, source.availability())).collect();
        Ok(status::rows(&StatusInputs {
            sensors: &sensors,
            snapshots: &snapshots,
            pipeline: &self.pipeline,
            store: &store,
            config_error: self.config_error.get(),
            config_source: &self.config_source,
        }))
    }
}

impl TableSource for Engine {
    fn generate(&self, table: &Table, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let rows = match table.kind {
            TableKind::Evented => return self.read_events(table, context),
            TableKind::Snapshot => match self.snapshots.get(table.name.as_str()) {
                Some(source) => source.generate(context)?,
                None => Vec::new(),
            },
            TableKind::Status => self.status_rows()?,
        };
        Ok(apply_constraints(table, context, rows))
    }
}

/// Computed tables declare INDEX/ADDITIONAL columns so core passes their constraints; honour
/// the comparison ones here, so fewer rows travel back. SQLite re-checks everything anyway, so
/// anything not understood (LIKE, GLOB, a value of the wrong type) keeps the row.
fn apply_constraints(table: &Table, context: &QueryContext, mut rows: Vec<Row>) -> Vec<Row> {
    for constraint in &context.constraints {
        let Some(index) = table.column_index(&constraint.column) else { continue };
        rows.retain(|row| {
            row.get(index).is_none_or(|value| satisfies(value, constraint.op, &constraint.expr))
        });
    }
    rows
}

fn satisfies(value: &Value, op: Op, expr: &str) -> bool {
    let ordering = match value {
        Value::Integer(v) => match expr.trim().parse::<i64>() {
            Ok(wanted) => v.cmp(&wanted),
            Err(_) => return true,
        },
        Value::Text(v) => v.as_str().cmp(expr),
        Value::Double(_) | Value::Null => return true,
    };
    match op {
        Op::Eq => ordering.is_eq(),
        Op::Gt => ordering.is_gt(),
        Op::Ge => ordering.is_ge(),
        Op::Lt => ordering.is_lt(),
        Op::Le => ordering.is_le(),
        _ => true,
    }
}
