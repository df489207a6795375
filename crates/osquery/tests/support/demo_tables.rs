//! Demo tables for the example extension, the in-process tests and the benchmark: they echo
//! the query context back so a test can see what reached the plugin.
// Shared by several test and example targets, each using a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use watchpost_catalog::{
    Column, ColumnOptions, ColumnType, Platform, QueryContext, Table, TableId, TableKind,
};
use watchpost_osquery::{OsqueryRow, Route, TablePlugin};

pub const ECHO: &str = "demo_echo";
pub const NUMBERS: &str = "demo_numbers";
pub const BULK: &str = "demo_bulk";
pub const BULK_COLUMNS: usize = 12;

/// `demo_echo` (evented: a `time` column with ADDITIONAL, a HIDDEN `consumer`), `demo_numbers`
/// (`n` INDEX) and, when `bulk_rows > 0`, `demo_bulk` (12 columns, `bulk_rows` rows).
pub struct DemoTables {
    tables: Vec<Table>,
    bulk_rows: usize,
}

impl DemoTables {
    /// `echo_name` renames `demo_echo` (e.g. to a name core already has).
    pub fn new(echo_name: &str, bulk_rows: usize) -> DemoTables {
        let mut tables = vec![
            table(
                echo_name,
                TableKind::Evented,
                &[
                    ("eid", ColumnType::Text, ColumnOptions::DEFAULT),
                    ("time", ColumnType::BigInt, ColumnOptions::ADDITIONAL),
                    ("constraints", ColumnType::Text, ColumnOptions::DEFAULT),
                    ("columns_used", ColumnType::Text, ColumnOptions::DEFAULT),
                    ("note", ColumnType::Text, ColumnOptions::DEFAULT),
                    ("consumer", ColumnType::Text, ColumnOptions::HIDDEN),
                ],
            ),
            table(
                NUMBERS,
                TableKind::Snapshot,
                &[
                    ("n", ColumnType::Integer, ColumnOptions::INDEX),
                    ("square", ColumnType::BigInt, ColumnOptions::DEFAULT),
                ],
            ),
        ];
        if bulk_rows > 0 {
            let names: Vec<String> = (0..BULK_COLUMNS).map(|i| format!("c{i}")).collect();
            let columns: Vec<(&str, ColumnType, ColumnOptions)> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let ty = if i % 2 == 0 { ColumnType::Text } else { ColumnType::BigInt };
                    (name.as_str(), ty, ColumnOptions::DEFAULT)
                })
                .collect();
            tables.push(table(BULK, TableKind::Snapshot, &columns));
        }
        DemoTables { tables, bulk_rows }
    }

    /// What to register: (name, routes) per table.
    pub fn registry(&self) -> Vec<(String, Vec<Route>)> {
        self.tables.iter().map(|t| (t.name.clone(), t.osquery_routes())).collect()
    }

    fn echo(&self, context: &QueryContext) -> Result<Vec<OsqueryRow>, String> {
        if context.equals("time").any(|t| t == "-1") {
            return Err("time -1 is before the epoch".to_string());
        }
        let constraints: Vec<String> =
            context.constraints.iter().map(|c| format!("{}{}{}", c.column, c.op.sql(), c.expr)).collect();
        let columns_used = context.columns_used.as_ref().map(|names| names.join(","));
        Ok((0..3)
            .map(|i| {
                let mut row = BTreeMap::from([
                    ("eid".to_string(), format!("eid-{i}")),
                    ("time".to_string(), "1".to_string()),
                    ("constraints".to_string(), constraints.join(" AND ")),
                ]);
                if let Some(columns_used) = &columns_used {
                    row.insert("columns_used".to_string(), columns_used.clone());
                }
                if i != 1 {
                    row.insert("note".to_string(), format!("row {i}"));
                }
                row
            })
            .collect())
    }

    fn numbers(&self, context: &QueryContext) -> Result<Vec<OsqueryRow>, String> {
        let wanted: Vec<i64> = context
            .equals("n")
            .map(|n| n.parse::<i64>().map_err(|_| format!("n = {n:?} is not an integer")))
            .collect::<Result<_, _>>()?;
        let wanted = if wanted.is_empty() { (1..=10).collect() } else { wanted };
        Ok(wanted
            .into_iter()
            .map(|n| {
                BTreeMap::from([
                    ("n".to_string(), n.to_string()),
                    ("square".to_string(), (n * n).to_string()),
                ])
            })
            .collect())
    }

    fn bulk(&self) -> Vec<OsqueryRow> {
        (0..self.bulk_rows)
            .map(|row| {
                (0..BULK_COLUMNS)
                    .map(|column| {
                        let value = if column % 2 == 0 {
                            format!("row {row} text value {column}")
                        } else {
                            (row * BULK_COLUMNS + column).to_string()
                        };
                        (format!("c{column}"), value)
                    })
                    .collect()
            })
            .collect()
    }
}

impl TablePlugin for DemoTables {
    fn routes(&self, table: &str) -> Option<Vec<Route>> {
        self.tables.iter().find(|t| t.name == table).map(Table::osquery_routes)
    }

    fn generate(&self, table: &str, context: &QueryContext) -> Result<Vec<OsqueryRow>, String> {
        match table {
            NUMBERS => self.numbers(context),
            BULK => Ok(self.bulk()),
            name if self.tables.first().is_some_and(|t| t.name == name) => self.echo(context),
            other => Err(format!("no table {other}")),
        }
    }
}

fn table(name: &str, kind: TableKind, columns: &[(&str, ColumnType, ColumnOptions)]) -> Table {
    Table {
        id: TableId(0),
        name: name.to_string(),
        kind,
        platforms: vec![Platform::Linux, Platform::Windows],
        description: format!("demo table {name}"),
        columns: columns
            .iter()
            .map(|&(name, ty, options)| Column {
                name: name.to_string(),
                ty,
                options,
                description: String::new(),
            })
            .collect(),
        filterable: Vec::new(),
        envelope: None,
    }
}
