//! fanotify in FID mode: the group, filesystem marks, the event decoder, and turning file
//! handles back into open files and paths.
//!
//! Written on the `libc` bindings rather than `nix`: nix's fanotify wrapper reads events in fd
//! mode only (one open file descriptor per event) and has no decoder for the FID, DFID_NAME and
//! rename info records this sensor depends on, nor `open_by_handle_at`. The decoder below works
//! on plain bytes (no unsafe); the unsafe is limited to the syscalls.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libc::{
    FAN_ATTRIB, FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE, FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    FAN_MODIFY, FAN_ONDIR, FAN_RENAME,
};

/// What the sensor asks for on each marked filesystem.
pub const EVENT_MASK: u64 =
    FAN_CREATE | FAN_DELETE | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_ATTRIB | FAN_RENAME | FAN_ONDIR;

/// `MAX_HANDLE_SZ` of the kernel.
const MAX_HANDLE_BYTES: usize = 128;
/// Bytes of `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// `FANOTIFY_METADATA_VERSION`.
const METADATA_VERSION: u8 = 3;

/// A filesystem id as fanotify reports it (`__kernel_fsid_t`).
pub type Fsid = [i32; 2];

/// The fanotify group of the sensor.
#[derive(Debug)]
pub struct Fanotify {
    fd: OwnedFd,
}

impl Fanotify {
    /// A notification group reporting directory handle + name, the object's handle, and both
    /// sides of renames; non-blocking reads.
    pub fn new() -> io::Result<Fanotify> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME_TARGET;
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain syscall with flag arguments; the result is checked.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fanotify_init returned a fresh descriptor that nothing else owns.
        Ok(Fanotify { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Marks the whole filesystem that `mount` (any open file on it) lives on.
    pub fn mark_filesystem(&self, mount: BorrowedFd<'_>) -> io::Result<()> {
        self.mark(libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM, mount)
    }

    pub fn unmark_filesystem(&self, mount: BorrowedFd<'_>) -> io::Result<()> {
        self.mark(libc::FAN_MARK_REMOVE | libc::FAN_MARK_FILESYSTEM, mount)
    }

    fn mark(&self, flags: libc::c_uint, mount: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: a null path makes the kernel use `mount` itself; both descriptors are open.
        let result = unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, EVENT_MASK, mount.as_raw_fd(), std::ptr::null())
        };
        if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Waits up to `timeout_ms` for events; true when some can be read.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut poll = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        match ready {
            n if n > 0 => Ok(true),
            0 => Ok(false),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(error) }
            }
        }
    }

    /// Reads whole events into `buffer`; 0 when none are pending.
    pub fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `buffer.len()` bytes into it.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(error),
        }
    }
}

/// A file handle from an info record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId<'a> {
    pub fsid: Fsid,
    pub handle_type: i32,
    pub handle: &'a [u8],
}

impl FileId<'_> {
    /// An owned identity of the file: stable while the file exists, never reused for another file
    /// (handles carry the inode generation).
    pub fn key(&self) -> FileKey {
        let mut bytes = Vec::with_capacity(12 + self.handle.len());
        bytes.extend_from_slice(&self.fsid[0].to_ne_bytes());
        bytes.extend_from_slice(&self.fsid[1].to_ne_bytes());
        bytes.extend_from_slice(&self.handle_type.to_ne_bytes());
        bytes.extend_from_slice(self.handle);
        FileKey(bytes.into_boxed_slice())
    }

    /// Opens the file or directory the handle names through `mount` (any file on its
    /// filesystem), as an `O_PATH` descriptor: nothing is read, no device is opened.
    pub fn open_path(&self, mount: BorrowedFd<'_>) -> io::Result<File> {
        #[repr(C)]
        struct Handle {
            handle_bytes: libc::c_uint,
            handle_type: libc::c_int,
            f_handle: [u8; MAX_HANDLE_BYTES],
        }
        if self.handle.len() > MAX_HANDLE_BYTES {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        }
        let mut handle =
            Handle { handle_bytes: 0, handle_type: self.handle_type, f_handle: [0; MAX_HANDLE_BYTES] };
        handle.f_handle[..self.handle.len()].copy_from_slice(self.handle);
        handle.handle_bytes = self.handle.len() as libc::c_uint;
        let flags = libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: `Handle` has the layout of `struct file_handle` followed by its bytes.
        let fd = unsafe {
            libc::open_by_handle_at(mount.as_raw_fd(), (&raw mut handle).cast::<libc::file_handle>(), flags)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// [`FileId::key`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey(Box<[u8]>);

/// A directory handle and the name of an entry in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub dir: FileId<'a>,
    pub name: &'a [u8],
}

/// One decoded event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub mask: u64,
    pub pid: i32,
    /// The object of the event (with FAN_REPORT_TARGET_FID also the child of create, delete
    /// and rename).
    pub object: Option<FileId<'a>>,
    /// Directory and name of the object.
    pub entry: Option<Entry<'a>>,
    /// Both sides of a FAN_RENAME.
    pub renamed_from: Option<Entry<'a>>,
    pub renamed_to: Option<Entry<'a>>,
}

