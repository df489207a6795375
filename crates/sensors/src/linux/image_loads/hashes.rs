//! MD5 of mapped image files, cached per file identity (device, inode) and checked against the
//! file's modification time and size, so a library loaded by a thousand processes is read once.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use md5::{Digest, Md5};

/// More files than this and the cache starts afresh.
const MAX_FILES: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Version {
    modified_s: i64,
    modified_ns: i64,
    size: u64,
}

/// A file's (device, inode).
type Identity = (u64, u64);

/// (device, inode) -> the MD5 of the file as it was at one version.
#[derive(Default)]
pub struct FileHashes {
    files: HashMap<Identity, (Version, Option<[u8; 16]>)>,
}

impl FileHashes {
    /// The MD5 of the mapped file (`device`, `inode`), opened through the first of `candidates`
    /// that is that file, else through the last one that opens (e.g. the process's
    /// `/proc/PID/map_files` entry, which is the mapped file even when its identity is reported
    /// differently, as on overlayfs). `None` when no candidate opens, the file is larger than
    /// `max_bytes`, or reading fails.
    pub fn md5(
        &mut self,
        candidates: &[PathBuf],
        device: u64,
        inode: u64,
        max_bytes: u64,
    ) -> Option<[u8; 16]> {
        let mut fallback = None;
        let mut chosen = None;
        for path in candidates {
            let Ok(file) = File::open(path) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if (meta.dev(), meta.ino()) == (device, inode) {
                chosen = Some((file, meta));
                break;
            }
            fallback = Some((file, meta));
        }
        let (file, meta) = chosen.or(fallback)?;
        if !meta.is_file() {
            return None;
        }
        let identity = (meta.dev(), meta.ino());
        let version = Version { modified_s: meta.mtime(), modified_ns: meta.mtime_nsec(), size: meta.size() };
        if version.size > max_bytes {
            return None;
        }
        if let Some((known, md5)) = self.files.get(&identity)
            && *known == version
        {
            return *md5;
        }
        let md5 = md5_of(file, max_bytes);
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert(identity, (version, md5));
        md5
    }
}

/// MD5 of what `file` holds, reading at most `max_bytes` (more means `None`).
fn md5_of(file: File, max_bytes: u64) -> Option<[u8; 16]> {
    let mut hasher = Md5::new();
    let mut reader = file.take(max_bytes.saturating_add(1));
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return None;
        }
        hasher.update(&buffer[..n]);
    }
    Some(hasher.finalize().into())
}

/// Lower-case hex, as md5sum prints it.
pub fn hex(md5: &[u8; 16]) -> String {
    md5.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_is_cached_per_identity_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.so");
        std::fs::write(&path, "abc").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let mut hashes = FileHashes::default();
        let md5 = hashes.md5(std::slice::from_ref(&path), meta.dev(), meta.ino(), 1024).unwrap();
        assert_eq!(hex(&md5), "900150983cd24fb0d6963f7d28e17f72");
        // Rewritten in place (same inode): the new content is hashed.
        std::fs::write(&path, "abcd").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        let md5 = hashes.md5(std::slice::from_ref(&path), meta.dev(), meta.ino(), 1024).unwrap();
        assert_eq!(hex(&md5), "e2fc714c4727ee9395f324cd2e7f331f");
        assert_eq!(
            hashes.md5(std::slice::from_ref(&path), meta.dev(), meta.ino(), 3),
            None,
            "over the limit"
        );
        let missing = dir.path().join("missing");
        assert_eq!(hashes.md5(&[missing], 1, 2, 1024), None);
    }
}
