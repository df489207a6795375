//! Reads osquery.conf into the settings watchpost uses, with precise errors.
//!
//! The text is JSON as osquery's RapidJSON parser accepts it: `//` and `/* */` comments and
//! trailing commas are allowed (the original's shipped configs have trailing commas). watchpost
//! reads these top-level keys (see `shared/schemas/README.md`):
//! - `plgx_event_filters`: per table and column include/exclude values, validated against the
//!   catalog ([`FilterSpec`]);
//! - `win_logger_plugin`: the log files `win_logger_events` tails ([`WatchFile`]);
//! - `watchpost`: `{"read_mode": "retain"|"drain"}` and the sensor settings of
//!   [`SensorOptions`];
//! - `options.events_max`, `options.events_expiry`;
//! - `win_include_paths`, `win_exclude_paths`, `yara`, `file_paths`: kept as parsed JSON for the
//!   sensors that use them ([`SensorSections`]).
//!
//! Every other key (schedule, packs, decorators, other options, ...) is osquery's and ignored.
//! Every problem is reported, not only the first, as `source:line:column: message`; a config
//! with any problem is rejected as a whole, so a bad filter section never silently disables
//! filtering.

mod error;
mod explain;
mod matcher;
mod position;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use watchpost_catalog::ReadMode;

pub use error::{ConfigError, ConfigErrors};
pub use explain::explain;
pub use matcher::{LineMatcher, PatternError};

use source::{SourceConfig, read_source};

/// watchpost's settings from one config (possibly merged from several sources).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file path, or the osquery config-plugin source names (comma-separated).
    pub source: String,
    pub read_mode: ReadMode,
    /// `options.events_max`: events kept per table.
    pub events_max: Option<u64>,
    /// `options.events_expiry`: seconds an event is kept.
    pub events_expiry: Option<u64>,
    /// The log files `win_logger_events` tails (`win_logger_plugin`).
    pub logger: Vec<WatchFile>,
    /// `plgx_event_filters`, validated against the catalog.
    pub filters: FilterSpec,
    /// Sections later sensors read.
    pub sections: SensorSections,
    /// Sensor settings from the `watchpost` section.
    pub sensor_options: SensorOptions,
    /// Hash of everything above except `source`: equal fingerprints mean a reload changed
    /// nothing watchpost uses. Stable within one build of watchpost, not across builds.
    pub fingerprint: u64,
}

impl Default for Config {
    /// No filters, no watched logs, osquery's default limits.
    fn default() -> Config {
        let mut config = Config {
            source: String::new(),
            read_mode: ReadMode::default(),
            events_max: None,
            events_expiry: None,
            logger: Vec::new(),
            filters: FilterSpec::default(),
            sections: SensorSections::default(),
            sensor_options: SensorOptions::default(),
            fingerprint: 0,
        };
        config.fingerprint = fingerprint(&config);
        config
    }
}

/// One log file that `win_logger_events` tails.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchFile {
    /// Always `tail` (the only logger the original had).
    pub logger_name: String,
    pub path: String,
    /// `file_regex_pattern`: a line is recorded when any pattern matches the whole line; all
    /// lines when empty. Checked to compile when the config was read.
    pub patterns: Vec<String>,
}

impl WatchFile {
    pub fn matcher(&self) -> Result<LineMatcher, PatternError> {
        LineMatcher::new(&self.patterns)
    }
}

/// `plgx_event_filters`. No tables means no filtering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    pub tables: Vec<TableFilters>,
}

impl FilterSpec {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.columns.iter().all(|c| c.include.is_empty() && c.exclude.is_empty()))
    }

    pub fn table(&self, name: &str) -> Option<&TableFilters> {
        self.tables.iter().find(|t| t.table == name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFilters {
    pub table: String,
    pub columns: Vec<ColumnFilter>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnFilter {
    pub column: String,
    pub include: Vec<FilterValue>,
    pub exclude: Vec<FilterValue>,
}

/// One filter value as written (JSON escapes resolved), with its position in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterValue {
    pub text: String,
    pub line: usize,
    pub column: usize,
}

/// Config sections for sensors that do not exist yet, kept as parsed JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SensorSections {
    pub win_include_paths: Option<serde_json::Value>,
    pub win_exclude_paths: Option<serde_json::Value>,
    pub yara: Option<serde_json::Value>,
    pub file_paths: Option<serde_json::Value>,
}

/// Sensor settings of the `watchpost` config section; every key is optional.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SensorOptions {
    /// `file_hash_max_bytes`: files larger than this are not hashed in `win_file_events`
    /// (`hashed = 0`). Default 64 MiB.
    pub file_hash_max_bytes: u64,
    /// `yara_scan_max_bytes`: files larger than this are not scanned. Default 64 MiB.
    pub yara_scan_max_bytes: u64,
    /// `yara_queue_len`: files waiting for a YARA scan; beyond it new files are counted as lost.
    /// Default 1024.
    pub yara_queue_len: u64,
    /// `image_load_dedup`: how often an image load is recorded.
    pub image_load_dedup: ImageLoadDedup,
    /// `removable_media_loop_devices`: report loop devices in `win_removable_media_events` too
    /// (they are not removable media; for tests and for hosts that mount images). Default false.
    pub removable_media_loop_devices: bool,
    /// `powershell_log`: where `win_obfuscated_ps` reads PowerShell script-block logs.
    pub powershell_log: PowerShellLog,
    /// `disabled_tables`: event tables not captured at all (sorted). A sensor whose tables are
    /// all disabled does not run. Default: none.
    pub disabled_tables: Vec<String>,
}