/// A malformed read: the kernel and this decoder disagree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed fanotify event at byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

/// The events of one `read`, in order; decoding stops at the first malformed event.
pub fn decode(buffer: &[u8]) -> impl Iterator<Item = Result<Record<'_>, DecodeError>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= buffer.len() {
            return None;
        }
        let at = offset;
        let result = decode_one(buffer, at);
        match &result {
            Ok((_, len)) => offset += len,
            Err(_) => offset = buffer.len(),
        }
        Some(result.map(|(record, _)| record))
    })
}

fn decode_one(buffer: &[u8], at: usize) -> Result<(Record<'_>, usize), DecodeError> {
    let error = |what| DecodeError { offset: at, what };
    let event = buffer.get(at..).ok_or(error("past the end"))?;
    if event.len() < METADATA_LEN {
        return Err(error("truncated metadata"));
    }
    let event_len = u32_at(event, 0) as usize;
    let metadata_len = usize::from(u16::from_ne_bytes([event[6], event[7]]));
    if event[4] != METADATA_VERSION {
        return Err(error("unknown metadata version"));
    }
    if event_len < METADATA_LEN
        || event_len > event.len()
        || metadata_len < METADATA_LEN
        || metadata_len > event_len
    {
        return Err(error("bad event length"));
    }
    let mut record = Record {
        mask: u64::from_ne_bytes(event[8..16].try_into().map_err(|_| error("truncated mask"))?),
        pid: i32::from_ne_bytes(event[20..24].try_into().map_err(|_| error("truncated pid"))?),
        ..Record::default()
    };
    let mut info = &event[metadata_len..event_len];
    while !info.is_empty() {
        if info.len() < 4 {
            return Err(error("truncated info header"));
        }
        let (kind, len) = (info[0], usize::from(u16::from_ne_bytes([info[2], info[3]])));
        if len < 4 || len > info.len() {
            return Err(error("bad info record length"));
        }
        let body = &info[..len];
        match kind {
            FAN_EVENT_INFO_TYPE_FID => record.object = Some(file_id(body).ok_or(error("bad FID record"))?.0),
            FAN_EVENT_INFO_TYPE_DFID_NAME
            | FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
            | FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => {
                let (dir, rest) = file_id(body).ok_or(error("bad DFID_NAME record"))?;
                let name = CStr::from_bytes_until_nul(rest).map_err(|_| error("unterminated name"))?;
                let entry = Some(Entry { dir, name: name.to_bytes() });
                match kind {
                    FAN_EVENT_INFO_TYPE_DFID_NAME => record.entry = entry,
                    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => record.renamed_from = entry,
                    _ => record.renamed_to = entry,
                }
            }
            // Other records (pidfd, error) are not asked for.
            _ => {}
        }
        info = &info[len..];
    }
    Ok((record, event_len))
}

