//! The osquery extension protocol for watchpost: registers watchpost's tables with osquery
//! core, serves core's `ping`, `call` (table `columns` / `generate`) and `shutdown` over Thrift
//! (strict binary protocol, buffered stream; Unix sockets or Windows named pipes via
//! `watchpost-ipc`), and watches core so the extension leaves when core does.
//!
//! [`Extension::run`] is the whole lifecycle; [`ManagerClient`] talks to core's manager
//! (options, config, registration); [`parse_context`] reads the query context core sends.

mod client;
mod context;
mod error;
mod extension;
mod transport;

#[allow(clippy::all, clippy::pedantic, dead_code, unused_imports, unused_extern_crates)]
#[rustfmt::skip]
mod generated {
    pub mod osquery;
}

/// The Rust code Debian's Thrift compiler generated from `thrift/osquery.thrift`.
pub mod protocol {
    pub use crate::generated::osquery::*;
}

pub use client::{DEFAULT_CALL_TIMEOUT, ExtensionClient, ManagerClient, OsqueryRow, Route, SDK_VERSION};
pub use context::parse_context;
pub use error::OsqueryError;
pub use extension::{Extension, ExtensionOptions, ExtensionStopper, StopReason, TablePlugin};
