//! Printing query results: aligned tables like osqueryi, JSON, CSV.

use std::io::Write;

use anyhow::Result;
use comfy_table::{Table, presets};
use watchpost_agent::api::QueryResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn cell_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn print(result: &QueryResult, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            if result.columns.is_empty() {
                return Ok(());
            }
            let mut table = Table::new();
            table.load_style(presets::ASCII_FULL_CONDENSED);
            table.set_header(result.columns.clone());
            for row in &result.rows {
                table.add_row(row.iter().map(cell_text).collect::<Vec<_>>());
            }
            writeln!(out, "{table}")?;
        }
        Format::Json => {
            let objects: Vec<serde_json::Map<String, serde_json::Value>> = result
                .rows
                .iter()
                .map(|row| result.columns.iter().cloned().zip(row.iter().cloned()).collect())
                .collect();
            serde_json::to_writer_pretty(&mut *out, &objects)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(&result.columns)?;
            for row in &result.rows {
                writer.write_record(row.iter().map(cell_text))?;
            }
            writer.flush()?;
        }
    }
    Ok(())
}
