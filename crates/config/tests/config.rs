//! osquery.conf parsing as a user sees it: the original's shipped examples, and the exact
//! `source:line:column: message` of every problem.

use std::collections::BTreeMap;

use watchpost_catalog::ReadMode;
use watchpost_config::{Config, FilterValue, WatchFile, explain, load, parse, parse_sources};

const SEED: &str = include_str!("fixtures/seed.conf");

const FILTERABLE_TABLES: &str = "win_dns_events, win_dns_response_events, win_file_events, \
     win_image_load_events, win_image_load_process_map, win_process_events, win_process_open_events, \
     win_registry_events, win_remote_thread_events, win_socket_events";

/// The error lines a user sees for `text`.
fn errors(text: &str) -> Vec<String> {
    match parse("osquery.conf", text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.to_string().lines().map(str::to_string).collect(),
    }
}

fn value_texts(values: &[FilterValue]) -> Vec<&str> {
    values.iter().map(|v| v.text.as_str()).collect()
}

#[test]
fn the_originals_examples_parse_verbatim() {
    let config = parse("seed.conf", SEED).unwrap();
    assert_eq!(config.source, "seed.conf");
    assert_eq!(config.read_mode, ReadMode::Retain);

    let process = config.filters.table("win_process_events").unwrap();
    assert_eq!(process.columns.len(), 1);
    assert_eq!(process.columns[0].column, "cmdline");
    assert!(process.columns[0].include.is_empty());
    assert_eq!(
        value_texts(&process.columns[0].exclude),
        [
            r"C:\Windows\system32\DllHost.exe /Processid*",
            r"C:\Windows\system32\SearchIndexer.exe /Embedding",
            r"C:\windows\system32\wermgr.exe -queuereporting",
        ]
    );
    // Positions point at the value in the file.
    assert_eq!((process.columns[0].exclude[0].line, process.columns[0].exclude[0].column), (9, 1));

    let registry = config.filters.table("win_registry_events").unwrap();
    assert_eq!(registry.columns[0].column, "target_name");
    assert_eq!(
        value_texts(&registry.columns[0].include),
        [
            r"*CurrentVersion\Run*",
            r"*Policies\Explorer\Run*",
            r"*Group Policy\Scripts*",
            r"*Windows\System\Scripts*"
        ]
    );

    assert_eq!(
        config.logger,
        [
            WatchFile { logger_name: "tail".into(), path: r"C:\temp\tail.txt".into(), patterns: vec![] },
            WatchFile {
                logger_name: "tail".into(),
                path: r"C:\temp\tail2.txt".into(),
                patterns: vec![r"(.*) (\d+): \[([^\]]+)\] (.*)".into(), r"((.|\r\n)*)(secret2)(.*)".into()],
            },
        ]
    );
    let tail = config.logger[0].matcher().unwrap();
    assert!(tail.keep("hellotail 5"));
    let tail2 = config.logger[1].matcher().unwrap();
    assert!(tail2.keep("secret2"));
    assert!(!tail2.keep("hellotail 5"));
}

#[test]
fn comments_of_both_kinds_and_osquerys_own_keys_are_accepted() {
    let text = r#"
// line comment
{
  /* block
     comment */
  "schedule": {"q": {"query": "select 1", "interval": 10}},   // osquery's
  "packs": {},
  "decorators": {"load": ["select 1"]},
  "options": {"host_identifier": "hostname", "events_max": 5000, "events_expiry": "600",},
  "watchpost": {"read_mode": "drain"},
  "win_include_paths": {"all_files": ["C:\\Users\\*"]},
  "yara": {"signatures": {"g": ["a.yar"]}, "file_paths": {"c": ["g"]}},
  "file_paths": {"c": ["/tmp/%%"]},
}
"#;
    let config = parse("osquery.conf", text).unwrap();
    assert_eq!(config.read_mode, ReadMode::Drain);
    assert_eq!(config.events_max, Some(5000));
    assert_eq!(config.events_expiry, Some(600));
    assert!(config.filters.is_empty());
    assert!(config.logger.is_empty());
    assert_eq!(config.sections.win_include_paths, Some(serde_json::json!({"all_files": [r"C:\Users\*"]})));
    assert_eq!(config.sections.win_exclude_paths, None);
    assert_eq!(
        config.sections.yara,
        Some(serde_json::json!({"signatures": {"g": ["a.yar"]}, "file_paths": {"c": ["g"]}}))
    );
    assert_eq!(config.sections.file_paths, Some(serde_json::json!({"c": ["/tmp/%%"]})));
}

