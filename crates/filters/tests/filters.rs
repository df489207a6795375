//! The filter stage as configured in osquery.conf: which events are kept and why.

use watchpost_catalog::{Event, Stamper, Value, catalog};
use watchpost_config::{ColumnFilter, FilterSpec, FilterValue, TableFilters};
use watchpost_filters::{FilterError, FilterKind, FilterSet, Reason, Verdict};

/// The original README's filter examples, verbatim (shared with the config crate's tests).
const SEED: &str = include_str!("../../config/tests/fixtures/seed.conf");

fn filters(config: &str) -> FilterSet {
    let config = watchpost_config::parse("test.conf", config).unwrap();
    FilterSet::compile(&config.filters).unwrap()
}

fn event(table: &str, values: &[(&str, Value)]) -> Event {
    let table = catalog().table(table).unwrap();
    let mut event = Event::new(table, Stamper::global().stamp());
    for (column, value) in values {
        event.set(table.column_index(column).unwrap(), value.clone());
    }
    event
}

fn process(cmdline: &str) -> Event {
    event("win_process_events", &[("cmdline", cmdline.into())])
}

fn explain(set: &FilterSet, table: &str, values: &[(&str, &str)]) -> String {
    let values: Vec<(String, String)> = values.iter().map(|(c, v)| (c.to_string(), v.to_string())).collect();
    set.explain(table, &values).unwrap().to_string()
}

#[test]
fn the_seed_exclude_example_drops_what_it_names() {
    let set = filters(SEED);
    let dllhost = r"C:\Windows\system32\DllHost.exe /Processid:{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}";
    assert_eq!(set.judge(&process(dllhost)), Verdict::Drop);
    assert_eq!(set.judge(&process(&dllhost.to_uppercase())), Verdict::Drop);
    assert_eq!(set.judge(&process(r"C:\WINDOWS\system32\wermgr.exe -queuereporting")), Verdict::Drop);
    // Values match the whole text.
    assert_eq!(set.judge(&process(r"C:\windows\system32\wermgr.exe -queuereporting -x")), Verdict::Keep);
    assert_eq!(set.judge(&process(r"C:\Windows\system32\cmd.exe")), Verdict::Keep);
    // The table has only exclude filters: NULL text is kept.
    assert_eq!(set.judge(&event("win_process_events", &[])), Verdict::Keep);
}

#[test]
fn the_seed_include_example_keeps_only_what_it_names() {
    let set = filters(SEED);
    let registry = |target: &str| event("win_registry_events", &[("target_name", target.into())]);
    assert_eq!(
        set.judge(&registry(r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run\Updater")),
        Verdict::Keep
    );
    assert_eq!(set.judge(&registry(r"HKCU\Software\Policies\Microsoft\Windows\Explorer\Run")), Verdict::Drop);
    assert_eq!(
        set.judge(&registry(r"HKCU\Software\Microsoft\Windows\CurrentVersion\Policies\Explorer\Run\x")),
        Verdict::Keep
    );
    assert_eq!(set.judge(&registry(r"HKLM\Software\Vendor\Settings")), Verdict::Drop);
    assert_eq!(set.judge(&event("win_registry_events", &[])), Verdict::Drop);
}

#[test]
fn backslash_is_a_literal_character_never_an_escape() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_file_events": {"target_path": {"exclude": {"values": ["C:\\Temp\\*", "*\\?"]}}}}}"#,
    );
    let file = |path: &str| event("win_file_events", &[("target_path", path.into())]);
    assert_eq!(set.judge(&file(r"c:\temp\a.txt")), Verdict::Drop);
    assert_eq!(set.judge(&file("C:/Temp/a.txt")), Verdict::Keep);
    assert_eq!(set.judge(&file(r"C:\Tempo\a.txt")), Verdict::Keep);
    // `\?` is a backslash followed by any one character, not a literal `?`.
    assert_eq!(set.judge(&file(r"D:\x")), Verdict::Drop);
    assert_eq!(set.judge(&file(r"D:\xy")), Verdict::Keep);
}

#[test]
fn question_mark_is_exactly_one_character() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_process_events": {"path": {"exclude": {"values": ["/tmp/?.sh"]}}}}}"#,
    );
    let path = |p: &str| event("win_process_events", &[("path", p.into())]);
    assert_eq!(set.judge(&path("/tmp/a.sh")), Verdict::Drop);
    assert_eq!(set.judge(&path("/tmp/ä.sh")), Verdict::Drop);
    assert_eq!(set.judge(&path("/tmp/.sh")), Verdict::Keep);
    assert_eq!(set.judge(&path("/tmp/ab.sh")), Verdict::Keep);
}

