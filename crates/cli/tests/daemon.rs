//! The standalone daemon end to end: `watchpost daemon` + `watchpost query`, with real files.
#![cfg(unix)]

mod common;

use std::time::Duration;

use common::{Daemon, append, logger_config, text, wait_for, watchpost};

#[test]
fn appended_log_lines_come_back_through_sql() {
    // Lines already in the file when the daemon starts are not events.
    let daemon = Daemon::start_with_log(&logger_config(""), Some("before start\n"));
    append(&daemon.log, "first line\nsecond line\n");
    let rows = daemon.wait_rows("SELECT logger_name, logger_watch_file, log_entry FROM win_logger_events", 2);
    let entries: Vec<String> = rows.iter().map(|r| text(r, "log_entry")).collect();
    assert!(
        entries.contains(&"first line".to_string()) && entries.contains(&"second line".to_string()),
        "{entries:?}"
    );
    assert!(rows.iter().all(|r| text(r, "logger_name") == "tail"));
    assert!(rows.iter().all(|r| text(r, "logger_watch_file") == daemon.log.display().to_string()));

    // Envelope: hidden in SELECT *, present when named, GUID-like and stamped once.
    let star = daemon.rows("SELECT * FROM win_logger_events");
    assert!(star.iter().all(|r| !r.contains_key("eid") && !r.contains_key("consumer")), "{star:?}");
    let first = daemon.rows("SELECT eid, time, utc_time FROM win_logger_events ORDER BY eid");
    let again = daemon.rows("SELECT eid, time, utc_time FROM win_logger_events ORDER BY eid");
    assert_eq!(first, again, "retain mode: two reads see the same data");
    let eid = text(&first[0], "eid");
    assert_eq!(eid.len(), 36, "{eid}");
    assert!(text(&first[0], "utc_time").ends_with(" UTC"));

    // Constraints on eid and time come back exactly.
    let by_eid = daemon.rows(&format!("SELECT log_entry FROM win_logger_events WHERE eid = '{eid}'"));
    assert_eq!(by_eid.len(), 1);
    let future = daemon.rows("SELECT * FROM win_logger_events WHERE time > strftime('%s','now') + 1000");
    assert!(future.is_empty());
    let since_2001 = daemon.rows("SELECT * FROM win_logger_events WHERE time > 1.0e9");
    assert_eq!(since_2001.len(), 2, "a real-valued bound works like SQLite's");
    let bad = daemon.query_raw("SELECT * FROM win_logger_events WHERE time > 'yesterday'", "table");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unix seconds"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn sql_is_full_sqlite_and_errors_exit_non_zero() {
    let daemon = Daemon::start(&logger_config(""));
    append(&daemon.log, "a 1\nb 2\nc 3\n");
    daemon.wait_rows("SELECT * FROM win_logger_events", 3);
    let rows = daemon.rows(
        "SELECT count(*) AS n, m.total_physical > 0 AS has_memory FROM win_logger_events l JOIN win_mem_perf m GROUP BY has_memory",
    );
    assert_eq!(text(&rows[0], "n"), "3");
    assert_eq!(text(&rows[0], "has_memory"), "1");

    let bad = daemon.query_raw("SELEC * FROM win_logger_events", "table");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("syntax error"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = daemon.query_raw("SELECT * FROM no_such_table", "table");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such table"));

    let csv = daemon.query_raw("SELECT log_entry FROM win_logger_events ORDER BY log_entry", "csv");
    assert_eq!(String::from_utf8_lossy(&csv.stdout), "log_entry\na 1\nb 2\nc 3\n");
    let table =
        daemon.query_raw("SELECT log_entry FROM win_logger_events ORDER BY log_entry LIMIT 1", "table");
    let shown = String::from_utf8_lossy(&table.stdout);
    assert!(shown.contains("| log_entry |") && shown.contains("| a 1       |"), "{shown}");
}

#[test]
fn unread_events_survive_a_crash() {
    let mut daemon = Daemon::start(&logger_config(""));
    append(&daemon.log, "survivor one\nsurvivor two\n");
    daemon.wait_rows("SELECT * FROM win_logger_events WHERE log_entry LIKE 'survivor%'", 2);
    // The writer commits within 100 ms; give it a moment, then crash hard.
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal("KILL");
    daemon.spawn();
    let rows =
        daemon.wait_rows("SELECT log_entry FROM win_logger_events WHERE log_entry LIKE 'survivor%'", 2);
    assert_eq!(rows.len(), 2);
}

#[test]
fn consumers_each_see_every_event_exactly_once() {
    let daemon = Daemon::start(&logger_config(""));
    append(&daemon.log, "e1\ne2\n");
    daemon.wait_rows("SELECT * FROM win_logger_events", 2);
    let siem = |d: &Daemon| -> Vec<String> {
        d.rows("SELECT log_entry FROM win_logger_events WHERE consumer = 'siem'")
            .iter()
            .map(|r| text(r, "log_entry"))
            .collect()
    };
    assert_eq!(siem(&daemon), ["e1", "e2"]);
    assert!(siem(&daemon).is_empty(), "a consumer's second read only returns newer events");
    append(&daemon.log, "e3\n");
    daemon.wait_rows("SELECT * FROM win_logger_events", 3);
    assert_eq!(siem(&daemon), ["e3"]);
    // Another consumer is independent, and plain reads are unaffected.
    let audit = daemon.rows("SELECT log_entry FROM win_logger_events WHERE consumer = 'audit'");
    assert_eq!(audit.len(), 3);
    assert_eq!(daemon.rows("SELECT * FROM win_logger_events").len(), 3);
}

#[test]
fn drain_mode_deletes_what_it_returns() {
    let daemon = Daemon::start(&logger_config(r#""watchpost": {"read_mode": "drain"},"#));
    append(&daemon.log, "once\n");
    let first = daemon.wait_rows("SELECT log_entry FROM win_logger_events", 1);
    assert_eq!(text(&first[0], "log_entry"), "once");
    assert!(daemon.rows("SELECT log_entry FROM win_logger_events").is_empty());
}

#[test]
fn status_reports_counts_and_evictions() {
    let dir_config = logger_config(r#""options": {"events_max": 3},"#).replacen(
        r#""options": { "events_expiry": 3600, },"#,
        "",
        1,
    );
    let daemon = Daemon::start(&dir_config);
    append(&daemon.log, "1\n2\n3\n4\n5\n");
    let status = wait_for(Duration::from_secs(20), || {
        let rows = daemon.rows("SELECT * FROM watchpost_status WHERE table_name = 'win_logger_events'");
        let row = rows.into_iter().next()?;
        (text(&row, "stored") == "5").then_some(row)
    })
    .unwrap_or_else(|| panic!("status never counted 5 stored events:\n{}", daemon.stderr()));
    assert_eq!(text(&status, "captured"), "5");
    assert_eq!(text(&status, "evicted"), "2");
    assert_eq!(text(&status, "retained"), "3");
    assert_eq!(text(&status, "state"), "running");
    assert_eq!(daemon.rows("SELECT * FROM win_logger_events").len(), 3);
    let store = daemon.rows("SELECT * FROM watchpost_status WHERE sensor = 'config'");
    assert_eq!(text(&store[0], "state"), "ok");
}

#[test]
fn a_bad_config_reload_keeps_the_last_good_one() {
    let daemon = Daemon::start(&logger_config(""));
    std::fs::write(&daemon.config, "{ \"win_logger_plugin\": { \"plugins\": [ }").expect("break the config");
    let row = wait_for(Duration::from_secs(20), || {
        let rows = daemon.rows("SELECT state, last_error FROM watchpost_status WHERE sensor = 'config'");
        let row = rows.into_iter().next()?;
        (text(&row, "state") == "error").then_some(row)
    })
    .expect("config error never reported");
    let error = text(&row, "last_error");
    assert!(error.contains("osquery.conf:1:"), "error names file and line: {error}");
    // The logger from the last good config still works.
    append(&daemon.log, "still watched\n");
    daemon.wait_rows("SELECT * FROM win_logger_events WHERE log_entry = 'still watched'", 1);
}

#[test]
fn check_config_explains_and_rejects_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.conf");
    std::fs::write(&good, logger_config("").replace("{LOG}", "/var/log/app.log")).expect("write");
    let out = watchpost().arg("check-config").arg(&good).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/var/log/app.log"));

    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "{\n  \"plgx_event_filters\": {\n    \"win_process_events\": {\"cmdlin\": {\"exclude\": {\"values\": [\"x\"]}}}\n  }\n}\n")
        .expect("write");
    let out = watchpost().arg("check-config").arg(&bad).output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.conf:3:"), "{stderr}");
    assert!(stderr.contains("cmdline"), "lists the filterable columns: {stderr}");
}

#[test]
fn status_says_why_a_computed_table_has_no_rows() {
    let daemon = Daemon::start(&logger_config(""));
    let rows =
        daemon.rows("SELECT table_name, state, last_error FROM watchpost_status WHERE sensor = 'snapshot'");
    let row = |name: &str| rows.iter().find(|r| text(r, "table_name") == name).cloned();
    let memory = row("win_mem_perf").expect("win_mem_perf row");
    assert_eq!(text(&memory, "state"), "available");
    // No machine here has /dev/cpu/N/msr; where one does, the row is available instead.
    let msr = row("win_msr").expect("win_msr row");
    if !std::path::Path::new("/dev/cpu/0/msr").exists() {
        assert_eq!(text(&msr, "state"), "not_available");
        assert!(text(&msr, "last_error").contains("msr"), "{msr:?}");
        assert!(daemon.rows("SELECT * FROM win_msr").is_empty());
    }
}

#[test]
fn a_changed_config_applies_without_a_restart() {
    let daemon = Daemon::start(&logger_config(""));
    append(&daemon.log, "from the first file\n");
    daemon.wait_rows("SELECT * FROM win_logger_events", 1);
    let second = daemon.dir.path().join("second.log");
    let two_files = std::fs::read_to_string(&daemon.config).expect("read config").replace(
        r#"{ "watch_file_path": "#,
        &format!(
            r#"{{ "watch_file_path": "{}", "file_regex_pattern": ["wanted.*"] }}, {{ "watch_file_path": "#,
            second.display()
        ),
    );
    std::fs::write(&daemon.config, two_files).expect("rewrite config");
    // The new file is watched once the reload happened; keep writing until a line arrives.
    let arrived = wait_for(Duration::from_secs(20), || {
        append(&second, "wanted line\nunwanted line\n");
        let rows = daemon.rows(&format!(
            "SELECT log_entry FROM win_logger_events WHERE logger_watch_file = '{}'",
            second.display()
        ));
        (!rows.is_empty()).then_some(rows)
    })
    .unwrap_or_else(|| panic!("the second file was never watched:\n{}", daemon.stderr()));
    assert!(arrived.iter().all(|r| text(r, "log_entry") == "wanted line"), "{arrived:?}");
    // The first file's position survived the reload: no line is reported twice.
    append(&daemon.log, "after the reload\n");
    let first = daemon.wait_rows(
        &format!(
            "SELECT log_entry FROM win_logger_events WHERE logger_watch_file = '{}'",
            daemon.log.display()
        ),
        2,
    );
    let entries: Vec<String> = first.iter().map(|r| text(r, "log_entry")).collect();
    assert_eq!(entries, ["from the first file", "after the reload"]);
}
