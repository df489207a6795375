//! Byte-mode named pipe implementation of the local transport, compatible with osquery's
//! Thrift pipe transport (`\\.\pipe\osquery.em`).
//!
//! All handles are opened for synchronous I/O, so std's `File` does the reading and writing
//! (ReadFile/WriteFile; a broken pipe reads as end-of-file) and the cloning (DuplicateHandle).
//! Only what std has no wrapper for is called through `windows-sys`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_NO_DATA, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED, ERROR_SEM_TIMEOUT,
    GENERIC_READ, GetLastError, INVALID_HANDLE_VALUE, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_WRITE_DATA, PIPE_ACCESS_DUPLEX, SECURITY_IDENTIFICATION,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE,
    PIPE_UNLIMITED_INSTANCES, PIPE_WAIT, PeekNamedPipe, WaitNamedPipeW,
};

use crate::{Access, IpcError};

/// Kernel buffer size of each pipe direction; a writer blocks once this much is unread.
const PIPE_BUFFER_BYTES: u32 = 64 * 1024;

/// Security for `Access::Anyone`: full access for LocalSystem, Administrators and the owner;
/// everyone else may read and write data (FILE_GENERIC_READ | FILE_WRITE_DATA = 0x12008B)
/// but gets no FILE_CREATE_PIPE_INSTANCE, so they cannot add a rogue server instance.
const ANYONE_SDDL: &str = "D:(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)(A;;0x12008B;;;WD)";

/// Longest poll interval while waiting for data under a read timeout.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(20);

/// `\\.\pipe\NAME` for a bare NAME; full pipe paths are kept as they are.
fn pipe_name(path: &str) -> String {
    if path.starts_with(r"\\") { path.to_owned() } else { format!(r"\\.\pipe\{path}") }
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// A security descriptor allocated by `ConvertStringSecurityDescriptorToSecurityDescriptorW`.
#[derive(Debug)]
struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is written once at creation and only read afterwards (by
// CreateNamedPipeW), so sharing the pointer between threads is sound.
unsafe impl Send for SecurityDescriptor {}
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    fn from_sddl(sddl: &str) -> io::Result<SecurityDescriptor> {
        let sddl = wide(sddl);
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `sddl` is NUL-terminated and outlives the call; `descriptor` is a valid out pointer.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SecurityDescriptor(descriptor))
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ConvertStringSecurityDescriptorToSecurityDescriptorW,
        // whose documentation says to free it with LocalFree, and is freed once.
        unsafe { LocalFree(self.0) };
    }
}

