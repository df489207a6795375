//! The process cache: what is known about each live process (guid, executable path, command
//! line, user, parent), kept current by the `process` sensor from kernel exec/fork/exit events
//! and seeded from `/proc` when it starts. Other sensors (files, network) use it to attribute
//! their events to a process without racing its exit: an exited process stays in the cache for
//! [`EXITED_GRACE`] so late events still find it.
//!
//! [`ProcessCache::shared`] is the one cache of the agent; tests build their own.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use super::process::{list_pids, process_guid, read_stat};
use super::users::UserNames;

/// How long an exited process stays in the cache for late lookups.
pub const EXITED_GRACE: Duration = Duration::from_secs(5);
/// How long another sensor's event waits for the process sensor to put the exec (or fork) it
/// was made under into the cache. An exec record usually wakes the process sensor at once; one
/// queued behind a batched fork record waits for its next read (up to 50 ms). This bounds the
/// wait when the process sensor is further behind.
pub const SETTLE: Duration = Duration::from_millis(150);
/// How often a waiting lookup looks again.
const SETTLE_POLL: Duration = Duration::from_millis(1);

/// How a process became known to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// It was running when the cache was seeded from `/proc`.
    Seeded,
    /// Seen forking from its parent, not (yet) exec'd: path and command line are the parent's.
    Forked,
    /// Seen exec'ing.
    Execed,
    /// Looked up in `/proc` on demand (after the fact; may be incomplete).
    Procfs,
}

/// What is known about one process instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// [`process_guid`] of (pid, start time).
    pub guid: String,
    /// Absolute path of the executable; empty when unknown.
    pub path: String,
    /// argv joined by spaces; empty when unknown.
    pub cmdline: String,
    /// Effective uid.
    pub uid: u32,
    /// User name of `uid` (the uid as text when it has none).
    pub user: String,
    pub parent_pid: u32,
    /// Guid of the parent; empty when unknown.
    pub parent_guid: String,
    pub origin: Origin,
    /// The kernel's `self_exec_id` of the process (one more at every exec, inherited by
    /// fork) when the entry came from a kernel record; `None` when it came from `/proc`.
    pub exec_id: Option<u64>,
}

/// pid -> [`ProcessInfo`] of the live (and recently exited) processes.
#[derive(Debug)]
pub struct ProcessCache {
    proc_root: PathBuf,
    processes: RwLock<HashMap<u32, Arc<ProcessInfo>>>,
    exited: std::sync::Mutex<VecDeque<(Instant, u32, u64)>>,
    users: UserNames,
}

impl Default for ProcessCache {
    fn default() -> ProcessCache {
        ProcessCache::new("/proc", UserNames::default())
    }
}

impl ProcessCache {
    pub fn new(proc_root: impl Into<PathBuf>, users: UserNames) -> ProcessCache {
        ProcessCache {
            proc_root: proc_root.into(),
            processes: RwLock::new(HashMap::new()),
            exited: std::sync::Mutex::new(VecDeque::new()),
            users,
        }
    }

    /// The agent's cache, shared by all sensors.
    pub fn shared() -> Arc<ProcessCache> {
        static SHARED: OnceLock<Arc<ProcessCache>> = OnceLock::new();
        Arc::clone(SHARED.get_or_init(|| Arc::new(ProcessCache::default())))
    }

    /// The user name of `uid`.
    pub fn user_name(&self, uid: u32) -> String {
        self.users.name(uid)
    }

    /// Adds every process under the proc root that the cache does not know yet.
    pub fn seed_from_proc(&self) -> Result<usize, std::io::Error> {
        let mut added = 0;
        for pid in list_pids(&self.proc_root)? {
            if self.get(pid).is_none()
                && let Some(info) = self.read_proc(pid, Origin::Seeded)
            {
                self.insert(info);
                added += 1;
            }
        }
        Ok(added)
    }

