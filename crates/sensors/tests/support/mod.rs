//! What the sensor tests (and the packet-parsing bench) share: a sink that keeps every event a
//! sensor emits and reads it back as rows, starting a sensor, a process cache kept current as in
//! the agent, the root check of the tests that need the kernel sources, and a DNS query builder.
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

/// A DNS query for `name` of type `qtype`, class IN.
pub fn dns_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut message = vec![0x77, 0x70, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend(label.as_bytes());
    }
    message.push(0);
    message.extend(qtype.to_be_bytes());
    message.extend(1u16.to_be_bytes());
    message
}