#[test]
fn an_empty_object_is_the_default_config() {
    let config = parse("defaults", "{}").unwrap();
    assert_eq!(config.read_mode, ReadMode::Retain);
    assert_eq!((config.events_max, config.events_expiry), (None, None));
    assert!(config.filters.tables.is_empty());
    assert_eq!(config.fingerprint, Config::default().fingerprint);
}

#[test]
fn every_filter_problem_is_reported_with_its_position() {
    let text = r#"{
  "plgx_event_filters": {
    "win_process_events": {
      "cmdlin": {"exclude": {"values": ["x"]}},
      "pid": {"exclude": {"values": ["1"]}},
      "path": {"incude": {"values": ["x"]}},
      "parent_path": {"exclude": {"value": ["x"]}}
    },
    "win_socket_events": {
      "remote_port": {"include": {"values": [443, "80", true]}},
      "process_name": {"exclude": {"values": "x", "extra": 1}}
    },
    "win_proces_events": {},
    "win_msr": {}
  }
}"#;
    let filterable = "filterable columns: cmdline, path, parent_path";
    assert_eq!(
        errors(text),
        [
            format!("osquery.conf:4:7: plgx_event_filters.win_process_events: unknown column \"cmdlin\"; {filterable}"),
            format!("osquery.conf:5:7: plgx_event_filters.win_process_events: column \"pid\" cannot be filtered; {filterable}"),
            "osquery.conf:6:16: plgx_event_filters.win_process_events.path: unknown filter type \"incude\"; use \"include\" or \"exclude\"".into(),
            "osquery.conf:7:34: plgx_event_filters.win_process_events.parent_path.exclude: \"values\" is missing, e.g. {\"values\": [\"...\"]}".into(),
            "osquery.conf:7:35: plgx_event_filters.win_process_events.parent_path.exclude: unknown key \"value\"; allowed keys: values".into(),
            "osquery.conf:10:46: plgx_event_filters.win_socket_events.remote_port.include.values[0]: must be a string, e.g. \"443\" (numbers are matched as their text)".into(),
            "osquery.conf:10:57: plgx_event_filters.win_socket_events.remote_port.include.values[2]: must be a string, found true/false".into(),
            "osquery.conf:11:46: plgx_event_filters.win_socket_events.process_name.exclude.values: must be a list, e.g. [\"C:\\\\Windows\\\\*\"], found a string".into(),
            "osquery.conf:11:51: plgx_event_filters.win_socket_events.process_name.exclude: unknown key \"extra\"; allowed keys: values".into(),
            format!("osquery.conf:13:5: plgx_event_filters: unknown table \"win_proces_events\"; tables that accept filters: {FILTERABLE_TABLES}"),
            format!("osquery.conf:14:5: plgx_event_filters: table \"win_msr\" does not accept filters; tables that accept filters: {FILTERABLE_TABLES}"),
        ]
    );
}

