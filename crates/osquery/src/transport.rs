//! Thrift over a `watchpost-ipc` stream: strict binary protocol on a buffered, unframed stream,
//! as osquery core and its SDKs speak it.

use std::io;

use thrift::TConfiguration;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport};
use watchpost_ipc::Stream;

pub(crate) type InputProtocol = TBinaryInputProtocol<TBufferedReadTransport<Stream>>;
pub(crate) type OutputProtocol = TBinaryOutputProtocol<TBufferedWriteTransport<Stream>>;

const BUFFER_BYTES: usize = 64 * 1024;

/// Limits on what a peer may make us allocate: a malformed length prefix must fail the
/// message, not abort the process on a huge allocation.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub max_string_bytes: usize,
    pub max_container_len: usize,
}

/// Requests core sends to an extension are small.
pub(crate) const SERVER_LIMITS: Limits =
    Limits { max_string_bytes: 16 * 1024 * 1024, max_container_len: 1_000_000 };
/// Answers from a manager (options, configs, query results) can be large.
pub(crate) const CLIENT_LIMITS: Limits =
    Limits { max_string_bytes: 100 * 1024 * 1024, max_container_len: 10_000_000 };

/// Splits a connected stream into the two protocol halves.
pub(crate) fn protocols(stream: Stream, limits: Limits) -> io::Result<(InputProtocol, OutputProtocol)> {
    let reader = stream.try_clone()?;
    let config = TConfiguration::builder()
        .max_string_size(Some(limits.max_string_bytes))
        .max_container_size(Some(limits.max_container_len))
        .build()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let input = TBinaryInputProtocol::with_config(
        TBufferedReadTransport::with_capacity(BUFFER_BYTES, reader),
        true,
        config,
    );
    let output =
        TBinaryOutputProtocol::new(TBufferedWriteTransport::with_capacity(BUFFER_BYTES, stream), true);
    Ok((input, output))
}

/// True when the peer simply closed the connection between messages.
pub(crate) fn is_end_of_stream(error: &thrift::Error) -> bool {
    matches!(error, thrift::Error::Transport(e) if e.kind == thrift::TransportErrorKind::EndOfFile)
}
