//! What the side-by-side benchmarks share: CPU time of a process, waiting for the daemon's
//! sensors and for its store to catch up, and Debian's auditd as the peer agent. The benchmarks run the release `watchpost daemon` through the end-to-end tests'
//! `Daemon` helper (`tests/common.rs`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// User plus system CPU seconds `pid` has used so far (its threads included), from
/// `/proc/PID/stat`; 0.0 when it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the parenthesised command name, which may itself contain spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / clock_ticks()
}

/// CPU seconds of each live thread of `pid` so far, summed per thread name, from the
/// scheduler's nanosecond count (`/proc/PID/task/TID/schedstat`; the per-thread tick counts
/// of `stat` round each thread down by up to a tick). Threads that have exited are missing:
/// compare the sum with [`cpu_seconds`].
pub fn thread_cpu_seconds(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut per_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return per_name };
    for task in tasks.flatten() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file));
        let (Ok(name), Ok(schedstat)) = (read("comm"), read("schedstat")) else { continue };
        let Some(nanoseconds) = schedstat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        *per_name.entry(name.trim().to_string()).or_insert(0.0) += nanoseconds as f64 / 1e9;
    }
    per_name
}

/// CPU seconds the live threads of `pid` have used so far, from the scheduler's nanosecond
/// counts. [`cpu_seconds`] counts in clock ticks, and a tick (10 ms) is several percent of a
/// phase's figure; this is exact but blind to threads that have exited, so measure with it
/// only where the process starts none (do not query the daemon inside the window: each query
/// runs on a thread of its own).
pub fn live_cpu_seconds(pid: u32) -> f64 {
    thread_cpu_seconds(pid).values().sum()
}

/// Waits until `pid` has finished the work of a storm without asking it anything: polls its
/// CPU every 500 ms until an interval adds under 5 ms (an idle daemon uses about 1 ms), at
/// most 60 times.
pub fn settle_cpu(pid: u32) {
    let mut last = live_cpu_seconds(pid);
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(500));
        let now = live_cpu_seconds(pid);
        if now - last < 0.005 {
            return;
        }
        last = now;
    }
}

/// Waits for `pid` to be idle (so that its start-up work, such as hashing the images of every
/// running process, is not counted), runs `storm` and returns its result with the CPU seconds
/// `pid`'s threads spent from its start until `pid` went idle again ([`settle_cpu`]). Nothing
/// queries `pid` in that window: each query would run on a daemon thread of its own and count
/// as the storm's.
pub fn cpu_while<R>(pid: u32, storm: impl FnOnce() -> R) -> (R, f64) {
    settle_cpu(pid);
    let before = thread_cpu_seconds(pid);
    let result = storm();
    settle_cpu(pid);
    (result, cpu_between(&before, &thread_cpu_seconds(pid)))
}

/// CPU seconds per thread name between two [`thread_cpu_seconds`] readings (threads born in
/// between count from 0; a name whose threads exited counts 0, never less).
fn thread_cpu_deltas<'a>(
    before: &std::collections::BTreeMap<String, f64>,
    after: &'a std::collections::BTreeMap<String, f64>,
) -> impl Iterator<Item = (&'a String, f64)> {
    after.iter().map(|(name, cpu)| (name, (cpu - before.get(name).copied().unwrap_or(0.0)).max(0.0)))
}

/// CPU seconds the live threads used between two [`thread_cpu_seconds`] readings.
pub fn cpu_between(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> f64 {
    thread_cpu_deltas(before, after).map(|(_, delta)| delta).sum()
}

/// `after - before` per thread name, largest first, as `name 0.12 s` items.
pub fn thread_cpu_breakdown(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    let mut deltas: Vec<(&String, f64)> =
        thread_cpu_deltas(before, after).filter(|(_, delta)| *delta >= 0.005).collect();
    deltas.sort_by(|a, b| b.1.total_cmp(&a.1));
    deltas.iter().map(|(name, delta)| format!("{name} {delta:.2} s")).collect::<Vec<_>>().join(", ")
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant and has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Polls `count` every `interval` until it stops growing (the consumer has caught up), at most
/// `attempts` times, and returns the last count.
pub fn settle(interval: Duration, attempts: u32, mut count: impl FnMut() -> u64) -> u64 {
    let mut last = count();
    for _ in 0..attempts {
        std::thread::sleep(interval);
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Waits up to 30 s for the sensor of `table` to report `running`; warns (the figures that
/// follow would mean little) when it does not.
pub fn wait_running(daemon: &crate::common::Daemon, table: &str) {
    let sql = format!("SELECT state FROM watchpost_status WHERE table_name = '{table}'");
    let running = crate::common::wait_for(Duration::from_secs(30), || {
        let rows = daemon.rows(&sql);
        rows.first().filter(|r| crate::common::text(r, "state") == "running").map(|_| ())
    });
    if running.is_none() {
        eprintln!("warning: {table} is not running: {:?}", daemon.rows(&sql));
    }
}

/// Debian's auditd running as our child (`-n`, no fork) with `rules` loaded (auditctl syntax), logging to
/// a temporary file; the rules are deleted and auditd stopped on drop.
pub struct Auditd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Auditd {
    /// None (with the reason printed) when auditd is not installed or cannot start.
    pub fn start(rules: &[&str]) -> Option<Auditd> {
        let dir = tempfile::tempdir().ok()?;
        let log = dir.path().join("audit.log");
        let conf = dir.path().join("auditd.conf");
        let settings = format!(
            "log_file = {}\nlog_format = ENRICHED\nflush = INCREMENTAL_ASYNC\nfreq = 50\nmax_log_file = 1024\nmax_log_file_action = ROTATE\nnum_logs = 2\nspace_left = 2\nadmin_space_left = 1\ndisk_full_action = IGNORE\ndisk_error_action = IGNORE\n",
            log.display()
        );
        std::fs::write(&conf, settings).ok()?;
        let child = match Command::new("auditd")
            .args(["-n", "-c"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("auditd not available ({e}); install Debian's auditd for the side-by-side");
                return None;
            }
        };
        let auditd = Auditd { child, dir };
        std::thread::sleep(Duration::from_secs(1));
        auditctl(&["-D"]);
        auditctl(&["-b", "8192"]);
        for rule in rules {
            let args: Vec<&str> = rule.split_whitespace().collect();
            if !auditctl(&args) {
                eprintln!("auditctl {rule} failed");
                return None;
            }
        }
        auditctl(&["-e", "1"]);
        Some(auditd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// Records the kernel dropped (`auditctl -s`'s `lost`).
    pub fn lost() -> u64 {
        let Ok(out) = Command::new("auditctl").arg("-s").output() else { return 0 };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("lost ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        auditctl(&["-D"]);
        auditctl(&["-e", "0"]);
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn auditctl(args: &[&str]) -> bool {
    Command::new("auditctl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
