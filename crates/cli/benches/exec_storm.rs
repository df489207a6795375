//! Exec storm, side by side (issue 4): spawn+exec+wait of `/bin/true MARKER` for a fixed time,
//! without an agent, with the release `watchpost daemon` (every Linux sensor on), with Debian's
//! auditd and an execve rule as the peer, and without an agent again. Prints the exec rates and
//! their ratios, CPU seconds per 1,000 execs of watchpost and of auditd, and what each lost.
//!
//! Also with every other event table disabled (`watchpost.disabled_tables`): watchpost capturing
//! what auditd's execve rule captures, the like-for-like comparison; and that again with the
//! storm's executable excluded by a filter, the cost a kernel-side exclusion could save.
//!
//! Each phase with an agent starts with a second of unmeasured storm (see `warm_up`), so that
//! the figures are the cost per exec, not the agent's start-up. CPU is the scheduler's
//! nanosecond count of the agent's threads (watchpost's and auditd's alike) from the start of
//! the storm until the agent has gone idle after it; the daemon is not queried in that window.
//!
//! `cargo bench -p watchpost --bench exec_storm [-- SECONDS]` as root (default 5 s per phase).

#[cfg(target_os = "linux")]
#[path = "../tests/common.rs"]
mod common;
#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Duration;

    if !common::is_root() {
        eprintln!("SKIPPED: the exec storm needs root (BPF sensors, auditd)");
        return;
    }
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let phase = Duration::from_secs(seconds);
    let marker = format!("WPSTORM{}", std::process::id());

    let before = storm(phase, &format!("{marker}-none1"));
    println!("without agent:   {:>7.0} execs/s ({} execs)", before.rate(), before.execs);

    let daemon = common::Daemon::start(&common::logger_config(""));
    let pid = daemon.child.as_ref().map_or(0, |c| c.id());
    support::wait_running(&daemon, "win_process_events");
    warm_up(&marker, || settle_stored(&daemon));
    let tag = format!("{marker}-agent");
    let (with_agent, agent) = measured_storm(pid, phase, &tag);
    settle_stored(&daemon);
    let stored = creates(&daemon, &tag);
    let status = daemon.rows("SELECT lost FROM watchpost_status WHERE table_name = 'win_process_events'");
    let agent_lost = status.first().map(|r| common::text(r, "lost")).unwrap_or_default();
    drop(daemon);
    println!(
        "with watchpost:  {:>7.0} execs/s ({} execs); {stored} PROC_CREATE rows stored, kernel lost {agent_lost}",
        with_agent.rate(),
        with_agent.execs
    );

    // Like for like with auditd's execve rule: watchpost capturing process events only (every
    // other event table disabled, so their sensors do not run).
    let others: Vec<String> = watchpost_catalog::catalog()
        .tables()
        .iter()
        .filter(|t| t.kind == watchpost_catalog::TableKind::Evented && t.name != "win_process_events")
        .map(|t| format!("{:?}", t.name))
        .collect();
    let process_only = common::Daemon::start(&common::logger_config(&format!(
        r#""watchpost": {{"disabled_tables": [{}]}},"#,
        others.join(", ")
    )));
    let pid = process_only.child.as_ref().map_or(0, |c| c.id());
    support::wait_running(&process_only, "win_process_events");
    warm_up(&marker, || settle_stored(&process_only));
    let tag = format!("{marker}-process");
    let (process_run, process) = measured_storm(pid, phase, &tag);
    settle_stored(&process_only);
    let process_stored = creates(&process_only, &tag);
    drop(process_only);
    println!(
        "with watchpost, process events only: {:>7.0} execs/s ({} execs); {process_stored} PROC_CREATE rows stored",
        process_run.rate(),
        process_run.execs
    );

    // Process events only with the storm's executable excluded by a filter: what is left is
    // the cost of capturing, decoding and judging each exec (and its fork and exit), the most a
    // kernel-side exclusion could save.
    let excluded = common::Daemon::start(&common::logger_config(&format!(
        r#""watchpost": {{"disabled_tables": [{}]}},
        "plgx_event_filters": {{"win_process_events": {{"path": {{"exclude": {{"values": ["/usr/bin/true"]}}}}}}}},"#,
        others.join(", ")
    )));
    let pid = excluded.child.as_ref().map_or(0, |c| c.id());
    support::wait_running(&excluded, "win_process_events");
    let settle_filtered = || {
        support::settle(Duration::from_secs(1), 30, || {
            let rows = excluded
                .rows("SELECT filtered FROM watchpost_status WHERE table_name = 'win_process_events'");
            rows.first().and_then(|r| common::text(r, "filtered").parse().ok()).unwrap_or(0)
        })
    };
    warm_up(&marker, settle_filtered);
    let (filtered_run, filtered) = measured_storm(pid, phase, &format!("{marker}-filtered"));
    settle_filtered();
    drop(excluded);
    let filtered_per_1000 = filtered.seconds / filtered_run.execs.max(1) as f64 * 1000.0;
    println!(
        "with watchpost, process events only, /usr/bin/true excluded: {:>7.0} execs/s ({} execs); CPU {filtered_per_1000:.3} s per 1,000 execs",
        filtered_run.rate(),
        filtered_run.execs
    );

    let audit = support::Auditd::start(&["-a always,exit -F arch=b64 -S execve,execveat -k wpstorm"]);
    let mut audit_line = None;
    if let Some(auditd) = &audit {
        warm_up(&marker, || {
            std::thread::sleep(Duration::from_secs(1));
            0
        });
        let lost_before = support::Auditd::lost();
        let tag = format!("{marker}-audit");
        let (run, cpu) = measured_storm(auditd.pid(), phase, &tag);
        let records = support::settle(Duration::from_secs(1), 30, || {
            std::fs::read_to_string(auditd.log_path())
                .map(|log| {
                    log.lines().filter(|l| l.contains("type=EXECVE") && l.contains(&tag)).count() as u64
                })
                .unwrap_or(0)
        });
        let lost = support::Auditd::lost().saturating_sub(lost_before);
        println!(
            "with auditd:     {:>7.0} execs/s ({} execs); {records} EXECVE records logged, kernel lost {lost}",
            run.rate(),
            run.execs
        );
        audit_line = Some((run, cpu));
    }
    drop(audit);

    let after = storm(phase, &format!("{marker}-none2"));
    println!("without agent:   {:>7.0} execs/s ({} execs)", after.rate(), after.execs);

    let baseline = (before.rate() + after.rate()) / 2.0;
    println!();
    println!("exec rate with watchpost / without: {:.2}", with_agent.rate() / baseline);
    let agent_per_1000 = agent.seconds / with_agent.execs.max(1) as f64 * 1000.0;
    println!(
        "watchpost CPU: {:.2} s ({:.2} s in clock ticks), {agent_per_1000:.3} s per 1,000 execs ({})",
        agent.seconds, agent.ticks, agent.threads
    );
    let process_per_1000 = process.seconds / process_run.execs.max(1) as f64 * 1000.0;
    println!("exec rate with watchpost, process events only / without: {:.2}", process_run.rate() / baseline);
    println!(
        "watchpost CPU, process events only: {:.2} s ({:.2} s in clock ticks), {process_per_1000:.3} s per 1,000 execs ({})",
        process.seconds, process.ticks, process.threads
    );
    if let Some((run, cpu)) = audit_line {
        let audit_per_1000 = cpu.seconds / run.execs.max(1) as f64 * 1000.0;
        println!("exec rate with auditd / without:    {:.2}", run.rate() / baseline);
        println!(
            "auditd CPU:    {:.2} s ({:.2} s in clock ticks), {audit_per_1000:.3} s per 1,000 execs",
            cpu.seconds, cpu.ticks
        );
        if audit_per_1000 > 0.0 {
            println!("watchpost CPU / auditd CPU per exec: {:.2}", agent_per_1000 / audit_per_1000);
            println!(
                "watchpost CPU, process events only / auditd CPU per exec: {:.2}",
                process_per_1000 / audit_per_1000
            );
        }
    }
}

