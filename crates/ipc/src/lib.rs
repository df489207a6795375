//! Local stream transport shared by the osquery extension protocol (Thrift over a stream) and
//! watchpost's own local query API.
//!
//! One API, two implementations:
//! - Unix: Unix domain sockets at a file-system path (`/var/osquery/osquery.em`).
//! - Windows: byte-mode named pipes, as osquery uses them (`\\.\pipe\osquery.em`, and
//!   `\\.\pipe\osquery.em.<uuid>` for each extension). A name without the `\\` prefix is taken
//!   as a pipe name and gets `\\.\pipe\` put in front of it.
//!
//! A [`Stream`] is a plain blocking byte stream ([`Read`] + [`Write`]); [`Stream::try_clone`]
//! gives a second handle to the same connection so that a reader and a writer can live on
//! different threads. When the peer goes away, reads return end-of-file (`Ok(0)`).
//!
//! Errors are `std::io::Error`s whose kind tells what happened and whose message (an
//! [`IpcError`], reachable with `get_ref()`/`into_inner()`) names the endpoint.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;

/// How long [`Stream::connect`] waits on Windows when every pipe instance is momentarily busy
/// (a listener always keeps one instance waiting, so this only happens under a burst of
/// connections).
const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(5);

/// Pause between two connection attempts in [`Stream::connect_timeout`].
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(20);

// Servers share a listener between accepting threads and move streams to worker threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Listener>();
    assert_send_sync::<Stream>();
};

/// Who may connect to a [`Listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only processes of the user that created the listener.
    ///
    /// Unix: the socket file gets mode 0600 and [`Listener::accept`] drops connections whose
    /// `SO_PEERCRED` uid differs from the listener's effective uid (so only root, when run as
    /// root). Windows: the pipe keeps the default named-pipe security, which gives full access
    /// to LocalSystem, Administrators and the creating user, and read-only access to everyone
    /// else, so that other users cannot send requests.
    Owner,
    /// Any local user.
    ///
    /// Unix: mode 0666 and no uid check. Windows: Everyone may read and write data but not
    /// create instances of the pipe (so another user cannot pose as the server).
    Anyone,
}

/// What went wrong with a local endpoint; carried inside the `std::io::Error`s of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    #[error("cannot listen on {path}: {error}")]
    Bind { path: String, error: io::Error },
    #[error("{path} is already served by another process: stop that process or choose another path")]
    InUse { path: String },
    #[error("{path} exists and is not a socket: remove it or choose another path")]
    NotASocket { path: String },
    #[error("accepting a connection on {path} failed: {error}")]
    Accept { path: String, error: io::Error },
    #[error("cannot connect to {path}: {error}")]
    Connect { path: String, error: io::Error },
    #[error(
        "nothing accepted a connection on {path} within {timeout:?} (is the server running?); last error: {error}"
    )]
    ConnectTimeout { path: String, timeout: Duration, error: io::Error },
}

impl From<IpcError> for io::Error {
    fn from(error: IpcError) -> Self {
        let kind = match &error {
            IpcError::Bind { error, .. }
            | IpcError::Accept { error, .. }
            | IpcError::Connect { error, .. } => error.kind(),
            IpcError::InUse { .. } => io::ErrorKind::AddrInUse,
            IpcError::NotASocket { .. } => io::ErrorKind::AlreadyExists,
            IpcError::ConnectTimeout { .. } => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, error)
    }
}

/// A listening local endpoint. Dropping it stops listening (and, on Unix, removes the socket
/// file if it is still the one this listener created).
#[derive(Debug)]
pub struct Listener {
    inner: sys::Listener,
}

impl Listener {
    /// Starts listening on `path`.
    ///
    /// Unix: creates the parent directory if it is missing, and removes a stale socket file
    /// first, but only if it is a socket nobody answers on; a live one gives
    /// `ErrorKind::AddrInUse`, any other kind of file `ErrorKind::AlreadyExists`. Telling a
    /// live socket from a stale one takes a connection attempt, which a running server sees
    /// as a client that closes without sending anything.
    /// Windows: creates the first pipe instance and refuses (`AddrInUse`) a pipe name another
    /// server already owns.
    pub fn bind(path: &str, access: Access) -> io::Result<Listener> {
        Ok(Listener { inner: sys::Listener::bind(path, access)? })
    }

    /// Waits for the next client and returns the connection.
    pub fn accept(&self) -> io::Result<Stream> {
        Ok(Stream { inner: self.inner.accept()? })
    }

    /// The endpoint this listener serves (on Windows the full `\\.\pipe\...` name).
    pub fn path(&self) -> &str {
        self.inner.path()
    }
}

/// A connected local byte stream.
#[derive(Debug)]
pub struct Stream {
    inner: sys::Stream,
}

impl Stream {
    /// Connects to the listener at `path`, failing at once if nobody listens there.
    pub fn connect(path: &str) -> io::Result<Stream> {
        sys::connect(path, DEFAULT_BUSY_WAIT)
            .map(|inner| Stream { inner })
            .map_err(|error| IpcError::Connect { path: path.to_owned(), error }.into())
    }

    /// Connects to `path`, retrying while the endpoint does not exist yet or does not accept,
    /// until `timeout` has passed; then fails with `ErrorKind::TimedOut`.
    pub fn connect_timeout(path: &str, timeout: Duration) -> io::Result<Stream> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match sys::connect(path, remaining) {
                Ok(inner) => return Ok(Stream { inner }),
                Err(error) if sys::is_not_ready(&error) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(IpcError::ConnectTimeout { path: path.to_owned(), timeout, error }.into());
                    }
                    std::thread::sleep(CONNECT_RETRY_PAUSE.min(remaining));
                }
                Err(error) => return Err(IpcError::Connect { path: path.to_owned(), error }.into()),
            }
        }
    }

    /// A second handle to the same connection, e.g. to read on one thread and write on another.
    /// The read timeout is shared between the handles.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream { inner: self.inner.try_clone()? })
    }

    /// Makes reads that wait longer than `timeout` fail with `ErrorKind::TimedOut` (`None`:
    /// wait forever). A zero duration is refused with `ErrorKind::InvalidInput`.
    ///
    /// Windows: pipes opened for synchronous I/O have no native timeout, so a read with a
    /// timeout polls `PeekNamedPipe` until data or end-of-file arrives (a few ms of latency).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a read timeout of zero is not allowed"));
        }
        self.inner.set_read_timeout(timeout)
    }

    /// The uid of the process at the other end (Unix `SO_PEERCRED`, taken at connect time);
    /// `None` on Windows and on Unix systems without `SO_PEERCRED`.
    pub fn peer_uid(&self) -> Option<u32> {
        self.inner.peer_uid()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a server is listening at `path` right now.
///
/// Unix: this makes (and drops at once) a connection, which the server sees as a client that
/// closed without sending anything. Windows: this only waits for a free pipe instance and does
/// not connect.
pub fn endpoint_exists(path: &str) -> bool {
    sys::endpoint_exists(path)
}
