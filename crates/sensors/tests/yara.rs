//! The YARA sensor on its own (Linux): the tests write files and rule files into a temporary
//! folder and submit the files to the sensor's queue as the file sensor would, then read the
//! `win_yara_events` rows the sensor emits. The queue is FIFO with one worker, so "no row for
//! an earlier file" is checked by waiting for the row of a later file.
#![cfg(target_os = "linux")]

mod support;
use support::Collect;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use watchpost_catalog::{Stamper, catalog};
use watchpost_config::Config;
use watchpost_sensors::linux::yara::{FILE_CREATED, FILE_MODIFIED, ScanRequest, YaraQueue, YaraSensor};
use watchpost_sensors::{Sensor, SensorContext, SensorHealth};

const DEADLINE: Duration = Duration::from_secs(60);
const COLUMNS: [&str; 6] = ["target_path", "md5", "category", "action", "matches", "count"];

impl Collect {
    /// The rows so far as `COLUMNS` text.
    fn rows(&self) -> Vec<Vec<String>> {
        let table = catalog().table("win_yara_events").unwrap();
        let events = self.0.lock().unwrap();
        events
            .iter()
            .map(|e| {
                assert_eq!(e.table, table.id);
                COLUMNS
                    .iter()
                    .map(|c| e.values[table.column_index(c).unwrap()].to_text().unwrap_or_default())
                    .collect()
            })
            .collect()
    }

    /// Waits until some row's target_path is `path`; then returns all rows.
    fn wait_for(&self, path: &Path) -> Vec<Vec<String>> {
        let wanted = path.to_string_lossy().into_owned();
        let start = Instant::now();
        loop {
            let rows = self.rows();
            if rows.iter().any(|r| r[0] == wanted) {
                return rows;
            }
            assert!(start.elapsed() < DEADLINE, "no row for {wanted}; rows: {rows:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A temporary folder with `rules/` and the watched `drop/`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        Setup { dir }
    }

    fn rule_file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join("rules").join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn drop_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("drop").join(name)
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.drop_path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A config whose category `downloads` covers `drop/` (recursive) with `groups`.
    fn config(&self, signatures: serde_json::Value, groups: &[&str]) -> Config {
        let mut config = Config::default();
        config.sections.yara = Some(json!({"signatures": signatures, "file_paths": {"downloads": groups}}));
        let drop = format!("{}/%%", self.dir.path().join("drop").display());
        config.sections.file_paths = Some(json!({"downloads": [drop], "unrelated": ["/etc/%%"]}));
        config
    }
}

struct Running {
    sensor: YaraSensor,
    sink: Arc<Collect>,
    health: Arc<SensorHealth>,
}

fn start(mut sensor: YaraSensor) -> Running {
    let sink = Arc::new(Collect::default());
    let health = Arc::new(SensorHealth::new("yara"));
    let ctx = SensorContext { sink: sink.clone(), health: health.clone(), stamper: Stamper::global() };
    sensor.start(ctx).unwrap();
    Running { sensor, sink, health }
}

fn submit(queue: &YaraQueue, path: &Path, action: &'static str) -> bool {
    queue.submit(ScanRequest { path: path.to_path_buf(), pid: Some(1), action })
}

fn md5sum(path: &Path) -> String {
    let output = Command::new("md5sum").arg(path).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

const MARKER_RULES: &str = r#"
rule HasMarker {
    strings:
        $marker = "WATCHPOST-TEST-MARKER"
    condition:
        $marker
}

rule MarkerAtStart {
    condition:
        uint32(0) == 0x43544157 // "WATC"
}

rule NeverMatches {
    condition:
        false
}
"#;

#[test]
fn a_matching_file_becomes_a_row_and_a_clean_file_does_not() {
    let setup = Setup::new();
    let rules = setup.rule_file("marker.yar", MARKER_RULES);
    let sensor = YaraSensor::from_config(&setup.config(json!({"markers": [rules]}), &["markers"]));
    let queue = sensor.queue();
    let running = start(sensor);
    assert_eq!(running.health.snapshot().state, "running");

    let clean = setup.write("clean.txt", b"nothing to see here\n");
    let infected = setup.write("infected.bin", b"WATCHPOST-TEST-MARKER and more bytes\n");
    assert!(submit(&queue, &clean, FILE_CREATED));
    assert!(submit(&queue, &infected, FILE_MODIFIED));
    let rows = running.sink.wait_for(&infected);
    assert_eq!(
        rows,
        [[
            text(&infected),
            md5sum(&infected),
            "downloads".to_string(),
            "FILE Modified".to_string(),
            "HasMarker,MarkerAtStart".to_string(),
            "2".to_string(),
        ]]
    );
    drop(running);
}

#[test]
fn rules_see_the_externals() {
    let setup = Setup::new();
    let dropper = setup.write("dropper.sh", b"#!/bin/sh\necho hi\n");
    let md5 = md5sum(&dropper);
    let rules = setup.rule_file(
        "externals.yar",
        &format!(
            r#"
rule NamedDropperScript {{
    condition:
        filename == "dropper.sh" and extension == ".sh" and filetype == "SH"
        and filepath == "{path}" and md5 == "{md5}"
}}

rule AnyShellScript {{
    condition:
        extension == ".sh"
}}
"#,
            path = text(&dropper)
        ),
    );
    let sensor = YaraSensor::from_config(&setup.config(json!({"names": [rules]}), &["names"]));
    let queue = sensor.queue();
    let running = start(sensor);

    let other = setup.write("other.sh", b"#!/bin/sh\necho hi\n");
    let no_extension = setup.write("dropper", b"#!/bin/sh\necho hi\n");
    for path in [&no_extension, &other, &dropper] {
        assert!(submit(&queue, path, FILE_CREATED));
    }
    let rows = running.sink.wait_for(&dropper);
    let summary: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[4].clone())).collect();
    assert_eq!(
        summary,
        [
            (text(&other), "AnyShellScript".to_string()),
            (text(&dropper), "NamedDropperScript,AnyShellScript".to_string()),
        ]
    );
    assert_eq!(rows[1][1], md5);
}

#[test]
fn a_broken_rule_file_is_reported_with_its_line_and_the_good_group_still_matches() {
    let setup = Setup::new();
    let good = setup.rule_file("good.yar", MARKER_RULES);
    let broken = setup.rule_file(
        "broken.yar",
        "rule Fine {\n    condition:\n        true and\n}\n\nrule Other { condition: true }\n",
    );
    let missing = setup.dir.path().join("rules/missing.yar").to_string_lossy().into_owned();
    let config = setup.config(json!({"good": [good], "broken": [broken, missing]}), &["broken", "good"]);
    let sensor = YaraSensor::from_config(&config);
    let queue = sensor.queue();
    let running = start(sensor);

    let problems: Vec<String> = running.sensor.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("yara group broken: rule file {broken} line 4: ")),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with(&format!("yara group broken: cannot read rule file {missing}: ")),
        "{problems:?}"
    );
    let health = running.health.snapshot();
    assert!(health.state.starts_with("degraded: "), "{}", health.state);
    assert!(health.state.contains(&format!("rule file {broken} line 4")), "{}", health.state);
    assert!(health.last_error.is_some_and(|e| e.contains("missing.yar")));

    let infected = setup.write("infected.bin", b"WATCHPOST-TEST-MARKER\n");
    assert!(submit(&queue, &infected, FILE_CREATED));
    let rows = running.sink.wait_for(&infected);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0][4], "HasMarker,MarkerAtStart",
        "the broken file (with its rule Other) is left out whole"
    );
}

