//! What the sensor remembers per file between events (bounded), and the timestomp rule.
//!
//! Files are identified by their fanotify handle ([`FileKey`]: filesystem id + inode +
//! generation), which is what `(dev, inode)` would be, minus the risk of a reused inode.

use std::collections::HashMap;

use super::fanotify::FileKey;

/// A file time, as stat reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn new(seconds: i64, nanos: i64) -> Timestamp {
        Timestamp { seconds, nanos: u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0) }
    }

    /// RFC 3339 in UTC with nanoseconds: `2001-01-01T00:00:00.000000000Z`.
    pub fn to_text(self) -> String {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
        );
        time::OffsetDateTime::from_unix_timestamp(self.seconds)
            .ok()
            .and_then(|t| t.replace_nanosecond(self.nanos).ok())
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| format!("{}.{:09}", self.seconds, self.nanos))
    }
}

/// A file's modification and status-change times at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileTimes {
    pub modified: Timestamp,
    pub changed: Timestamp,
}

/// The rule behind `win_file_timestomp_events`, applied when fanotify reports an attribute
/// change (FAN_ATTRIB, which says who but not what changed). `seen` is what the sensor saw of
/// the file at its last stat (taken at an earlier event), `now` the file's times now.
///
/// - Seen before the change (the status-change time has moved since): stomped when the
///   modification time went backwards; the old time is the one seen.
/// - Seen exactly so already, and judged by this rule then: nothing new (the change was one the
///   earlier look already covered, e.g. a chmod handled after the `touch -d` that preceded it).
/// - Unknown (never seen, or seen only after the change by a create or write): stomped when the
///   modification time is more than a second before the status-change time *and* has no
///   sub-microsecond part. Setting times explicitly (utimensat, utimes, `touch -d`, `touch -t`)
///   produces that; the kernel's own timestamps carry nanoseconds, so a chmod or chown of an old
///   file, which also leaves mtime far before ctime, does not match. The old time is unknown.
///
/// Returns `None` when not stomped, else `Some(old)`.
pub fn timestomp(seen: Option<Seen>, now: FileTimes) -> Option<Option<Timestamp>> {
    match seen {
        Some(seen) if seen.times.changed != now.changed => {
            (now.modified < seen.times.modified).then_some(Some(seen.times.modified))
        }
        Some(seen) if seen.judged && seen.times == now => None,
        _ => {
            let explicit = now.modified.nanos.is_multiple_of(1_000);
            let long_before = now.modified.seconds.saturating_add(1) < now.changed.seconds
                || (now.modified.seconds.saturating_add(1) == now.changed.seconds
                    && now.modified.nanos < now.changed.nanos);
            (explicit && long_before).then_some(None)
        }
    }
}

/// A file's times at the sensor's last stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub times: FileTimes,
    /// Taken when an attribute change was judged by [`timestomp`] (not at a create or write).
    pub judged: bool,
}

/// What is remembered of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileState {
    /// Times at the last stat the sensor made.
    pub seen: Option<Seen>,
    /// Whether it starts with an executable magic, when last read.
    pub executable: Option<bool>,
    /// Created and not yet closed after writing: the next write is `FILE Created`.
    pub created: bool,
    /// Modified since the last close after writing.
    pub written: bool,
}

/// [`FileState`] by file, at most about twice `capacity` entries: when the current generation
/// is full it becomes the previous one and the older one is forgotten (recently used entries
/// move back into the current generation).
#[derive(Debug)]
pub struct FileStates {
    current: HashMap<FileKey, FileState>,
    previous: HashMap<FileKey, FileState>,
    capacity: usize,
}

impl FileStates {
    pub fn new(capacity: usize) -> FileStates {
        FileStates { current: HashMap::new(), previous: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The state of `key`, created empty when unknown.
    pub fn entry(&mut self, key: FileKey) -> &mut FileState {
        let moved = if self.current.contains_key(&key) {
            None
        } else {
            let state = self.previous.remove(&key).unwrap_or_default();
            if self.current.len() >= self.capacity {
                self.previous = std::mem::take(&mut self.current);
            }
            Some(state)
        };
        self.current.entry(key).or_insert_with(|| moved.unwrap_or_default())
    }

    pub fn get(&self, key: &FileKey) -> Option<&FileState> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    pub fn remove(&mut self, key: &FileKey) -> Option<FileState> {
        let current = self.current.remove(key);
        let previous = self.previous.remove(key);
        current.or(previous)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fanotify::FileId;
    use super::*;

    fn at(seconds: i64, nanos: i64) -> Timestamp {
        Timestamp::new(seconds, nanos)
    }

    fn times(modified: Timestamp, changed: Timestamp) -> FileTimes {
        FileTimes { modified, changed }
    }

    #[test]
    fn a_known_file_is_stomped_when_its_mtime_goes_backwards() {
        let before = times(at(1_700_000_000, 123_456_789), at(1_700_000_000, 123_456_789));
        let seen = |times| Some(Seen { times, judged: false });
        // touch -d 2001-01-01
        let after = times(at(978_307_200, 0), at(1_700_000_100, 5));
        assert_eq!(timestomp(seen(before), after), Some(Some(before.modified)));
        // chmod: mtime unchanged.
        let chmod = times(before.modified, at(1_700_000_100, 5));
        assert_eq!(timestomp(seen(before), chmod), None);
        // Set forward: not stomped.
        let forward = times(at(1_800_000_000, 0), at(1_700_000_100, 5));
        assert_eq!(timestomp(seen(before), forward), None);
    }

    #[test]
    fn an_unknown_file_is_stomped_when_its_mtime_was_set_explicitly_into_the_past() {
        let changed = at(1_700_000_100, 987_654_321);
        assert_eq!(timestomp(None, times(at(978_307_200, 0), changed)), Some(None), "touch -d");
        assert_eq!(timestomp(None, times(at(978_307_200, 250_000_000), changed)), Some(None), "utimes");
        // chmod of an old file: the kernel's mtime has nanoseconds.
        assert_eq!(timestomp(None, times(at(1_600_000_000, 123_456_789), changed)), None);
        // Written within the last second.
        assert_eq!(timestomp(None, times(at(1_700_000_099, 990_000_000), changed)), None);
        // Seen only after the change, at a create or write: the mtime seen is not the old one.
        let late = times(at(978_307_200, 0), changed);
        assert_eq!(timestomp(Some(Seen { times: late, judged: false }), late), Some(None));
        // Already judged in this very state (a chmod handled after the touch that preceded it).
        assert_eq!(timestomp(Some(Seen { times: late, judged: true }), late), None);
    }

    #[test]
    fn timestamps_read_as_rfc3339_utc() {
        assert_eq!(at(978_307_200, 0).to_text(), "2001-01-01T00:00:00.000000000Z");
        assert_eq!(at(1_576_575_204, 5).to_text(), "2019-12-17T09:33:24.000000005Z");
    }

    #[test]
    fn the_state_cache_is_bounded_and_keeps_recent_entries() {
        let key = |n: u32| {
            let handle = n.to_ne_bytes();
            FileId { fsid: [1, 1], handle_type: 1, handle: &handle }.key()
        };
        let mut states = FileStates::new(4);
        states.entry(key(0)).created = true;
        for n in 1..100 {
            states.entry(key(n)).written = true;
            // Key 0 is used all along, so it survives.
            assert!(states.entry(key(0)).created, "at {n}");
            assert!(states.len() <= 8);
        }
        assert!(states.get(&key(1)).is_none(), "old entries are forgotten");
        assert!(states.remove(&key(99)).is_some_and(|s| s.written));
        assert!(states.get(&key(99)).is_none());
    }
}
