//! The demo extension (examples/demo_ext.rs) against the osquery-core stand-in in
//! shared/osquery-peer (fake_core.py, built on osquery's own generated Python SDK code).
//! Skipped, with a message, when python3 or the peer is not available.
#![cfg(unix)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value as Json;

/// One peer run at a time: the first creates the peer's virtualenv, and the machine is small.
static PEER: Mutex<()> = Mutex::new(());

struct PeerRun {
    core_rc: i32,
    extension_rc: i32,
    report: Json,
    extension_log: String,
}

impl PeerRun {
    fn errors(&self) -> Vec<String> {
        strings(&self.report["errors"])
    }

    fn warnings(&self) -> Vec<String> {
        strings(&self.report["warnings"])
    }

    fn generate(&self, table: &str) -> &Json {
        &self.report["tables"][table]["generate"]
    }

    fn assert_clean(&self) {
        assert_eq!(self.core_rc, 0, "fake_core failed: {:#}", self.report);
        assert_eq!(self.extension_rc, 0, "extension failed:\n{}", self.extension_log);
        assert_eq!(self.errors(), Vec::<String>::new());
        assert_eq!(self.warnings(), Vec::<String>::new());
    }
}

fn strings(value: &Json) -> Vec<String> {
    value.as_array().into_iter().flatten().map(|v| v.as_str().unwrap_or("").to_string()).collect()
}

