//! File telemetry through SQL on the daemon: a shell script creates, writes, back-dates and
//! copies an executable in a folder in scope; the rows a user queries carry the acting process
//! and the hashes `sha256sum` prints, and an exclude filter on `target_path` drops its files.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Daemon, text};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn sum(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().expect("run a checksum tool");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn file_events_arrive_through_sql_with_filters_applied() {
    if !is_root() {
        eprintln!("SKIPPED: the file sensor needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
    let inside = root.join("in");
    let excluded = inside.join("excluded");
    std::fs::create_dir_all(&excluded).expect("create folders");
    let (i, x) = (inside.display().to_string(), excluded.display().to_string());
    let config = format!(
        r#"{{
  "options": {{ "events_expiry": 3600, }},
  "win_include_paths": {{ "test": ["{i}"], }},
  "win_exclude_paths": {{ "test": ["{x}"], }},
  "plgx_event_filters": {{
    "win_file_events": {{ "target_path": {{ "exclude": {{ "values": ["*.SKIPME"] }} }} }},
  }},
}}"#
    );
    let daemon = Daemon::start(&config);

    let out = Command::new("/bin/sh")
        .args([
            "-c",
            &format!(
                "echo $$; cd {i} && printf hello > a.txt && printf no > b.skipme && printf no > {x}/c.txt && \
                 cp /bin/true tool && touch -d 2001-01-01T00:00:00Z a.txt && printf done > zz.marker"
            ),
        ])
        .output()
        .expect("run the script");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script_pid = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();

    let files = format!(
        "SELECT action, target_path, pid, process_name, uid, md5, sha256, hashed, pe_file, process_guid \
         FROM win_file_events WHERE target_path LIKE '{i}/%' ORDER BY time, eid"
    );
    // The marker is written last: once it is in, everything before it has been handled.
    daemon.wait_rows(&format!("SELECT eid FROM win_file_events WHERE target_path = '{i}/zz.marker'"), 1);
    let tool_write = format!(
        "SELECT md5, sha256, hashed, pe_file FROM win_file_events WHERE target_path = '{i}/tool' AND action = 'FILE_WRITE'"
    );
    let tool = daemon.wait_rows(&tool_write, 1);
    assert_eq!(text(&tool[0], "sha256"), sum("sha256sum", &inside.join("tool")));
    assert_eq!(text(&tool[0], "md5"), sum("md5sum", &inside.join("tool")));
    assert_eq!((text(&tool[0], "hashed").as_str(), text(&tool[0], "pe_file").as_str()), ("1", "YES"));

    let a_write =
        format!("SELECT * FROM win_file_events WHERE target_path = '{i}/a.txt' AND action = 'FILE_WRITE'");
    let a = daemon.wait_rows(&a_write, 1);
    assert_eq!(text(&a[0], "pid"), script_pid);
    let shell = std::fs::canonicalize("/bin/sh").expect("canonical /bin/sh");
    assert_eq!(text(&a[0], "process_name"), shell.display().to_string());
    assert_eq!(text(&a[0], "uid"), "root");
    assert_eq!(text(&a[0], "sha256"), sum("sha256sum", &inside.join("a.txt")));
    assert_eq!(text(&a[0], "pe_file"), "NO");

    let rows = daemon.rows(&files);
    assert!(
        rows.iter().any(|r| text(r, "action") == "FILE_CREATE" && text(r, "target_path").ends_with("/a.txt"))
    );
    assert!(
        !rows.iter().any(|r| text(r, "target_path").ends_with(".skipme")),
        "filter not applied: {rows:?}"
    );
    assert!(
        !rows.iter().any(|r| text(r, "target_path").starts_with(&x)),
        "excluded folder reported: {rows:?}"
    );

    let stomp = daemon.wait_rows(
        &format!("SELECT action, old_timestamp, new_timestamp, pid, process_name FROM win_file_timestomp_events WHERE target_path = '{i}/a.txt'"),
        1,
    );
    assert_eq!(text(&stomp[0], "new_timestamp"), "2001-01-01T00:00:00.000000000Z");
    assert_eq!(text(&stomp[0], "process_name"), "/usr/bin/touch");

    let pe = daemon.wait_rows(
        &format!(
            "SELECT action, md5, hashed, process_name FROM win_pefile_events WHERE target_path = '{i}/tool'"
        ),
        1,
    );
    assert_eq!(text(&pe[0], "action"), "FILE Created");
    assert_eq!(text(&pe[0], "md5"), sum("md5sum", &inside.join("tool")));
    assert_eq!(text(&pe[0], "process_name"), "/usr/bin/cp");

    let state = daemon.rows("SELECT state, mode FROM watchpost_status WHERE table_name = 'win_file_events'");
    assert_eq!(text(&state[0], "state"), "running", "{state:?}");
    assert_eq!(text(&state[0], "mode"), "fanotify", "{state:?}");
}
