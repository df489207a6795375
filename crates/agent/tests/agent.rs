//! The agent in-process, on every platform (Linux, and Windows under Wine): config → sensor →
//! pipeline → store → SQL, the local query API over the platform's transport (a Unix socket or
//! a named pipe), and a clean stop that keeps the events.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_agent::api::{Client, Server};
use watchpost_agent::{Agent, AgentOptions, ConfigSource};
use watchpost_sql::SqlHost;

fn options(dir: &Path, config: ConfigSource) -> AgentOptions {
    AgentOptions {
        data_dir: dir.join("data"),
        config,
        events_max: None,
        events_expiry: None,
        reload_interval: Duration::from_millis(200),
    }
}

fn write_config(dir: &Path, log: &Path) -> std::path::PathBuf {
    let path = dir.join("osquery.conf");
    // JSON string escaping matters on Windows, where the path has backslashes.
    let log_json = serde_json::to_string(&log.display().to_string()).expect("json string");
    std::fs::write(
        &path,
        format!(
            r#"{{"win_logger_plugin": {{"plugins": [{{"logger_name": "tail",
               "logger_watch_files": [{{"watch_file_path": {log_json}, "file_regex_pattern": ["keep.*"]}},]}}]}},}}"#
        ),
    )
    .expect("write config");
    path
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log");
    file.write_all(text.as_bytes()).expect("append");
}

fn entries(host: &SqlHost, sql: &str) -> Vec<String> {
    let result = host.query(sql).expect("query");
    result.rows.iter().map(|row| row[0].to_text().unwrap_or_default()).collect()
}

fn wait_entries(host: &SqlHost, sql: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = entries(host, sql);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn query_socket(dir: &Path) -> String {
    if cfg!(windows) {
        format!(r"\\.\pipe\watchpost-agent-test-{}", std::process::id())
    } else {
        dir.join("query.sock").display().to_string()
    }
}

#[test]
fn events_flow_from_sensor_to_sql_and_the_query_api_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    append(&log, "keep: written before start\n");
    let config = write_config(dir.path(), &log);

    let agent = Agent::start(options(dir.path(), ConfigSource::File(config.clone()))).expect("agent starts");
    let host = SqlHost::new(Agent::tables(), agent.engine()).expect("sql host");
    append(&log, "keep one\ndrop this\nkeep two\n");
    let sql = "SELECT log_entry FROM win_logger_events ORDER BY time, eid";
    assert_eq!(wait_entries(&host, sql, 2), ["keep one", "keep two"], "only new lines that match a pattern");

    let socket = query_socket(dir.path());
    let server = Server::start(&socket, Agent::tables(), agent.engine()).expect("query api");
    let mut client = Client::connect(&socket).expect("connect to the query api");
    let result = client.query("SELECT count(*) AS n FROM win_logger_events").expect("api query");
    assert_eq!(result.columns, ["n"]);
    assert_eq!(result.rows, [[serde_json::json!(2)]]);
    let error = client.query("SELECT nope FROM win_logger_events").expect_err("bad column");
    assert!(error.to_string().contains("no such column"), "{error}");
    // The connection stays usable after an error.
    assert!(client.query("SELECT 1").is_ok());
    drop(client);
    server.stop();

    let status = host
        .query("SELECT captured, stored, state FROM watchpost_status WHERE table_name = 'win_logger_events'")
        .expect("status");
    assert_eq!(status.rows[0][0].to_text().as_deref(), Some("2"), "{:?}", status.rows);
    drop(host);
    agent.stop();

    // A clean stop committed everything; a new agent on the same store sees it.
    let agent = Agent::start(options(dir.path(), ConfigSource::File(config))).expect("agent restarts");
    let host = SqlHost::new(Agent::tables(), agent.engine()).expect("sql host");
    assert_eq!(entries(&host, sql), ["keep one", "keep two"]);
    drop(host);
    agent.stop();
}

#[test]
fn a_second_agent_on_the_same_store_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Agent::start(options(dir.path(), ConfigSource::None)).expect("first agent");
    let second = Agent::start(options(dir.path(), ConfigSource::None));
    let message = second.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("in use by another watchpost process"), "{message}");
    first.stop();
}

#[test]
fn an_invalid_config_at_start_is_an_error_naming_the_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.conf");
    std::fs::write(&config, "{\n  \"watchpost\": {\"read_mode\": \"sometimes\"}\n}\n").expect("write");
    let error = Agent::start(options(dir.path(), ConfigSource::File(config))).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("bad.conf:2:"), "{message}");
    assert!(message.contains("drain"), "lists the allowed values: {message}");
}

#[test]
fn snapshot_and_status_tables_answer_through_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(options(dir.path(), ConfigSource::None)).expect("agent");
    let host = SqlHost::new(Agent::tables(), Arc::clone(&agent.engine()) as _).expect("sql host");
    let memory = host
        .query("SELECT total_physical, available_physical, physical_memory_load FROM win_mem_perf")
        .expect("mem");
    assert_eq!(memory.rows.len(), 1);
    let total = memory.rows[0][0].as_i64().expect("integer");
    let available = memory.rows[0][1].as_i64().expect("integer");
    assert!(total > 0 && available <= total, "{:?}", memory.rows);
    // Pushed-down comparison on an ADDITIONAL column of a computed table.
    assert!(
        host.query("SELECT * FROM win_mem_perf WHERE physical_memory_load > 100").expect("q").rows.is_empty()
    );
    let config_row =
        host.query("SELECT state FROM watchpost_status WHERE sensor = 'config'").expect("status");
    assert_eq!(config_row.rows[0][0].to_text().as_deref(), Some("ok"));
    drop(host);
    agent.stop();
}

#[test]
fn the_osquery_adapter_sends_only_the_columns_core_uses() {
    use watchpost_agent::extension::CatalogPlugin;
    use watchpost_catalog::QueryContext;
    use watchpost_osquery::TablePlugin;

    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(options(dir.path(), ConfigSource::None)).expect("agent");
    let plugin = CatalogPlugin::new(Agent::tables(), agent.engine());
    let every = plugin.generate("win_mem_perf", &QueryContext::default()).expect("generate");
    assert_eq!(every[0].len(), 8, "all columns without colsUsed: {:?}", every[0]);
    let context = QueryContext {
        columns_used: Some(vec!["total_physical".into(), "physical_memory_load".into()]),
        ..Default::default()
    };
    let some = plugin.generate("win_mem_perf", &context).expect("generate");
    let keys: Vec<&String> = some[0].keys().collect();
    assert_eq!(keys, ["physical_memory_load", "total_physical"]);
    let unknown = plugin.generate("no_such_table", &QueryContext::default()).expect_err("unknown table");
    assert!(unknown.contains("no such table"), "{unknown}");
    agent.stop();
}
