//! The worker thread of a Linux sensor that reads a kernel source in a loop until told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::{SensorError, SensorHealth, SensorState};

/// How a sensor's thread says whether its kernel source could be opened.
pub(crate) type Ready = crossbeam_channel::Sender<Result<(), String>>;

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

    /// Runs `body` on a thread named `name` and waits for it to say on its [`Ready`] channel
    /// whether its source is open. Open: the running thread. Refused: the thread has been
    /// joined and the error is `Some(reason)`; `None` when it ended (or panicked) without saying.
    /// A thread that could not be spawned is the outer error.
    pub(crate) fn spawn_when_ready(
        sensor: &'static str,
        name: &str,
        health: Arc<SensorHealth>,
        body: impl FnOnce(&AtomicBool, &Ready) + Send + 'static,
    ) -> Result<Result<SensorThread, Option<String>>, SensorError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready, ready_rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&flag, &ready))
            .map_err(|source| SensorError::Spawn { sensor, source })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Ok(SensorThread::new(stop, thread, health))),
            outcome => {
                let _ = thread.join();
                Ok(Err(outcome.ok().and_then(Result::err)))
            }
        }
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