/// The handle of a FID-style record and the bytes after it.
fn file_id(body: &[u8]) -> Option<(FileId<'_>, &[u8])> {
    let fsid = [
        i32::from_ne_bytes(body.get(4..8)?.try_into().ok()?),
        i32::from_ne_bytes(body.get(8..12)?.try_into().ok()?),
    ];
    let handle_bytes = u32::from_ne_bytes(body.get(12..16)?.try_into().ok()?) as usize;
    let handle_type = i32::from_ne_bytes(body.get(16..20)?.try_into().ok()?);
    let handle = body.get(20..20 + handle_bytes)?;
    Some((FileId { fsid, handle_type, handle }, &body[20 + handle_bytes..]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_ne_bytes)
}

/// The filesystem id of the filesystem `file` lives on.
pub fn fsid_of(file: BorrowedFd<'_>) -> io::Result<Fsid> {
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success, checked before reading it.
    let result = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let stat = unsafe { stat.assume_init() };
    // SAFETY: `fsid_t` is two C ints with private fields; same size and layout as `Fsid`.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, Fsid>(stat.f_fsid) })
}

/// The path of an open file as the kernel names it (`/proc/self/fd/N`), without the
/// ` (deleted)` suffix of unlinked files.
pub fn path_of(file: &File) -> io::Result<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let text = link.to_string_lossy();
    Ok(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An info record of `kind` with `handle` and, when given, a name.
    pub(crate) fn info(kind: u8, fsid: Fsid, handle: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&fsid[0].to_ne_bytes());
        body.extend_from_slice(&fsid[1].to_ne_bytes());
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(name) = name {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
        }
        while (body.len() + 4) % 4 != 0 {
            body.push(0);
        }
        let mut record = vec![kind, 0];
        record.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        record.extend_from_slice(&body);
        record
    }

    pub(crate) fn event(mask: u64, pid: i32, infos: &[Vec<u8>]) -> Vec<u8> {
        let len = METADATA_LEN + infos.iter().map(Vec::len).sum::<usize>();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        bytes.extend_from_slice(&[METADATA_VERSION, 0]);
        bytes.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        bytes.extend_from_slice(&mask.to_ne_bytes());
        bytes.extend_from_slice(&libc::FAN_NOFD.to_ne_bytes());
        bytes.extend_from_slice(&pid.to_ne_bytes());
        for info in infos {
            bytes.extend_from_slice(info);
        }
        bytes
    }

    #[test]
    fn events_with_name_and_rename_records_decode() {
        let mut buffer = event(
            FAN_CREATE | FAN_CLOSE_WRITE,
            42,
            &[
                info(FAN_EVENT_INFO_TYPE_DFID_NAME, [1, 2], b"dirh", Some("new.txt")),
                info(FAN_EVENT_INFO_TYPE_FID, [1, 2], b"fileh", None),
            ],
        );
        buffer.extend(event(
            FAN_RENAME,
            43,
            &[
                info(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, [1, 2], b"d1", Some("a")),
                info(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, [1, 2], b"d2", Some("b")),
                info(FAN_EVENT_INFO_TYPE_FID, [1, 2], b"f", None),
            ],
        ));
        let records: Vec<Record> = decode(&buffer).map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].mask, FAN_CREATE | FAN_CLOSE_WRITE);
        assert_eq!(records[0].pid, 42);
        let entry = records[0].entry.unwrap();
        assert_eq!((entry.dir.handle, entry.name), (&b"dirh"[..], &b"new.txt"[..]));
        assert_eq!(records[0].object.unwrap().handle, b"fileh");
        assert_eq!(records[1].renamed_from.unwrap().name, b"a");
        assert_eq!(records[1].renamed_to.unwrap().dir.handle, b"d2");
        assert_ne!(records[0].object.unwrap().key(), records[1].object.unwrap().key());
    }

    #[test]
    fn truncated_events_are_errors_not_panics() {
        let buffer = event(FAN_CREATE, 1, &[info(FAN_EVENT_INFO_TYPE_DFID_NAME, [1, 2], b"dirh", Some("x"))]);
        for cut in 1..buffer.len() {
            let results: Vec<_> = decode(&buffer[..cut]).collect();
            assert!(results.iter().any(Result::is_err), "cut at {cut}");
        }
        let mut bad = buffer.clone();
        bad[METADATA_LEN + 2] = 200; // info record longer than the event
        assert!(decode(&bad).next().unwrap().is_err());
    }
}
