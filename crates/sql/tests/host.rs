//! The SQL host over a fake table source and real catalog tables: what a user of
//! `watchpost query` sees, and what reaches the tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use watchpost_catalog::{GenerateError, Op, QueryContext, Row, Table, TableSource, Value, catalog};
use watchpost_sql::{ResultSet, SqlError, SqlHost};

const PROCESS: &str = "win_process_events";
const LOGGER: &str = "win_logger_events";
const MEMORY: &str = "win_mem_perf";

/// Serves fixed rows per table, records every call, and can fail one table. Like the agent's
/// engine it echoes `consumer = 'x'` into the consumer column, since SQLite re-checks it.
#[derive(Default)]
struct FakeSource {
    rows: HashMap<String, Vec<Row>>,
    failing: Option<String>,
    calls: Mutex<Vec<(String, QueryContext)>>,
}

impl FakeSource {
    fn calls(&self) -> Vec<(String, QueryContext)> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_to(&self, table: &str) -> Vec<QueryContext> {
        self.calls().into_iter().filter(|(t, _)| t == table).map(|(_, c)| c).collect()
    }
}

impl TableSource for FakeSource {
    fn generate(&self, table: &Table, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        self.calls.lock().unwrap().push((table.name.clone(), context.clone()));
        if self.failing.as_deref() == Some(table.name.as_str()) {
            return Err(GenerateError::Unavailable {
                table: table.name.clone(),
                reason: "sensor stopped".into(),
            });
        }
        let mut rows = self.rows.get(&table.name).cloned().unwrap_or_default();
        if let (Some(envelope), Some(consumer)) = (table.envelope, context.equals("consumer").next()) {
            for row in &mut rows {
                row[envelope.consumer] = consumer.into();
            }
        }
        Ok(rows)
    }
}

fn table(name: &str) -> Table {
    catalog().table(name).unwrap_or_else(|| panic!("{name} is in the catalog")).clone()
}

/// A row of `table` with the named cells set and NULL elsewhere.
fn row(table_name: &str, cells: &[(&str, Value)]) -> Row {
    let t = table(table_name);
    let mut row = vec![Value::Null; t.columns.len()];
    for (name, value) in cells {
        let i = t.column_index(name).unwrap_or_else(|| panic!("{table_name} has no column {name}"));
        row[i] = value.clone();
    }
    row
}

fn process(eid: &str, time: i64, pid: i64, parent_pid: i64, path: &str, action: &str) -> Row {
    row(
        PROCESS,
        &[
            ("eid", eid.into()),
            ("time", time.into()),
            ("utc_time", format!("t{time}").into()),
            ("pid", pid.into()),
            ("parent_pid", parent_pid.into()),
            ("path", path.into()),
            ("action", action.into()),
        ],
    )
}

fn fixture() -> FakeSource {
    let mut rows = HashMap::new();
    rows.insert(
        PROCESS.to_string(),
        vec![
            process("e1", 100, 10, 1, "/usr/bin/bash", "PROC_CREATE"),
            process("e2", 150, 11, 10, "/usr/bin/ls", "PROC_CREATE"),
            process("e3", 160, 12, 10, "/usr/bin/cat", "PROC_CREATE"),
            process("e4", 210, 11, 10, "/usr/bin/ls", "PROC_TERMINATE"),
        ],
    );
    rows.insert(
        LOGGER.to_string(),
        vec![
            row(
                LOGGER,
                &[
                    ("logger_name", "tail".into()),
                    ("logger_watch_file", "/var/log/a.log".into()),
                    ("log_entry", "started /usr/bin/ls".into()),
                    ("eid", "l1".into()),
                    ("time", 120.into()),
                ],
            ),
            row(
                LOGGER,
                &[
                    ("logger_name", "tail".into()),
                    ("logger_watch_file", "/var/log/b.log".into()),
                    ("log_entry", "hello".into()),
                    ("eid", "l2".into()),
                    ("time", 130.into()),
                ],
            ),
        ],
    );
    rows.insert(
        MEMORY.to_string(),
        vec![row(
            MEMORY,
            &[("physical_memory_load", 42.into()), ("total_physical", 8_000_000_000i64.into())],
        )],
    );
    FakeSource { rows, ..FakeSource::default() }
}

