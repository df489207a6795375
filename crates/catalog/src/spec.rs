//! Loading the TOML specs and deriving what the specs leave implicit.
//!
//! Derivation rules (documented in docs/tables.md):
//! - every evented table has the envelope `eid`, `time`, `utc_time`; a spec that lacks them (the
//!   upstream `win_logger_events`) gets them as HIDDEN columns at the end;
//! - `eid` and `time` are ADDITIONAL, so osquery core passes their constraints to us;
//! - every evented table gets the hidden cursor column `consumer` (HIDDEN | ADDITIONAL).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::table::{
    CONSUMER, Column, ColumnOptions, ColumnType, EID, Envelope, Platform, TIME, Table, TableId, TableKind,
    UTC_TIME,
};

/// The specs, embedded at build time. `build.rs` lists `specs/`.
static SPECS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/specs.rs"));

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("spec {file}: {source}")]
    Toml { file: String, source: toml::de::Error },
    #[error("spec {file}: {problem}")]
    Invalid { file: String, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSpec {
    name: String,
    kind: TableKind,
    platforms: Vec<Platform>,
    description: String,
    #[serde(default)]
    filterable: Vec<String>,
    columns: Vec<ColumnSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnSpec {
    name: String,
    #[serde(rename = "type")]
    ty: ColumnType,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    description: String,
}

/// All tables, in name order.
#[derive(Debug)]
pub struct Catalog {
    tables: Vec<Table>,
    by_name: HashMap<String, TableId>,
}

impl Catalog {
    /// Builds a catalog from `(file name, TOML text)` specs.
    pub fn from_specs<'a>(
        specs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut parsed: Vec<(String, TableSpec)> = Vec::new();
        for (file, text) in specs {
            let spec: TableSpec = toml::from_str(text)
                .map_err(|source| CatalogError::Toml { file: file.to_string(), source })?;
            parsed.push((file.to_string(), spec));
        }
        parsed.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let mut tables = Vec::with_capacity(parsed.len());
        let mut by_name = HashMap::new();
        for (i, (file, spec)) in parsed.into_iter().enumerate() {
            let id = TableId(u16::try_from(i).map_err(|_| CatalogError::Invalid {
                file: file.clone(),
                problem: "too many tables".into(),
            })?);
            let table = derive_table(id, &file, spec)?;
            if by_name.insert(table.name.clone(), id).is_some() {
                return Err(CatalogError::Invalid {
                    file,
                    problem: format!("table {} defined twice", table.name),
                });
            }
            tables.push(table);
        }
        Ok(Catalog { tables, by_name })
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.by_name.get(name).map(|id| &self.tables[usize::from(id.0)])
    }

    /// Panics on an id from another catalog; ids only come from this one.
    pub fn by_id(&self, id: TableId) -> &Table {
        &self.tables[usize::from(id.0)]
    }

    /// Tables served on `platform`.
    pub fn for_platform(&self, platform: Platform) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(move |t| t.is_available_on(platform))
    }

    /// Table names, for error messages that list the allowed ones.
    pub fn names(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.name.as_str()).collect()
    }
}

fn derive_table(id: TableId, file: &str, spec: TableSpec) -> Result<Table, CatalogError> {
    let invalid = |problem: String| CatalogError::Invalid { file: file.to_string(), problem };
    let mut columns = Vec::with_capacity(spec.columns.len() + 4);
    for c in spec.columns {
        let mut options = ColumnOptions::DEFAULT;
        for name in &c.options {
            options = options
                | ColumnOptions::from_name(name)
                    .ok_or_else(|| invalid(format!("column {}: unknown option {name}", c.name)))?;
        }
        if columns.iter().any(|x: &Column| x.name == c.name) {
            return Err(invalid(format!("column {} defined twice", c.name)));
        }
        columns.push(Column { name: c.name, ty: c.ty, options, description: c.description });
    }
    for f in &spec.filterable {
        if !columns.iter().any(|c| &c.name == f) {
            return Err(invalid(format!("filterable column {f} is not a column")));
        }
    }
    let envelope = if spec.kind == TableKind::Evented {
        let hidden = ColumnOptions::HIDDEN;
        let additional = ColumnOptions::ADDITIONAL;
        let envelope_columns = [
            (EID, ColumnType::Text, "Unique event id, GUID-like, stamped at capture"),
            (TIME, ColumnType::BigInt, "Capture time, unix seconds"),
            (UTC_TIME, ColumnType::Text, "Capture time as text, e.g. `Tue Dec 17 09:33:24 2019 UTC`"),
        ];
        for (name, ty, description) in envelope_columns {
            match columns.iter_mut().find(|c| c.name == name) {
                Some(c) if c.ty != ty => return Err(invalid(format!("envelope column {name} must be {ty}"))),
                Some(_) => {}
                None => columns.push(Column {
                    name: name.to_string(),
                    ty,
                    options: hidden,
                    description: description.to_string(),
                }),
            }
        }
        for c in columns.iter_mut().filter(|c| c.name == EID || c.name == TIME) {
            c.options = c.options | additional;
        }
        if columns.iter().any(|c| c.name == CONSUMER) {
            return Err(invalid(format!("column name {CONSUMER} is reserved for the cursor column")));
        }
        columns.push(Column {
            name: CONSUMER.to_string(),
            ty: ColumnType::Text,
            options: hidden | additional,
            description: "Consumer cursor: `WHERE consumer = 'NAME'` returns only events NAME has not read yet, and advances its cursor".to_string(),
        });
        let at = |name: &str| columns.iter().position(|c| c.name == name).unwrap_or_default();
        Some(Envelope { eid: at(EID), time: at(TIME), utc_time: at(UTC_TIME), consumer: at(CONSUMER) })
    } else {
        None
    };
    Ok(Table {
        id,
        name: spec.name,
        kind: spec.kind,
        platforms: spec.platforms,
        description: spec.description,
        columns,
        filterable: spec.filterable,
        envelope,
    })
}

pub(crate) fn embedded() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> = LazyLock::new(|| match Catalog::from_specs(SPECS.iter().copied()) {
        Ok(catalog) => catalog,
        // The specs are compiled in and validated by this crate's tests.
        Err(e) => panic!("embedded catalog is invalid: {e}"),
    });
    &CATALOG
}
