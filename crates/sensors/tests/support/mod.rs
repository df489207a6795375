//! What the sensor tests share: a sink that keeps every event a sensor emits and reads it back as
//! rows, starting a sensor, a process cache kept current as in the agent, and the root check of
//! the tests that need the kernel sources.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use watchpost_catalog::{Event, Stamper};
#[cfg(target_os = "linux")]
use watchpost_sensors::linux::process_cache::ProcessCache;
#[cfg(target_os = "linux")]
use watchpost_sensors::linux::process_events::{ProcessOptions, ProcessSensor};
use watchpost_sensors::{EventSink, SensorContext, SensorHealth};

/// Keeps every emitted event, in order; tests read `.0`.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<Event>>);

impl EventSink for Collect {
    fn emit(&self, event: Event) -> bool {
        self.0.lock().unwrap().push(event);
        true
    }
}

/// Whether the test runs as root (the kernel sources need it; CI runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// One row as a user reads it: column name -> text ("" for NULL).
pub type Row = std::collections::HashMap<String, String>;

/// The rows of `table` collected so far.
pub fn rows(sink: &Collect, table: &str) -> Vec<Row> {
    let table = watchpost_catalog::catalog().table(table).unwrap();
    let events = sink.0.lock().unwrap();
    events
        .iter()
        .filter(|e| e.table == table.id)
        .map(|e| {
            table
                .columns
                .iter()
                .zip(&e.values)
                .map(|(c, v)| (c.name.to_string(), v.to_text().unwrap_or_default()))
                .collect()
        })
        .collect()
}

/// Starts `sensor` with a fresh sink and a health named `name`, and returns both.
pub fn start(sensor: &mut dyn watchpost_sensors::Sensor, name: &str) -> (Arc<Collect>, Arc<SensorHealth>) {
    let sink = Arc::new(Collect::default());
    let health = Arc::new(SensorHealth::new(name));
    let ctx = SensorContext { sink: sink.clone(), health: health.clone(), stamper: Stamper::global() };
    sensor.start(ctx).unwrap();
    (sink, health)
}

/// A fresh process cache kept current by a running process sensor, as the agent keeps the one
/// every other sensor attributes with; the sensor's own rows go to the returned sink.
#[cfg(target_os = "linux")]
pub fn process_cache() -> (Arc<ProcessCache>, ProcessSensor, Arc<Collect>) {
    let cache = Arc::new(ProcessCache::default());
    let mut sensor = ProcessSensor::new(Arc::clone(&cache), ProcessOptions::default());
    let (sink, _) = start(&mut sensor, "process");
    (cache, sensor, sink)
}