fn host_over(source: FakeSource) -> (SqlHost, Arc<FakeSource>) {
    let source = Arc::new(source);
    let tables = vec![table(PROCESS), table(LOGGER), table(MEMORY)];
    let host = SqlHost::new(tables, Arc::clone(&source) as Arc<dyn TableSource>).expect("host");
    (host, source)
}

fn query(host: &SqlHost, sql: &str) -> ResultSet {
    host.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

#[test]
fn select_star_leaves_out_hidden_columns() {
    let (host, _) = host_over(fixture());
    let result = query(&host, "SELECT * FROM win_logger_events");
    assert_eq!(result.columns, ["logger_name", "logger_watch_file", "log_entry"]);
    assert_eq!(result.rows.len(), 2);
    assert_eq!(result.rows[1], [text("tail"), text("/var/log/b.log"), text("hello")]);

    let processes = query(&host, "SELECT * FROM win_process_events");
    assert!(processes.columns.contains(&"eid".to_string()), "eid is a visible column of process events");
    assert!(!processes.columns.contains(&"consumer".to_string()));
    assert_eq!(processes.columns.len(), table(PROCESS).columns.len() - 1, "all but consumer");
}

#[test]
fn hidden_columns_are_returned_when_named() {
    let (host, _) = host_over(fixture());
    let result = query(&host, "SELECT eid, time, log_entry, consumer FROM win_logger_events ORDER BY time");
    assert_eq!(result.columns, ["eid", "time", "log_entry", "consumer"]);
    assert_eq!(result.rows[0], [text("l1"), int(120), text("started /usr/bin/ls"), Value::Null]);
}

#[test]
fn constraints_on_pushed_down_columns_reach_the_table_with_their_ops() {
    let (host, source) = host_over(fixture());
    let result = query(
        &host,
        "SELECT eid FROM win_process_events \
         WHERE eid LIKE 'e%' AND eid GLOB 'e*' AND eid REGEXP '^e[0-9]' \
           AND time >= 100 AND time < 200 AND 155 > time AND consumer = 'siem' AND pid = 10",
    );
    // The fake ignores every constraint; SQLite's re-check does the filtering.
    assert_eq!(result.rows, [[text("e1")]]);

    let calls = source.calls_to(PROCESS);
    assert_eq!(calls.len(), 1);
    let mut pushed: Vec<(String, Op, String)> =
        calls[0].constraints.iter().map(|c| (c.column.clone(), c.op, c.expr.clone())).collect();
    pushed.sort_by(|a, b| (&a.0, a.1.code(), &a.2).cmp(&(&b.0, b.1.code(), &b.2)));
    let expected = [
        ("consumer", Op::Eq, "siem"),
        ("eid", Op::Like, "e%"),
        ("eid", Op::Glob, "e*"),
        ("eid", Op::Regexp, "^e[0-9]"),
        ("time", Op::Lt, "155"),
        ("time", Op::Lt, "200"),
        ("time", Op::Ge, "100"),
    ];
    let expected: Vec<(String, Op, String)> =
        expected.iter().map(|(c, op, e)| (c.to_string(), *op, e.to_string())).collect();
    for constraint in &expected {
        assert!(pushed.contains(constraint), "{constraint:?} missing from {pushed:?}");
    }
    // SQLite's LIKE/GLOB optimisation adds the prefix bounds it implies (`eid >= 'E'`,
    // `eid < 'f'`), as it does for osquery's tables; nothing else is passed.
    for extra in pushed.iter().filter(|c| !expected.contains(c)) {
        assert!(extra.0 == "eid" && matches!(extra.1, Op::Ge | Op::Lt), "unexpected {extra:?}");
    }
    // `pid` is neither INDEX nor ADDITIONAL: it stays with SQLite, as in osquery.
    assert!(!pushed.iter().any(|c| c.0 == "pid"), "{pushed:?}");
}

#[test]
fn equality_on_eid_reaches_the_table() {
    let (host, source) = host_over(fixture());
    let result = query(&host, "SELECT pid FROM win_process_events WHERE eid = 'e3'");
    assert_eq!(result.rows, [[int(12)]]);
    let calls = source.calls_to(PROCESS);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].equals("eid").collect::<Vec<_>>(), ["e3"]);
}

