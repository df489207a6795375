//! The store on disk: ordering, indexes, limits, read modes, consumers, durability, locking.

use std::ops::Bound;
use std::path::Path;

use watchpost_catalog::{Eid, Event, ReadMode, Stamper, Table, TableId, Value, catalog};
use watchpost_store::{Limits, ReadQuery, Store, StoreError};

const NOW: i64 = 1_700_000_000;

fn process_table() -> &'static Table {
    catalog().table("win_process_events").expect("win_process_events is in the catalog")
}

fn file_table() -> &'static Table {
    catalog().table("win_file_events").expect("win_file_events is in the catalog")
}

/// A process event captured at `time` with a recognizable pid.
fn process_event(stamper: &Stamper, time: i64, pid: i64) -> Event {
    let table = process_table();
    let mut event = Event::new(table, stamper.stamp());
    event.time = time;
    event.set(table.column_index("action").unwrap(), "PROC_CREATE");
    event.set(table.column_index("pid").unwrap(), pid);
    event.set(table.column_index("path").unwrap(), format!("/usr/bin/tool{pid}"));
    event.set(table.column_index("cmdline").unwrap(), format!("tool{pid} --flag \"quoted arg\""));
    event
}

fn file_event(stamper: &Stamper, time: i64) -> Event {
    let table = file_table();
    let mut event = Event::new(table, stamper.stamp());
    event.time = time;
    event
}

fn pids(events: &[Event]) -> Vec<i64> {
    let pid = process_table().column_index("pid").unwrap();
    events.iter().map(|e| e.values[pid].as_i64().unwrap()).collect()
}

fn open(path: &Path) -> Store {
    Store::open(path, Limits::default()).unwrap()
}

fn all(now: i64) -> ReadQuery {
    ReadQuery::all(now)
}

fn process_id() -> TableId {
    process_table().id
}

#[test]
fn store_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn appended_events_read_back_in_insertion_order_with_envelopes_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/events.redb");
    let store = open(&path);
    assert_eq!(store.path(), path);
    let stamper = Stamper::new();
    // Out of time order on purpose: reads follow insertion order, not time order.
    let batch = vec![
        process_event(&stamper, NOW - 5, 1),
        file_event(&stamper, NOW - 4),
        process_event(&stamper, NOW - 9, 2),
        process_event(&stamper, NOW - 1, 3),
    ];
    let report = store.append(&batch).unwrap();
    assert_eq!((report.appended, report.evicted), (4, 0));

    let read = store.read(process_id(), &all(NOW)).unwrap();
    let expected: Vec<Event> = batch.iter().filter(|e| e.table == process_id()).cloned().collect();
    assert_eq!(read, expected);
    let row = read[0].clone().into_row(process_table());
    let envelope = process_table().envelope.unwrap();
    assert_eq!(row[envelope.eid], Value::Text(batch[0].eid.to_string()));
    assert_eq!(row[envelope.time], Value::Integer(NOW - 5));

    assert_eq!(store.read(file_table().id, &all(NOW)).unwrap(), vec![batch[1].clone()]);
    let stats = store.stats().unwrap();
    assert_eq!(stats.len(), 2);
    let process_stats = stats.iter().find(|s| s.table == process_id()).unwrap();
    assert_eq!(process_stats.retained, 3);
    assert_eq!((process_stats.oldest_time, process_stats.newest_time), (Some(NOW - 9), Some(NOW - 1)));
}

#[test]
fn eid_lookups_return_only_the_named_events_of_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("events.redb"));
    let stamper = Stamper::new();
    let events: Vec<Event> = (0..10).map(|i| process_event(&stamper, NOW, i)).collect();
    let other = file_event(&stamper, NOW);
    store.append(&events).unwrap();
    store.append(std::slice::from_ref(&other)).unwrap();

    let query = ReadQuery {
        eids: Some(vec![events[7].eid, events[2].eid, Eid(42), other.eid, events[7].eid]),
        ..all(NOW)
    };
    assert_eq!(pids(&store.read(process_id(), &query).unwrap()), vec![2, 7]);
    let nothing = ReadQuery { eids: Some(vec![]), ..all(NOW) };
    assert!(store.read(process_id(), &nothing).unwrap().is_empty());
    // An eid lookup still respects time constraints.
    let too_late =
        ReadQuery { eids: Some(vec![events[2].eid]), time_lower: Bound::Excluded(NOW), ..all(NOW) };
    assert!(store.read(process_id(), &too_late).unwrap().is_empty());
}