    /// What the cache knows of `pid`, if anything.
    pub fn get(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        self.read_lock().get(&pid).cloned()
    }

    /// What the cache knows of `pid`, else what `/proc` says now (then cached).
    pub fn lookup(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        if let Some(info) = self.get(pid) {
            return Some(info);
        }
        let info = self.read_proc(pid, Origin::Procfs)?;
        Some(self.insert(info))
    }

    /// Like [`ProcessCache::lookup`], for a process known to be alive right now (the subject or
    /// target of a syscall being handled): an entry only seen forking is re-read from `/proc`,
    /// because its exec may still be on its way through the process sensor's ring buffer while
    /// this event came through another one.
    pub fn lookup_live(&self, pid: u32) -> Option<Arc<ProcessInfo>> {
        match self.get(pid) {
            Some(info) if info.origin == Origin::Forked => match self.read_proc(pid, Origin::Procfs) {
                Some(fresh) if fresh.start_time == info.start_time => Some(Arc::new(fresh)),
                _ => Some(info),
            },
            Some(info) => Some(info),
            None => self.lookup(pid),
        }
    }

    /// What the cache knows of the instance of `pid` started at `start_time` (clock ticks),
    /// as it was when the kernel's exec count for it was `exec_id` (the low 32 bits of
    /// `self_exec_id`, which other sensors' kernel records carry).
    ///
    /// Those records travel through other ring buffers than the process sensor's, so one can
    /// arrive before the exec (or fork) it was made under is in the cache: a shell's child that
    /// execs `python3`, which is itself a script that execs again, connects before the cache
    /// knows the second exec. Then this takes `/proc` while the process still runs (its image
    /// there is at least as new as the record's), and only for a process already gone waits up
    /// to [`SETTLE`] for the cache to catch up: the caller's thread blocks meanwhile, and the
    /// records queued behind it would find their own short-lived processes gone from `/proc`.
    /// It never answers with an earlier image of the process than the record's: `None` when
    /// nothing better is known. A pid the cache does not know at all is read from `/proc`
    /// without waiting, as the process sensor may not be running.
    pub fn lookup_instance(&self, pid: u32, start_time: u64, exec_id: u32) -> Option<Arc<ProcessInfo>> {
        let current =
            |info: &ProcessInfo| info.start_time == start_time && !exec_is_newer(exec_id, info.exec_id);
        let known = match self.get(pid) {
            Some(info) => info,
            None => return self.lookup(pid).filter(|info| info.start_time == start_time),
        };
        if current(&known) {
            return match known.exec_id {
                Some(_) => Some(known),
                // Without the kernel's count a forked entry may hide an exec: ask `/proc`.
                None => self.lookup_live(pid),
            };
        }
        if let Some(running) =
            self.read_proc(pid, Origin::Procfs).filter(|info| info.start_time == start_time)
        {
            return Some(Arc::new(running));
        }
        if known.exec_id.is_some() {
            let deadline = Instant::now() + SETTLE;
            while Instant::now() < deadline {
                std::thread::sleep(SETTLE_POLL);
                if let Some(info) = self.get(pid).filter(|info| current(info)) {
                    return Some(info);
                }
            }
        }
        None
    }

    /// Puts `info` in force for its pid (replacing an older instance of that pid).
    pub fn insert(&self, info: ProcessInfo) -> Arc<ProcessInfo> {
        let info = Arc::new(info);
        self.write_lock().insert(info.pid, Arc::clone(&info));
        info
    }

    /// Notes that the instance (pid, start time) exited: it is removed after [`EXITED_GRACE`].
    /// Also drops the entries whose grace has passed.
    pub fn mark_exited(&self, pid: u32, start_time: u64) {
        let now = Instant::now();
        let mut exited = self.exited.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        exited.push_back((now, pid, start_time));
        let mut expired = Vec::new();
        while let Some(&(at, pid, start)) = exited.front() {
            if now.duration_since(at) < EXITED_GRACE {
                break;
            }
            expired.push((pid, start));
            exited.pop_front();
        }
        drop(exited);
        if !expired.is_empty() {
            let mut processes = self.write_lock();
            for (pid, start) in expired {
                // The pid may belong to a newer process by now: keep that one.
                if processes.get(&pid).is_some_and(|info| info.start_time == start) {
                    processes.remove(&pid);
                }
            }
        }
    }