#[test]
fn a_filter_section_of_the_wrong_shape_is_an_error_not_no_filtering() {
    assert_eq!(
        errors(r#"{"plgx_event_filters": ["win_process_events"]}"#),
        [
            "osquery.conf:1:24: plgx_event_filters: must be an object, e.g. {\"win_process_events\": {\"cmdline\": {\"exclude\": {\"values\": [\"...\"]}}}}, found a list"
        ]
    );
    assert_eq!(
        errors(
            "{\"plgx_event_filters\": {\"win_dns_events\": {\"domain_name\": {\"include\": {\"values\": []}}}}}"
        ),
        [
            "osquery.conf:1:82: plgx_event_filters.win_dns_events.domain_name.include.values: is empty, so every event of the table would be dropped; list at least one value or remove the include filter"
        ]
    );
    // An empty exclude list drops nothing, so it is accepted.
    let config = parse(
        "c",
        r#"{"plgx_event_filters": {"win_dns_events": {"domain_name": {"exclude": {"values": []}}}}}"#,
    )
    .unwrap();
    assert!(config.filters.is_empty());
}

#[test]
fn every_logger_watchpost_and_options_problem_is_reported_with_its_position() {
    let text = r#"{
  "win_logger_plugin": {
    "plugins": [
      {"logger_name": "cat", "logger_watch_files": []},
      {"logger_watch_files": []},
      {"logger_name": "tail", "logger_watch_files": [
        {"watch_file_path": "/var/log/a.log", "file_regex_pattern": ["ok", "ab(c", 5]},
        {"watch_file_path": "", "file_regex_patern": ["x"]},
        {"watch_file_path": "/var/log/b.log"},
        {"watch_file_path": "/var/log/b.log"}
      ]}
    ]
  },
  "watchpost": {"read_mode": "keep", "mode": 1},
  "options": {"events_max": "lots", "events_expiry": -5, "host_identifier": "x"}
}"#;
    let files = "win_logger_plugin.plugins[2].logger_watch_files";
    assert_eq!(
        errors(text),
        [
            "osquery.conf:4:23: win_logger_plugin.plugins[0].logger_name: must be \"tail\" (the only logger, for text files; the name cannot be changed), found \"cat\"".to_string(),
            "osquery.conf:5:7: win_logger_plugin.plugins[1]: \"logger_name\" is missing; it must be \"tail\" (the name cannot be changed)".into(),
            format!("osquery.conf:7:76: {files}[0].file_regex_pattern[1]: invalid regex \"ab(c\": unclosed group (at character 3 of the pattern)"),
            format!("osquery.conf:7:84: {files}[0].file_regex_pattern[2]: must be a regular expression string, found 5"),
            format!("osquery.conf:8:29: {files}[1].watch_file_path: must be the path of a file, found \"\""),
            format!("osquery.conf:8:33: {files}[1]: unknown key \"file_regex_patern\"; allowed keys: watch_file_path, file_regex_pattern"),
            format!("osquery.conf:10:9: {files}[3]: \"/var/log/b.log\" is already watched (at 9:9); list all its patterns in one entry"),
            "osquery.conf:14:30: watchpost.read_mode: unknown read mode \"keep\"; use \"retain\" (reads leave events in place) or \"drain\" (a read deletes what it returns)".into(),
            "osquery.conf:14:38: watchpost: unknown key \"mode\"; allowed keys: read_mode, file_hash_max_bytes, yara_scan_max_bytes, yara_queue_len, image_load_dedup, removable_media_loop_devices, powershell_log, disabled_tables".into(),
            "osquery.conf:15:29: options.events_max: must be a whole number of events, e.g. 50000, found \"lots\"".into(),
            "osquery.conf:15:54: options.events_expiry: must be a whole number of seconds, e.g. 3600, found -5".into(),
        ]
    );
}

#[test]
fn a_logger_section_without_plugins_is_an_error() {
    assert_eq!(
        errors(r#"{"win_logger_plugin": {}}"#),
        [
            r#"osquery.conf:1:23: win_logger_plugin: "plugins" is missing, e.g. {"plugins": [{"logger_name": "tail", "logger_watch_files": [{"watch_file_path": "C:\\temp\\tail.txt"}]}]}"#
        ]
    );
}

#[test]
fn duplicate_keys_are_errors_where_watchpost_reads_them() {
    let text = "{\n  \"plgx_event_filters\": {},\n  \"plgx_event_filters\": {},\n  \"schedule\": {},\n  \"schedule\": {}\n}";
    assert_eq!(
        errors(text),
        ["osquery.conf:3:3: duplicate key \"plgx_event_filters\" (first at 2:3); merge the two"]
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let missing_comma = "{\n  \"options\": {\n    \"events_max\": 10\n    \"events_expiry\": 20\n  }\n}";
    assert_eq!(errors(missing_comma), ["osquery.conf:3:21: syntax error: expected comma"]);
    let unterminated = "{\n  \"a\": 1 /* never closed\n}";
    assert_eq!(errors(unterminated), ["osquery.conf:2:10: syntax error: unterminated comment block"]);
    let single_quotes = "{'a': 1}";
    assert_eq!(
        errors(single_quotes),
        ["osquery.conf:1:2: syntax error: single-quoted strings are not allowed"]
    );
    assert_eq!(errors(""), ["osquery.conf:1:1: the config is empty; expected a JSON object, e.g. {}"]);
    assert_eq!(errors("\n [1]"), ["osquery.conf:2:2: the config must be a JSON object {...}, found a list"]);
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let config = parse("bom.conf", "\u{feff}{\"watchpost\": {\"read_mode\": \"drain\"}}").unwrap();
    assert_eq!(config.read_mode, ReadMode::Drain);
}

#[test]
fn sources_merge_later_wins_and_filters_combine_per_table() {
    let sources = BTreeMap::from([
        (
            "a_base".to_string(),
            r#"{"options": {"events_max": 100, "events_expiry": 60}, "watchpost": {"read_mode": "drain"},
                "plgx_event_filters": {"win_process_events": {"path": {"exclude": {"values": ["/usr/bin/*"]}}}},
                "win_logger_plugin": {"plugins": [{"logger_name": "tail", "logger_watch_files": [{"watch_file_path": "/a"}]}]}}"#
                .to_string(),
        ),
        ("b_empty".to_string(), "  ".to_string()),
        (
            "c_override".to_string(),
            r#"{"options": {"events_max": "200"}, "schedule": {},
                "plgx_event_filters": {"win_dns_events": {"domain_name": {"include": {"values": ["*.example.com"]}}}},
                "win_logger_plugin": {"plugins": [{"logger_name": "tail", "logger_watch_files": [{"watch_file_path": "/c"}]}]}}"#
                .to_string(),
        ),
    ]);
    let config = parse_sources(&sources).unwrap();
    assert_eq!(config.source, "a_base, b_empty, c_override");
    assert_eq!(config.events_max, Some(200));
    assert_eq!(config.events_expiry, Some(60));
    assert_eq!(config.read_mode, ReadMode::Drain);
    let tables: Vec<&str> = config.filters.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(tables, ["win_process_events", "win_dns_events"]);
    let paths: Vec<&str> = config.logger.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/c"]);
}