#[test]
fn time_ranges_honour_every_kind_of_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("events.redb"));
    let stamper = Stamper::new();
    // pid == time offset; inserted newest-first so insertion order differs from time order.
    let events: Vec<Event> = (0..10).rev().map(|i| process_event(&stamper, NOW - 100 + i, i)).collect();
    store.append(&events).unwrap();
    let at = |offset: i64| NOW - 100 + offset;
    let cases = [
        (Bound::Included(at(3)), Bound::Included(at(5)), vec![5, 4, 3]),
        (Bound::Excluded(at(3)), Bound::Excluded(at(5)), vec![4]),
        (Bound::Included(at(8)), Bound::Unbounded, vec![9, 8]),
        (Bound::Unbounded, Bound::Excluded(at(2)), vec![1, 0]),
        (Bound::Excluded(at(8)), Bound::Unbounded, vec![9]),
        (Bound::Unbounded, Bound::Included(at(0)), vec![0]),
        (Bound::Included(at(4)), Bound::Included(at(4)), vec![4]),
        (Bound::Excluded(at(4)), Bound::Excluded(at(5)), vec![]),
        (Bound::Excluded(i64::MAX), Bound::Unbounded, vec![]),
        (Bound::Unbounded, Bound::Excluded(i64::MIN), vec![]),
    ];
    for (lower, upper, expected) in cases {
        let query = ReadQuery { time_lower: lower, time_upper: upper, ..all(NOW) };
        assert_eq!(pids(&store.read(process_id(), &query).unwrap()), expected, "{lower:?}..{upper:?}");
    }
    let limited = ReadQuery { time_lower: Bound::Included(at(2)), limit: Some(3), ..all(NOW) };
    assert_eq!(pids(&store.read(process_id(), &limited).unwrap()), vec![9, 8, 7]);
}

#[test]
fn events_max_evicts_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let store = Store::open(&path, Limits { events_max: 3, events_expiry: 3600 }).unwrap();
    let stamper = Stamper::new();
    let events: Vec<Event> = (0..5).map(|i| process_event(&stamper, NOW, i)).collect();
    let report = store.append(&events).unwrap();
    assert_eq!((report.appended, report.evicted), (5, 2));
    assert_eq!(pids(&store.read(process_id(), &all(NOW)).unwrap()), vec![2, 3, 4]);
    // Evicted events are gone from the eid index too.
    let evicted = ReadQuery { eids: Some(vec![events[0].eid]), ..all(NOW) };
    assert!(store.read(process_id(), &evicted).unwrap().is_empty());

    let report = store.append(&[process_event(&stamper, NOW, 5)]).unwrap();
    assert_eq!(report.evicted, 1);
    store.set_limits(Limits { events_max: 10, events_expiry: 3600 });
    assert_eq!(store.limits().events_max, 10);
    let report = store.append(&[process_event(&stamper, NOW, 6)]).unwrap();
    assert_eq!(report.evicted, 0);
    assert_eq!(pids(&store.read(process_id(), &all(NOW)).unwrap()), vec![3, 4, 5, 6]);

    let stats = store.stats().unwrap();
    assert_eq!((stats[0].retained, stats[0].evicted_max), (4, 3));
}

#[test]
fn expiry_hides_then_removes_old_events_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(&dir.path().join("events.redb"), Limits { events_max: 100, events_expiry: 60 }).unwrap();
    let stamper = Stamper::new();
    // Times NOW-100 .. NOW-10 in steps of 10: pids 0..=9.
    let events: Vec<Event> = (0..10).map(|i| process_event(&stamper, NOW - 100 + 10 * i, i)).collect();
    store.append(&events).unwrap();

    // Not yet removed, but never shown: the cut is NOW - 60.
    assert_eq!(pids(&store.read(process_id(), &all(NOW)).unwrap()), vec![4, 5, 6, 7, 8, 9]);
    let old_by_time = ReadQuery { time_upper: Bound::Included(NOW - 90), ..all(NOW) };
    assert!(store.read(process_id(), &old_by_time).unwrap().is_empty());
    let old_by_eid = ReadQuery { eids: Some(vec![events[0].eid]), ..all(NOW) };
    assert!(store.read(process_id(), &old_by_eid).unwrap().is_empty());
    assert_eq!(store.stats().unwrap()[0].retained, 10);

    assert_eq!(store.expire(NOW).unwrap(), 4);
    assert_eq!(store.expire(NOW).unwrap(), 0);
    let stats = store.stats().unwrap();
    assert_eq!((stats[0].retained, stats[0].evicted_expiry), (6, 4));
    assert_eq!(stats[0].oldest_time, Some(NOW - 60));
    // Physically gone: a read with a much older `now` does not bring them back.
    assert_eq!(pids(&store.read(process_id(), &all(NOW - 1000)).unwrap()), vec![4, 5, 6, 7, 8, 9]);
}

