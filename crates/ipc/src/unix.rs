//! Unix domain socket implementation of the local transport.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::{Access, IpcError};

#[derive(Debug)]
pub(crate) struct Listener {
    listener: UnixListener,
    path: String,
    access: Access,
    owner_uid: u32,
    /// (device, inode) of the socket file we created, so that `Drop` never removes a file
    /// that another process put at the same path after us.
    socket_file: Option<(u64, u64)>,
}

impl Listener {
    pub(crate) fn bind(path: &str, access: Access) -> io::Result<Listener> {
        let bind_error = |error| IpcError::Bind { path: path.to_owned(), error };
        if let Some(parent) = Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent).map_err(bind_error)?;
        }
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path).map_err(|error| match error.kind() {
            io::ErrorKind::AddrInUse => IpcError::InUse { path: path.to_owned() },
            _ => bind_error(error),
        })?;
        let mut listener = Listener {
            listener,
            path: path.to_owned(),
            access,
            owner_uid: rustix::process::geteuid().as_raw(),
            socket_file: None,
        };
        let metadata = fs::symlink_metadata(path).map_err(bind_error)?;
        listener.socket_file = Some((metadata.dev(), metadata.ino()));
        let mode = match access {
            Access::Owner => 0o600,
            Access::Anyone => 0o666,
        };
        // Between bind and chmod the socket has the umask's mode; `accept` re-checks the peer
        // uid for Access::Owner, so a client that slips in then is still turned away.
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(bind_error)?;
        Ok(listener)
    }

    pub(crate) fn accept(&self) -> io::Result<Stream> {
        loop {
            let (stream, _) = self
                .listener
                .accept()
                .map_err(|error| IpcError::Accept { path: self.path.clone(), error })?;
            let stream = Stream { stream };
            if self.access == Access::Anyone {
                return Ok(stream);
            }
            match peer_uid_of(&stream.stream) {
                PeerUid::Known(uid) if uid == self.owner_uid => return Ok(stream),
                PeerUid::Unsupported => return Ok(stream),
                PeerUid::Known(uid) => log::warn!(
                    "{}: refused a connection from uid {uid}: only uid {} may connect",
                    self.path,
                    self.owner_uid
                ),
                PeerUid::Failed(error) => {
                    log::warn!("{}: refused a connection whose uid could not be read: {error}", self.path)
                }
            }
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(metadata) = fs::symlink_metadata(&self.path)
            && Some((metadata.dev(), metadata.ino())) == self.socket_file
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file left behind by a server that is gone; refuses to touch a live socket
/// or anything that is not a socket.
fn remove_stale_socket(path: &str) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(IpcError::Bind { path: path.to_owned(), error }.into()),
    };
    if !metadata.file_type().is_socket() {
        return Err(IpcError::NotASocket { path: path.to_owned() }.into());
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(IpcError::InUse { path: path.to_owned() }.into()),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => fs::remove_file(path)
            .or_else(|error| if error.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(error) })
            .map_err(|error| IpcError::Bind { path: path.to_owned(), error }.into()),
        Err(error) => Err(IpcError::Bind { path: path.to_owned(), error }.into()),
    }
}

#[derive(Debug)]
pub(crate) struct Stream {
    stream: UnixStream,
}

impl Stream {
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream { stream: self.stream.try_clone()? })
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    pub(crate) fn peer_uid(&self) -> Option<u32> {
        match peer_uid_of(&self.stream) {
            PeerUid::Known(uid) => Some(uid),
            PeerUid::Unsupported | PeerUid::Failed(_) => None,
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A blocking socket only reports WouldBlock when SO_RCVTIMEO expired; say so in the
        // same way as the Windows implementation.
        self.stream.read(buf).map_err(|error| match error.kind() {
            io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, "read timed out"),
            _ => error,
        })
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

enum PeerUid {
    Known(u32),
    #[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
    Unsupported,
    Failed(io::Error),
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid_of(stream: &UnixStream) -> PeerUid {
    match rustix::net::sockopt::socket_peercred(stream) {
        Ok(credentials) => PeerUid::Known(credentials.uid.as_raw()),
        Err(error) => PeerUid::Failed(error.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid_of(_stream: &UnixStream) -> PeerUid {
    PeerUid::Unsupported
}

pub(crate) fn connect(path: &str, _busy_wait: Duration) -> io::Result<Stream> {
    Ok(Stream { stream: UnixStream::connect(path)? })
}

/// Errors that mean "no server (yet)", worth retrying in `connect_timeout`.
pub(crate) fn is_not_ready(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
    )
}

pub(crate) fn endpoint_exists(path: &str) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket())
        && UnixStream::connect(path).is_ok()
}