#[test]
fn the_table_is_told_which_columns_the_query_reads() {
    let (host, source) = host_over(fixture());
    query(&host, "SELECT pid FROM win_process_events WHERE time > 0");
    let calls = source.calls_to(PROCESS);
    let used = calls[0].columns_used.clone().expect("columns_used is known");
    assert_eq!(used, ["pid", "time"]);
}

#[test]
fn aggregates_and_group_by_count_the_rows() {
    let (host, _) = host_over(fixture());
    assert_eq!(query(&host, "SELECT count(*) FROM win_process_events").rows, [[int(4)]]);
    let grouped = query(
        &host,
        "SELECT action, count(*) AS n, max(time) FROM win_process_events GROUP BY action ORDER BY action",
    );
    assert_eq!(grouped.columns, ["action", "n", "max(time)"]);
    assert_eq!(
        grouped.rows,
        [[text("PROC_CREATE"), int(3), int(160)], [text("PROC_TERMINATE"), int(1), int(210)]]
    );
}

#[test]
fn joins_across_tables_match_rows() {
    let (host, _) = host_over(fixture());
    let result = query(
        &host,
        "SELECT p.eid, l.logger_watch_file FROM win_process_events p \
         JOIN win_logger_events l ON l.log_entry LIKE '%' || p.path \
         ORDER BY p.eid",
    );
    assert_eq!(result.rows, [[text("e2"), text("/var/log/a.log")], [text("e4"), text("/var/log/a.log")]]);

    let children = query(
        &host,
        "SELECT parent.path, count(*) FROM win_process_events parent \
         JOIN win_process_events child ON child.parent_pid = parent.pid \
         WHERE parent.action = 'PROC_CREATE' GROUP BY parent.path",
    );
    assert_eq!(children.rows, [[text("/usr/bin/bash"), int(3)]]);

    let cross =
        query(&host, "SELECT m.physical_memory_load, count(*) FROM win_mem_perf m, win_logger_events");
    assert_eq!(cross.rows, [[int(42), int(2)]]);
}

#[test]
fn sql_errors_carry_sqlites_message() {
    let (host, _) = host_over(fixture());
    let missing = host.query("SELECT * FROM foo").unwrap_err();
    assert!(matches!(missing, SqlError::Sql { .. }), "{missing:?}");
    assert_eq!(missing.to_string(), "no such table: foo");

    let syntax = host.query("SELEC * FROM win_mem_perf").unwrap_err();
    assert_eq!(syntax.to_string(), "near \"SELEC\": syntax error");

    let column = host.query("SELECT nope FROM win_mem_perf").unwrap_err();
    assert_eq!(column.to_string(), "no such column: nope");
}

#[test]
fn a_failing_table_is_named_in_the_error() {
    let (host, _) = host_over(FakeSource { failing: Some(MEMORY.to_string()), ..fixture() });
    let error = host.query("SELECT l.eid FROM win_logger_events l, win_mem_perf").unwrap_err();
    match &error {
        SqlError::Table { table, source: GenerateError::Unavailable { reason, .. } } => {
            assert_eq!(table, MEMORY);
            assert_eq!(reason, "sensor stopped");
        }
        other => panic!("expected a table error, got {other:?}"),
    }
    assert!(error.to_string().contains("win_mem_perf"), "{error}");
    assert!(error.to_string().contains("sensor stopped"), "{error}");
    // The failure belongs to that statement only.
    assert_eq!(query(&host, "SELECT count(*) FROM win_logger_events").rows, [[int(2)]]);
}

