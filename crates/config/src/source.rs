//! Reading one config source text: the JSON syntax osquery accepts, then the keys watchpost uses,
//! validated with a message per problem.

use std::collections::HashMap;

use jsonc_parser::ast::{Array, Object, ObjectProp, ObjectPropName, Value as Json};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};
use watchpost_catalog::{ReadMode, TableKind, catalog};

use crate::error::{ConfigError, Reporter};
use crate::matcher::check_pattern;
use crate::{
    ColumnFilter, FilterValue, ImageLoadDedup, PowerShellLog, SensorOptions, SensorSections, TableFilters,
    WatchFile,
};

/// What one source defines; `None` where the source does not mention a setting, so that merging
/// several sources can tell "not set here" from "set to the default".
pub(crate) struct SourceConfig {
    pub source: String,
    pub read_mode: Option<ReadMode>,
    pub events_max: Option<u64>,
    pub events_expiry: Option<u64>,
    pub logger: Option<Vec<WatchFile>>,
    pub filters: Vec<LocatedTable>,
    pub sections: SensorSections,
    pub sensor_options: SensorOptionsPart,
}

/// The [`SensorOptions`] one source sets.
#[derive(Default)]
pub(crate) struct SensorOptionsPart {
    file_hash_max_bytes: Option<u64>,
    yara_scan_max_bytes: Option<u64>,
    yara_queue_len: Option<u64>,
    image_load_dedup: Option<ImageLoadDedup>,
    removable_media_loop_devices: Option<bool>,
    powershell_log: Option<PowerShellLog>,
    disabled_tables: Option<Vec<String>>,
}

impl SensorOptionsPart {
    pub fn apply_to(&self, options: &mut SensorOptions) {
        if let Some(v) = self.file_hash_max_bytes {
            options.file_hash_max_bytes = v;
        }
        if let Some(v) = self.yara_scan_max_bytes {
            options.yara_scan_max_bytes = v;
        }
        if let Some(v) = self.yara_queue_len {
            options.yara_queue_len = v;
        }
        if let Some(v) = self.image_load_dedup {
            options.image_load_dedup = v;
        }
        if let Some(v) = self.removable_media_loop_devices {
            options.removable_media_loop_devices = v;
        }
        if let Some(v) = &self.disabled_tables {
            options.disabled_tables = v.clone();
        }
        if let Some(v) = &self.powershell_log {
            options.powershell_log = v.clone();
        }
    }
}

/// A table's filters and where its key is, for naming both places when two sources clash.
pub(crate) struct LocatedTable {
    pub filters: TableFilters,
    pub line: usize,
    pub column: usize,
}

const FILTERS_KEY: &str = "plgx_event_filters";
const LOGGER_KEY: &str = "win_logger_plugin";
const WATCHPOST_KEY: &str = "watchpost";
const OPTIONS_KEY: &str = "options";
const SENSOR_SECTION_KEYS: [&str; 4] = ["win_include_paths", "win_exclude_paths", "yara", "file_paths"];

/// The logger the original supported for text files; its docs say the name cannot be changed.
const TAIL_LOGGER: &str = "tail";