pub(crate) struct Listener {
    path: String,
    wide_path: Vec<u16>,
    security: Option<SecurityDescriptor>,
    /// An instance waiting for the next client, so that the pipe name keeps existing between
    /// two `accept` calls (clients would otherwise see "file not found").
    pending: Mutex<Option<OwnedHandle>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Listener").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Listener {
    pub(crate) fn bind(path: &str, access: Access) -> io::Result<Listener> {
        let path = pipe_name(path);
        let security = match access {
            Access::Owner => None,
            Access::Anyone => Some(
                SecurityDescriptor::from_sddl(ANYONE_SDDL)
                    .map_err(|error| IpcError::Bind { path: path.clone(), error })?,
            ),
        };
        // FILE_FLAG_FIRST_PIPE_INSTANCE below is the real guard against taking over another
        // server's pipe; Wine ignores that flag, so look for a live pipe first as well.
        if endpoint_exists(&path) {
            return Err(IpcError::InUse { path }.into());
        }
        let listener = Listener { wide_path: wide(&path), path, security, pending: Mutex::new(None) };
        let first = listener.create_instance(true).map_err(|error| {
            if error.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
                IpcError::InUse { path: listener.path.clone() }
            } else {
                IpcError::Bind { path: listener.path.clone(), error }
            }
        })?;
        *listener.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(first);
        Ok(listener)
    }

    fn create_instance(&self, first: bool) -> io::Result<OwnedHandle> {
        let attributes = self.security.as_ref().map(|descriptor| SECURITY_ATTRIBUTES {
            nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor.0,
            bInheritHandle: 0,
        });
        let attributes_ptr = attributes.as_ref().map_or(null(), |attributes| attributes as *const _);
        let open_mode = PIPE_ACCESS_DUPLEX | if first { FILE_FLAG_FIRST_PIPE_INSTANCE } else { 0 };
        let pipe_mode = PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS;
        // SAFETY: the name is NUL-terminated, the attributes (if any) and the descriptor they
        // point to live until the call returns.
        let handle = unsafe {
            CreateNamedPipeW(
                self.wide_path.as_ptr(),
                open_mode,
                pipe_mode,
                PIPE_UNLIMITED_INSTANCES,
                PIPE_BUFFER_BYTES,
                PIPE_BUFFER_BYTES,
                0,
                attributes_ptr,
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: CreateNamedPipeW returned a fresh handle that nothing else owns.
        Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
    }

    pub(crate) fn accept(&self) -> io::Result<Stream> {
        let accept_error = |error| IpcError::Accept { path: self.path.clone(), error };
        loop {
            let waiting = self.pending.lock().unwrap_or_else(PoisonError::into_inner).take();
            let instance = match waiting {
                Some(instance) => instance,
                None => self.create_instance(false).map_err(accept_error)?,
            };
            // SAFETY: a valid pipe handle opened without FILE_FLAG_OVERLAPPED, so no OVERLAPPED.
            let connected = unsafe { ConnectNamedPipe(instance.as_raw_handle(), null_mut()) } != 0;
            if !connected {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    // The client connected between CreateNamedPipeW and ConnectNamedPipe.
                    Some(code) if code == ERROR_PIPE_CONNECTED as i32 => {}
                    // The client connected and already closed its end: wait for the next one.
                    Some(code) if code == ERROR_NO_DATA as i32 => continue,
                    _ => return Err(accept_error(error).into()),
                }
            }
            self.refill_pending();
            return Ok(Stream::new(File::from(instance)));
        }
    }

    fn refill_pending(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_none() {
            match self.create_instance(false) {
                Ok(instance) => *pending = Some(instance),
                // The next accept creates one itself; until then clients get "not found".
                Err(error) => log::warn!("{}: cannot create the next pipe instance: {error}", self.path),
            }
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

#[derive(Debug)]
pub(crate) struct Stream {
    file: File,
    /// Read timeout in nanoseconds, 0 for none; shared with clones like a socket option.
    read_timeout_nanos: Arc<AtomicU64>,
}

impl Stream {
    fn new(file: File) -> Stream {
        Stream { file, read_timeout_nanos: Arc::new(AtomicU64::new(0)) }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream { file: self.file.try_clone()?, read_timeout_nanos: Arc::clone(&self.read_timeout_nanos) })
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let nanos = timeout.map_or(0, |timeout| u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        self.read_timeout_nanos.store(nanos, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn peer_uid(&self) -> Option<u32> {
        None
    }

    /// Returns once data or end-of-file can be read, or TimedOut after `timeout`.
    fn wait_readable(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let mut available: u32 = 0;
            // SAFETY: a valid pipe handle; a zero-sized peek with only the count out pointer.
            let ok = unsafe {
                PeekNamedPipe(
                    self.file.as_raw_handle(),
                    null_mut(),
                    0,
                    null_mut(),
                    &mut available,
                    null_mut(),
                )
            };
            // A failed peek (e.g. broken pipe) is for ReadFile to report (as end-of-file).
            if ok == 0 || available > 0 {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
            }
            std::thread::sleep(pause.min(remaining));
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout_nanos = self.read_timeout_nanos.load(Ordering::Relaxed);
        if timeout_nanos != 0 && !buf.is_empty() {
            self.wait_readable(Duration::from_nanos(timeout_nanos))?;
        }
        self.file.read(buf)
    }

    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

pub(crate) fn connect(path: &str, busy_wait: Duration) -> io::Result<Stream> {
    let name = pipe_name(path);
    let deadline = Instant::now() + busy_wait;
    loop {
        // GENERIC_READ | FILE_WRITE_DATA rather than GENERIC_WRITE, which would also ask for
        // FILE_CREATE_PIPE_INSTANCE and be refused by an Access::Anyone pipe.
        // SECURITY_IDENTIFICATION: the server may identify us but not act as us.
        let opened = OpenOptions::new()
            .access_mode(GENERIC_READ | FILE_WRITE_DATA)
            .security_qos_flags(SECURITY_IDENTIFICATION)
            .open(&name);
        match opened {
            Ok(file) => return Ok(Stream::new(file)),
            Err(error) if error.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(error);
                }
                let wait_ms = u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX).max(1);
                // SAFETY: NUL-terminated name. The result only says whether to retry sooner.
                unsafe { WaitNamedPipeW(wide(&name).as_ptr(), wait_ms) };
            }
            Err(error) => return Err(error),
        }
    }
}

/// Errors that mean "no server (yet)", worth retrying in `connect_timeout`.
pub(crate) fn is_not_ready(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
}

pub(crate) fn endpoint_exists(path: &str) -> bool {
    let name = wide(&pipe_name(path));
    // SAFETY: NUL-terminated name; 1 ms, since 0 would mean the server's default wait.
    if unsafe { WaitNamedPipeW(name.as_ptr(), 1) } != 0 {
        return true;
    }
    // SAFETY: no precondition; reads this thread's last error from the call above.
    unsafe { GetLastError() == ERROR_SEM_TIMEOUT }
}
