//! The durable, bounded event store between sensors and queries.
//!
//! Sensors [`Store::append`] captured events; queries [`Store::read`] them back, per table, in
//! insertion order. The store is one [redb] file: appends commit durably (an acknowledged batch
//! survives SIGKILL and power loss), and the file is bounded per table by
//! [`Limits::events_max`] (evict the oldest at append) and [`Limits::events_expiry`] (call
//! [`Store::expire`] periodically; reads never show expired events even before that). Every
//! eviction is counted per table in the file, so the counts survive restarts ([`Store::stats`]).
//!
//! Layout (all in one redb database):
//! - `events`: `(table, seq) -> time ‖ eid ‖ postcard(values)`; `seq` is a store-wide counter that
//!   never repeats, so key order within a table is insertion order;
//! - `events_by_time`: `(table, time, seq)`, which answers `time` constraints and expiry;
//! - `events_by_eid`: `eid -> (table, seq)`, which answers `eid =` / `eid IN (...)`;
//! - `table_counters`, `consumer_cursors`, `meta`: small bookkeeping tables.
//!
//! Reads come in two modes ([`ReadMode`]): `Retain` leaves the data in place, `Drain` deletes the
//! returned events (the original extension's behaviour). A read that names a consumer
//! ([`ReadQuery::consumer`]) returns only events inserted after that consumer's previous read and
//! advances its cursor in the same transaction; see [`Store::read`] for the exact rule.

mod codec;
mod query;
mod store;

pub use query::ReadQuery;
pub use store::Store;

use std::path::PathBuf;

use watchpost_catalog::TableId;
#[doc(no_inline)]
pub use watchpost_catalog::{Event, ReadMode};

/// How much history each table keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept per table; the oldest are evicted at append.
    pub events_max: u64,
    /// Seconds an event is kept after its capture time.
    pub events_expiry: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { events_max: 50_000, events_expiry: 3_600 }
    }
}

/// What one [`Store::append`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendReport {
    pub appended: u64,
    /// Oldest events removed because a table went over `events_max`.
    pub evicted: u64,
}

/// Per-table counts, as kept in the store file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStats {
    pub table: TableId,
    /// Events currently in the store (including ones past expiry not yet removed by
    /// [`Store::expire`]).
    pub retained: u64,
    /// Evicted because the table went over `events_max`.
    pub evicted_max: u64,
    /// Removed by [`Store::expire`].
    pub evicted_expiry: u64,
    /// Deleted by `Drain` reads.
    pub drained: u64,
    pub oldest_time: Option<i64>,
    pub newest_time: Option<i64>,
}

/// One consumer cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerStats {
    pub table: TableId,
    pub consumer: String,
    /// Events removed (evicted, expired or drained by another reader) before this consumer read
    /// them.
    pub missed: u64,
}

/// Why the store could not do what was asked. Every message names the store file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the directory for the event store {path}: {source}; check the path and its permissions"
    )]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(
        "the event store {path} is in use by another watchpost process; stop that process or configure a different store path"
    )]
    InUse { path: PathBuf },
    #[error(
        "cannot open the event store {path}: {source}; if the file is damaged, move it aside and restart to begin with an empty store"
    )]
    Open { path: PathBuf, source: Box<redb::Error> },
    #[error(
        "the event store {path} has format version {found}, this watchpost writes version {expected}; move the file aside (or delete it) to begin with an empty store"
    )]
    Format { path: PathBuf, found: u64, expected: u64 },
    #[error(
        "event store {path}: {operation} failed: {source}; if this persists, check free disk space and the file's permissions"
    )]
    Database { path: PathBuf, operation: &'static str, source: Box<redb::Error> },
    #[error(
        "event store {path}: stored event #{seq} cannot be decoded ({reason}); the file is damaged: move it aside and restart to begin with an empty store"
    )]
    Corrupt { path: PathBuf, seq: u64, reason: String },
    #[error("event store {path}: cannot encode an event of table #{table}: {reason}")]
    Encode { path: PathBuf, table: u16, reason: String },
}