pub(crate) fn read_source(source: &str, text: &str) -> Result<SourceConfig, Vec<ConfigError>> {
    // Editors on Windows may save a byte order mark; RapidJSON skips it too.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reporter = Reporter::new(source, text);
    // RapidJSON as osquery uses it: comments and trailing commas, otherwise strict JSON.
    let options = ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let root = match jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options) {
        Ok(parsed) => parsed.value,
        Err(e) => {
            reporter.error(e.range().start, format!("syntax error: {}", lower_first(&e.kind().to_string())));
            return Err(reporter.errors);
        }
    };
    let Some(root) = root else {
        reporter.error(0, "the config is empty; expected a JSON object, e.g. {}");
        return Err(reporter.errors);
    };
    let Json::Object(root) = root else {
        reporter.error(
            root.start(),
            format!("the config must be a JSON object {{...}}, found {}", kind_name(&root)),
        );
        return Err(reporter.errors);
    };

    let mut config = SourceConfig {
        source: source.to_string(),
        read_mode: None,
        events_max: None,
        events_expiry: None,
        logger: None,
        filters: Vec::new(),
        sections: SensorSections::default(),
        sensor_options: SensorOptionsPart::default(),
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for prop in &root.properties {
        let key = prop.name.as_str();
        let is_ours = [FILTERS_KEY, LOGGER_KEY, WATCHPOST_KEY, OPTIONS_KEY].contains(&key)
            || SENSOR_SECTION_KEYS.contains(&key);
        if !is_ours {
            // schedule, packs, decorators, ...: osquery's business.
            continue;
        }
        if !first_occurrence(&mut reporter, "", &mut seen, prop) {
            continue;
        }
        match key {
            FILTERS_KEY => config.filters = read_filters(&mut reporter, &prop.value),
            LOGGER_KEY => config.logger = read_logger(&mut reporter, &prop.value),
            WATCHPOST_KEY => read_watchpost(&mut reporter, &prop.value, &mut config),
            OPTIONS_KEY => read_options(&mut reporter, &prop.value, &mut config),
            "win_include_paths" => config.sections.win_include_paths = Some(prop.value.clone().into()),
            "win_exclude_paths" => config.sections.win_exclude_paths = Some(prop.value.clone().into()),
            "yara" => config.sections.yara = Some(prop.value.clone().into()),
            "file_paths" => config.sections.file_paths = Some(prop.value.clone().into()),
            _ => {}
        }
    }
    if reporter.errors.is_empty() {
        Ok(config)
    } else {
        reporter.errors.sort_by_key(|e| (e.line, e.column));
        Err(reporter.errors)
    }
}

fn read_options(reporter: &mut Reporter, value: &Json, config: &mut SourceConfig) {
    let Some(options) = expect_object(reporter, OPTIONS_KEY, value, "{\"events_max\": 50000}") else {
        return;
    };
    let mut seen = HashMap::new();
    for prop in &options.properties {
        let key = prop.name.as_str();
        if !matches!(key, "events_max" | "events_expiry") {
            continue;
        }
        if !first_occurrence(reporter, OPTIONS_KEY, &mut seen, prop) {
            continue;
        }
        let (unit, example) = if key == "events_max" { ("events", "50000") } else { ("seconds", "3600") };
        let parsed = read_count(reporter, &format!("{OPTIONS_KEY}.{key}"), &prop.value, unit, example);
        if key == "events_max" {
            config.events_max = parsed;
        } else {
            config.events_expiry = parsed;
        }
    }
}

/// A non-negative whole number, written as a number or as a numeric string (osquery accepts both
/// for its flags).
fn read_count(reporter: &mut Reporter, path: &str, value: &Json, unit: &str, example: &str) -> Option<u64> {
    let (text, shown) = match value {
        Json::NumberLit(n) => (n.value.to_string(), n.value.to_string()),
        Json::StringLit(s) => (s.value.trim().to_string(), format!("{:?}", s.value)),
        other => {
            reporter.error(
                other.start(),
                format!(
                    "{path}: must be a whole number of {unit}, e.g. {example}, found {}",
                    kind_name(other)
                ),
            );
            return None;
        }
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        reporter.error(
            value.start(),
            format!("{path}: must be a whole number of {unit}, e.g. {example}, found {shown}"),
        );
        return None;
    }
    match text.parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            reporter.error(value.start(), format!("{path}: {shown} is too large"));
            None
        }
    }
}

const WATCHPOST_KEYS: [&str; 8] = [
    "read_mode",
    "file_hash_max_bytes",
    "yara_scan_max_bytes",
    "yara_queue_len",
    "image_load_dedup",
    "removable_media_loop_devices",
    "powershell_log",
    "disabled_tables",
];

