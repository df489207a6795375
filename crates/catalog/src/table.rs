use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Index of a table in the catalog; stable for one build of watchpost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId(pub u16);

/// osquery column types (osquery/core/sql/column.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "INTEGER")]
    Integer,
    #[serde(rename = "BIGINT")]
    BigInt,
    #[serde(rename = "UNSIGNED BIGINT")]
    UnsignedBigInt,
    #[serde(rename = "DOUBLE")]
    Double,
    #[serde(rename = "BLOB")]
    Blob,
}

impl ColumnType {
    /// The name osquery and SQLite use.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "TEXT",
            ColumnType::Integer => "INTEGER",
            ColumnType::BigInt => "BIGINT",
            ColumnType::UnsignedBigInt => "UNSIGNED BIGINT",
            ColumnType::Double => "DOUBLE",
            ColumnType::Blob => "BLOB",
        }
    }

    /// Integer-valued columns (compared numerically).
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnType::Integer | ColumnType::BigInt | ColumnType::UnsignedBigInt)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// osquery `ColumnOptions` bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnOptions(pub u32);

impl ColumnOptions {
    pub const DEFAULT: ColumnOptions = ColumnOptions(0);
    /// The table can look rows up by this column cheaply.
    pub const INDEX: ColumnOptions = ColumnOptions(1);
    /// A query must constrain this column.
    pub const REQUIRED: ColumnOptions = ColumnOptions(2);
    /// Core passes constraints on this column to the table although it is no index.
    pub const ADDITIONAL: ColumnOptions = ColumnOptions(4);
    pub const OPTIMIZED: ColumnOptions = ColumnOptions(8);
    /// Not part of `SELECT *`; only returned when named.
    pub const HIDDEN: ColumnOptions = ColumnOptions(16);

    pub fn contains(self, other: ColumnOptions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Constraints on the column reach the table (osquery passes them only for these bits).
    pub fn is_pushed_down(self) -> bool {
        self.0 & (Self::INDEX.0 | Self::REQUIRED.0 | Self::ADDITIONAL.0) != 0
    }

    pub fn from_name(name: &str) -> Option<ColumnOptions> {
        Some(match name {
            "DEFAULT" => Self::DEFAULT,
            "INDEX" => Self::INDEX,
            "REQUIRED" => Self::REQUIRED,
            "ADDITIONAL" => Self::ADDITIONAL,
            "OPTIMIZED" => Self::OPTIMIZED,
            "HIDDEN" => Self::HIDDEN,
            _ => return None,
        })
    }

    /// Names of the set bits, e.g. `["ADDITIONAL", "HIDDEN"]`.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::INDEX, "INDEX"),
            (Self::REQUIRED, "REQUIRED"),
            (Self::ADDITIONAL, "ADDITIONAL"),
            (Self::OPTIMIZED, "OPTIMIZED"),
            (Self::HIDDEN, "HIDDEN"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.contains(*bit))
        .map(|(_, name)| name)
        .collect()
    }
}

impl std::ops::BitOr for ColumnOptions {
    type Output = ColumnOptions;
    fn bitor(self, rhs: ColumnOptions) -> ColumnOptions {
        ColumnOptions(self.0 | rhs.0)
    }
}

/// Operating systems a table is served on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Linux,
    Windows,
}

impl Platform {
    /// The platform this binary was built for.
    pub fn current() -> Platform {
        if cfg!(windows) { Platform::Windows } else { Platform::Linux }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::Windows => "windows",
        }
    }
}

/// Whether a table records events as they happen or reports state when queried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Rows are events captured by a sensor and kept in the store.
    Evented,
    /// Rows are computed when the table is queried.
    Snapshot,
    /// watchpost's own health table.
    Status,
}

impl TableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Evented => "evented",
            TableKind::Snapshot => "snapshot",
            TableKind::Status => "status",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub options: ColumnOptions,
    pub description: String,
}

impl Column {
    pub fn is_hidden(&self) -> bool {
        self.options.contains(ColumnOptions::HIDDEN)
    }
}

/// Positions of the capture envelope in an evented table's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub eid: usize,
    pub time: usize,
    pub utc_time: usize,
    /// The hidden per-consumer cursor column (`WHERE consumer = 'siem'`).
    pub consumer: usize,
}

/// Names of the envelope columns every evented table has.
pub const EID: &str = "eid";
pub const TIME: &str = "time";
pub const UTC_TIME: &str = "utc_time";
pub const CONSUMER: &str = "consumer";

#[derive(Clone, Debug)]
pub struct Table {
    pub id: TableId,
    pub name: String,
    pub kind: TableKind,
    pub platforms: Vec<Platform>,
    pub description: String,
    pub columns: Vec<Column>,
    /// Columns that `plgx_event_filters` may name.
    pub filterable: Vec<String>,
    /// Set for evented tables.
    pub envelope: Option<Envelope>,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_evented(&self) -> bool {
        self.kind == TableKind::Evented
    }

    pub fn is_available_on(&self, platform: Platform) -> bool {
        self.platforms.contains(&platform)
    }

    pub fn is_filterable(&self, column: &str) -> bool {
        self.filterable.iter().any(|c| c == column)
    }

    /// `CREATE TABLE` text as osquery and SQLite virtual tables declare it.
    pub fn ddl(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let hidden = if c.is_hidden() { " HIDDEN" } else { "" };
                format!("`{}` {}{}", c.name, c.ty, hidden)
            })
            .collect();
        format!("CREATE TABLE {}({})", self.name, columns.join(", "))
    }

    /// The route info osquery core expects at registration and from the `columns` action:
    /// one `{"id": "column", "name", "type", "op"}` map per column, plus the table attributes.
    pub fn osquery_routes(&self) -> Vec<BTreeMap<String, String>> {
        let mut routes: Vec<BTreeMap<String, String>> = self
            .columns
            .iter()
            .map(|c| {
                BTreeMap::from([
                    ("id".to_string(), "column".to_string()),
                    ("name".to_string(), c.name.clone()),
                    ("type".to_string(), c.ty.as_str().to_string()),
                    ("op".to_string(), c.options.0.to_string()),
                ])
            })
            .collect();
        // osquery TableAttributes (core/tables.h): EVENT_BASED = 4.
        let attributes = if self.is_evented() { 4 } else { 0 };
        routes.push(BTreeMap::from([
            ("id".to_string(), "attributes".to_string()),
            ("attributes".to_string(), attributes.to_string()),
        ]));
        routes
    }
}
