//! Host tables through SQL on the daemon, each provoked by the test itself.
#![cfg(target_os = "linux")]

mod common;

use std::process::{Command, Stdio};

use common::{Daemon, logger_config, text};

#[test]
fn process_handles_show_a_file_this_test_holds_open() {
    let daemon = Daemon::start(&logger_config(""));
    let held = daemon.dir.path().join("held-open.txt");
    std::fs::write(&held, "x").expect("write");
    let _file = std::fs::File::open(&held).expect("open");
    let pid = std::process::id();
    let rows = daemon.rows(&format!(
        "SELECT handle_type, object_name, process_guid FROM win_process_handles WHERE pid = {pid}"
    ));
    let row = rows
        .iter()
        .find(|r| text(r, "object_name") == held.display().to_string())
        .unwrap_or_else(|| panic!("no handle on {}: {rows:?}", held.display()));
    assert_eq!(text(row, "handle_type"), "file");
    assert_eq!(text(row, "process_guid").len(), 36);
}

#[test]
fn process_perf_reports_a_child_process() {
    let daemon = Daemon::start(&logger_config(""));
    let mut child = Command::new("sleep").arg("30").stdout(Stdio::null()).spawn().expect("spawn sleep");
    let rows = daemon.rows(&format!(
        "SELECT name, thread_count, creating_process_id, working_set FROM win_process_perf WHERE pid = {}",
        child.id()
    ));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(text(&rows[0], "name"), "sleep");
    assert_eq!(text(&rows[0], "thread_count"), "1");
    assert_eq!(text(&rows[0], "creating_process_id"), std::process::id().to_string());
    assert!(text(&rows[0], "working_set").parse::<u64>().unwrap_or(0) > 0, "{rows:?}");
}

#[test]
fn endpoint_protection_lists_clamav_when_installed() {
    if !std::path::Path::new("/usr/bin/clamscan").exists()
        && !std::path::Path::new("/usr/sbin/clamd").exists()
    {
        eprintln!("SKIPPED: ClamAV is not installed (scripts/setup.sh installs it)");
        return;
    }
    let daemon = Daemon::start(&logger_config(""));
    let rows = daemon.rows("SELECT product_name, product_state, product_signatures FROM win_epp_table");
    let clam = rows
        .iter()
        .find(|r| text(r, "product_name").contains("ClamAV"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(["On", "Off"].contains(&text(clam, "product_state").as_str()), "{clam:?}");
    assert!(["Up-to-date", "Out-of-date"].contains(&text(clam, "product_signatures").as_str()), "{clam:?}");
}