#[test]
fn non_ascii_text_matches_case_insensitively() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_dns_events": {"domain_name": {"exclude": {"values": ["ÄRGER.*", "*.ΑΘΉΝΑ"]}}}}}"#,
    );
    let dns = |name: &str| event("win_dns_events", &[("domain_name", name.into())]);
    assert_eq!(set.judge(&dns("ärger.de")), Verdict::Drop);
    assert_eq!(set.judge(&dns("ÄrGeR.example")), Verdict::Drop);
    assert_eq!(set.judge(&dns("www.αθήνα")), Verdict::Drop);
    assert_eq!(set.judge(&dns("arger.de")), Verdict::Keep);
}

#[test]
fn exclude_wins_over_include() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_process_events": {
            "cmdline": {"include": {"values": ["*"]}},
            "path": {"exclude": {"values": ["*evil*"]}}}}}"#,
    );
    let both = event("win_process_events", &[("cmdline", "run".into()), ("path", "/opt/evil/bin".into())]);
    assert_eq!(set.judge(&both), Verdict::Drop);
    let fine = event("win_process_events", &[("cmdline", "run".into()), ("path", "/usr/bin/true".into())]);
    assert_eq!(set.judge(&fine), Verdict::Keep);
}

#[test]
fn includes_on_different_columns_are_alternatives() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_process_events": {
            "cmdline": {"include": {"values": ["*--secret*"]}},
            "path": {"include": {"values": ["/usr/bin/ssh", "/usr/bin/scp"]}}}}}"#,
    );
    let run = |path: &str, cmdline: &str| {
        set.judge(&event("win_process_events", &[("path", path.into()), ("cmdline", cmdline.into())]))
    };
    assert_eq!(run("/usr/bin/ssh", "ssh host"), Verdict::Keep);
    assert_eq!(run("/usr/bin/scp", "scp a b"), Verdict::Keep);
    assert_eq!(run("/usr/bin/tool", "tool --secret=1"), Verdict::Keep);
    assert_eq!(run("/usr/bin/tool", "tool"), Verdict::Drop);
}

#[test]
fn numbers_match_as_their_decimal_text() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_socket_events": {"remote_port": {"include": {"values": ["443", "80??"]}}}}}"#,
    );
    let socket = |port: Value| event("win_socket_events", &[("remote_port", port)]);
    assert_eq!(set.judge(&socket(Value::Integer(443))), Verdict::Keep);
    assert_eq!(set.judge(&socket(Value::Integer(8080))), Verdict::Keep);
    assert_eq!(set.judge(&socket(Value::Integer(80))), Verdict::Drop);
    assert_eq!(set.judge(&socket(Value::Integer(4431))), Verdict::Drop);
    assert_eq!(set.judge(&socket(Value::Null)), Verdict::Drop);

    let negative = filters(
        r#"{"plgx_event_filters": {"win_socket_events": {"remote_port": {"exclude": {"values": ["-9223372036854775808"]}}}}}"#,
    );
    assert_eq!(negative.judge(&socket(Value::Integer(i64::MIN))), Verdict::Drop);
    assert_eq!(negative.judge(&socket(Value::Integer(i64::MAX))), Verdict::Keep);
}

#[test]
fn tables_without_filters_keep_everything() {
    let set = filters(SEED);
    let dns = event("win_dns_events", &[("domain_name", "anything.example".into())]);
    assert_eq!(set.judge(&dns), Verdict::Keep);
    assert_eq!(
        FilterSet::empty().judge(&process(r"C:\Windows\system32\DllHost.exe /Processid:{x}")),
        Verdict::Keep
    );
    assert!(FilterSet::empty().is_empty());
    assert!(!set.is_empty());
}

#[test]
fn null_is_matched_as_the_empty_string() {
    let set = filters(
        r#"{"plgx_event_filters": {"win_file_events": {"process_name": {"exclude": {"values": ["*"]}}}}}"#,
    );
    assert_eq!(set.judge(&event("win_file_events", &[])), Verdict::Drop);

    let set = filters(
        r#"{"plgx_event_filters": {"win_file_events": {"process_name": {"exclude": {"values": ["?*"]}}}}}"#,
    );
    assert_eq!(set.judge(&event("win_file_events", &[])), Verdict::Keep);
    assert_eq!(set.judge(&event("win_file_events", &[("process_name", "x".into())])), Verdict::Drop);

    let set = filters(
        r#"{"plgx_event_filters": {"win_file_events": {"process_name": {"include": {"values": [""]}}}}}"#,
    );
    assert_eq!(set.judge(&event("win_file_events", &[])), Verdict::Keep);
    assert_eq!(set.judge(&event("win_file_events", &[("process_name", "x".into())])), Verdict::Drop);
}

