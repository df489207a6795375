//! What the sensor tests share: a sink that keeps every event a sensor emits, and the root check
//! of the tests that need the kernel sources.
#![allow(dead_code)]

use std::sync::Mutex;

use watchpost_catalog::Event;
use watchpost_sensors::EventSink;

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