#[test]
fn drain_removes_exactly_the_returned_events_and_retain_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("events.redb"));
    let stamper = Stamper::new();
    let events: Vec<Event> = (0..6).map(|i| process_event(&stamper, NOW - 10 + i, i)).collect();
    store.append(&events).unwrap();

    let first = store.read(process_id(), &all(NOW)).unwrap();
    let second = store.read(process_id(), &all(NOW)).unwrap();
    assert_eq!(first, events);
    assert_eq!(second, first);

    let drain_new =
        ReadQuery { mode: ReadMode::Drain, time_lower: Bound::Included(NOW - 7), limit: Some(2), ..all(NOW) };
    assert_eq!(pids(&store.read(process_id(), &drain_new).unwrap()), vec![3, 4]);
    assert_eq!(pids(&store.read(process_id(), &all(NOW)).unwrap()), vec![0, 1, 2, 5]);
    let drained_eid = ReadQuery { eids: Some(vec![events[3].eid]), ..all(NOW) };
    assert!(store.read(process_id(), &drained_eid).unwrap().is_empty());

    let drain_all = ReadQuery { mode: ReadMode::Drain, ..all(NOW) };
    assert_eq!(pids(&store.read(process_id(), &drain_all).unwrap()), vec![0, 1, 2, 5]);
    assert!(store.read(process_id(), &drain_all).unwrap().is_empty());
    let stats = store.stats().unwrap();
    assert_eq!((stats[0].retained, stats[0].drained, stats[0].oldest_time), (0, 6, None));
}

fn as_consumer(name: &str) -> ReadQuery {
    ReadQuery { consumer: Some(name.to_string()), ..all(NOW) }
}

#[test]
fn each_consumer_sees_every_event_once_and_its_cursor_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let stamper = Stamper::new();
    {
        let store = open(&path);
        store.append(&(0..3).map(|i| process_event(&stamper, NOW, i)).collect::<Vec<_>>()).unwrap();
        assert_eq!(pids(&store.read(process_id(), &as_consumer("siem")).unwrap()), vec![0, 1, 2]);
        assert!(store.read(process_id(), &as_consumer("siem")).unwrap().is_empty());
        store.append(&(3..5).map(|i| process_event(&stamper, NOW, i)).collect::<Vec<_>>()).unwrap();
        assert_eq!(pids(&store.read(process_id(), &as_consumer("siem")).unwrap()), vec![3, 4]);
        assert_eq!(pids(&store.read(process_id(), &as_consumer("audit")).unwrap()), vec![0, 1, 2, 3, 4]);
        // Plain reads neither see nor move cursors.
        assert_eq!(pids(&store.read(process_id(), &all(NOW)).unwrap()), vec![0, 1, 2, 3, 4]);
        // Cursors are per table.
        store.append(&[file_event(&stamper, NOW)]).unwrap();
        assert_eq!(store.read(file_table().id, &as_consumer("siem")).unwrap().len(), 1);
        store.append(&[process_event(&stamper, NOW, 5)]).unwrap();
    }
    let store = open(&path);
    assert_eq!(pids(&store.read(process_id(), &as_consumer("siem")).unwrap()), vec![5]);
    assert_eq!(pids(&store.read(process_id(), &as_consumer("audit")).unwrap()), vec![5]);
    assert!(store.read(process_id(), &as_consumer("siem")).unwrap().is_empty());
}

#[test]
fn a_consumer_limit_continues_where_it_stopped_and_filters_skip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("events.redb"));
    let stamper = Stamper::new();
    store.append(&(0..5).map(|i| process_event(&stamper, NOW - 10 + i, i)).collect::<Vec<_>>()).unwrap();
    let paged = ReadQuery { limit: Some(2), ..as_consumer("pager") };
    assert_eq!(pids(&store.read(process_id(), &paged).unwrap()), vec![0, 1]);
    assert_eq!(pids(&store.read(process_id(), &paged).unwrap()), vec![2, 3]);
    assert_eq!(pids(&store.read(process_id(), &paged).unwrap()), vec![4]);
    assert!(store.read(process_id(), &paged).unwrap().is_empty());

    // A filtered consumer read moves the cursor past what the filter excluded (documented).
    let filtered = ReadQuery { time_lower: Bound::Included(NOW - 7), ..as_consumer("filtered") };
    assert_eq!(pids(&store.read(process_id(), &filtered).unwrap()), vec![3, 4]);
    assert!(store.read(process_id(), &as_consumer("filtered")).unwrap().is_empty());
}