    /// Number of processes in the cache (live and recently exited).
    pub fn len(&self) -> usize {
        self.read_lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads what `/proc/PID` says about `pid` now.
    pub fn read_proc(&self, pid: u32, origin: Origin) -> Option<ProcessInfo> {
        let stat = read_stat(&self.proc_root, pid)?;
        let dir = self.proc_root.join(pid.to_string());
        let path = std::fs::read_link(dir.join("exe"))
            .map(|p| strip_deleted(&p.to_string_lossy()).to_string())
            .unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline")).map(|raw| join_args(&raw)).unwrap_or_default();
        let uid =
            std::fs::read_to_string(dir.join("status")).ok().and_then(|s| effective_uid(&s)).unwrap_or(0);
        let parent_guid = read_stat(&self.proc_root, stat.ppid)
            .map(|parent| process_guid(parent.pid, parent.start_time))
            .unwrap_or_default();
        Some(ProcessInfo {
            pid,
            start_time: stat.start_time,
            guid: process_guid(pid, stat.start_time),
            path,
            cmdline,
            uid,
            user: self.users.name(uid),
            parent_pid: stat.ppid,
            parent_guid,
            origin,
            exec_id: None,
        })
    }

    /// The proc root this cache reads (normally `/proc`).
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, Arc<ProcessInfo>>> {
        self.processes.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Arc<ProcessInfo>>> {
        self.processes.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether the exec count `wanted` (low 32 bits, from a kernel record) is later than the
/// `known` one of a cache entry. Unknown counts (entries from `/proc`) are never behind.
fn exec_is_newer(wanted: u32, known: Option<u64>) -> bool {
    // Truncated counts compare by their distance, so a wrap of the low 32 bits is harmless.
    known.is_some_and(|known| (wanted.wrapping_sub(known as u32) as i32) > 0)
}

/// argv as the kernel stores it (NUL-terminated strings) joined by spaces; invalid UTF-8 is
/// replaced by U+FFFD.
pub fn join_args(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    raw.split(|b| *b == 0).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ")
}

/// `/proc/PID/exe` of a deleted file ends in ` (deleted)`.
fn strip_deleted(path: &str) -> &str {
    path.strip_suffix(" (deleted)").unwrap_or(path)
}

/// The effective uid from `/proc/PID/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_joined_by_spaces() {
        assert_eq!(join_args(b"/bin/true\0MARKER\0two words\0"), "/bin/true MARKER two words");
        assert_eq!(join_args(b"no-terminator"), "no-terminator");
        assert_eq!(join_args(b""), "");
    }

    #[test]
    fn own_process_is_seeded_from_proc() {
        let cache = ProcessCache::default();
        assert!(cache.seed_from_proc().unwrap() > 0);
        let own = cache.get(std::process::id()).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(own.path, exe.to_str().unwrap());
        assert!(
            own.cmdline.starts_with(exe.file_name().unwrap().to_str().unwrap()) || own.cmdline.contains('/')
        );
        assert_eq!(own.origin, Origin::Seeded);
        let parent = cache.get(own.parent_pid).unwrap();
        assert_eq!(own.parent_guid, parent.guid);
        assert_ne!(own.guid, parent.guid);
    }

    #[test]
    fn an_exited_process_is_kept_for_late_lookups_and_a_reused_pid_survives() {
        let cache = ProcessCache::new("/nonexistent", UserNames::from_file("/nonexistent"));
        let info = |pid, start_time| ProcessInfo {
            pid,
            start_time,
            guid: process_guid(pid, start_time),
            path: "/usr/bin/true".into(),
            cmdline: "true".into(),
            uid: 0,
            user: "0".into(),
            parent_pid: 1,
            parent_guid: String::new(),
            origin: Origin::Execed,
            exec_id: Some(1),
        };
        cache.insert(info(10, 100));
        cache.insert(info(11, 100));
        cache.mark_exited(10, 100);
        assert_eq!(cache.get(10).unwrap().start_time, 100, "kept during the grace period");
        // Pid 11 is reused before its grace ends: the new instance stays.
        cache.mark_exited(11, 100);
        cache.insert(info(11, 200));
        // Age the queue instead of sleeping.
        for entry in cache.exited.lock().unwrap().iter_mut() {
            entry.0 -= EXITED_GRACE;
        }
        cache.mark_exited(12, 1);
        assert!(cache.get(10).is_none());
        assert_eq!(cache.get(11).unwrap().start_time, 200);
        assert!(cache.lookup(99).is_none(), "nothing under the fake proc root");
    }

    fn image(path: &str, exec_id: u64) -> ProcessInfo {
        ProcessInfo {
            pid: 20,
            start_time: 500,
            guid: process_guid(20, 500),
            path: path.into(),
            cmdline: path.into(),
            uid: 0,
            user: "root".into(),
            parent_pid: 1,
            parent_guid: String::new(),
            origin: Origin::Execed,
            exec_id: Some(exec_id),
        }
    }

    #[test]
    fn a_record_made_under_a_later_exec_waits_for_it_and_never_takes_the_earlier_image() {
        let cache = Arc::new(ProcessCache::new("/nonexistent", UserNames::from_file("/nonexistent")));
        // A shim script: the pid ran bash (exec 5), then execs python (exec 6) and connects.
        cache.insert(image("/usr/bin/bash", 5));
        assert_eq!(cache.lookup_instance(20, 500, 5).unwrap().path, "/usr/bin/bash");

        let late = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                cache.insert(image("/usr/bin/python3", 6));
            })
        };
        let started = Instant::now();
        let found = cache.lookup_instance(20, 500, 6);
        late.join().unwrap();
        assert_eq!(found.unwrap().path, "/usr/bin/python3");
        assert!(started.elapsed() < SETTLE, "answered as soon as the exec arrived");

