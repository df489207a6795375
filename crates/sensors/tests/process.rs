//! The process sensor end to end (Linux, as root): real short-lived processes, the sensor's
//! BPF programs (or its netlink fallback) and an in-memory sink. Waits use a deadline; nothing
//! asserts on timing. Every sensor sees every process on the host, so the tests pick their own
//! processes out by unique markers in argv.
#![cfg(target_os = "linux")]

mod support;
use support::{Collect, is_root};

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use watchpost_catalog::{Event, Stamper, Table, catalog};
use watchpost_sensors::linux::process::{process_guid, read_stat};
use watchpost_sensors::linux::process_cache::ProcessCache;
use watchpost_sensors::linux::process_events::{ProcessOptions, ProcessSensor};
use watchpost_sensors::{Sensor, SensorContext, SensorHealth};

const DEADLINE: Duration = Duration::from_secs(30);

/// One row as a user reads it.
#[derive(Clone, Debug)]
struct Row {
    action: String,
    pid: i64,
    process_guid: String,
    path: String,
    cmdline: String,
    parent_pid: i64,
    parent_process_guid: String,
    parent_path: String,
    owner_uid: String,
}

fn table() -> &'static Table {
    catalog().table("win_process_events").unwrap()
}

fn row(event: &Event) -> Row {
    let table = table();
    let value = |column: &str| &event.values[table.column_index(column).unwrap()];
    let text = |column: &str| value(column).to_text().unwrap_or_default();
    Row {
        action: text("action"),
        pid: value("pid").as_i64().unwrap(),
        process_guid: text("process_guid"),
        path: text("path"),
        cmdline: text("cmdline"),
        parent_pid: value("parent_pid").as_i64().unwrap_or(-1),
        parent_process_guid: text("parent_process_guid"),
        parent_path: text("parent_path"),
        owner_uid: text("owner_uid"),
    }
}

struct Harness {
    sink: Arc<Collect>,
    health: Arc<SensorHealth>,
    sensor: ProcessSensor,
}

impl Harness {
    fn start(options: ProcessOptions) -> Harness {
        let sink = Arc::new(Collect::default());
        let health = Arc::new(SensorHealth::new("process"));
        let cache = Arc::new(ProcessCache::default());
        let mut sensor = ProcessSensor::new(cache, options);
        let ctx = SensorContext { sink: sink.clone(), health: health.clone(), stamper: Stamper::global() };
        sensor.start(ctx).unwrap();
        Harness { sink, health, sensor }
    }

    fn rows(&self) -> Vec<Row> {
        self.sink.0.lock().unwrap().iter().map(row).collect()
    }

