//! `win_process_perf` on Linux: per-process counters from `/proc/PID/stat`, `status`, `io` and
//! `fd`, shaped like the Windows "Process" performance counters.
//!
//! Units and sources (all TEXT columns hold decimal numbers):
//! - `user_time`, `privileged_time`, `processor_time` (their sum), `elapsed_time` (since the
//!   process started): SECONDS with two decimals, e.g. `12.34` (the kernel counts in clock ticks
//!   of 10 ms). Cumulative since the process started, not a percentage;
//! - `working_set`: `VmRSS` in bytes; `working_set_peak`: `VmHWM` in bytes;
//! - `private_bytes`: `RssAnon + VmSwap` in bytes, the process's own anonymous memory, resident
//!   or swapped (closest to Windows' committed private bytes; `VmData` would count reserved but
//!   untouched address space);
//! - `non_paged_pool_bytes`, `page_pool_bytes_peak`: `0`: Linux has no per-process kernel pool
//!   accounting;
//! - `priority_base`: the kernel's priority from `stat` (`20 + nice` for normal processes, so
//!   `20` is the default; negative for real-time processes);
//! - `creating_process_id`: the parent pid (after reparenting, the adopter);
//! - `thread_count`; `handle_count`: the number of open file descriptors;
//! - `io_read_bytes_per_sec` / `io_write_bytes_per_sec`: `rchar` / `wchar` of `/proc/PID/io`
//!   (bytes through read/write-like system calls, files, pipes and sockets alike, as Windows
//!   counts "IO" bytes), `io_read_ops_per_sec` / `io_write_ops_per_sec`: `syscr` / `syscw`,
//!   `io_data_bytes_per_sec`: read plus write bytes; whole numbers per second.
//!
//! Rates are measured since the previous query: the table keeps each process's last counters
//! keyed by (pid, start time). A process without a previous sample gets:
//! - if it started after the last full scan: its average since it started (its whole life lies
//!   within the interval);
//! - otherwise (first query, or a `pid = N` query for a process not seen yet): a short sample of
//!   [`FIRST_SAMPLE`] (200 ms) taken during the query, so such queries take that much longer.
//!
//! Rate columns are NULL when `/proc/PID/io` is unreadable (another user's process when not
//! root). A `pid = N` constraint reads only that process; vanished processes are skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use watchpost_catalog::{GenerateError, QueryContext, Row, Value};

use super::process::{ProcStat, clock_ticks_per_second, read_stat, seconds_since_boot, wanted_pids};
use crate::{SnapshotTable, snapshot_columns};

pub const TABLE: &str = "win_process_perf";

/// How long rates of processes without a previous sample are measured for.
pub const FIRST_SAMPLE: Duration = Duration::from_millis(200);

/// A previous sample shorter ago than this gives meaningless rates; measure anew instead.
const MIN_INTERVAL_SECONDS: f64 = 0.05;

/// The I/O counters of `/proc/PID/io`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// Per-second I/O rates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IoRates {
    pub read_bytes: f64,
    pub write_bytes: f64,
    pub read_ops: f64,
    pub write_ops: f64,
}

impl IoRates {
    /// The rates between two readings `seconds` apart. Counters never go back for one process;
    /// if they seem to, the rate is 0.
    pub fn between(before: &IoCounters, after: &IoCounters, seconds: f64) -> IoRates {
        let per_second =
            |b: u64, a: u64| if seconds > 0.0 { a.saturating_sub(b) as f64 / seconds } else { 0.0 };
        IoRates {
            read_bytes: per_second(before.read_bytes, after.read_bytes),
            write_bytes: per_second(before.write_bytes, after.write_bytes),
            read_ops: per_second(before.read_ops, after.read_ops),
            write_ops: per_second(before.write_ops, after.write_ops),
        }
    }
}

/// Parses `/proc/PID/io`.
pub fn parse_io(text: &str) -> Option<IoCounters> {
    let field = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok())
    };
    Some(IoCounters {
        read_bytes: field("rchar")?,
        write_bytes: field("wchar")?,
        read_ops: field("syscr")?,
        write_ops: field("syscw")?,
    })
}

/// The memory figures of `/proc/PID/status`, in bytes; 0 when absent (kernel threads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusMemory {
    pub rss: u64,
    pub rss_peak: u64,
    pub rss_anon: u64,
    pub swap: u64,
}