        // The exec never arrives and /proc has nothing: unknown, not bash.
        cache.insert(image("/usr/bin/bash", 7));
        assert_eq!(cache.lookup_instance(20, 500, 8), None);
        // Another instance of the pid is not this one.
        assert_eq!(cache.lookup_instance(20, 501, 7), None);
    }

    #[test]
    fn a_record_of_a_running_process_under_a_later_exec_takes_proc_at_once() {
        let cache = ProcessCache::default();
        let own = cache.read_proc(std::process::id(), Origin::Procfs).unwrap();
        // The cache still holds the image before our exec (count 5); the record says 6.
        cache.insert(ProcessInfo { path: "/usr/bin/earlier".into(), exec_id: Some(5), ..own.clone() });
        let started = Instant::now();
        let found = cache.lookup_instance(own.pid, own.start_time, 6).unwrap();
        assert_eq!(found.path, own.path);
        assert!(started.elapsed() < SETTLE, "no wait for a process /proc still shows");
    }

    #[test]
    fn exec_counts_compare_across_the_32_bit_wrap() {
        assert!(exec_is_newer(6, Some(5)));
        assert!(!exec_is_newer(5, Some(5)));
        assert!(!exec_is_newer(4, Some(5)));
        assert!(exec_is_newer(0, Some(u64::from(u32::MAX))));
        assert!(exec_is_newer(1, Some(1 << 32)), "only the low 32 bits travel in socket records");
        assert!(!exec_is_newer(9, None), "an entry read from /proc is never behind");
    }
}