fn read_watchpost(reporter: &mut Reporter, value: &Json, config: &mut SourceConfig) {
    let Some(object) = expect_object(reporter, WATCHPOST_KEY, value, "{\"read_mode\": \"retain\"}") else {
        return;
    };
    let [read_mode, hash_max, scan_max, queue_len, dedup, loops, powershell_log, disabled] =
        known_fields(reporter, WATCHPOST_KEY, object, &WATCHPOST_KEYS);
    let path = |key: &str| format!("{WATCHPOST_KEY}.{key}");
    if let Some(prop) = read_mode {
        config.read_mode = read_choice(
            reporter,
            &path("read_mode"),
            &prop.value,
            &[
                ("retain", ReadMode::Retain, "reads leave events in place"),
                ("drain", ReadMode::Drain, "a read deletes what it returns"),
            ],
            "read mode",
        );
    }
    let options = &mut config.sensor_options;
    if let Some(prop) = hash_max {
        options.file_hash_max_bytes =
            read_count(reporter, &path("file_hash_max_bytes"), &prop.value, "bytes", "67108864");
    }
    if let Some(prop) = scan_max {
        options.yara_scan_max_bytes =
            read_count(reporter, &path("yara_scan_max_bytes"), &prop.value, "bytes", "67108864");
    }
    if let Some(prop) = queue_len {
        options.yara_queue_len = read_count(reporter, &path("yara_queue_len"), &prop.value, "files", "1024");
    }
    if let Some(prop) = dedup {
        options.image_load_dedup = read_choice(
            reporter,
            &path("image_load_dedup"),
            &prop.value,
            &[
                ("process", ImageLoadDedup::PerProcess, "once per process and image"),
                ("image", ImageLoadDedup::PerImage, "once per image file, system-wide"),
                ("none", ImageLoadDedup::None, "every mapping"),
            ],
            "image load deduplication",
        );
    }
    if let Some(prop) = loops {
        options.removable_media_loop_devices = match &prop.value {
            Json::BooleanLit(b) => Some(b.value),
            other => {
                reporter.error(
                    other.start(),
                    format!(
                        "{}: must be true or false, found {}",
                        path("removable_media_loop_devices"),
                        kind_name(other)
                    ),
                );
                None
            }
        };
    }
    if let Some(prop) = disabled {
        options.disabled_tables = read_disabled_tables(reporter, &path("disabled_tables"), &prop.value);
    }
    if let Some(prop) = powershell_log {
        let key = path("powershell_log");
        options.powershell_log = match &prop.value {
            Json::StringLit(s) if s.value == "auto" => Some(PowerShellLog::Auto),
            Json::StringLit(s) if s.value == "journal" => Some(PowerShellLog::Journal),
            Json::StringLit(s) if s.value.starts_with('/') || s.value.contains(":\\") => {
                Some(PowerShellLog::File(s.value.to_string()))
            }
            Json::StringLit(s) => {
                reporter.error(
                    s.range.start,
                    format!(
                        "{key}: {:?} is neither \"auto\", \"journal\" nor an absolute path of a syslog file",
                        s.value
                    ),
                );
                None
            }
            other => {
                reporter.error(
                    other.start(),
                    format!(
                        "{key}: must be \"auto\", \"journal\" or an absolute file path, found {}",
                        kind_name(other)
                    ),
                );
                None
            }
        };
    }
}

/// One of the strings of `choices` (name, value, what it means), else an error listing them.
fn read_choice<T: Copy>(
    reporter: &mut Reporter,
    path: &str,
    value: &Json,
    choices: &[(&str, T, &str)],
    what: &str,
) -> Option<T> {
    let listed =
        choices.iter().map(|(name, _, meaning)| format!("\"{name}\" ({meaning})")).collect::<Vec<_>>();
    match value {
        Json::StringLit(s) => match choices.iter().find(|(name, _, _)| *name == s.value) {
            Some((_, choice, _)) => Some(*choice),
            None => {
                reporter.error(
                    s.range.start,
                    format!("{path}: unknown {what} {:?}; use {}", s.value, listed.join(" or ")),
                );
                None
            }
        },
        other => {
            let names = choices.iter().map(|(name, _, _)| format!("\"{name}\"")).collect::<Vec<_>>();
            reporter.error(
                other.start(),
                format!("{path}: must be the string {}, found {}", names.join(" or "), kind_name(other)),
            );
            None
        }
    }
}