/// Parses the `Vm*`/`Rss*` lines of `/proc/PID/status`.
pub fn parse_status_memory(text: &str) -> StatusMemory {
    let bytes = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map_or(0, |kb| kb.saturating_mul(1024))
    };
    StatusMemory {
        rss: bytes("VmRSS"),
        rss_peak: bytes("VmHWM"),
        rss_anon: bytes("RssAnon"),
        swap: bytes("VmSwap"),
    }
}

/// Clock ticks as seconds with two decimals, exactly (no floating point).
pub fn ticks_as_seconds(ticks: u64, ticks_per_second: u64) -> String {
    let hz = ticks_per_second.max(1);
    let hundredths = u128::from(ticks) * 100 / u128::from(hz);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// One process as read during a query.
struct Reading {
    stat: ProcStat,
    memory: StatusMemory,
    io: Option<IoCounters>,
    /// Seconds since boot when `io` was read.
    io_time: f64,
    handle_count: Option<u64>,
    rates: Option<IoRates>,
}

#[derive(Default)]
struct History {
    /// The last counters per (pid, start time) and when they were read (seconds since boot).
    samples: HashMap<(u32, u64), (IoCounters, f64)>,
    /// Seconds since boot of the last query that read every process.
    last_full_scan: Option<f64>,
}

/// The `win_process_perf` snapshot table. Keeps the previous sample for rates.
pub struct ProcessPerf {
    proc_root: PathBuf,
    first_sample: Duration,
    history: Mutex<History>,
}

impl Default for ProcessPerf {
    fn default() -> ProcessPerf {
        ProcessPerf::with_proc_root("/proc")
    }
}

fn read_io(process_dir: &Path) -> Option<IoCounters> {
    parse_io(&std::fs::read_to_string(process_dir.join("io")).ok()?)
}

impl ProcessPerf {
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> ProcessPerf {
        ProcessPerf { proc_root: proc_root.into(), first_sample: FIRST_SAMPLE, history: Mutex::default() }
    }

    fn read(&self, pid: u32) -> Option<Reading> {
        let stat = read_stat(&self.proc_root, pid)?;
        let dir = self.proc_root.join(pid.to_string());
        let memory = parse_status_memory(&std::fs::read_to_string(dir.join("status")).ok()?);
        let io = read_io(&dir);
        let io_time = seconds_since_boot();
        let handle_count = std::fs::read_dir(dir.join("fd")).ok().map(|entries| entries.count() as u64);
        Some(Reading { stat, memory, io, io_time, handle_count, rates: None })
    }

    /// Fills in the rates of `readings` and remembers their counters for the next query.
    fn measure_rates(&self, readings: &mut [Reading], full_scan: bool) {
        let ticks = clock_ticks_per_second() as f64;
        let mut history = crate::lock(&self.history);
        let mut unsampled = Vec::new();
        for (index, reading) in readings.iter_mut().enumerate() {
            let Some(io) = reading.io else { continue };
            let key = (reading.stat.pid, reading.stat.start_time);
            let started = reading.stat.start_time as f64 / ticks;
            match history.samples.get(&key) {
                Some((before, when)) if reading.io_time - when >= MIN_INTERVAL_SECONDS => {
                    reading.rates = Some(IoRates::between(before, &io, reading.io_time - when));
                }
                _ if history.last_full_scan.is_some_and(|scan| started > scan)
                    && reading.io_time - started >= MIN_INTERVAL_SECONDS =>
                {
                    let rates = IoRates::between(&IoCounters::default(), &io, reading.io_time - started);
                    reading.rates = Some(rates);
                }
                _ => unsampled.push(index),
            }
        }
        if !unsampled.is_empty() {
            std::thread::sleep(self.first_sample);
            for index in unsampled {
                let reading = &mut readings[index];
                let dir = self.proc_root.join(reading.stat.pid.to_string());
                // Gone during the sample: no rates, but the row stays (it existed at query time).
                let Some(after) = read_io(&dir) else { continue };
                let now = seconds_since_boot();
                if let Some(before) = reading.io {
                    reading.rates = Some(IoRates::between(&before, &after, now - reading.io_time));
                }
                reading.io = Some(after);
                reading.io_time = now;
            }
        }
        if full_scan {
            history.samples.clear();
            history.last_full_scan = Some(seconds_since_boot());
        }
        for reading in readings.iter() {
            if let Some(io) = reading.io {
                history.samples.insert((reading.stat.pid, reading.stat.start_time), (io, reading.io_time));
            }
        }
    }
}

impl SnapshotTable for ProcessPerf {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn generate(&self, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let (table, columns) = snapshot_columns(
            TABLE,
            [
                "name",
                "pid",
                "user_time",
                "privileged_time",
                "processor_time",
                "thread_count",
                "working_set",
                "creating_process_id",
                "elapsed_time",
                "handle_count",
                "io_data_bytes_per_sec",
                "io_read_bytes_per_sec",
                "io_read_ops_per_sec",
                "io_write_bytes_per_sec",
                "io_write_ops_per_sec",
                "non_paged_pool_bytes",
                "page_pool_bytes_peak",
                "priority_base",
                "private_bytes",
                "working_set_peak",
            ],
        )?;
        let full_scan = context.equals("pid").next().is_none();
        let mut readings: Vec<Reading> = wanted_pids(context, &self.proc_root, TABLE)?
            .into_iter()
            .filter_map(|pid| self.read(pid))
            .collect();
        self.measure_rates(&mut readings, full_scan);

        let hz = clock_ticks_per_second();
        let now_ticks = (seconds_since_boot() * hz as f64) as u64;
        let rate = |value: Option<f64>| Value::from(value.map(|v| format!("{v:.0}")));
        Ok(readings
            .into_iter()
            .map(|r| {
                let stat = &r.stat;
                let values: [Value; 20] = [
                    Value::from(stat.comm.as_str()),
                    Value::from(stat.pid),
                    Value::from(ticks_as_seconds(stat.utime, hz)),
                    Value::from(ticks_as_seconds(stat.stime, hz)),
                    Value::from(ticks_as_seconds(stat.utime + stat.stime, hz)),
                    Value::from(stat.num_threads),
                    Value::from(r.memory.rss.to_string()),
                    Value::from(stat.ppid.to_string()),
                    Value::from(ticks_as_seconds(now_ticks.saturating_sub(stat.start_time), hz)),
                    Value::from(r.handle_count),
                    rate(r.rates.map(|x| x.read_bytes + x.write_bytes)),
                    rate(r.rates.map(|x| x.read_bytes)),
                    rate(r.rates.map(|x| x.read_ops)),
                    rate(r.rates.map(|x| x.write_bytes)),
                    rate(r.rates.map(|x| x.write_ops)),
                    Value::from("0"),
                    Value::from("0"),
                    Value::from(stat.priority.to_string()),
                    Value::from((r.memory.rss_anon + r.memory.swap).to_string()),
                    Value::from(r.memory.rss_peak.to_string()),
                ];
                let mut row = vec![Value::Null; table.columns.len()];
                for (at, value) in columns.iter().zip(values) {
                    row[*at] = value;
                }
                row
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};

    use watchpost_catalog::{Constraint, Op};

    use super::*;
    use crate::catalog_table;

    fn pid_query(pid: u32) -> QueryContext {
        QueryContext {
            constraints: vec![Constraint { column: "pid".into(), op: Op::Eq, expr: pid.to_string() }],
            columns_used: None,
        }
    }

    fn text(row: &Row, name: &str) -> String {
        let table = catalog_table(TABLE).unwrap();
        row[table.column_index(name).unwrap()].to_text().unwrap_or_default()
    }

    fn number(row: &Row, name: &str) -> f64 {
        text(row, name).parse().unwrap_or_else(|_| panic!("{name} is a number: {:?}", text(row, name)))
    }

    /// A child that reads and writes as fast as it can until killed; returned once it copies
    /// (while dd sets up, it briefly has more descriptors open).
    fn busy_child() -> Child {
        let child = Command::new("dd")
            .args(["if=/dev/zero", "of=/dev/null", "bs=4096"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let io = format!("/proc/{}/io", child.id());
        while parse_io(&std::fs::read_to_string(&io).unwrap()).unwrap().write_ops < 10 {
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    fn stop(mut child: Child) {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn proc_texts_are_parsed() {
        let io = "rchar: 4096\nwchar: 100\nsyscr: 7\nsyscw: 3\nread_bytes: 0\nwrite_bytes: 0\n";
        assert_eq!(
            parse_io(io),
            Some(IoCounters { read_bytes: 4096, write_bytes: 100, read_ops: 7, write_ops: 3 })
        );
        assert_eq!(parse_io("rchar: 1\n"), None);
        let status = "Name:\tbash\nVmHWM:\t    5000 kB\nVmRSS:\t    4000 kB\nRssAnon:\t     900 kB\n\
                      RssFile:\t    3100 kB\nVmSwap:\t      100 kB\nThreads:\t1\n";
        assert_eq!(
            parse_status_memory(status),
            StatusMemory { rss: 4_096_000, rss_peak: 5_120_000, rss_anon: 921_600, swap: 102_400 }
        );
        assert_eq!(parse_status_memory("Name:\tkthreadd\n"), StatusMemory::default());
    }

    #[test]
    fn times_and_rates_are_computed_as_documented() {
        assert_eq!(ticks_as_seconds(1234, 100), "12.34");
        assert_eq!(ticks_as_seconds(5, 100), "0.05");
        assert_eq!(ticks_as_seconds(3, 1000), "0.00");
        let before = IoCounters { read_bytes: 1000, write_bytes: 0, read_ops: 10, write_ops: 0 };
        let after = IoCounters { read_bytes: 3000, write_bytes: 500, read_ops: 30, write_ops: 5 };
        let rates = IoRates::between(&before, &after, 2.0);
        assert_eq!(rates, IoRates { read_bytes: 1000.0, write_bytes: 250.0, read_ops: 10.0, write_ops: 2.5 });
        assert_eq!(IoRates::between(&after, &before, 2.0).read_bytes, 0.0);
    }

    #[test]
    fn a_busy_child_shows_io_rates_and_its_counters() {
        let table = ProcessPerf::default();
        let child = busy_child();
        let pid = child.id();
        // First query: the 200 ms sample. Second: since the first.
        let first = table.generate(&pid_query(pid)).unwrap();
        let second = table.generate(&pid_query(pid)).unwrap();
        let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
        stop(child);
        for rows in [&first, &second] {
            assert_eq!(rows.len(), 1);
            let row = &rows[0];
            assert_eq!(text(row, "name"), "dd");
            assert_eq!(text(row, "pid"), pid.to_string());
            assert_eq!(text(row, "creating_process_id"), std::process::id().to_string());
            assert!(number(row, "io_read_bytes_per_sec") > 0.0, "{row:?}");
            assert!(number(row, "io_write_ops_per_sec") > 0.0, "{row:?}");
            assert!(
                number(row, "io_data_bytes_per_sec")
                    >= number(row, "io_read_bytes_per_sec") + number(row, "io_write_bytes_per_sec") - 2.0
            );
            assert_eq!(number(row, "thread_count"), 1.0);
            assert!(number(row, "working_set") > 0.0);
            assert!(number(row, "working_set_peak") >= number(row, "working_set"));
            assert!(number(row, "private_bytes") > 0.0);
            assert_eq!(number(row, "handle_count"), open_fds as f64);
            assert_eq!(text(row, "priority_base"), "20");
            assert_eq!(text(row, "non_paged_pool_bytes"), "0");
            let processor = number(row, "processor_time");
            assert!((processor - number(row, "user_time") - number(row, "privileged_time")).abs() < 0.011);
            assert!(number(row, "elapsed_time") >= 0.0);
        }
    }

    #[test]
    fn processes_started_after_a_full_scan_get_their_lifetime_rates() {
        let table = ProcessPerf::default();
        let all = table.generate(&QueryContext::default()).unwrap();
        assert!(all.iter().any(|row| text(row, "pid") == std::process::id().to_string()));
        let idle = Command::new("sleep").arg("30").spawn().unwrap();
        let busy = busy_child();
        std::thread::sleep(Duration::from_millis(100));
        let rows = table.generate(&pid_query(busy.id())).unwrap();
        let idle_rows = table.generate(&pid_query(idle.id())).unwrap();
        stop(busy);
        stop(idle);
        assert!(number(&rows[0], "io_read_bytes_per_sec") > 0.0, "{rows:?}");
        assert_eq!(text(&idle_rows[0], "io_write_ops_per_sec"), "0", "{idle_rows:?}");
        assert_eq!(text(&idle_rows[0], "name"), "sleep");
    }

    #[test]
    fn a_vanished_pid_gives_no_row() {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        assert!(ProcessPerf::default().generate(&pid_query(child.id())).unwrap().is_empty());
    }
}