#[test]
fn explain_names_the_deciding_value_and_where_it_is_written() {
    let set = filters(SEED);
    assert_eq!(
        explain(
            &set,
            "win_process_events",
            &[("cmdline", r"C:\Windows\System32\DllHost.exe /Processid:{1}")]
        ),
        r#"drop: cmdline "C:\\Windows\\System32\\DllHost.exe /Processid:{1}" matches exclude value "C:\\Windows\\system32\\DllHost.exe /Processid*" (config line 9, column 1)"#
    );
    assert_eq!(
        explain(&set, "win_process_events", &[("cmdline", "bash")]),
        "keep: no exclude value matched and win_process_events has no include filters"
    );
    assert_eq!(
        explain(&set, "win_registry_events", &[("target_name", r"X\Group Policy\Scripts\Startup")]),
        r#"keep: target_name "X\\Group Policy\\Scripts\\Startup" matches include value "*Group Policy\\Scripts*" (config line 23, column 1)"#
    );
    assert_eq!(
        explain(&set, "win_registry_events", &[("action", "REG_SETVALUE")]),
        "drop: win_registry_events has include filters and none matched"
    );
    assert_eq!(explain(&set, "win_msr", &[]), "keep: win_msr has no filters");

    let values =
        vec![("cmdline".to_string(), "C:\\Windows\\system32\\wermgr.exe -queuereporting".to_string())];
    let explanation = set.explain("win_process_events", &values).unwrap();
    assert_eq!(explanation.verdict, Verdict::Drop);
    let Reason::Excluded(m) = explanation.reason else { panic!("expected an exclude match") };
    assert_eq!(
        (m.column.as_str(), m.kind, m.value.text.as_str()),
        ("cmdline", FilterKind::Exclude, r"C:\windows\system32\wermgr.exe -queuereporting")
    );
}

#[test]
fn explain_and_compile_reject_unknown_names() {
    let set = filters(SEED);
    let err = set.explain("win_proc", &[]).unwrap_err();
    assert!(matches!(err, FilterError::UnknownTable { .. }));
    assert!(
        err.to_string()
            .starts_with("unknown table \"win_proc\"; tables that accept filters: win_dns_events, "),
        "{err}"
    );
    let err = set.explain("win_dns_events", &[("domain".to_string(), "x".to_string())]).unwrap_err();
    assert!(err.to_string().starts_with("win_dns_events: unknown column \"domain\"; columns: "), "{err}");

    let spec = |table: &str, column: &str| FilterSpec {
        tables: vec![TableFilters {
            table: table.to_string(),
            columns: vec![ColumnFilter {
                column: column.to_string(),
                include: vec![FilterValue { text: "x".into(), line: 1, column: 1 }],
                exclude: vec![],
            }],
        }],
    };
    assert!(matches!(FilterSet::compile(&spec("nope", "x")), Err(FilterError::UnknownTable { .. })));
    assert_eq!(
        FilterSet::compile(&spec("win_process_events", "pid")).unwrap_err().to_string(),
        "win_process_events: column \"pid\" cannot be filtered; filterable columns: cmdline, path, parent_path"
    );
    assert!(matches!(
        FilterSet::compile(&spec("win_process_events", "nope")),
        Err(FilterError::UnknownColumn { .. })
    ));
}

#[test]
fn filter_count_counts_values_per_table() {
    let set = filters(SEED);
    let id = |name: &str| catalog().table(name).unwrap().id;
    assert_eq!(set.filter_count(id("win_process_events")), 3);
    assert_eq!(set.filter_count(id("win_registry_events")), 4);
    assert_eq!(set.filter_count(id("win_dns_events")), 0);
}

#[test]
fn a_filter_set_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FilterSet>();
    let set = std::sync::Arc::new(filters(SEED));
    let worker = {
        let set = set.clone();
        std::thread::spawn(move || set.judge(&process(r"C:\Windows\system32\SearchIndexer.exe /Embedding")))
    };
    assert_eq!(worker.join().unwrap(), Verdict::Drop);
}