#[test]
fn a_consumer_read_is_generated_once_per_statement_even_in_a_self_join() {
    let (host, source) = host_over(fixture());
    let result = query(
        &host,
        "SELECT count(*) FROM win_process_events a JOIN win_process_events b ON b.parent_pid = a.pid \
         WHERE a.consumer = 'siem' AND b.consumer = 'siem'",
    );
    assert_eq!(result.rows, [[int(3)]]);
    let calls = source.calls_to(PROCESS);
    assert_eq!(calls.len(), 1, "one read for both sides of the join: {calls:?}");
    assert_eq!(calls[0].equals("consumer").collect::<Vec<_>>(), ["siem"]);

    // A subquery over the same table and constraints shares that read too.
    let nested = query(
        &host,
        "SELECT eid FROM win_process_events WHERE consumer = 'siem' AND pid IN \
         (SELECT parent_pid FROM win_process_events WHERE consumer = 'siem') ORDER BY eid",
    );
    assert_eq!(nested.rows, [[text("e1")]]);
    assert_eq!(source.calls_to(PROCESS).len(), 2, "one more read for the second statement");

    // Different constraints are different reads.
    query(
        &host,
        "SELECT count(*) FROM win_process_events a, win_process_events b \
         WHERE a.consumer = 'siem' AND b.consumer = 'audit'",
    );
    let calls = source.calls_to(PROCESS);
    let consumers: Vec<Vec<&str>> = calls[2..].iter().map(|c| c.equals("consumer").collect()).collect();
    assert_eq!(consumers.len(), 2, "{consumers:?}");
    assert!(consumers.contains(&vec!["siem"]) && consumers.contains(&vec!["audit"]), "{consumers:?}");
}

#[test]
fn regexp_matches_with_rust_regex_syntax() {
    let (host, _) = host_over(fixture());
    let result = query(
        &host,
        "SELECT eid FROM win_process_events WHERE path REGEXP '^/usr/bin/(ls|cat)$' ORDER BY eid",
    );
    assert_eq!(result.rows, [[text("e2")], [text("e3")], [text("e4")]]);
    assert_eq!(
        query(&host, "SELECT 'abc' REGEXP 'b', 'abc' REGEXP '^b', NULL REGEXP 'x'").rows,
        [[int(1), int(0), Value::Null]]
    );
    // Numbers match as their text; patterns from columns work too.
    assert_eq!(
        query(&host, "SELECT count(*) FROM win_process_events WHERE pid REGEXP '^1[12]$'").rows,
        [[int(3)]]
    );
    assert_eq!(
        query(&host, "SELECT count(*) FROM win_process_events WHERE path REGEXP ('^' || path || '$')").rows,
        [[int(4)]]
    );
    let bad = host.query("SELECT 'a' REGEXP '('").unwrap_err();
    assert!(bad.to_string().contains("regex parse error"), "{bad}");
}

#[test]
fn values_keep_their_sqlite_types() {
    let mut source = fixture();
    source.rows.insert(
        MEMORY.to_string(),
        vec![row(MEMORY, &[("physical_memory_load", Value::Double(41.5)), ("total_physical", 7.into())])],
    );
    let (host, _) = host_over(source);
    let result = query(
        &host,
        "SELECT typeof(physical_memory_load), physical_memory_load, typeof(total_physical), \
         typeof(available_physical), typeof(available_physical IS NULL) FROM win_mem_perf",
    );
    assert_eq!(
        result.rows,
        [[text("real"), Value::Double(41.5), text("integer"), text("null"), text("integer")]]
    );
}

#[test]
fn several_statements_return_the_last_result() {
    let (host, source) = host_over(fixture());
    let result = query(&host, "SELECT 1; SELECT count(*) AS n FROM win_logger_events WHERE consumer = 'x';");
    assert_eq!(result.columns, ["n"]);
    assert_eq!(result.rows, [[int(2)]]);
    assert_eq!(source.calls_to(LOGGER).len(), 1);
    assert!(matches!(host.query("  -- nothing\n"), Err(SqlError::NoStatement)));
}