/// `watchpost.powershell_log`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum PowerShellLog {
    /// `"auto"`: the first of `/var/log/syslog`, `/var/log/messages`, the journal (default).
    #[default]
    Auto,
    /// `"journal"`: the systemd journal.
    Journal,
    /// An absolute path: a syslog-format file.
    File(String),
}

impl Default for SensorOptions {
    fn default() -> SensorOptions {
        SensorOptions {
            file_hash_max_bytes: 64 * 1024 * 1024,
            yara_scan_max_bytes: 64 * 1024 * 1024,
            yara_queue_len: 1024,
            image_load_dedup: ImageLoadDedup::default(),
            removable_media_loop_devices: false,
            powershell_log: PowerShellLog::Auto,
            disabled_tables: Vec::new(),
        }
    }
}

/// `watchpost.image_load_dedup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ImageLoadDedup {
    /// `"process"`: once per process instance and image (default).
    #[default]
    PerProcess,
    /// `"image"`: once per image file system-wide, as the original did.
    PerImage,
    /// `"none"`: every executable mapping.
    None,
}

/// Parses one config text; `source` names it in errors (a file path, or a config-plugin source).
pub fn parse(source: &str, text: &str) -> Result<Config, ConfigErrors> {
    let parsed = read_source(source, text).map_err(ConfigErrors)?;
    merge(source.to_string(), vec![parsed]).map_err(ConfigErrors)
}

/// Reads and parses a config file. An unreadable file is an error naming it.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&source, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            source,
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        }])),
    }
}

/// Parses what osquery's config plugin answers `genConfig` with: `{source name: JSON text}`.
///
/// watchpost's keys may be in any source. Sources are applied in name order and later ones win
/// per setting (`watchpost.read_mode`, `options.events_max`, `options.events_expiry`, and whole
/// `win_logger_plugin` / sensor sections); `plgx_event_filters` are merged per table, and two
/// sources filtering the same table is an error naming both places. Sources whose text is empty
/// or blank (osquery plugins answer so when they have nothing) are skipped.
pub fn parse_sources(sources: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in sources {
        if text.trim().is_empty() {
            continue;
        }
        match read_source(name, text) {
            Ok(source) => parsed.push(source),
            Err(e) => errors.extend(e),
        }
    }
    let names = if sources.is_empty() {
        "(no config sources)".to_string()
    } else {
        sources.keys().cloned().collect::<Vec<_>>().join(", ")
    };
    match merge(names, parsed) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(merge_errors) => {
            errors.extend(merge_errors);
            Err(ConfigErrors(errors))
        }
    }
}

fn merge(source: String, parsed: Vec<SourceConfig>) -> Result<Config, Vec<ConfigError>> {
    let mut config = Config { source, ..Config::default() };
    let mut errors = Vec::new();
    // table name -> (source, line, column) of the filters already taken.
    let mut filter_origin: HashMap<String, (String, usize, usize)> = HashMap::new();
    for part in parsed {
        if let Some(read_mode) = part.read_mode {
            config.read_mode = read_mode;
        }
        part.sensor_options.apply_to(&mut config.sensor_options);
        if part.events_max.is_some() {
            config.events_max = part.events_max;
        }
        if part.events_expiry.is_some() {
            config.events_expiry = part.events_expiry;
        }
        if let Some(logger) = part.logger {
            config.logger = logger;
        }
        for located in part.filters {
            let table = located.filters.table.clone();
            if let Some((first_source, line, column)) = filter_origin.get(&table) {
                errors.push(ConfigError {
                    source: part.source.clone(),
                    line: located.line,
                    column: located.column,
                    message: format!(
                        "plgx_event_filters.{table}: already defined in {first_source}:{line}:{column}; define each table's filters in one source"
                    ),
                });
                continue;
            }
            filter_origin.insert(table, (part.source.clone(), located.line, located.column));
            config.filters.tables.push(located.filters);
        }
        let sections = part.sections;
        let mine = &mut config.sections;
        for (theirs, ours) in [
            (sections.win_include_paths, &mut mine.win_include_paths),
            (sections.win_exclude_paths, &mut mine.win_exclude_paths),
            (sections.yara, &mut mine.yara),
            (sections.file_paths, &mut mine.file_paths),
        ] {
            if theirs.is_some() {
                *ours = theirs;
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    config.fingerprint = fingerprint(&config);
    Ok(config)
}

fn fingerprint(config: &Config) -> u64 {
    let mut hasher = DefaultHasher::new();
    config.read_mode.hash(&mut hasher);
    config.sensor_options.hash(&mut hasher);
    config.events_max.hash(&mut hasher);
    config.events_expiry.hash(&mut hasher);
    config.logger.hash(&mut hasher);
    // Values only, not their positions: moving a filter to another line changes nothing.
    for table in &config.filters.tables {
        table.table.hash(&mut hasher);
        for column in &table.columns {
            column.column.hash(&mut hasher);
            for (kind, values) in [("include", &column.include), ("exclude", &column.exclude)] {
                kind.hash(&mut hasher);
                values.len().hash(&mut hasher);
                for value in values {
                    value.text.hash(&mut hasher);
                }
            }
        }
    }
    let sections = &config.sections;
    for section in
        [&sections.win_include_paths, &sections.win_exclude_paths, &sections.yara, &sections.file_paths]
    {
        section.as_ref().map(|v| v.to_string()).hash(&mut hasher);
    }
    hasher.finish()
}