/// What an agent spent on one storm.
#[cfg(target_os = "linux")]
struct AgentCpu {
    /// Its threads' scheduler counts (see `support::live_cpu_seconds`).
    seconds: f64,
    /// `/proc/PID/stat` over the same window, in clock ticks: the cross-check.
    ticks: f64,
    /// Per thread name (`support::thread_cpu_breakdown`).
    threads: String,
}

/// A storm of `length` tagged `tag`, and what the agent `pid` (watchpost or auditd) spent on
/// it: from the storm's start until the agent has gone idle, watched without querying it.
#[cfg(target_os = "linux")]
fn measured_storm(pid: u32, length: std::time::Duration, tag: &str) -> (Storm, AgentCpu) {
    let threads_before = support::thread_cpu_seconds(pid);
    let ticks_before = support::cpu_seconds(pid);
    let run = storm(length, tag);
    support::settle_cpu(pid);
    let threads_after = support::thread_cpu_seconds(pid);
    let cpu = AgentCpu {
        seconds: support::cpu_between(&threads_before, &threads_after),
        ticks: support::cpu_seconds(pid) - ticks_before,
        threads: support::thread_cpu_breakdown(&threads_before, &threads_after),
    };
    (run, cpu)
}

/// A second of storm before a measured phase, then `settle`: what the agent (or auditd) does
/// once after it starts (sensors still attaching, the dpkg index read at the first image load,
/// caches filling) is start-up cost, not the cost per exec that the phase measures.
#[cfg(target_os = "linux")]
fn warm_up(marker: &str, settle: impl FnOnce() -> u64) {
    storm(std::time::Duration::from_secs(1), &format!("{marker}-warmup"));
    settle();
}

