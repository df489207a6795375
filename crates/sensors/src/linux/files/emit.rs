//! Attributing rows to the acting process, and emitting them.
//!
//! fanotify and the process sensor read separate kernel queues, so a file event of a process
//! that has just exec'd (`cp`, `rm` started by a shell) can be handled before the process
//! sensor has put the exec into the shared cache, which then still shows the forked copy of the
//! shell. Such rows (and rows of processes not in the cache yet) wait up to [`SETTLE`] for the
//! cache to catch up, then take what the cache (or `/proc`) says. Rows keep the stamp of their
//! capture, so a waiting row is still in capture order by `eid` and `time`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use watchpost_catalog::Event;

use super::super::process_cache::{Origin, ProcessCache, ProcessInfo, SETTLE};
use crate::EventSink;

/// Rows waiting at most; beyond, the oldest go out with what is known.
const MAX_WAITING: usize = 10_000;

/// Where a table takes the acting process.
#[derive(Clone, Copy, Debug)]
pub struct ActorColumns {
    pub uid: usize,
    pub pid: usize,
    pub process_guid: usize,
    pub process_name: usize,
}

struct Waiting {
    due: Instant,
    event: Event,
    pid: u32,
    columns: ActorColumns,
}

/// Fills the acting process into rows and hands them to the sink.
pub struct Emitter {
    sink: Arc<dyn EventSink>,
    cache: Arc<ProcessCache>,
    waiting: Mutex<VecDeque<Waiting>>,
}

impl Emitter {
    pub fn new(sink: Arc<dyn EventSink>, cache: Arc<ProcessCache>) -> Emitter {
        Emitter { sink, cache, waiting: Mutex::new(VecDeque::new()) }
    }

    /// Emits `event` as done by `pid`, now if the cache knows the process's image, else after
    /// it settled (see [`Emitter::flush`]).
    pub fn emit(&self, mut event: Event, pid: u32, columns: ActorColumns) {
        match self.cache.get(pid) {
            Some(info) if info.origin != Origin::Forked => {
                fill(&mut event, pid, Some(&info), columns);
                self.sink.emit(event);
            }
            _ => {
                let overflow = {
                    let mut waiting = self.lock();
                    waiting.push_back(Waiting { due: Instant::now() + SETTLE, event, pid, columns });
                    if waiting.len() > MAX_WAITING { waiting.pop_front() } else { None }
                };
                if let Some(row) = overflow {
                    self.settle(row);
                }
            }
        }
    }

    /// Emits the waiting rows whose process the cache now knows, or whose time is up (all of
    /// them when `everything`).
    pub fn flush(&self, everything: bool) {
        let now = Instant::now();
        let ready: VecDeque<Waiting> = {
            let mut waiting = self.lock();
            if waiting.is_empty() {
                return;
            }
            let (ready, rest) = std::mem::take(&mut *waiting).into_iter().partition(|row| {
                everything
                    || row.due <= now
                    || self.cache.get(row.pid).is_some_and(|info| info.origin != Origin::Forked)
            });
            *waiting = rest;
            ready
        };
        for row in ready {
            self.settle(row);
        }
    }

    pub fn is_waiting(&self) -> bool {
        !self.lock().is_empty()
    }

    fn settle(&self, mut row: Waiting) {
        // Still only seen forking: the process may be alive and /proc tell its image.
        let info = self.cache.lookup_live(row.pid);
        fill(&mut row.event, row.pid, info.as_deref(), row.columns);
        self.sink.emit(row.event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn fill(event: &mut Event, pid: u32, info: Option<&ProcessInfo>, columns: ActorColumns) {
    event.set(columns.pid, pid);
    event.set(columns.process_guid, info.map(|i| i.guid.clone()));
    event.set(columns.process_name, info.map(|i| i.path.clone()).filter(|p| !p.is_empty()));
    event.set(columns.uid, info.map(|i| i.user.clone()));
}