#[test]
fn two_sources_filtering_one_table_is_an_error_naming_both() {
    let sources = BTreeMap::from([
        ("first".to_string(), "{\n \"plgx_event_filters\": {\n  \"win_dns_events\": {}\n }\n}".to_string()),
        ("second".to_string(), "{\"plgx_event_filters\": {\"win_dns_events\": {}}}".to_string()),
        ("third".to_string(), "{\"watchpost\": 1}".to_string()),
    ]);
    let err = parse_sources(&sources).unwrap_err();
    assert_eq!(
        err.to_string(),
        "third:1:15: watchpost: must be an object, e.g. {\"read_mode\": \"retain\"}, found a number\n\
         second:1:25: plgx_event_filters.win_dns_events: already defined in first:3:3; define each table's filters in one source"
    );
}

#[test]
fn the_fingerprint_changes_with_content_not_layout() {
    let a = parse(
        "a",
        r#"{"plgx_event_filters": {"win_dns_events": {"domain_name": {"exclude": {"values": ["x"]}}}}}"#,
    )
    .unwrap();
    let relaid = parse(
        "b",
        "// moved around\n{\n  \"schedule\": {},\n  \"plgx_event_filters\": {\"win_dns_events\": {\"domain_name\": {\"exclude\": {\"values\": [\n\"x\",]}}}}}",
    )
    .unwrap();
    let changed = parse(
        "a",
        r#"{"plgx_event_filters": {"win_dns_events": {"domain_name": {"exclude": {"values": ["y"]}}}}}"#,
    )
    .unwrap();
    let drained = parse(
        "a",
        r#"{"watchpost": {"read_mode": "drain"}, "plgx_event_filters": {"win_dns_events": {"domain_name": {"exclude": {"values": ["x"]}}}}}"#,
    )
    .unwrap();
    assert_eq!(a.fingerprint, relaid.fingerprint);
    assert_ne!(a.fingerprint, changed.fingerprint);
    assert_ne!(a.fingerprint, drained.fingerprint);
    assert_ne!(a.fingerprint, Config::default().fingerprint);
}

#[test]
fn load_reads_a_file_and_names_an_unreadable_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("osquery.conf");
    std::fs::write(&path, SEED).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.source, path.display().to_string());
    assert_eq!(config.filters.tables.len(), 2);

    let missing = dir.path().join("missing.conf");
    let err = load(&missing).unwrap_err();
    assert_eq!(err.0.len(), 1);
    let shown = err.to_string();
    assert!(shown.starts_with(&format!("{}: cannot read the config file: ", missing.display())), "{shown}");
}