fn read_logger(reporter: &mut Reporter, value: &Json) -> Option<Vec<WatchFile>> {
    const EXAMPLE: &str = r#"{"plugins": [{"logger_name": "tail", "logger_watch_files": [{"watch_file_path": "C:\\temp\\tail.txt"}]}]}"#;
    let object = expect_object(reporter, LOGGER_KEY, value, EXAMPLE)?;
    let errors_before = reporter.errors.len();
    let [plugins] = known_fields(reporter, LOGGER_KEY, object, &["plugins"]);
    let Some(plugins) = plugins else {
        reporter.error(object.range.start, format!("{LOGGER_KEY}: \"plugins\" is missing, e.g. {EXAMPLE}"));
        return None;
    };
    let plugins_path = format!("{LOGGER_KEY}.plugins");
    let plugins =
        expect_array(reporter, &plugins_path, &plugins.value, "[{\"logger_name\": \"tail\", ...}]")?;
    let mut files: Vec<WatchFile> = Vec::new();
    let mut first_seen: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, plugin) in plugins.elements.iter().enumerate() {
        let path = format!("{plugins_path}[{i}]");
        let Some(plugin) = expect_object(reporter, &path, plugin, "{\"logger_name\": \"tail\", ...}") else {
            continue;
        };
        let [name, watch_files] =
            known_fields(reporter, &path, plugin, &["logger_name", "logger_watch_files"]);
        let logger_name = match name.map(|p| &p.value) {
            Some(Json::StringLit(s)) if s.value == TAIL_LOGGER => TAIL_LOGGER.to_string(),
            Some(other) => {
                let found = match other {
                    Json::StringLit(s) => format!("{:?}", s.value),
                    other => kind_name(other).to_string(),
                };
                reporter.error(
                    other.start(),
                    format!("{path}.logger_name: must be \"tail\" (the only logger, for text files; the name cannot be changed), found {found}"),
                );
                continue;
            }
            None => {
                reporter.error(
                    plugin.range.start,
                    format!(
                        "{path}: \"logger_name\" is missing; it must be \"tail\" (the name cannot be changed)"
                    ),
                );
                continue;
            }
        };
        let Some(watch_files) = watch_files else {
            reporter.error(
                plugin.range.start,
                format!("{path}: \"logger_watch_files\" is missing; list the files to watch, e.g. [{{\"watch_file_path\": \"C:\\\\temp\\\\tail.txt\"}}]"),
            );
            continue;
        };
        let files_path = format!("{path}.logger_watch_files");
        let Some(entries) =
            expect_array(reporter, &files_path, &watch_files.value, "[{\"watch_file_path\": ...}]")
        else {
            continue;
        };
        for (j, entry) in entries.elements.iter().enumerate() {
            let entry_path = format!("{files_path}[{j}]");
            if let Some(file) = read_watch_file(reporter, &entry_path, entry, &logger_name) {
                let (line, column) = reporter.position(entry.start());
                if let Some((first_line, first_column)) = first_seen.get(&file.path) {
                    reporter.error(
                        entry.start(),
                        format!("{entry_path}: {:?} is already watched (at {first_line}:{first_column}); list all its patterns in one entry", file.path),
                    );
                    continue;
                }
                first_seen.insert(file.path.clone(), (line, column));
                files.push(file);
            }
        }
    }
    (reporter.errors.len() == errors_before).then_some(files)
}

