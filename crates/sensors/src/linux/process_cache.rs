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
}
