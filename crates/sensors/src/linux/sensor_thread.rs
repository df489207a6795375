//! The worker thread of a Linux sensor that reads a kernel source in a loop until told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::{SensorHealth, SensorState};

/// A running sensor's thread, the flag it polls, and the health it reports to.
pub(crate) struct SensorThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    health: Arc<SensorHealth>,
}

impl SensorThread {
    pub(crate) fn new(
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
        health: Arc<SensorHealth>,
    ) -> SensorThread {
        SensorThread { stop, thread, health }
    }

    /// Asks the thread to stop, waits for it and marks the sensor stopped; a panic is recorded
    /// as the error of `what` (e.g. "the uevent thread").
    pub(crate) fn stop(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            self.health.record_error(format!("{what} panicked"));
        }
        self.health.set_state(SensorState::Stopped);
    }
}
