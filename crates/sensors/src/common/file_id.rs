//! Which file an open handle refers to, to tell a rotated log from the one we have open.
//!
//! Hand-written rather than the `same-file` crate: under Wine (where the Windows tests run)
//! `GetFileInformationByHandle` now and then reports volume serial 0 for a file whose serial is
//! otherwise non-zero, and `same-file` would then call one file two different ones, which reads
//! the log again from its start. Here a zero serial matches any serial.

use std::fs::File;
use std::io;

/// The identity of a file: device and inode on Unix, volume serial and file index on Windows.
#[derive(Clone, Copy, Debug)]
pub struct FileId {
    volume: u64,
    index: u64,
}

impl PartialEq for FileId {
    fn eq(&self, other: &FileId) -> bool {
        self.index == other.index
            && (self.volume == other.volume || cfg!(windows) && (self.volume == 0 || other.volume == 0))
    }
}

impl Eq for FileId {}

#[cfg(unix)]
pub fn file_id(file: &File) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let metadata = file.metadata()?;
    Ok(FileId { volume: metadata.dev(), index: metadata.ino() })
}

#[cfg(windows)]
pub fn file_id(file: &File) -> io::Result<FileId> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{BY_HANDLE_FILE_INFORMATION, GetFileInformationByHandle};

    // SAFETY: BY_HANDLE_FILE_INFORMATION is plain data; all-zero is a valid value.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is open for the lifetime of `file`, and `info` is writable.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileId {
        volume: u64::from(info.dwVolumeSerialNumber),
        index: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_opened_twice_is_the_same_and_another_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        let id = |path| file_id(&File::open(path).unwrap()).unwrap();
        assert_eq!(id(&a), id(&a));
        assert_ne!(id(&a), id(&b));
        let before = id(&a);
        std::fs::rename(&a, dir.path().join("a.1")).unwrap();
        assert_eq!(id(&dir.path().join("a.1")), before, "a rename keeps the identity");
    }

    #[test]
    fn a_zero_volume_serial_matches_only_on_windows() {
        let known = FileId { volume: 7, index: 42 };
        let zero = FileId { volume: 0, index: 42 };
        assert_eq!(known == zero, cfg!(windows));
        assert_ne!(known, FileId { volume: 0, index: 43 });
    }
}