fn read_watch_file(
    reporter: &mut Reporter,
    path: &str,
    entry: &Json,
    logger_name: &str,
) -> Option<WatchFile> {
    let object = expect_object(reporter, path, entry, "{\"watch_file_path\": \"C:\\\\temp\\\\tail.txt\"}")?;
    let [file, patterns] = known_fields(reporter, path, object, &["watch_file_path", "file_regex_pattern"]);
    let file_path = match file.map(|p| &p.value) {
        Some(Json::StringLit(s)) if !s.value.trim().is_empty() => s.value.to_string(),
        Some(other) => {
            reporter.error(
                other.start(),
                format!("{path}.watch_file_path: must be the path of a file, found {}", describe(other)),
            );
            return None;
        }
        None => {
            reporter.error(object.range.start, format!("{path}: \"watch_file_path\" is missing"));
            return None;
        }
    };
    let mut regexes = Vec::new();
    if let Some(patterns) = patterns {
        let patterns_path = format!("{path}.file_regex_pattern");
        let list = expect_array(reporter, &patterns_path, &patterns.value, "[\"(.*)error(.*)\"]")?;
        let mut ok = true;
        for (k, element) in list.elements.iter().enumerate() {
            match element {
                Json::StringLit(s) => match check_pattern(&s.value) {
                    Ok(()) => regexes.push(s.value.to_string()),
                    Err(e) => {
                        reporter.error(s.range.start, format!("{patterns_path}[{k}]: {e}"));
                        ok = false;
                    }
                },
                other => {
                    reporter.error(
                        other.start(),
                        format!(
                            "{patterns_path}[{k}]: must be a regular expression string, found {}",
                            describe(other)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
    }
    Some(WatchFile { logger_name: logger_name.to_string(), path: file_path, patterns: regexes })
}

fn read_filters(reporter: &mut Reporter, value: &Json) -> Vec<LocatedTable> {
    let example = r#"{"win_process_events": {"cmdline": {"exclude": {"values": ["..."]}}}}"#;
    let Some(tables) = expect_object(reporter, FILTERS_KEY, value, example) else {
        return Vec::new();
    };
    let mut located = Vec::new();
    let mut seen = HashMap::new();
    for table_prop in &tables.properties {
        if !first_occurrence(reporter, FILTERS_KEY, &mut seen, table_prop) {
            continue;
        }
        let name = table_prop.name.as_str();
        let key_offset = name_offset(table_prop);
        let Some(table) = catalog().table(name).filter(|t| !t.filterable.is_empty()) else {
            let problem = if catalog().table(name).is_some() {
                format!("table {name:?} does not accept filters")
            } else {
                format!("unknown table {name:?}")
            };
            reporter.error(
                key_offset,
                format!("{FILTERS_KEY}: {problem}; tables that accept filters: {}", filterable_tables()),
            );
            continue;
        };
        let table_path = format!("{FILTERS_KEY}.{name}");
        let Some(columns) = expect_object(
            reporter,
            &table_path,
            &table_prop.value,
            "{\"COLUMN\": {\"include\": {\"values\": [\"...\"]}}}",
        ) else {
            continue;
        };
        let mut column_filters = Vec::new();
        let mut seen_columns = HashMap::new();
        for column_prop in &columns.properties {
            if !first_occurrence(reporter, &table_path, &mut seen_columns, column_prop) {
                continue;
            }
            let column = column_prop.name.as_str();
            if !table.is_filterable(column) {
                let problem = if table.column(column).is_some() {
                    format!("column {column:?} cannot be filtered")
                } else {
                    format!("unknown column {column:?}")
                };
                reporter.error(
                    name_offset(column_prop),
                    format!("{table_path}: {problem}; filterable columns: {}", table.filterable.join(", ")),
                );
                continue;
            }
            let column_path = format!("{table_path}.{column}");
            if let Some(filter) = read_column_filter(reporter, &column_path, column, &column_prop.value) {
                column_filters.push(filter);
            }
        }
        let (line, column) = reporter.position(key_offset);
        located.push(LocatedTable {
            filters: TableFilters { table: name.to_string(), columns: column_filters },
            line,
            column,
        });
    }
    located
}

fn read_column_filter(
    reporter: &mut Reporter,
    path: &str,
    column: &str,
    value: &Json,
) -> Option<ColumnFilter> {
    let types = expect_object(reporter, path, value, "{\"include\": {\"values\": [\"...\"]}}")?;
    let mut filter = ColumnFilter { column: column.to_string(), include: Vec::new(), exclude: Vec::new() };
    let mut seen = HashMap::new();
    for type_prop in &types.properties {
        if !first_occurrence(reporter, path, &mut seen, type_prop) {
            continue;
        }
        let kind = type_prop.name.as_str();
        if kind != "include" && kind != "exclude" {
            reporter.error(
                name_offset(type_prop),
                format!("{path}: unknown filter type {kind:?}; use \"include\" or \"exclude\""),
            );
            continue;
        }
        let kind_path = format!("{path}.{kind}");
        let values = read_filter_values(reporter, &kind_path, kind, &type_prop.value);
        if kind == "include" {
            filter.include = values;
        } else {
            filter.exclude = values;
        }
    }
    Some(filter)
}

fn read_filter_values(reporter: &mut Reporter, path: &str, kind: &str, value: &Json) -> Vec<FilterValue> {
    let Some(object) = expect_object(reporter, path, value, "{\"values\": [\"...\"]}") else {
        return Vec::new();
    };
    let [values] = known_fields(reporter, path, object, &["values"]);
    let Some(values) = values else {
        reporter.error(
            object.range.start,
            format!("{path}: \"values\" is missing, e.g. {{\"values\": [\"...\"]}}"),
        );
        return Vec::new();
    };
    let values_path = format!("{path}.values");
    let Some(list) = expect_array(reporter, &values_path, &values.value, "[\"C:\\\\Windows\\\\*\"]") else {
        return Vec::new();
    };
    if list.elements.is_empty() && kind == "include" {
        // An include filter without values keeps nothing: every event of the table would vanish.
        reporter.error(
            list.range.start,
            format!("{values_path}: is empty, so every event of the table would be dropped; list at least one value or remove the include filter"),
        );
    }
    let mut out = Vec::with_capacity(list.elements.len());
    for (i, element) in list.elements.iter().enumerate() {
        match element {
            Json::StringLit(s) => {
                let (line, column) = reporter.position(s.range.start);
                out.push(FilterValue { text: s.value.to_string(), line, column });
            }
            Json::NumberLit(n) => reporter.error(
                n.range.start,
                format!(
                    "{values_path}[{i}]: must be a string, e.g. \"{}\" (numbers are matched as their text)",
                    n.value
                ),
            ),
            other => reporter.error(
                other.start(),
                format!("{values_path}[{i}]: must be a string, found {}", kind_name(other)),
            ),
        }
    }
    out
}

/// `true` the first time an object key is seen; reports later duplicates (RapidJSON would keep
/// the first and silently ignore the rest).
fn first_occurrence<'a>(
    reporter: &mut Reporter,
    path: &str,
    seen: &mut HashMap<&'a str, usize>,
    prop: &'a ObjectProp<'_>,
) -> bool {
    let key = prop.name.as_str();
    let offset = name_offset(prop);
    if let Some(&first) = seen.get(key) {
        let (line, column) = reporter.position(first);
        let prefix = if path.is_empty() { String::new() } else { format!("{path}: ") };
        reporter.error(
            offset,
            format!("{prefix}duplicate key {key:?} (first at {line}:{column}); merge the two"),
        );
        return false;
    }
    seen.insert(key, offset);
    true
}

/// Picks the `allowed` keys out of `object`, one slot each, reporting unknown and duplicate keys.
fn known_fields<'o, 'a, const N: usize>(
    reporter: &mut Reporter,
    path: &str,
    object: &'o Object<'a>,
    allowed: &[&str; N],
) -> [Option<&'o ObjectProp<'a>>; N] {
    let mut found = [None; N];
    let mut seen = HashMap::new();
    for prop in &object.properties {
        if !first_occurrence(reporter, path, &mut seen, prop) {
            continue;
        }
        match allowed.iter().position(|k| *k == prop.name.as_str()) {
            Some(i) => found[i] = Some(prop),
            None => reporter.error(
                name_offset(prop),
                format!("{path}: unknown key {:?}; allowed keys: {}", prop.name.as_str(), allowed.join(", ")),
            ),
        }
    }
    found
}

fn expect_object<'v, 'a>(
    reporter: &mut Reporter,
    path: &str,
    value: &'v Json<'a>,
    example: &str,
) -> Option<&'v Object<'a>> {
    match value {
        Json::Object(object) => Some(object),
        other => {
            reporter.error(
                other.start(),
                format!("{path}: must be an object, e.g. {example}, found {}", kind_name(other)),
            );
            None
        }
    }
}

fn expect_array<'v, 'a>(
    reporter: &mut Reporter,
    path: &str,
    value: &'v Json<'a>,
    example: &str,
) -> Option<&'v Array<'a>> {
    match value {
        Json::Array(array) => Some(array),
        other => {
            reporter.error(
                other.start(),
                format!("{path}: must be a list, e.g. {example}, found {}", kind_name(other)),
            );
            None
        }
    }
}

fn name_offset(prop: &ObjectProp) -> usize {
    match &prop.name {
        ObjectPropName::String(s) => s.range.start,
        ObjectPropName::Word(w) => w.range.start,
    }
}

fn kind_name(value: &Json) -> &'static str {
    match value {
        Json::StringLit(_) => "a string",
        Json::NumberLit(_) => "a number",
        Json::BooleanLit(_) => "true/false",
        Json::NullKeyword(_) => "null",
        Json::Object(_) => "an object",
        Json::Array(_) => "a list",
    }
}

/// Like [`kind_name`], but shows strings and numbers themselves.
fn describe(value: &Json) -> String {
    match value {
        Json::StringLit(s) => format!("{:?}", s.value),
        Json::NumberLit(n) => n.value.to_string(),
        other => kind_name(other).to_string(),
    }
}

/// `watchpost.disabled_tables`: a list of event table names, sorted and without repeats; an
/// unknown or non-event name is an error naming the event tables.
fn read_disabled_tables(reporter: &mut Reporter, path: &str, value: &Json) -> Option<Vec<String>> {
    let Json::Array(items) = value else {
        reporter.error(
            value.start(),
            format!("{path}: must be a list of event table names, found {}", kind_name(value)),
        );
        return None;
    };
    let mut tables = Vec::new();
    let mut valid = true;
    for item in &items.elements {
        match item {
            Json::StringLit(s) if catalog().table(&s.value).is_some_and(|t| t.kind == TableKind::Evented) => {
                tables.push(s.value.to_string());
            }
            Json::StringLit(s) => {
                valid = false;
                let problem = if catalog().table(&s.value).is_some() {
                    format!(
                        "{:?} is not an event table (computed tables cost nothing until queried)",
                        s.value
                    )
                } else {
                    format!("unknown table {:?}", s.value)
                };
                reporter.error(s.range.start, format!("{path}: {problem}; event tables: {}", event_tables()));
            }
            other => {
                valid = false;
                reporter.error(
                    other.start(),
                    format!("{path}: must hold table names, found {}", kind_name(other)),
                );
            }
        }
    }
    tables.sort();
    tables.dedup();
    valid.then_some(tables)
}

fn event_tables() -> String {
    catalog()
        .tables()
        .iter()
        .filter(|t| t.kind == TableKind::Evented)
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn filterable_tables() -> String {
    catalog()
        .tables()
        .iter()
        .filter(|t| !t.filterable.is_empty())
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}
