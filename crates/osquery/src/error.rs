//! The one error type of this crate: what failed talking to osquery core or serving it.

use std::io;
use std::time::Duration;

/// Why talking to osquery core, or serving it, failed.
#[derive(Debug, thiserror::Error)]
pub enum OsqueryError {
    #[error(
        "osquery core's extensions socket {socket} did not accept a connection within {waited:?} \
         (is osqueryd running with extensions enabled, and is --socket right?): {source}"
    )]
    CoreUnavailable {
        socket: String,
        waited: Duration,
        #[source]
        source: io::Error,
    },
    #[error("the extension endpoint {endpoint} did not accept a connection within {waited:?}: {source}")]
    ExtensionUnavailable {
        endpoint: String,
        waited: Duration,
        #[source]
        source: io::Error,
    },
    #[error("calling {call} failed: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: thrift::Error,
    },
    #[error("osquery core answered {call} with status {code}: {message}")]
    Status { call: &'static str, code: i32, message: String },
    #[error("osquery core refused the registration: {0}")]
    Refused(String),
    #[error("cannot serve the extension endpoint {path}: {source}")]
    Listen {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the extension endpoint {path} stopped accepting connections: {source}")]
    Serve {
        path: String,
        #[source]
        source: io::Error,
    },
}
