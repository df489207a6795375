//! Process telemetry through SQL on the daemon: real execs, asserted on the rows a user sees.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;

use common::{Daemon, is_root, logger_config, text};

#[test]
fn short_lived_execs_arrive_complete_through_sql() {
    if !is_root() {
        eprintln!("SKIPPED: process sensors need root (CI runs as root)");
        return;
    }
    let daemon = Daemon::start(&logger_config(""));
    let marker = format!("WPSQL{}", std::process::id());
    for i in 0..5 {
        let status = Command::new("/bin/true").arg(format!("{marker}-{i}")).status().expect("run /bin/true");
        assert!(status.success());
    }
    let sql = format!(
        "SELECT action, path, cmdline, parent_pid, parent_path, owner_uid, process_guid FROM win_process_events \
         WHERE cmdline LIKE '%{marker}%' AND path = '/usr/bin/true' ORDER BY time, eid"
    );
    let rows = daemon.wait_rows(&sql, 10);
    let created: Vec<_> = rows.iter().filter(|r| text(r, "action") == "PROC_CREATE").collect();
    let ended: Vec<_> = rows.iter().filter(|r| text(r, "action") == "PROC_TERMINATE").collect();
    assert_eq!(created.len(), 5, "{rows:?}");
    assert_eq!(ended.len(), 5, "{rows:?}");
    for row in &created {
        assert_eq!(text(row, "path"), "/usr/bin/true");
        assert!(text(row, "cmdline").starts_with("/bin/true WPSQL"), "{row:?}");
        assert_eq!(text(row, "parent_pid"), std::process::id().to_string());
        assert_eq!(text(row, "owner_uid"), "root");
        let guid = text(row, "process_guid");
        assert!(ended.iter().any(|e| text(e, "process_guid") == guid), "a PROC_TERMINATE with the same guid");
    }
    let state =
        daemon.rows("SELECT state, mode, lost FROM watchpost_status WHERE table_name = 'win_process_events'");
    assert_eq!(text(&state[0], "state"), "running", "{state:?}");
    assert_eq!(text(&state[0], "mode"), "bpf", "{state:?}");
}