#[test]
fn only_files_under_a_category_are_wanted() {
    let setup = Setup::new();
    let rules = setup.rule_file("marker.yar", MARKER_RULES);
    let mut config = setup.config(json!({"markers": [rules]}), &["markers"]);
    let top = format!("{}/%", setup.dir.path().join("drop").display());
    config.sections.file_paths = Some(json!({"downloads": [top]}));
    let queue = YaraSensor::from_config(&config).queue();

    assert!(queue.wants(&setup.drop_path("a.exe")));
    assert!(!queue.wants(&setup.drop_path("sub/a.exe")), "% is one level");
    assert!(!queue.wants(&setup.dir.path().join("rules/marker.yar")));
    assert!(!queue.wants(Path::new("/etc/passwd")), "categories yara does not name are not wanted");
    assert_eq!(queue.roots(), [setup.dir.path().join("drop")]);
    assert!(!YaraQueue::default().wants(&setup.drop_path("a.exe")));
    assert!(YaraQueue::default().roots().is_empty());
}

#[test]
fn a_disabled_yara_table_wants_no_file_until_a_reconfigure_enables_it() {
    let setup = Setup::new();
    let rules = setup.rule_file("marker.yar", MARKER_RULES);
    let mut config = setup.config(json!({"markers": [rules]}), &["markers"]);
    config.sensor_options.disabled_tables = vec!["win_yara_events".to_string()];
    let mut sensor = YaraSensor::from_config(&config);
    let queue = sensor.queue();
    assert!(!queue.wants(&setup.drop_path("a.exe")), "a disabled table scans nothing");
    assert!(queue.roots().is_empty());

    config.sensor_options.disabled_tables.clear();
    sensor.reconfigure(&config).unwrap();
    assert!(queue.wants(&setup.drop_path("a.exe")));
}

