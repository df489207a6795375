//! File storm, side by side: a Python child runs create + write (64 bytes) + close + delete
//! cycles of distinct files in a folder, without an agent, with the release `watchpost daemon`
//! (that folder in `win_include_paths`; every Linux sensor on), with Debian's auditd and a
//! `-w DIR -p wa` watch as the peer, and without an agent again. Prints wall times, the rows
//! watchpost stored against the 3 per cycle expected (FILE_CREATE, FILE_WRITE, FILE_DELETE),
//! its CPU seconds and losses, and auditd's records and CPU seconds.
//!
//! `cargo bench -p watchpost --bench file_storm [-- CYCLES]` as root (default 50,000).

#[cfg(target_os = "linux")]
#[path = "../tests/common.rs"]
mod common;
#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
const STORM: &str = r#"
import os, sys
folder, cycles = sys.argv[1], int(sys.argv[2])
data = b"x" * 64
for n in range(cycles):
    path = f"{folder}/f{n}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.unlink(path)
"#;

#[cfg(target_os = "linux")]
fn main() {
    if !common::is_root() {
        eprintln!("SKIPPED: the file storm needs root (fanotify, auditd)");
        return;
    }
    let cycles: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(50_000);
    let dir = match tempfile::Builder::new().prefix("wp-file-storm").tempdir_in("/var/tmp") {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create the storm folder: {e}");
            return;
        }
    };
    let folder = dir.path().display().to_string();
    let phase = |name: &str| {
        let sub = format!("{folder}/{name}");
        std::fs::create_dir_all(&sub).map(|_| sub).unwrap_or_else(|e| panic!("create {name}: {e}"))
    };
    println!("{cycles} create+write+delete cycles per run in {folder}");

    let before = storm(&phase("none1"), cycles);
    println!("without agent:  {:>7.2} s", before.as_secs_f64());

    let agent_folder = phase("agent");
    let config = format!(
        r#"{{ "options": {{ "events_max": {max}, "events_expiry": 3600 }},
             "win_include_paths": {{ "storm": ["{agent_folder}"] }} }}"#,
        max = cycles * 4 + 1000
    );
    let daemon = common::Daemon::start(&config);
    let pid = daemon.child.as_ref().map_or(0, |c| c.id());
    support::wait_running(&daemon, "win_file_events");
    // The rows are counted once the agent is idle, outside the CPU window.
    let (with_agent, agent_cpu) = support::cpu_while(pid, || storm(&agent_folder, cycles));
    let count_sql =
        format!("SELECT count(*) AS n FROM win_file_events WHERE target_path LIKE '{agent_folder}/%'");
    let stored = support::settle(std::time::Duration::from_secs(2), 60, || {
        common::text(&daemon.rows(&count_sql)[0], "n").parse().unwrap_or(0)
    });
    let by_action = daemon.rows(&format!(
        "SELECT action, count(*) AS n, sum(hashed) AS hashed FROM win_file_events \
         WHERE target_path LIKE '{agent_folder}/%' GROUP BY action ORDER BY action"
    ));
    let status = daemon.rows("SELECT lost FROM watchpost_status WHERE table_name = 'win_file_events'");
    let lost = status.first().map(|r| common::text(r, "lost")).unwrap_or_default();
    drop(daemon);
    let expected = cycles * 3;
    println!(
        "with watchpost: {:>7.2} s; {stored} of {expected} rows stored ({:.2} %), sensor lost {lost}, CPU {agent_cpu:.2} s",
        with_agent.as_secs_f64(),
        stored as f64 / expected as f64 * 100.0
    );
    for row in &by_action {
        println!(
            "  {:<12} {:>7} rows, {} hashed",
            common::text(row, "action"),
            common::text(row, "n"),
            common::text(row, "hashed")
        );
    }

    let audit_folder = phase("audit");
    let audit = support::Auditd::start(&[&format!("-w {audit_folder} -p wa -k wpfilestorm")]);
    if let Some(auditd) = &audit {
        let lost_before = support::Auditd::lost();
        let (run, cpu) = support::cpu_while(auditd.pid(), || storm(&audit_folder, cycles));
        let records = support::settle(std::time::Duration::from_secs(2), 60, || {
            std::fs::read_to_string(auditd.log_path())
                .map(|log| {
                    log.lines().filter(|l| l.starts_with("type=SYSCALL") && l.contains("wpfilestorm")).count()
                        as u64
                })
                .unwrap_or(0)
        });
        let lost = support::Auditd::lost().saturating_sub(lost_before);
        println!(
            "with auditd:    {:>7.2} s; {records} SYSCALL records logged (open+unlink: {} expected), kernel lost {lost}, auditd CPU {cpu:.2} s",
            run.as_secs_f64(),
            cycles * 2
        );
    }
    drop(audit);

    let after = storm(&phase("none2"), cycles);
    println!("without agent:  {:>7.2} s", after.as_secs_f64());
    let baseline = (before.as_secs_f64() + after.as_secs_f64()) / 2.0;
    println!();
    println!("wall time with watchpost / without: {:.2}", with_agent.as_secs_f64() / baseline);
    println!("watchpost CPU per 1,000 cycles: {:.3} s", agent_cpu / cycles as f64 * 1000.0);
}

/// Runs the Python storm in `folder`; its wall time.
#[cfg(target_os = "linux")]
fn storm(folder: &str, cycles: u64) -> std::time::Duration {
    let start = std::time::Instant::now();
    let status = std::process::Command::new("python3")
        .args(["-c", STORM, folder, &cycles.to_string()])
        .status()
        .expect("run python3");
    assert!(status.success(), "the storm script failed");
    start.elapsed()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this benchmark runs on Linux only");
}
