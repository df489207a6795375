//! Which image loads become rows (`watchpost.image_load_dedup`), with bounded memory.

use std::collections::{HashMap, HashSet};

use watchpost_config::ImageLoadDedup;

/// The same image: its file identity and the path it was mapped by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageKey {
    pub device: u64,
    pub inode: u64,
    pub path: String,
}

/// More images than this in one process (between execs), or system-wide in `PerImage` mode,
/// and the set starts afresh: a later load may then repeat a row, never lose one.
const MAX_IMAGES: usize = 8192;

#[derive(Debug, Default)]
struct ProcessImages {
    /// The process instance the set belongs to (start time in ticks), when known.
    start_time: Option<u64>,
    seen: HashSet<ImageKey>,
}

/// The loads already reported.
#[derive(Debug, Default)]
pub struct Dedup {
    mode: ImageLoadDedup,
    processes: HashMap<u32, ProcessImages>,
    images: HashSet<ImageKey>,
}

impl Dedup {
    pub fn new(mode: ImageLoadDedup) -> Dedup {
        Dedup { mode, ..Dedup::default() }
    }

    /// Changes the mode; what was remembered under the old one is forgotten.
    pub fn set_mode(&mut self, mode: ImageLoadDedup) {
        if mode != self.mode {
            *self = Dedup::new(mode);
        }
    }

    /// Whether the load of `key` into process `pid` (instance `start_time`) is to be reported,
    /// remembering it.
    pub fn first_load(&mut self, pid: u32, start_time: Option<u64>, key: &ImageKey) -> bool {
        match self.mode {
            ImageLoadDedup::None => true,
            ImageLoadDedup::PerImage => {
                if self.images.contains(key) {
                    return false;
                }
                if self.images.len() >= MAX_IMAGES {
                    self.images.clear();
                }
                self.images.insert(key.clone())
            }
            ImageLoadDedup::PerProcess => {
                let images = self.processes.entry(pid).or_default();
                // Another instance of the pid (its exit was not seen): start afresh.
                if let (Some(known), Some(now)) = (images.start_time, start_time)
                    && known != now
                {
                    images.seen.clear();
                }
                images.start_time = start_time.or(images.start_time);
                if images.seen.contains(key) {
                    return false;
                }
                if images.seen.len() >= MAX_IMAGES {
                    images.seen.clear();
                }
                images.seen.insert(key.clone())
            }
        }
    }

    /// The process replaced its image: its address space is new, so are its loads.
    pub fn exec(&mut self, pid: u32) {
        if let Some(images) = self.processes.get_mut(&pid) {
            images.seen.clear();
        }
    }

    /// The process ended.
    pub fn exit(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Drops the sets of processes `alive` says are gone: exit records can be lost, and a load
    /// attributed late may arrive after its process's exit.
    pub fn prune(&mut self, alive: impl Fn(u32, Option<u64>) -> bool) {
        self.processes.retain(|pid, images| alive(*pid, images.start_time));
    }

    /// Processes with a remembered set.
    #[cfg(test)]
    pub fn tracked_processes(&self) -> usize {
        self.processes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(inode: u64) -> ImageKey {
        ImageKey { device: 1, inode, path: format!("/lib/{inode}.so") }
    }

    #[test]
    fn per_process_reports_once_per_instance_and_exec() {
        let mut dedup = Dedup::new(ImageLoadDedup::PerProcess);
        assert!(dedup.first_load(10, Some(100), &key(1)));
        assert!(!dedup.first_load(10, Some(100), &key(1)), "same process, same image");
        assert!(dedup.first_load(11, Some(100), &key(1)), "another process");
        assert!(dedup.first_load(10, Some(100), &key(2)));
        assert!(dedup.first_load(10, Some(999), &key(1)), "the pid now names another process");
        dedup.exec(10);
        assert!(dedup.first_load(10, Some(999), &key(1)), "a new image after exec");
        dedup.exit(10);
        dedup.exit(11);
        assert_eq!(dedup.tracked_processes(), 0, "exits free the sets");
    }

    #[test]
    fn per_image_reports_once_system_wide_and_none_always() {
        let mut dedup = Dedup::new(ImageLoadDedup::PerImage);
        assert!(dedup.first_load(10, None, &key(1)));
        assert!(!dedup.first_load(11, None, &key(1)));
        dedup.set_mode(ImageLoadDedup::None);
        assert!(dedup.first_load(10, None, &key(1)));
        assert!(dedup.first_load(10, None, &key(1)));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut dedup = Dedup::new(ImageLoadDedup::PerProcess);
        for inode in 0..(MAX_IMAGES as u64 + 10) {
            dedup.first_load(1, None, &key(inode));
        }
        assert!(dedup.processes[&1].seen.len() <= MAX_IMAGES);
        for pid in 10..20 {
            dedup.first_load(pid, Some(5), &key(1));
        }
        dedup.prune(|pid, start_time| pid % 2 == 0 && start_time == Some(5));
        assert_eq!(dedup.tracked_processes(), 5, "pids 10, 12, .. 18 live on");
    }
}
