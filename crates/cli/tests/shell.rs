//! `watchpost shell`, driven through its standard input as a user would type.
#![cfg(unix)]

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{Daemon, append, logger_config, watchpost};

fn shell(args: &[&str], input: &str) -> Output {
    let mut child = watchpost()
        .arg("shell")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the shell");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("type");
    child.wait_with_output().expect("shell output")
}

#[test]
fn the_shell_runs_sensors_in_process_when_no_daemon_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let socket = dir.path().join("none.sock").display().to_string();
    let out = shell(
        &["--data-dir", &data, "--query-socket", &socket],
        ".tables mem\n.schema win_logger_events\nSELECT total_physical > 0 AS ok\n  FROM win_mem_perf;\nSELECT nope;\n.mode csv\nSELECT 1 AS one;\n.quit\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sensors run inside this shell"), "{stderr}");
    assert!(stdout.contains("=> win_mem_perf"), "{stdout}");
    assert!(stdout.contains("CREATE TABLE win_logger_events(`logger_name` TEXT"), "{stdout}");
    assert!(
        stdout.contains("| ok |") && stdout.contains("| 1  |"),
        "multi-line SQL, aligned table: {stdout}"
    );
    assert!(stderr.contains("Error: no such column: nope"), "{stderr}");
    assert!(stdout.ends_with("one\n1\n"), "csv mode: {stdout}");
}

#[test]
fn the_shell_uses_the_running_daemon() {
    let daemon = Daemon::start(&logger_config(""));
    append(&daemon.log, "seen by the shell\n");
    daemon.wait_rows("SELECT * FROM win_logger_events", 1);
    let out = shell(&["--query-socket", &daemon.socket], "SELECT log_entry FROM win_logger_events;\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connected to the watchpost daemon"));
    assert!(stdout.contains("| seen by the shell |"), "{stdout}");
}
