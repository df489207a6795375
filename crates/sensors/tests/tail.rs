//! The tail sensor end to end: real files in a temporary directory, the sensor's own thread, and
//! an in-memory sink. Waits use a deadline; nothing asserts on timing.

mod support;
use support::Collect;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_catalog::{Event, Stamper, Table, catalog};
use watchpost_config::{Config, WatchFile};
use watchpost_sensors::{Sensor, SensorContext, SensorHealth, TailSensor};

const DEADLINE: Duration = Duration::from_secs(20);

/// One event as a user sees it: (logger_name, logger_watch_file, log_entry).
type Row = (String, String, String);

struct Harness {
    sink: Arc<Collect>,
    health: Arc<SensorHealth>,
    sensor: TailSensor,
}

fn table() -> &'static Table {
    catalog().table("win_logger_events").unwrap()
}

fn watch(path: &Path, patterns: &[&str]) -> WatchFile {
    WatchFile {
        logger_name: "tail".to_string(),
        path: path.to_str().unwrap().to_string(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
    }
}

fn config(watches: Vec<WatchFile>) -> Config {
    Config { logger: watches, ..Config::default() }
}

fn row(event: &Event) -> Row {
    let table = table();
    let text = |column: &str| event.values[table.column_index(column).unwrap()].as_str().unwrap().to_string();
    (text("logger_name"), text("logger_watch_file"), text("log_entry"))
}

impl Harness {
    fn start(watches: Vec<WatchFile>) -> Harness {
        let sink = Arc::new(Collect::default());
        let health = Arc::new(SensorHealth::new("tail"));
        let mut sensor = TailSensor::from_config(&config(watches));
        let ctx = SensorContext { sink: sink.clone(), health: health.clone(), stamper: Stamper::global() };
        sensor.start(ctx).unwrap();
        Harness { sink, health, sensor }
    }

    fn events(&self) -> Vec<Event> {
        self.sink.0.lock().unwrap().clone()
    }

    fn entries(&self) -> Vec<String> {
        self.events().iter().map(|e| row(e).2).collect()
    }

    /// Waits until an event with `entry` arrived; returns all entries so far.
    fn wait_for(&self, entry: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let entries = self.entries();
            if entries.iter().any(|e| e == entry) {
                return entries;
            }
            assert!(start.elapsed() < DEADLINE, "no {entry:?} within {DEADLINE:?}; got {entries:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_until(&self, what: &str, condition: impl Fn(&Harness) -> bool) {
        let start = Instant::now();
        while !condition(self) {
            assert!(start.elapsed() < DEADLINE, "not within {DEADLINE:?}: {what}; got {:?}", self.entries());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn append(path: &Path, text: impl AsRef<[u8]>) {
    let mut file = OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(text.as_ref()).unwrap();
}

fn temp_files(names: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = names.iter().map(|n| dir.path().join(n)).collect();
    (dir, paths)
}

#[test]
fn appended_lines_are_reported_in_order_with_all_columns_and_a_stamp() {
    let (_dir, paths) = temp_files(&["tail.txt"]);
    append(&paths[0], "written before start\n");
    let mut harness = Harness::start(vec![watch(&paths[0], &[])]);
    append(&paths[0], "hellotail 1\nhellotail 2\n");
    append(&paths[0], "hellotail 3\n");
    harness.wait_for("hellotail 3");

    let events = harness.events();
    let path = paths[0].to_str().unwrap().to_string();
    let rows: Vec<Row> = events.iter().map(row).collect();
    assert_eq!(
        rows,
        ["hellotail 1", "hellotail 2", "hellotail 3"].map(|entry| (
            "tail".to_string(),
            path.clone(),
            entry.to_string()
        ))
    );
    for event in &events {
        assert_eq!(event.table, table().id);
        assert!(event.time > 1_600_000_000);
    }
    assert!(events.windows(2).all(|pair| pair[0].eid < pair[1].eid), "eids unique and in capture order");
    assert_eq!(harness.health.snapshot().state, "running");
    assert!(["notify+poll", "poll"].contains(&harness.health.snapshot().mode.as_str()));

    harness.sensor.stop();
    assert_eq!(harness.health.snapshot().state, "stopped");
}

#[test]
fn the_seed_patterns_keep_only_matching_lines() {
    let (_dir, paths) = temp_files(&["tail2.txt"]);
    let harness = Harness::start(vec![watch(
        &paths[0],
        &[r"(.*) (\d+): \[([^\]]+)\] (.*)", r"((.|\r\n)*)(secret2)(.*)"],
    )]);
    append(&paths[0], "no match here\n");
    append(&paths[0], "Dec 17 42: [main] service started\n");
    append(&paths[0], "the secret2 is out\r\n");
    append(&paths[0], "42: [main] missing the leading field\n");
    append(&paths[0], "secret2\n");
    let entries = harness.wait_for("secret2");
    assert_eq!(entries, ["Dec 17 42: [main] service started", "the secret2 is out", "secret2"]);
}

#[test]
fn two_files_each_with_its_own_patterns() {
    let (_dir, paths) = temp_files(&["tail.txt", "tail2.txt"]);
    let harness =
        Harness::start(vec![watch(&paths[0], &[]), watch(&paths[1], &[r"((.|\r\n)*)(secret2)(.*)"])]);
    append(&paths[0], "hellotail 1\n");
    append(&paths[1], "public\nsecret2\n");
    append(&paths[0], "hellotail 2\n");
    harness.wait_until("both files read", |h| h.entries().len() >= 3);
    let mut rows: Vec<Row> = harness.events().iter().map(row).collect();
    rows.sort();
    let file = |i: usize| paths[i].to_str().unwrap().to_string();
    assert_eq!(
        rows,
        [
            ("tail".to_string(), file(0), "hellotail 1".to_string()),
            ("tail".to_string(), file(0), "hellotail 2".to_string()),
            ("tail".to_string(), file(1), "secret2".to_string()),
        ]
    );
}

#[test]
fn rotation_by_rename_loses_nothing() {
    let (dir, paths) = temp_files(&["app.log"]);
    let rotated = dir.path().join("app.log.1");
    append(&paths[0], "");
    let harness = Harness::start(vec![watch(&paths[0], &[])]);
    append(&paths[0], "old 1\n");
    harness.wait_for("old 1");
    fs::rename(&paths[0], &rotated).unwrap();
    // The writer still has the old file open and keeps writing there for a while.
    append(&rotated, "old 2 after rename\n");
    harness.wait_for("old 2 after rename");
    append(&rotated, "old 3 just before the new file\n");
    append(&paths[0], "new 1\n");
    let entries = harness.wait_for("new 1");
    assert_eq!(entries, ["old 1", "old 2 after rename", "old 3 just before the new file", "new 1"]);
    append(&paths[0], "new 2\n");
    assert_eq!(harness.wait_for("new 2").len(), 5);
}

#[test]
fn truncation_continues_with_the_new_content() {
    let (_dir, paths) = temp_files(&["trunc.log"]);
    append(&paths[0], "some history that is long enough\n");
    let harness = Harness::start(vec![watch(&paths[0], &[])]);
    append(&paths[0], "a line written before the truncation\n");
    harness.wait_for("a line written before the truncation");
    // copytruncate: the content is copied elsewhere, then the file is cut to zero.
    OpenOptions::new().write(true).open(&paths[0]).unwrap().set_len(0).unwrap();
    append(&paths[0], "after\n");
    let entries = harness.wait_for("after");
    assert_eq!(entries, ["a line written before the truncation", "after"]);
}

#[test]
fn a_partial_line_waits_until_it_is_completed() {
    let (_dir, paths) = temp_files(&["partial.log", "marker.log"]);
    let harness = Harness::start(vec![watch(&paths[0], &[]), watch(&paths[1], &[])]);
    append(&paths[0], "first half");
    // Two marker lines seen one after the other prove a full poll round ran after the half line
    // was written.
    append(&paths[1], "marker 1\n");
    harness.wait_for("marker 1");
    append(&paths[1], "marker 2\n");
    harness.wait_for("marker 2");
    assert_eq!(harness.entries(), ["marker 1", "marker 2"]);
    append(&paths[0], ", second half\r\n");
    let entries = harness.wait_for("first half, second half");
    assert_eq!(entries, ["marker 1", "marker 2", "first half, second half"]);
}

#[test]
fn crlf_is_stripped_and_bad_utf8_is_replaced() {
    let (_dir, paths) = temp_files(&["win.log"]);
    let harness = Harness::start(vec![watch(&paths[0], &[])]);
    append(&paths[0], b"dos line\r\n\xffbad\xfe bytes\nunix line\n");
    let entries = harness.wait_for("unix line");
    assert_eq!(entries, ["dos line", "\u{FFFD}bad\u{FFFD} bytes", "unix line"]);
}

#[test]
fn a_file_created_after_start_is_read_from_its_beginning() {
    let (_dir, paths) = temp_files(&["later.log"]);
    let harness = Harness::start(vec![watch(&paths[0], &[])]);
    fs::write(&paths[0], "line 1\nline 2\n").unwrap();
    let entries = harness.wait_for("line 2");
    assert_eq!(entries, ["line 1", "line 2"]);
}

#[test]
fn reconfigure_adds_a_file_and_keeps_the_others_position() {
    let (_dir, paths) = temp_files(&["a.log", "b.log"]);
    append(&paths[1], "b history\n");
    let mut harness = Harness::start(vec![watch(&paths[0], &[])]);
    append(&paths[0], "a 1\n");
    harness.wait_for("a 1");
    append(&paths[0], "a 2 written just before the reconfigure\n");
    harness.sensor.reconfigure(&config(vec![watch(&paths[0], &[]), watch(&paths[1], &[])])).unwrap();
    append(&paths[1], "b 1\n");
    append(&paths[0], "a 3\n");
    harness.wait_for("b 1");
    harness.wait_for("a 3");
    let mut entries = harness.entries();
    entries.sort();
    assert_eq!(entries, ["a 1", "a 2 written just before the reconfigure", "a 3", "b 1"]);

    // Removing a file stops its events; the remaining one continues.
    harness.sensor.reconfigure(&config(vec![watch(&paths[1], &[])])).unwrap();
    append(&paths[0], "a 4 no longer watched\n");
    append(&paths[1], "b 2\n");
    let entries = harness.wait_for("b 2");
    assert!(!entries.contains(&"a 4 no longer watched".to_string()), "{entries:?}");
}

#[test]
fn an_unreadable_path_degrades_the_sensor_but_other_files_are_followed() {
    let (dir, paths) = temp_files(&["good.log"]);
    let harness = Harness::start(vec![watch(dir.path(), &[]), watch(&paths[0], &[])]);
    append(&paths[0], "still followed\n");
    harness.wait_for("still followed");
    let health = harness.health.snapshot();
    assert!(health.state.starts_with("degraded"), "{health:?}");
    let error = health.last_error.unwrap();
    assert!(error.contains("is a directory"), "{error}");
}

#[test]
fn an_oversized_line_is_cut_and_counted_as_lost() {
    let (_dir, paths) = temp_files(&["big.log"]);
    let harness = Harness::start(vec![watch(&paths[0], &[])]);
    let limit = watchpost_sensors::common::tail::MAX_LINE_BYTES;
    let mut big = vec![b'x'; limit + 1000];
    big.push(b'\n');
    append(&paths[0], &big);
    append(&paths[0], "after the big one\n");
    let entries = harness.wait_for("after the big one");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].len(), limit);
    assert_eq!(harness.health.snapshot().lost, 1);
}

#[test]
fn a_bad_pattern_is_refused_with_the_file_it_belongs_to() {
    let (_dir, paths) = temp_files(&["x.log"]);
    let mut sensor = TailSensor::from_config(&Config::default());
    let bad = config(vec![watch(&paths[0], &["(unclosed"])]);
    let error = sensor.reconfigure(&bad).unwrap_err().to_string();
    assert!(error.contains("x.log"), "{error}");
}
