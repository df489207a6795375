//! The osquery extension end to end, judged by the osquery-core stand-in in
//! `shared/osquery-peer` (built on osquery's own generated Thrift code).
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, wait_for};
use serde_json::Value;

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/osquery-peer")
}

struct PeerRun {
    report: Value,
    rc: i32,
    stderr: String,
}

/// `run_ext.sh 'watchpost --data-dir D --query-socket S' ARGS...`
fn run_peer(dir: &Path, args: &[&str]) -> PeerRun {
    let extension = format!(
        "{BIN} --data-dir {} --query-socket {}",
        dir.join("data").display(),
        dir.join("query.sock").display()
    );
    let out = Command::new("bash")
        .arg(peer_dir().join("run_ext.sh"))
        .arg(&extension)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run run_ext.sh");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("peer report is not JSON ({e}); rc {:?}; stderr:\n{stderr}", out.status.code())
    });
    PeerRun { report, rc: out.status.code().unwrap_or(-1), stderr }
}

fn rows<'a>(run: &'a PeerRun, table: &str) -> &'a [Value] {
    run.report["tables"][table]["generate"]["response"].as_array().map_or(&[], Vec::as_slice)
}

#[test]
fn every_table_registers_and_answers_without_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = run_peer(dir.path(), &[]);
    assert_eq!(run.rc, 0, "report: {:#}\n{}", run.report, run.stderr);
    assert_eq!(run.report["warnings"], serde_json::json!([]), "{:#}", run.report["warnings"]);
    assert_eq!(run.report["errors"], serde_json::json!([]));
    let tables = run.report["tables"].as_object().expect("tables");
    for name in
        ["win_logger_events", "win_mem_perf", "win_process_events", "win_socket_events", "watchpost_status"]
    {
        assert!(tables.contains_key(name), "{name} not registered: {:?}", tables.keys());
    }
    assert!(!tables.contains_key("win_registry_events"), "windows-only table registered on linux");
    // Evented tables carry the EVENT_BASED attribute; eid/time/consumer are ADDITIONAL.
    let routes = run.report["registry"]["table"]["win_logger_events"].as_array().expect("routes");
    assert!(routes.iter().any(|r| r["id"] == "attributes" && r["attributes"] == "4"));
    let op = |name: &str| {
        routes.iter().find(|r| r["name"] == name).map(|r| r["op"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(op("time").as_deref(), Some("20")); // HIDDEN | ADDITIONAL: the upstream table lacks it
    assert_eq!(op("consumer").as_deref(), Some("20"));
    assert_eq!(op("log_entry").as_deref(), Some("0"));
    // The snapshot table really answers.
    assert_eq!(run.report["tables"]["win_mem_perf"]["generate"]["status"]["code"], 0);
}

fn logger_conf(dir: &Path) -> PathBuf {
    let log = dir.join("app.log");
    std::fs::write(&log, "old line\n").expect("create log");
    let conf = dir.join("osquery.conf");
    std::fs::write(
        &conf,
        format!(
            r#"{{"win_logger_plugin": {{"plugins": [{{"logger_name": "tail", "logger_watch_files": [
                {{"watch_file_path": "{}", "file_regex_pattern": ["hello.*"]}},]}},]}},}}"#,
            log.display()
        ),
    )
    .expect("write config");
    conf
}

/// Runs the peer on `win_logger_events` with core serving `logger_conf` through genConfig and
/// `printf LINES >> app.log` as the activity; returns the run and the `log_entry` values.
fn logger_run(lines: &str, extra: &[&str]) -> (PeerRun, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = logger_conf(dir.path()).display().to_string();
    let append = format!("printf '{lines}' >> {}", dir.path().join("app.log").display());
    let mut args =
        vec!["--config", &conf, "--before-query", &append, "--settle", "2", "--table", "win_logger_events"];
    args.extend(["--where", "time", ">=", "0"]);
    args.extend(extra);
    let run = run_peer(dir.path(), &args);
    assert_eq!(run.rc, 0, "{:#}\n{}", run.report, run.stderr);
    let entries = rows(&run, "win_logger_events")
        .iter()
        .filter_map(|r| r["log_entry"].as_str().map(String::from))
        .collect();
    (run, entries)
}

#[test]
fn logger_lines_reach_osquery_through_generate() {
    let (run, entries) = logger_run("hello 1\\nskipped\\nhello 2\\n", &[]);
    assert_eq!(entries, ["hello 1", "hello 2"], "{:#}", run.report);
    assert!(run.report["manager_calls"]["call"].as_u64().unwrap_or(0) >= 1, "config fetched with genConfig");
}

#[test]
fn events_max_comes_from_core_options_and_legacy_contexts_work() {
    let (run, entries) =
        logger_run("hello a\\nhello b\\nhello c\\n", &["--option", "events_max=2", "--legacy-context"]);
    assert_eq!(entries, ["hello b", "hello c"], "events_max=2 keeps the newest two: {:#}", run.report);
}

#[test]
fn a_malformed_request_gets_an_error_status_and_serving_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = run_peer(dir.path(), &["--context", "{not json"]);
    assert_eq!(run.rc, 1, "fake_core reports the failed generate calls");
    let tables = run.report["tables"].as_object().expect("tables");
    assert!(tables.len() > 10, "every table was still called after the first bad request");
    for (name, result) in tables {
        assert_eq!(result["generate"]["status"]["code"], 1, "{name}");
        let message = result["generate"]["status"]["message"].as_str().unwrap_or("");
        assert!(message.contains("context"), "{name}: {message}");
        assert_eq!(result["columns"]["status"]["code"], 0, "{name}: columns still served");
    }
}

#[test]
fn the_extension_exits_by_itself_when_core_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = run_peer(dir.path(), &["--no-shutdown", "--linger", "0", "--table", "win_mem_perf"]);
    assert_eq!(run.rc, 0, "{}", run.stderr);
    // run_ext.sh kills the extension after 60 s (rc 124); a clean exit is rc 0.
    assert!(run.stderr.contains("extension rc=0"), "{}", run.stderr);
}

#[test]
fn a_refused_registration_is_reported_and_exits_non_zero() {
    let venv = std::env::var("PEER_VENV").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/osquery-peer-venv")
    });
    // Make sure the venv exists (run_ext.sh creates it on first use).
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = run_peer(dir.path(), &["--table", "win_mem_perf"]);
    let python = venv.join("bin/python3");
    assert!(python.exists(), "the osquery peer venv was not created at {}", venv.display());

    let socket = dir.path().join("core.em");
    let mut core = Command::new(&python)
        .arg(peer_dir().join("fake_core.py"))
        .args([
            "--socket",
            &socket.display().to_string(),
            "--no-shutdown",
            "--linger",
            "10",
            "--table",
            "win_mem_perf",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake_core");
    wait_for(Duration::from_secs(10), || socket.exists().then_some(())).expect("fake_core socket");
    let start = |n: u32| {
        Command::new(BIN)
            .args(["--socket", &socket.display().to_string(), "--data-dir"])
            .arg(dir.path().join(format!("data{n}")))
            .arg("--query-socket")
            .arg(dir.path().join(format!("q{n}.sock")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start watchpost")
    };
    let mut first = start(1);
    std::thread::sleep(Duration::from_secs(2));
    let second = start(2).wait_with_output().expect("second instance");
    assert!(!second.status.success(), "a refused registration must exit non-zero");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("Duplicate extension"), "the refusal is reported: {stderr}");
    let _ = first.kill();
    let _ = first.wait();
    let _ = core.kill();
    let _ = core.wait();
}