fn say(message: &str) {
    // Written past the test harness's capture so a skip is visible in `cargo test` output.
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn peer_script() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("WATCHPOST_OSQUERY_PEER").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/osquery-peer/run_ext.sh")),
        Some(PathBuf::from("/work/shared/osquery-peer/run_ext.sh")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn python_can_make_venvs() -> bool {
    Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The example binary `cargo test` builds next to the test binaries.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let demo = profile_dir.join("examples").join("demo_ext");
    assert!(
        demo.is_file(),
        "{} is missing: run `cargo test -p watchpost-osquery` (which builds the examples) or \
         `cargo build -p watchpost-osquery --example demo_ext` first",
        demo.display()
    );
    demo
}

/// Runs the demo under the peer; `None` (after saying why) when the peer cannot run here.
fn run_peer(extension_args: &str, core_args: &[&str]) -> Option<PeerRun> {
    let Some(script) = peer_script() else {
        say("SKIPPED: shared/osquery-peer/run_ext.sh not found (set WATCHPOST_OSQUERY_PEER)");
        return None;
    };
    if !python_can_make_venvs() {
        say("SKIPPED: osquery peer tests need python3 with venv/ensurepip (apt-get install python3-venv)");
        return None;
    }
    let _one_at_a_time = PEER.lock().unwrap_or_else(|e| e.into_inner());
    let command = format!("{} {extension_args}", demo_binary().display());
    let out = Command::new("bash").arg(&script).arg(&command).args(core_args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Ok(report) = serde_json::from_str::<Json>(&stdout) else {
        if out.status.code() == Some(2) {
            say(&format!("SKIPPED: the osquery peer could not set up its virtualenv:\n{stderr}"));
            return None;
        }
        panic!("no JSON report from the peer (rc {:?}):\n{stdout}\n{stderr}", out.status.code());
    };
    // run_ext.sh's last line: "fake_core rc=N extension rc=M (logs in DIR)"
    let summary = stderr.lines().rev().find(|l| l.starts_with("fake_core rc=")).unwrap();
    let number_after = |key: &str| -> i32 {
        let rest = &summary[summary.find(key).unwrap() + key.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let logs = summary.split("(logs in ").nth(1).unwrap().trim_end_matches(')');
    let extension_log = std::fs::read_to_string(Path::new(logs).join("ext.log")).unwrap();
    Some(PeerRun {
        core_rc: number_after("fake_core rc="),
        extension_rc: number_after("extension rc="),
        report,
        extension_log,
    })
}

#[test]
fn core_registers_both_tables_and_gets_rows_shaped_by_the_constraints() {
    let Some(run) = run_peer("--interval 1", &[]) else { return };
    run.assert_clean();

    let registered = &run.report["registry"]["table"];
    let echo_routes = registered["demo_echo"].as_array().unwrap();
    let column = |name: &str| echo_routes.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(column("time")["op"], "4", "time is ADDITIONAL");
    assert_eq!(column("consumer")["op"], "16", "consumer is HIDDEN");
    assert!(echo_routes.iter().any(|r| r["id"] == "attributes" && r["attributes"] == "4"));
    // The `columns` action answers exactly the registered routes.
    assert_eq!(run.report["tables"]["demo_echo"]["columns"]["response"], registered["demo_echo"]);

    // fake_core sends `time = 1` (the ADDITIONAL column); the plugin echoes what it got.
    let echo = run.generate("demo_echo");
    assert_eq!(echo["status"]["code"], 0);
    assert_eq!(echo["status"]["message"], "OK");
    let rows = echo["response"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["constraints"], "time=1");
        assert_eq!(row["columns_used"], "columns_used,constraints,consumer,eid,note,time");
    }
    assert!(rows[1].get("note").is_none(), "a NULL column is left out: {}", rows[1]);

    let numbers = run.generate("demo_numbers");
    assert_eq!(numbers["response"], serde_json::json!([{"n": "1", "square": "1"}]));

    assert_eq!(run.report["ping"]["message"], "pong");
    assert_eq!(run.report["shutdown"], "acknowledged");
    assert_eq!(run.report["deregistered"], serde_json::json!([run.report["extension"]["uuid"]]));
    assert!(run.extension_log.contains("ShutdownRequested"), "{}", run.extension_log);
}

#[test]
fn legacy_context_from_osquery_before_3_is_understood() {
    let core_args = ["--legacy-context", "--table", "demo_echo", "--where", "time", ">=", "5"];
    let Some(run) = run_peer("--interval 1", &core_args) else { return };
    run.assert_clean();
    let context = run.generate("demo_echo")["request"]["context"].as_str().unwrap().to_string();
    assert!(context.contains(r#""op":"32""#) && context.contains(r#""list":"""#), "{context}");
    assert_eq!(run.generate("demo_echo")["response"][0]["constraints"], "time>=5");
}

#[test]
fn garbage_context_fails_that_call_only_and_the_extension_keeps_serving() {
    let Some(run) = run_peer("--interval 1", &["--context", "garbage"]) else { return };
    assert_eq!(run.core_rc, 1, "fake_core counts the refused generate calls as errors");
    assert_eq!(run.extension_rc, 0, "{}", run.extension_log);
    for table in ["demo_echo", "demo_numbers"] {
        let status = &run.generate(table)["status"];
        assert_eq!(status["code"], 1);
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("query context is not JSON"), "{message}");
    }
    // Calls after the first failure (on fresh connections) still succeed.
    assert_eq!(run.report["tables"]["demo_numbers"]["columns"]["status"]["code"], 0);
    assert_eq!(run.report["shutdown"], "acknowledged");
    assert_eq!(run.errors().len(), 2, "only the two generate calls failed: {:?}", run.errors());
    assert_eq!(run.warnings(), Vec::<String>::new());
}

#[test]
fn a_plugin_error_is_status_code_1_with_its_message() {
    let Some(run) = run_peer("--interval 1", &["--table", "demo_echo", "--where", "time", "=", "-1"]) else {
        return;
    };
    assert_eq!(run.extension_rc, 0, "{}", run.extension_log);
    let status = &run.generate("demo_echo")["status"];
    assert_eq!(status["code"], 1);
    assert_eq!(status["message"], "table demo_echo: time -1 is before the epoch");
}

#[test]
fn a_refused_registration_is_reported_and_the_extension_exits_non_zero() {
    // fake_core, like core, already has a `processes` table.
    let Some(run) = run_peer("--echo-table processes", &["--query-wait", "2"]) else { return };
    assert_ne!(run.extension_rc, 0, "{}", run.extension_log);
    let answer = &run.report["registrations"][0]["answer"];
    assert_eq!(answer["code"], 1);
    assert!(run.extension_log.contains("refused the registration"), "{}", run.extension_log);
    assert!(run.extension_log.contains("conflicts with another item"), "{}", run.extension_log);
}

#[test]
fn the_extension_leaves_by_itself_when_core_stops_answering() {
    let Some(run) = run_peer("--interval 0.5", &["--no-shutdown", "--linger", "0.5"]) else {
        return;
    };
    run.assert_clean();
    assert_eq!(run.report.get("shutdown"), None, "core never called shutdown()");
    assert!(run.extension_log.contains("CoreGone"), "{}", run.extension_log);
}

#[test]
fn the_extension_reads_core_options_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("osquery.conf");
    std::fs::write(&config, r#"{"plgx_events": {"max": 7}}"#).unwrap();
    let Some(run) = run_peer(
        "--interval 1 --fetch-config",
        &["--config", config.to_str().unwrap(), "--option", "events_max=100"],
    ) else {
        return;
    };
    run.assert_clean();
    assert!(run.extension_log.contains("core option events_max=100"), "{}", run.extension_log);
    let expected = format!(r#"core config from {}: {{"plgx_events": {{"max": 7}}}}"#, config.display());
    assert!(run.extension_log.contains(&expected), "{}", run.extension_log);
}
