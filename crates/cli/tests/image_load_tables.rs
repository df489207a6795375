//! Image loads through SQL on the daemon: a Python helper `dlopen`s a private copy of a library
//! twice and a marked `/bin/true` is exec'd; the rows a user sees must name them, join with
//! `win_process_events` on the process guid, and say what dpkg vouches for.
#![cfg(target_os = "linux")]

mod common;

use std::process::Command;

use common::{Daemon, is_root, logger_config, text};

fn md5sum(path: &str) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("run md5sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

const HELPER: &str = r#"
import ctypes, _ctypes, sys
library = ctypes.CDLL(sys.argv[1])
_ctypes.dlclose(library._handle)
ctypes.CDLL(sys.argv[1])
"#;

#[test]
fn image_loads_arrive_through_sql_once_per_process() {
    if !is_root() {
        eprintln!("SKIPPED: image loads need root (CI runs as root)");
        return;
    }
    let daemon = Daemon::start(&logger_config(r#""watchpost": { "image_load_dedup": "process" },"#));
    let copy = daemon.dir.path().join("libwatchpost-sql.so");
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libXau.so.6", &copy).expect("copy the library");
    let copy = copy.to_str().expect("utf-8 temp path").to_string();
    let helper = Command::new("/usr/bin/python3").args(["-c", HELPER, &copy]).status().expect("run python3");
    assert!(helper.success());
    let marker = format!("WPIMG{}", std::process::id());
    assert!(Command::new("/bin/true").arg(&marker).status().expect("run /bin/true").success());

    let rows = daemon.wait_rows(
        &format!(
            "SELECT action, pid, process_guid, md5, uid, sign_info, trust_info, num_of_certs, issuer_name \
             FROM win_image_load_events WHERE image_path = '{copy}'"
        ),
        1,
    );
    assert_eq!(rows.len(), 1, "mapped twice by one process, reported once: {rows:?}");
    let row = &rows[0];
    assert_eq!(text(row, "action"), "IMAGE_LOAD");
    assert_eq!(text(row, "md5"), md5sum(&copy));
    assert_eq!((text(row, "uid").as_str(), text(row, "sign_info").as_str()), ("root", "Unpackaged"));
    assert_eq!(text(row, "trust_info"), "Untrusted");
    for certificate_column in ["num_of_certs", "issuer_name"] {
        assert!(row.get(certificate_column).is_none_or(|v| v.is_null()), "no certificates: {row:?}");
    }
    let map = daemon.wait_rows(
        &format!(
            "SELECT pid, process_guid, image_base, image_size, image_memory_mode \
             FROM win_image_load_process_map WHERE image_path = '{copy}'"
        ),
        1,
    );
    assert_eq!(text(&map[0], "process_guid"), text(row, "process_guid"));
    assert_eq!(text(&map[0], "image_memory_mode"), "r-x");
    assert!(text(&map[0], "image_base").starts_with("0x"), "{map:?}");

    // libc of the marked exec, found by joining on the process guid.
    let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    let joined = daemon.wait_rows(
        &format!(
            "SELECT i.image_path, i.md5, i.sign_info, i.trust_info, p.path FROM win_image_load_events i \
             JOIN win_process_events p ON p.process_guid = i.process_guid \
             WHERE p.cmdline = '/bin/true {marker}' AND p.action = 'PROC_CREATE' AND i.image_path = '{libc}'"
        ),
        1,
    );
    assert_eq!(joined.len(), 1, "{joined:?}");
    assert_eq!(text(&joined[0], "path"), "/usr/bin/true");
    assert_eq!(text(&joined[0], "md5"), md5sum(libc));
    assert_eq!(text(&joined[0], "sign_info"), "Package: libc6 (checksum matches)");
    assert_eq!(text(&joined[0], "trust_info"), "Trusted");

    let state = daemon
        .rows("SELECT state, mode, lost FROM watchpost_status WHERE table_name = 'win_image_load_events'");
    assert_eq!(text(&state[0], "state"), "running", "{state:?}");
    assert_eq!(text(&state[0], "mode"), "perf", "{state:?}");
}

/// `watchpost.disabled_tables`: the image-load sensor does not run while both its tables are
/// disabled (the process sensor does), and a reload that enables them starts it.
#[test]
fn disabled_tables_are_not_captured_until_a_reload_enables_them() {
    if !is_root() {
        eprintln!("SKIPPED: image loads need root (CI runs as root)");
        return;
    }
    let disabled =
        r#""watchpost": { "disabled_tables": ["win_image_load_events", "win_image_load_process_map"] },"#;
    let daemon = Daemon::start(&logger_config(disabled));
    let status = |daemon: &Daemon, table: &str| {
        let rows =
            daemon.rows(&format!("SELECT state, mode FROM watchpost_status WHERE table_name = '{table}'"));
        rows.first().map(|r| (text(r, "state"), text(r, "mode"))).unwrap_or_default()
    };
    assert_eq!(
        status(&daemon, "win_image_load_events"),
        ("disabled".to_string(), "watchpost.disabled_tables".to_string())
    );
    let marker = format!("WPOFF{}", std::process::id());
    assert!(Command::new("/bin/true").arg(&marker).status().expect("run /bin/true").success());
    let exec = format!(
        "SELECT pid FROM win_process_events WHERE action = 'PROC_CREATE' AND cmdline LIKE '%{marker}%'"
    );
    daemon.wait_rows(&exec, 1);
    assert!(daemon.rows("SELECT pid FROM win_image_load_events").is_empty(), "a disabled table got rows");
    assert!(daemon.rows("SELECT pid FROM win_image_load_process_map").is_empty());

    let enabled = std::fs::read_to_string(&daemon.config)
        .expect("read config")
        .replace(r#"["win_image_load_events", "win_image_load_process_map"]"#, "[]");
    std::fs::write(&daemon.config, enabled).expect("rewrite config");
    let running = common::wait_for(std::time::Duration::from_secs(30), || {
        (status(&daemon, "win_image_load_events").0 == "running").then_some(())
    });
    assert!(running.is_some(), "not restarted: {:?}", status(&daemon, "win_image_load_events"));
    let marker = format!("WPON{}", std::process::id());
    assert!(Command::new("/bin/true").arg(&marker).status().expect("run /bin/true").success());
    let exec = format!(
        "SELECT pid FROM win_process_events WHERE action = 'PROC_CREATE' AND cmdline LIKE '%{marker}%'"
    );
    let pid = text(&daemon.wait_rows(&exec, 1)[0], "pid");
    daemon.wait_rows(
        &format!("SELECT pid FROM win_image_load_events WHERE pid = {pid} AND image_path = '/usr/bin/true'"),
        1,
    );
}
