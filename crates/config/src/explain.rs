//! The human summary `watchpost check-config` prints.

use std::fmt::Write;

use watchpost_catalog::ReadMode;

use crate::Config;

/// What the config makes watchpost do: read mode, limits, watched files with their patterns,
/// and the filters per table and column with the number of include/exclude values.
pub fn explain(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut out, config);
    out
}

fn write_summary(out: &mut String, config: &Config) -> std::fmt::Result {
    writeln!(out, "config: {}", config.source)?;
    let read_mode = match config.read_mode {
        ReadMode::Retain => {
            "retain (events stay until they expire or are evicted; queries do not remove them)"
        }
        ReadMode::Drain => "drain (a query deletes the events it returns, like the original extension)",
    };
    writeln!(out, "read mode: {read_mode}")?;
    match config.events_expiry {
        Some(seconds) => writeln!(out, "events_expiry: {seconds} s")?,
        None => writeln!(out, "events_expiry: not set (osquery's flag or default applies)")?,
    }
    match config.events_max {
        Some(max) => writeln!(out, "events_max: {max} events per table")?,
        None => writeln!(out, "events_max: not set (osquery's flag or default applies)")?,
    }

    if config.logger.is_empty() {
        writeln!(out, "watched log files (win_logger_events): none")?;
    } else {
        writeln!(out, "watched log files (win_logger_events): {}", config.logger.len())?;
        for file in &config.logger {
            match file.patterns.len() {
                0 => writeln!(out, "  {}: every line", file.path)?,
                n => {
                    let plural = if n == 1 { "" } else { "s" };
                    writeln!(out, "  {}: lines fully matching any of {n} pattern{plural}", file.path)?;
                    for pattern in &file.patterns {
                        writeln!(out, "    {pattern}")?;
                    }
                }
            }
        }
    }

    let disabled = &config.sensor_options.disabled_tables;
    if !disabled.is_empty() {
        writeln!(out, "disabled tables (not captured): {}", disabled.join(", "))?;
    }

    if config.filters.is_empty() {
        writeln!(out, "event filters: none (every event is kept)")?;
    } else {
        writeln!(out, "event filters: {} table(s)", config.filters.tables.len())?;
        for table in &config.filters.tables {
            let has_include = table.columns.iter().any(|c| !c.include.is_empty());
            let rule = if has_include {
                "events matching an exclude value are dropped; of the rest, only those matching an include value are kept"
            } else {
                "events matching an exclude value are dropped; all others are kept"
            };
            writeln!(out, "  {}: {rule}", table.table)?;
            for column in &table.columns {
                writeln!(
                    out,
                    "    {}: include {}, exclude {}",
                    column.column,
                    count(column.include.len()),
                    count(column.exclude.len())
                )?;
            }
        }
    }

    let sections = &config.sections;
    let kept: Vec<&str> = [
        ("win_include_paths", &sections.win_include_paths),
        ("win_exclude_paths", &sections.win_exclude_paths),
        ("yara", &sections.yara),
        ("file_paths", &sections.file_paths),
    ]
    .into_iter()
    .filter(|(_, value)| value.is_some())
    .map(|(name, _)| name)
    .collect();
    if !kept.is_empty() {
        writeln!(out, "also read (not used yet): {}", kept.join(", "))?;
    }
    Ok(())
}

fn count(n: usize) -> String {
    if n == 1 { "1 value".to_string() } else { format!("{n} values") }
}