#[test]
fn overflow_is_counted_lost_and_queued_files_are_scanned_once_started() {
    let setup = Setup::new();
    let rules = setup.rule_file("marker.yar", MARKER_RULES);
    let mut config = setup.config(json!({"markers": [rules]}), &["markers"]);
    config.sensor_options.yara_queue_len = 2;
    let sensor = YaraSensor::from_config(&config);
    let queue = sensor.queue();

    let first = setup.write("first.bin", b"WATCHPOST-TEST-MARKER 1\n");
    let second = setup.write("second.bin", b"WATCHPOST-TEST-MARKER 2\n");
    let third = setup.write("third.bin", b"WATCHPOST-TEST-MARKER 3\n");
    // Not started: nothing drains the queue.
    assert!(submit(&queue, &first, FILE_CREATED));
    assert!(submit(&queue, &first, FILE_MODIFIED), "a path already waiting is accepted once");
    assert!(submit(&queue, &second, FILE_CREATED));
    assert!(!submit(&queue, &third, FILE_CREATED), "the queue holds 2");
    assert_eq!(queue.waiting(), 2);

    let running = start(sensor);
    assert_eq!(running.health.snapshot().lost, 1);
    let rows = running.sink.wait_for(&second);
    let scanned: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[3].clone())).collect();
    assert_eq!(
        scanned,
        [(text(&first), FILE_CREATED.to_string()), (text(&second), FILE_CREATED.to_string())]
    );
}

#[test]
fn reconfigure_puts_new_rules_in_force_and_keeps_queued_files() {
    let setup = Setup::new();
    let alpha = setup.rule_file("alpha.yar", "rule Alpha { strings: $a = \"alpha\" condition: $a }");
    let beta = setup.rule_file("beta.yar", "rule Beta { strings: $b = \"beta\" condition: $b }");
    let mut sensor = YaraSensor::from_config(&setup.config(json!({"set": [alpha]}), &["set"]));
    let queue = sensor.queue();

    let waiting = setup.write("waiting.txt", b"alpha beta\n");
    assert!(submit(&queue, &waiting, FILE_CREATED));
    sensor.reconfigure(&setup.config(json!({"set": [beta.clone()]}), &["set"])).unwrap();
    let mut running = start(sensor);
    let rows = running.sink.wait_for(&waiting);
    assert_eq!(rows[0][4], "Beta", "the queued file is scanned with the new rules");

    let both = setup.rule_file("both.yar", "rule Gamma { strings: $g = \"gamma\" condition: $g }");
    running.sensor.reconfigure(&setup.config(json!({"set": [beta, both]}), &["set"])).unwrap();
    let later = setup.write("later.txt", b"beta gamma\n");
    assert!(submit(&queue, &later, FILE_MODIFIED));
    let rows = running.sink.wait_for(&later);
    assert_eq!(rows[1][4], "Beta,Gamma");
    assert_eq!(rows[1][5], "2");
    assert_eq!(running.health.snapshot().state, "running");
}

#[test]
fn oversized_files_are_skipped_and_reported() {
    let setup = Setup::new();
    let rules = setup.rule_file("marker.yar", "rule Mark { strings: $m = \"MARK\" condition: $m }");
    let mut config = setup.config(json!({"markers": [rules]}), &["markers"]);
    config.sensor_options.yara_scan_max_bytes = 10;
    let sensor = YaraSensor::from_config(&config);
    let queue = sensor.queue();
    let running = start(sensor);

    let large = setup.write("large.bin", b"MARK and then more than ten bytes\n");
    let small = setup.write("small.bin", b"MARK\n");
    assert!(submit(&queue, &large, FILE_CREATED));
    assert!(submit(&queue, &small, FILE_CREATED));
    let rows = running.sink.wait_for(&small);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let error = running.health.snapshot().last_error.unwrap();
    assert!(error.contains(&text(&large)) && error.contains("yara_scan_max_bytes (10)"), "{error}");
}

#[test]
fn files_the_agent_wrote_itself_are_not_scanned() {
    let setup = Setup::new();
    let rules = setup.rule_file("marker.yar", MARKER_RULES);
    let sensor = YaraSensor::from_config(&setup.config(json!({"markers": [rules]}), &["markers"]));
    let queue = sensor.queue();
    let running = start(sensor);

    let own = setup.write("own.bin", b"WATCHPOST-TEST-MARKER\n");
    let foreign = setup.write("foreign.bin", b"WATCHPOST-TEST-MARKER\n");
    let request = ScanRequest { path: own.clone(), pid: Some(std::process::id()), action: FILE_CREATED };
    assert!(queue.submit(request));
    assert!(submit(&queue, &foreign, FILE_CREATED));
    let rows = running.sink.wait_for(&foreign);
    assert_eq!(rows.len(), 1, "{rows:?}");
}
