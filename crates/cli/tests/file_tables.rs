//! File telemetry through SQL on the daemon: a shell script creates, writes, back-dates and
//! copies an executable in a folder in scope; the rows a user queries carry the acting process
//! and the hashes `sha256sum` prints, and an exclude filter on `target_path` drops its files.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Daemon, is_root, text};

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

/// Issue 5's YARA path end to end: a file written by a shell under a folder a YARA category
/// names is seen by the file sensor, scanned off the event path and served as a
/// `win_yara_events` row; a clean file gives no row, and a broken rule file in another group is
/// reported in `watchpost_status` while the good group keeps matching.
#[test]
fn a_file_matching_a_yara_rule_becomes_a_yara_row_through_sql() {
    if !is_root() {
        eprintln!("SKIPPED: the file sensor needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).expect("create folders");
    let good = root.join("marker.yar");
    std::fs::write(
        &good,
        "rule WatchpostMarker {\n  strings:\n    $m = \"WATCHPOST-SQL-MARKER\"\n  condition:\n    $m and filename matches /\\.bin$/\n}\n",
    )
    .expect("write rules");
    let broken = root.join("broken.yar");
    std::fs::write(&broken, "rule Broken {\n  condition:\n    no_such_identifier\n}\n").expect("write rules");
    let (d, g, b) = (downloads.display(), good.display(), broken.display());
    let config = format!(
        r#"{{
  "options": {{ "events_expiry": 3600, }},
  "win_include_paths": {{ "test": ["{root}"], }},
  "file_paths": {{ "downloads": ["{d}/%%"], }},
  "yara": {{
    "signatures": {{ "markers": ["{g}"], "broken": ["{b}"], }},
    "file_paths": {{ "downloads": ["markers", "broken"], }},
  }},
}}"#,
        root = root.display()
    );
    let daemon = Daemon::start(&config);

    let out = Command::new("/bin/sh")
        .args([
            "-c",
            &format!(
                "cd {d} && printf 'nothing here' > clean.bin && printf 'xx WATCHPOST-SQL-MARKER xx' > hit.bin && \
                 printf 'WATCHPOST-SQL-MARKER' > named.txt && printf 'WATCHPOST-SQL-MARKER' > last.bin"
            ),
        ])
        .output()
        .expect("run the script");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // One worker scans in arrival order: once the last file's row is in, the others were scanned.
    let query = format!(
        "SELECT target_path, category, action, matches, count, md5 FROM win_yara_events \
         WHERE target_path LIKE '{d}/%' ORDER BY target_path"
    );
    daemon.wait_rows(&format!("SELECT eid FROM win_yara_events WHERE target_path = '{d}/last.bin'"), 1);
    let rows = daemon.rows(&query);
    let paths: Vec<String> = rows.iter().map(|r| text(r, "target_path")).collect();
    assert_eq!(paths, [format!("{d}/hit.bin"), format!("{d}/last.bin")], "{rows:?}");
    let hit = &rows[0];
    assert_eq!(text(hit, "category"), "downloads");
    assert_eq!(text(hit, "matches"), "WatchpostMarker");
    assert_eq!(text(hit, "count"), "1");
    assert_eq!(text(hit, "md5"), sum("md5sum", &downloads.join("hit.bin")));
    assert!(text(hit, "action").starts_with("FILE "), "{hit:?}");

    let status =
        daemon.rows("SELECT state, last_error FROM watchpost_status WHERE table_name = 'win_yara_events'");
    assert!(text(&status[0], "state").starts_with("degraded: "), "{status:?}");
    let error = text(&status[0], "last_error");
    assert!(error.contains(&b.to_string()) && error.contains("line 3"), "{error}");
}