#[test]
fn statements_that_write_are_refused() {
    let (host, _) = host_over(fixture());
    for sql in ["DROP TABLE win_mem_perf", "CREATE TABLE x(a)", "SELECT 1; DELETE FROM win_mem_perf"] {
        let error = host.query(sql).unwrap_err();
        assert!(
            matches!(error, SqlError::NotReadOnly { .. }) || matches!(error, SqlError::Sql { .. }),
            "{sql}: {error:?}"
        );
    }
    assert!(matches!(host.query("DROP TABLE win_mem_perf"), Err(SqlError::NotReadOnly { .. })));
    let attach = host.query("ATTACH DATABASE ':memory:' AS other").unwrap_err();
    assert!(attach.to_string().contains("too many attached databases"), "{attach}");
    // The tables are still there.
    assert_eq!(query(&host, "SELECT count(*) FROM win_mem_perf").rows, [[int(1)]]);
}

#[test]
fn table_names_and_schemas_come_from_the_catalog() {
    let (host, _) = host_over(fixture());
    assert_eq!(host.table_names(), [LOGGER, MEMORY, PROCESS]);
    assert_eq!(host.schema(LOGGER), Some(table(LOGGER).ddl()));
    assert!(host.schema(LOGGER).unwrap().contains("`consumer` TEXT HIDDEN"));
    assert_eq!(host.schema("nope"), None);
    // SQLite sees the same columns.
    let info = query(&host, "SELECT name FROM pragma_table_xinfo('win_logger_events') WHERE hidden = 1");
    assert_eq!(info.rows, [[text("eid")], [text("time")], [text("utc_time")], [text("consumer")]]);
}

#[test]
fn every_catalog_table_registers() {
    let tables: Vec<Table> = catalog().tables().to_vec();
    let count = tables.len();
    let host = SqlHost::new(tables, Arc::new(FakeSource::default())).expect("host over the whole catalog");
    assert_eq!(host.table_names().len(), count);
    assert_eq!(query(&host, "SELECT count(*) FROM watchpost_status").rows, [[int(0)]]);
}

#[test]
fn a_table_listed_twice_is_refused() {
    let error = SqlHost::new(vec![table(MEMORY), table(MEMORY)], Arc::new(FakeSource::default()))
        .err()
        .expect("duplicate refused");
    assert!(error.to_string().contains("win_mem_perf"), "{error}");
}

/// Measures throughput; prints rows/s (run with `--nocapture`), asserts only the row count.
#[test]
fn select_star_over_100k_rows() {
    const ROWS: i64 = 100_000;
    let rows: Vec<Row> = (0..ROWS)
        .map(|i| {
            let mut r =
                process(&format!("e{i}"), 1_700_000_000 + i, i, 1, "/usr/bin/something", "PROC_CREATE");
            r[table(PROCESS).column_index("cmdline").unwrap()] = format!("/usr/bin/something --n {i}").into();
            r
        })
        .collect();
    let mut source = FakeSource::default();
    source.rows.insert(PROCESS.to_string(), rows);
    let (host, _) = host_over(source);
    // The fake clones its rows on every read: that part is the source's cost, not the host's.
    let started = Instant::now();
    assert_eq!(query(&host, "SELECT count(*) FROM win_process_events").rows, [[int(ROWS)]]);
    eprintln!(
        "SELECT count(*) over {ROWS} rows (source read + scan): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    let result = query(&host, "SELECT * FROM win_process_events");
    let elapsed = started.elapsed();
    assert_eq!(result.rows.len(), ROWS as usize);
    eprintln!(
        "SELECT * over {ROWS} rows x {} columns: {:.1} ms, {:.0} rows/s",
        result.columns.len(),
        elapsed.as_secs_f64() * 1000.0,
        ROWS as f64 / elapsed.as_secs_f64()
    );
}
