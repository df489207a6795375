//! The file sensor end to end (Linux, as root): a `sh -c` script creates, writes, renames and
//! deletes files in a folder in scope, in an excluded subfolder and in a folder out of scope,
//! copies an ELF (`/bin/true`) and a tiny PE into scope, and back-dates files with `touch -d`.
//! The rows must name the acting processes, carry the hashes `sha256sum`/`md5sum` print, and
//! leave out what is not in scope. The process sensor runs alongside on the same process cache,
//! as in the agent.
#![cfg(target_os = "linux")]

mod support;
use support::{Collect, Row, is_root, process_cache, rows, start};

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use watchpost_sensors::Sensor;
use watchpost_sensors::linux::files::scope::Scope;
use watchpost_sensors::linux::files::state::Timestamp;
use watchpost_sensors::linux::files::{FileOptions, FileSensor};
use watchpost_sensors::linux::yara::YaraQueue;

const DEADLINE: Duration = Duration::from_secs(30);

/// Polls until `table` has a row matching `matches`; panics with what it has after the deadline.
fn wait_row(sink: &Collect, table: &str, what: &str, matches: impl Fn(&Row) -> bool) -> Row {
    let start = Instant::now();
    loop {
        let all = rows(sink, table);
        if let Some(row) = all.iter().find(|r| matches(r)) {
            return row.clone();
        }
        assert!(start.elapsed() < DEADLINE, "no {table} row for {what}; rows:\n{all:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sh -c script`; returns its pid (the script prints `$$` first) after it succeeded.
fn sh(script: &str) -> String {
    let out = Command::new("/bin/sh").args(["-c", &format!("echo $$; {script}")]).output().unwrap();
    assert!(out.status.success(), "script failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().next().unwrap().to_string()
}

/// The first word `tool` (sha256sum, md5sum) prints for `path`.
fn sum(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn canonical(program: &str) -> String {
    let out = Command::new("/bin/sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
    let path = String::from_utf8(out.stdout).unwrap();
    std::fs::canonicalize(path.trim()).unwrap().display().to_string()
}

#[test]
fn file_activity_in_scope_is_reported_with_process_hashes_and_timestomps() {
    if !is_root() {
        println!("SKIPPED: the file sensor needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let inside = root.join("in");
    let excluded = inside.join("excluded");
    let outside = root.join("out");
    for d in [&inside, &excluded, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Written by this (the agent's own) process: out of scope and dropped anyway.
    std::fs::write(outside.join("tiny.exe"), b"MZ\x90\x00\x03\x00\x00\x00PE tiny test file").unwrap();
    // Exists before the sensor starts, so the sensor has never seen its times.
    std::fs::write(inside.join("old.txt"), b"seen before").unwrap();

    let text = |p: &Path| p.display().to_string();
    let (scope, problems) = Scope::from_entries(&[text(&inside)], &[text(&excluded)]);
    assert!(problems.is_empty());
    let options = FileOptions { scope, hash_max_bytes: 1_000_000 };

    let (cache, mut process_sensor, _) = process_cache();
    let mut sensor = FileSensor::new(cache, YaraQueue::default(), options);
    let (sink, health) = start(&mut sensor, "files");
    let status = health.snapshot();
    assert_eq!((status.state.as_str(), status.mode.as_str()), ("running", "fanotify"), "{status:?}");

    let (i, x, o) = (text(&inside), text(&excluded), text(&outside));
    let script_pid = sh(&format!(
        "cd {i} && printf hello > a.txt && printf ' world' >> a.txt && mv a.txt b.txt && \
         cp /bin/true tool && cp {o}/tiny.exe tiny.exe && head -c 2000000 /dev/zero > big.bin && \
         printf x > {x}/skip.txt && rm {x}/skip.txt && printf x > {o}/o.txt && rm {o}/o.txt && \
         rm b.txt && mkdir quick && printf q > quick/q.txt && rm -r quick && printf done > zz.marker"
    ));
    let path = |name: &str| format!("{i}/{name}");
    let file_row = |action: &str, target: &str| {
        let (action, target) = (action.to_string(), target.to_string());
        wait_row(&sink, "win_file_events", &format!("{action} {target}"), move |r| {
            r["action"] == action && r["target_path"] == target
        })
    };

    // The shell's own writes: pid and process of the script.
    let created = file_row("FILE_CREATE", &path("a.txt"));
    let dash = canonical("sh");
    assert_eq!(
        (created["pid"].as_str(), created["process_name"].as_str()),
        (script_pid.as_str(), dash.as_str())
    );
    assert_eq!(created["uid"], "root");
    assert_eq!(created["hashed"], "0");
    assert!(!created["process_guid"].is_empty());
    file_row("FILE_CREATE", &path("zz.marker"));
    let writes: Vec<Row> = rows(&sink, "win_file_events")
        .into_iter()
        .filter(|r| r["action"] == "FILE_WRITE" && r["target_path"] == path("a.txt"))
        .collect();
    assert!(!writes.is_empty(), "a.txt was closed after writing twice (the kernel may merge both)");
    assert!(writes.iter().all(|w| w["pid"] == script_pid && w["pe_file"] == "NO"), "{writes:#?}");

    // A folder created and removed at once: its files are still named.
    file_row("FILE_CREATE", &path("quick/q.txt"));
    file_row("FILE_DELETE", &path("quick/q.txt"));

    let renamed = file_row("FILE_RENAME", &format!("{} [Orig: {}]", path("b.txt"), path("a.txt")));
    assert_eq!(renamed["process_name"], canonical("mv"));
    assert_ne!(renamed["pid"], script_pid);
    let deleted = file_row("FILE_DELETE", &path("b.txt"));
    assert_eq!(deleted["process_name"], canonical("rm"));
    assert_eq!(deleted["pe_file"], "NO", "known from the earlier write");

    // Hashes, as sha256sum and md5sum print them; executables by magic.
    for name in ["tool", "tiny.exe"] {
        let write = wait_row(&sink, "win_file_events", name, |r| {
            r["action"] == "FILE_WRITE" && r["target_path"] == path(name) && r["hashed"] == "1"
        });
        let file = inside.join(name);
        assert_eq!(write["sha256"], sum("sha256sum", &file), "{name}");
        assert_eq!(write["md5"], sum("md5sum", &file), "{name}");
        assert_eq!(write["pe_file"], "YES", "{name}");
        assert_eq!(write["process_name"], canonical("cp"));
        let pe = wait_row(&sink, "win_pefile_events", name, |r| r["target_path"] == path(name));
        assert_eq!((pe["action"].as_str(), pe["hashed"].as_str()), ("FILE Created", "1"), "{pe:?}");
        assert_eq!(pe["md5"], sum("md5sum", &file));
        assert_eq!(pe["pid"], write["pid"]);
    }
    let big = wait_row(&sink, "win_file_events", "big.bin", |r| {
        r["action"] == "FILE_WRITE" && r["target_path"] == path("big.bin")
    });
    assert_eq!((big["hashed"].as_str(), big["md5"].as_str()), ("0", ""), "over file_hash_max_bytes");

    // The marker was written last: everything before it has been handled.
    let all = rows(&sink, "win_file_events");
    assert!(!all.iter().any(|r| r["target_path"].contains("/excluded/")), "excluded folder reported");
    assert!(!all.iter().any(|r| r["target_path"].starts_with(&o)), "folder out of scope reported");
    assert!(rows(&sink, "win_file_timestomp_events").is_empty(), "nothing was back-dated yet");

    // Timestomp of a file the sensor has seen: the old time is the one it had.
    sh(&format!("printf data > {i}/c.txt"));
    file_row("FILE_WRITE", &path("c.txt"));
    let before = std::fs::metadata(inside.join("c.txt")).unwrap();
    let old = Timestamp::new(before.mtime(), before.mtime_nsec()).to_text();
    let touch_pid = sh(&format!("touch -d 2001-01-01T00:00:00Z {i}/c.txt; chmod 600 {i}/c.txt"));
    let stomp = wait_row(&sink, "win_file_timestomp_events", "c.txt", |r| r["target_path"] == path("c.txt"));
    assert_eq!(stomp["action"], "FILE_TIMESTOMP");
    assert_eq!(stomp["old_timestamp"], old);
    assert_eq!(stomp["new_timestamp"], "2001-01-01T00:00:00.000000000Z");
    assert_eq!(stomp["process_name"], canonical("touch"));
    assert_ne!(stomp["pid"], touch_pid, "touch is a child of the script");
    assert_eq!(stomp["hashed"], "1");
    assert_eq!(stomp["md5"], sum("md5sum", &inside.join("c.txt")));
    assert_eq!(stomp["pe_file"], "NO");

    // A file it has not seen: the old time is unknown. Handled after the chmod above.
    sh(&format!("touch -d '2002-02-02 02:02:02 UTC' {i}/old.txt"));
    let unknown =
        wait_row(&sink, "win_file_timestomp_events", "old.txt", |r| r["target_path"] == path("old.txt"));
    assert_eq!(
        (unknown["old_timestamp"].as_str(), unknown["new_timestamp"].as_str()),
        ("", "2002-02-02T02:02:02.000000000Z")
    );
    let stomps = rows(&sink, "win_file_timestomp_events");
    assert_eq!(stomps.len(), 2, "the chmod is no timestomp: {stomps:#?}");

    // A new scope takes effect; the folder in scope before still reports.
    let mut config = watchpost_config::Config::default();
    config.sections.win_include_paths = Some(serde_json::json!({"test": [i, o]}));
    config.sections.win_exclude_paths = Some(serde_json::json!({"test": [x]}));
    sensor.reconfigure(&config).unwrap();
    sh(&format!("printf 1 > {o}/after.txt && printf 2 > {i}/after.txt"));
    file_row("FILE_CREATE", &format!("{o}/after.txt"));
    file_row("FILE_CREATE", &path("after.txt"));

    sensor.stop();
    process_sensor.stop();
    assert_eq!(health.snapshot().state, "stopped");
}