#[test]
fn explain_summarises_what_the_config_does() {
    let text = SEED.replacen('{', r#"{"options": {"events_expiry": 600}, "file_paths": {},"#, 1);
    let config = parse("seed.conf", &text).unwrap();
    assert_eq!(
        explain(&config),
        r"config: seed.conf
read mode: retain (events stay until they expire or are evicted; queries do not remove them)
events_expiry: 600 s
events_max: not set (osquery's flag or default applies)
watched log files (win_logger_events): 2
  C:\temp\tail.txt: every line
  C:\temp\tail2.txt: lines fully matching any of 2 patterns
    (.*) (\d+): \[([^\]]+)\] (.*)
    ((.|\r\n)*)(secret2)(.*)
event filters: 2 table(s)
  win_process_events: events matching an exclude value are dropped; all others are kept
    cmdline: include 0 values, exclude 3 values
  win_registry_events: events matching an exclude value are dropped; of the rest, only those matching an include value are kept
    target_name: include 4 values, exclude 0 values
also read (not used yet): file_paths
"
    );
    let defaults = explain(&Config::default());
    assert!(defaults.contains("event filters: none (every event is kept)"), "{defaults}");
    assert!(defaults.contains("watched log files (win_logger_events): none"), "{defaults}");
}

#[test]
fn sensor_options_are_read_from_the_watchpost_section_and_checked() {
    let config = parse(
        "osquery.conf",
        r#"{"watchpost": {"file_hash_max_bytes": "1024", "yara_queue_len": 8, "image_load_dedup": "image", "removable_media_loop_devices": true,}}"#,
    )
    .unwrap();
    let options = &config.sensor_options;
    assert_eq!(options.file_hash_max_bytes, 1024);
    assert_eq!(options.yara_queue_len, 8);
    assert_eq!(options.yara_scan_max_bytes, 64 * 1024 * 1024, "unset keys keep their defaults");
    assert_eq!(options.image_load_dedup, watchpost_config::ImageLoadDedup::PerImage);
    assert!(options.removable_media_loop_devices);
    assert_ne!(config.fingerprint, parse("b", "{}").unwrap().fingerprint, "options count as a change");

    let errors = parse(
        "osquery.conf",
        r#"{"watchpost": {"image_load_dedup": "once", "removable_media_loop_devices": "yes", "yara_queue_len": -1}}"#,
    )
    .unwrap_err();
    let messages: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        [
            "osquery.conf:1:36: watchpost.image_load_dedup: unknown image load deduplication \"once\"; use \"process\" (once per process and image) or \"image\" (once per image file, system-wide) or \"none\" (every mapping)",
            "osquery.conf:1:76: watchpost.removable_media_loop_devices: must be true or false, found a string",
            "osquery.conf:1:101: watchpost.yara_queue_len: must be a whole number of files, e.g. 1024, found -1",
        ]
    );
}

#[test]
fn disabled_tables_name_event_tables() {
    let config = parse(
        "osquery.conf",
        r#"{"watchpost": {"disabled_tables": ["win_image_load_process_map", "win_image_load_events", "win_image_load_events",]}}"#,
    )
    .unwrap();
    assert_eq!(
        config.sensor_options.disabled_tables,
        ["win_image_load_events", "win_image_load_process_map"]
    );
    assert!(parse("a", "{}").unwrap().sensor_options.disabled_tables.is_empty());
    assert!(
        explain(&config)
            .contains("disabled tables (not captured): win_image_load_events, win_image_load_process_map"),
        "{}",
        explain(&config)
    );

    let messages = |text: &str| -> Vec<String> {
        parse("osquery.conf", text).unwrap_err().0.iter().map(|e| e.to_string()).collect()
    };
    let unknown = messages(r#"{"watchpost": {"disabled_tables": ["win_proc_events", "win_mem_perf", 3]}}"#);
    assert_eq!(unknown.len(), 3, "{unknown:?}");
    assert!(
        unknown[0].starts_with(
            "osquery.conf:1:36: watchpost.disabled_tables: unknown table \"win_proc_events\"; event tables: "
        ) && unknown[0].contains("win_process_events"),
        "{unknown:?}"
    );
    assert!(unknown[1].contains("\"win_mem_perf\" is not an event table"), "{unknown:?}");
    assert_eq!(
        unknown[2],
        "osquery.conf:1:71: watchpost.disabled_tables: must hold table names, found a number"
    );
    assert_eq!(
        messages(r#"{"watchpost": {"disabled_tables": "win_process_events"}}"#),
        ["osquery.conf:1:35: watchpost.disabled_tables: must be a list of event table names, found a string"]
    );
}