/// Waits until the daemon's stored count of `win_process_events` stops growing (a status
/// query, which costs the daemon next to nothing).
#[cfg(target_os = "linux")]
fn settle_stored(daemon: &common::Daemon) -> u64 {
    support::settle(std::time::Duration::from_secs(1), 30, || {
        let rows = daemon.rows("SELECT stored FROM watchpost_status WHERE table_name = 'win_process_events'");
        rows.first().and_then(|r| common::text(r, "stored").parse().ok()).unwrap_or(0)
    })
}

/// The PROC_CREATE rows of the storm tagged `tag`.
#[cfg(target_os = "linux")]
fn creates(daemon: &common::Daemon, tag: &str) -> u64 {
    let sql = format!(
        "SELECT count(*) AS n FROM win_process_events WHERE action = 'PROC_CREATE' AND path = '/usr/bin/true' AND cmdline LIKE '%{tag}%'"
    );
    common::text(&daemon.rows(&sql)[0], "n").parse().unwrap_or(0)
}

#[cfg(target_os = "linux")]
struct Storm {
    execs: u64,
    elapsed: std::time::Duration,
}

#[cfg(target_os = "linux")]
impl Storm {
    fn rate(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Spawns, execs and waits for `/bin/true TAG-N` until `length` has passed.
///
/// Without the `LD_LIBRARY_PATH` that `cargo bench` sets (four directories every `/bin/true`
/// would search for its libraries first, a seventh of the storm's rate): the storm runs as
/// fast as this machine execs.
#[cfg(target_os = "linux")]
fn storm(length: std::time::Duration, tag: &str) -> Storm {
    let start = std::time::Instant::now();
    let mut execs = 0;
    while start.elapsed() < length {
        let status = std::process::Command::new("/bin/true")
            .arg(format!("{tag}-{execs}"))
            .env_remove("LD_LIBRARY_PATH")
            .status();
        if status.is_ok_and(|s| s.success()) {
            execs += 1;
        }
    }
    Storm { execs, elapsed: start.elapsed() }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this benchmark runs on Linux only");
}