#[test]
fn a_drain_by_one_reader_counts_as_missed_for_consumers_that_had_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(&dir.path().join("events.redb"), Limits { events_max: 4, events_expiry: 3600 }).unwrap();
    let stamper = Stamper::new();
    store.append(&(0..2).map(|i| process_event(&stamper, NOW, i)).collect::<Vec<_>>()).unwrap();
    assert_eq!(store.read(process_id(), &as_consumer("fast")).unwrap().len(), 2);
    assert_eq!(store.read(process_id(), &as_consumer("slow")).unwrap().len(), 2);
    // 6 more with room for 4: the 2 read ones and 2 unread ones are evicted.
    store.append(&(2..8).map(|i| process_event(&stamper, NOW, i)).collect::<Vec<_>>()).unwrap();
    assert_eq!(pids(&store.read(process_id(), &as_consumer("fast")).unwrap()), vec![4, 5, 6, 7]);
    // "slow" then loses one more to a drain by a consumer.
    let drain = ReadQuery { mode: ReadMode::Drain, limit: Some(1), ..as_consumer("drainer") };
    assert_eq!(pids(&store.read(process_id(), &drain).unwrap()), vec![4]);
    assert_eq!(pids(&store.read(process_id(), &as_consumer("slow")).unwrap()), vec![5, 6, 7]);

    let missed: Vec<(String, u64)> =
        store.consumers().unwrap().into_iter().map(|c| (c.consumer, c.missed)).collect();
    assert_eq!(
        missed,
        vec![("drainer".to_string(), 0), ("fast".to_string(), 2), ("slow".to_string(), 3)],
        "drainer did not exist before its first read; fast: 2 evicted; slow: 2 evicted + 1 drained"
    );
}

#[test]
fn sequence_numbers_and_counters_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let stamper = Stamper::new();
    let limits = Limits { events_max: 2, events_expiry: 3600 };
    {
        let store = Store::open(&path, limits).unwrap();
        store.append(&(0..3).map(|i| process_event(&stamper, NOW, i)).collect::<Vec<_>>()).unwrap();
        assert_eq!(store.read(process_id(), &as_consumer("siem")).unwrap().len(), 2);
        let drain = ReadQuery { mode: ReadMode::Drain, ..all(NOW) };
        assert_eq!(store.read(process_id(), &drain).unwrap().len(), 2);
    }
    // The table is empty now: if sequence numbers restarted, "siem"'s cursor would hide this.
    let store = Store::open(&path, limits).unwrap();
    store.append(&[process_event(&stamper, NOW, 3)]).unwrap();
    assert_eq!(pids(&store.read(process_id(), &as_consumer("siem")).unwrap()), vec![3]);
    let stats = store.stats().unwrap();
    assert_eq!((stats[0].retained, stats[0].evicted_max, stats[0].drained), (1, 1, 2));
}

#[test]
fn a_second_open_of_the_same_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let store = open(&path);
    let Err(error) = Store::open(&path, Limits::default()) else { panic!("second open succeeded") };
    assert!(matches!(error, StoreError::InUse { .. }));
    let message = error.to_string();
    assert!(message.contains("is in use by another watchpost process"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    drop(store);
    open(&path);
}

#[test]
fn an_unusable_directory_is_reported_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let path = blocker.join("events.redb");
    let Err(error) = Store::open(&path, Limits::default()) else { panic!("opened under a file") };
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error}");
    assert!(error.to_string().contains(&path.display().to_string()));
}

/// Not a test on its own: the child process of `committed_events_survive_sigkill`.
#[test]
#[ignore = "run by committed_events_survive_sigkill"]
fn crash_child_appends_until_killed() {
    use std::io::Write;
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else { return };
    let store = open(Path::new(&path));
    let stamper = Stamper::new();
    let mut committed = 0;
    for _ in 0..100_000 {
        let batch: Vec<Event> = (0..50).map(|i| process_event(&stamper, NOW, committed + i)).collect();
        store.append(&batch).unwrap();
        committed += 50;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "committed {committed}").unwrap();
        stdout.flush().unwrap();
    }
}

const CRASH_CHILD_ENV: &str = "WATCHPOST_STORE_CRASH_CHILD";

#[cfg(unix)]
#[test]
fn committed_events_survive_sigkill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child_appends_until_killed", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last_reported = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(count) = line.unwrap().strip_prefix("committed ") {
            last_reported = count.parse::<i64>().unwrap();
            if last_reported >= 500 {
                break;
            }
        }
    }
    assert!(last_reported >= 500, "the child stopped before committing 500 events");
    child.kill().unwrap(); // SIGKILL: no destructors, no clean close.
    child.wait().unwrap();

    let store = open(&path);
    let events = store.read(process_id(), &all(NOW)).unwrap();
    assert!(events.len() as i64 >= last_reported, "{} < {last_reported}", events.len());
    assert_eq!(pids(&events), (0..events.len() as i64).collect::<Vec<_>>());
    assert_eq!(store.stats().unwrap()[0].retained, events.len() as u64);
}
