//! The table catalog and the data model shared by every watchpost crate.
//!
//! The catalog is data: one TOML spec per table in `specs/`, embedded at build time and checked
//! against the upstream contract (`shared/schemas/tables.json`) by a test. Everything that
//! depends on a table's shape is derived from it: the osquery route info ([`Table::osquery_routes`]),
//! the SQL DDL ([`Table::ddl`]), `docs/tables.md` ([`render_markdown`]), filter validation and the
//! column positions sensors write into.
//!
//! Besides the catalog this crate holds the small types that cross crate boundaries:
//! [`Value`] and [`Row`] (what a table yields), [`Event`] with its capture envelope ([`Eid`],
//! `time`), and [`QueryContext`] (the constraints a query pushes down to a table).

mod event;
mod markdown;
mod query;
mod spec;
mod table;
mod value;

pub use event::{Eid, Event, Stamp, Stamper, format_utc_time};
pub use markdown::render_markdown;
pub use query::{Constraint, GenerateError, Op, QueryContext, ReadMode, TableSource};
pub use spec::{Catalog, CatalogError};
pub use table::{Column, ColumnOptions, ColumnType, Envelope, Platform, Table, TableId, TableKind};
pub use value::{Row, Value};

/// The catalog built from the embedded specs. Panics only if the embedded specs are invalid,
/// which the crate's tests rule out.
pub fn catalog() -> &'static Catalog {
    spec::embedded()
}