    /// Waits until `done` holds for the rows so far (the deadline only bounds a hang).
    fn wait_for(&self, done: impl Fn(&[Row]) -> bool) -> Vec<Row> {
        let start = Instant::now();
        loop {
            let rows = self.rows();
            if done(&rows) || start.elapsed() > DEADLINE {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn marker(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("MARKER-{test}-{}-{nanos}", std::process::id())
}

fn canonical(path: &str) -> String {
    std::fs::canonicalize(path).unwrap().to_str().unwrap().to_string()
}

fn own_guid() -> String {
    let own = read_stat(Path::new("/proc"), std::process::id()).unwrap();
    process_guid(own.pid, own.start_time)
}

#[test]
fn short_lived_execs_arrive_complete_with_their_exits() {
    if !is_root() {
        println!(
            "SKIPPED short_lived_execs_arrive_complete_with_their_exits: needs root to load BPF programs"
        );
        return;
    }
    let mut harness = Harness::start(ProcessOptions::default());
    assert_eq!(harness.health.snapshot().mode, "bpf", "{:?}", harness.health.snapshot());
    assert_eq!(harness.health.snapshot().state, "running");
    let marker = marker("storm");
    const COUNT: usize = 50;
    let mut pids = Vec::new();
    for i in 0..COUNT {
        let status = Command::new("/bin/true").arg(format!("{marker}-{i}")).spawn().unwrap();
        pids.push(i64::from(status.id()));
        let mut child = status;
        assert!(child.wait().unwrap().success());
    }
    let ours = |rows: &[Row], action: &str| -> Vec<Row> {
        rows.iter().filter(|r| r.action == action && pids.contains(&r.pid)).cloned().collect()
    };
    let rows = harness.wait_for(|rows| {
        ours(rows, "PROC_CREATE").len() >= COUNT && ours(rows, "PROC_TERMINATE").len() >= COUNT
    });
    harness.sensor.stop();
    let creates = ours(&rows, "PROC_CREATE");
    let terminates = ours(&rows, "PROC_TERMINATE");
    assert_eq!(creates.len(), COUNT, "every exec is reported once");
    assert_eq!(terminates.len(), COUNT, "every exit is reported once");

    let true_path = canonical("/bin/true");
    let own_path = canonical("/proc/self/exe");
    let own_guid = own_guid();
    for (i, pid) in pids.iter().enumerate() {
        let create = creates.iter().find(|r| r.pid == *pid).unwrap();
        assert_eq!(create.path, true_path);
        assert_eq!(create.cmdline, format!("/bin/true {marker}-{i}"));
        assert_eq!(create.parent_pid, i64::from(std::process::id()));
        assert_eq!(create.parent_path, own_path);
        assert_eq!(create.parent_process_guid, own_guid);
        assert_eq!(create.owner_uid, "root");
        assert!(create.process_guid.starts_with(&format!("{pid:08X}-")), "{}", create.process_guid);
        let terminate = terminates.iter().find(|r| r.pid == *pid).unwrap();
        assert_eq!(terminate.process_guid, create.process_guid, "one process, one guid");
        assert_eq!(terminate.path, true_path);
        assert_eq!(terminate.cmdline, create.cmdline);
        assert_eq!(terminate.parent_path, own_path);
    }
    let mut guids: Vec<&str> = creates.iter().map(|r| r.process_guid.as_str()).collect();
    guids.sort_unstable();
    guids.dedup();
    assert_eq!(guids.len(), COUNT, "every process has its own guid");
    assert_eq!(harness.health.snapshot().lost, 0);
    assert_eq!(harness.health.snapshot().state, "stopped");
}

#[test]
fn a_shell_is_the_parent_of_the_commands_it_runs() {
    if !is_root() {
        println!("SKIPPED a_shell_is_the_parent_of_the_commands_it_runs: needs root to load BPF programs");
        return;
    }
    let mut harness = Harness::start(ProcessOptions::default());
    let marker = marker("shell");
    // Two commands, so the shell forks for the first instead of exec'ing it in its place.
    let script = format!("/bin/true {marker}; /bin/true {marker}-last");
    let mut shell = Command::new("/bin/sh").arg("-c").arg(&script).spawn().unwrap();
    let shell_pid = i64::from(shell.id());
    assert!(shell.wait().unwrap().success());
    let rows = harness.wait_for(|rows| {
        rows.iter().any(|r| r.action == "PROC_CREATE" && r.cmdline == format!("/bin/true {marker}"))
            && rows.iter().any(|r| r.action == "PROC_TERMINATE" && r.pid == shell_pid)
    });
    harness.sensor.stop();
    let shell_create = rows.iter().find(|r| r.action == "PROC_CREATE" && r.pid == shell_pid).unwrap();
    assert_eq!(shell_create.path, canonical("/bin/sh"));
    assert_eq!(shell_create.cmdline, format!("/bin/sh -c {script}"));
    let child = rows
        .iter()
        .find(|r| r.action == "PROC_CREATE" && r.cmdline == format!("/bin/true {marker}"))
        .unwrap();
    assert_eq!(child.parent_pid, shell_pid);
    assert_eq!(child.parent_path, canonical("/bin/sh"));
    assert_eq!(child.parent_process_guid, shell_create.process_guid);
    assert_ne!(child.process_guid, shell_create.process_guid);
    let shell_exit = rows.iter().find(|r| r.action == "PROC_TERMINATE" && r.pid == shell_pid).unwrap();
    assert_eq!(shell_exit.process_guid, shell_create.process_guid);
}

#[test]
fn without_bpf_the_netlink_fallback_reports_a_process_living_long_enough() {
    if !is_root() {
        println!(
            "SKIPPED without_bpf_the_netlink_fallback_reports_a_process_living_long_enough: needs root for the netlink process connector"
        );
        return;
    }
    let mut harness = Harness::start(ProcessOptions { force_fallback: true });
    let snapshot = harness.health.snapshot();
    assert_eq!(snapshot.mode, "netlink+procfs");
    assert!(
        snapshot.state.starts_with("degraded: no BPF: ")
            && snapshot.state.ends_with("short-lived processes may miss path/cmdline"),
        "{}",
        snapshot.state
    );
    let marker = marker("fallback");
    // The marker as an argument the program ignores (sleep(1) refuses extra arguments).
    let program = "import time; time.sleep(1)";
    let mut sleeper = Command::new("/usr/bin/python3").args(["-c", program, &marker]).spawn().unwrap();
    let pid = i64::from(sleeper.id());
    assert!(sleeper.wait().unwrap().success());
    let rows = harness.wait_for(|rows| rows.iter().any(|r| r.action == "PROC_TERMINATE" && r.pid == pid));
    harness.sensor.stop();
    let create = rows.iter().find(|r| r.action == "PROC_CREATE" && r.pid == pid).unwrap();
    assert_eq!(create.path, canonical("/usr/bin/python3"));
    assert_eq!(create.cmdline, format!("/usr/bin/python3 -c {program} {marker}"));
    assert_eq!(create.parent_pid, i64::from(std::process::id()));
    assert_eq!(create.parent_path, canonical("/proc/self/exe"));
    assert_eq!(create.owner_uid, "root");
    let terminate = rows.iter().find(|r| r.action == "PROC_TERMINATE" && r.pid == pid).unwrap();
    assert_eq!(terminate.process_guid, create.process_guid);
}
