//! The running agent: everything between the sensors and a query.
//!
//! [`Agent::start`] loads the config, compiles the filters, opens the store and only then starts
//! the sensors (so no event is ever judged without the configured filters). Events flow
//! sensor → [`pipeline`] (filter, count, queue) → store writer → [`Store`]; queries reach the
//! data through [`Engine`], a [`TableSource`] shared by the osquery extension and the SQL host.
//! [`api`] serves the local query socket used by `watchpost query`, `watchpost shell` and local
//! applications.
//!
//! [`Store`]: watchpost_store::Store
//! [`TableSource`]: watchpost_catalog::TableSource

pub mod api;
mod config_source;
mod engine;
pub mod extension;
mod pipeline;
mod runtime;
mod status;

pub use config_source::ConfigSource;
pub use engine::Engine;
pub use runtime::{Agent, AgentError, AgentOptions, default_data_dir, default_query_socket, is_root};
