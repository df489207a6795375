//! MD5 of mapped image files, cached per file identity (device, inode) and checked against the
//! file's modification time and size, so a library loaded by a thousand processes is read once.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    /// The MD5 of the mapped file (`device`, `inode`), found at `path` or, when `path` is not
    /// that file (e.g. on overlayfs, which reports another identity) or cannot be opened,
    /// through `fallback()` (the process's `/proc/PID/map_files` entry, which is the mapped
    /// file itself). `None` when neither opens, the file is larger than `max_bytes`, or reading
    /// fails.
    ///
    /// A file seen before at the same version costs one `statx` of `path` and no open: at an
    /// exec storm most loads are the same few libraries.
    pub fn md5(
        &mut self,
        path: &Path,
        fallback: impl FnOnce() -> PathBuf,
        device: u64,
        inode: u64,
        max_bytes: u64,
    ) -> Option<[u8; 16]> {
        if let Ok(meta) = std::fs::metadata(path)
            && (meta.dev(), meta.ino()) == (device, inode)
            && let Some(known) = self.known(&meta, max_bytes)
        {
            return known;
        }
        let opened = |path: &Path| File::open(path).and_then(|file| Ok((file.metadata()?, file))).ok();
        let (meta, file) = match opened(path) {
            Some((meta, file)) if (meta.dev(), meta.ino()) == (device, inode) => (meta, file),
            from_path => opened(&fallback()).or(from_path)?,
        };
        if let Some(known) = self.known(&meta, max_bytes) {
            return known;
        }
        let md5 = md5_of(file, max_bytes);
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert((meta.dev(), meta.ino()), (Version::of(&meta), md5));
        md5
    }

    /// The answer for the file `meta` describes without reading it: `Some(None)` when it is
    /// not a regular file or over `max_bytes`, `Some(md5)` when this version was hashed before.
    fn known(&self, meta: &Metadata, max_bytes: u64) -> Option<Option<[u8; 16]>> {
        if !meta.is_file() || meta.size() > max_bytes {
            return Some(None);
        }
        match self.files.get(&(meta.dev(), meta.ino())) {
            Some((known, md5)) if *known == Version::of(meta) => Some(*md5),
            _ => None,
        }
    }
}

impl Version {
    fn of(meta: &Metadata) -> Version {
        Version { modified_s: meta.mtime(), modified_ns: meta.mtime_nsec(), size: meta.size() }
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
        let md5 = hashes.md5(&path, unreachable, meta.dev(), meta.ino(), 1024).unwrap();
        assert_eq!(hex::encode(md5), "900150983cd24fb0d6963f7d28e17f72");
        // Rewritten in place (same inode): the new content is hashed.
        std::fs::write(&path, "abcd").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        let md5 = hashes.md5(&path, unreachable, meta.dev(), meta.ino(), 1024).unwrap();
        assert_eq!(hex::encode(md5), "e2fc714c4727ee9395f324cd2e7f331f");
        assert_eq!(hashes.md5(&path, unreachable, meta.dev(), meta.ino(), 3), None, "over the limit");
        let missing = dir.path().join("missing");
        assert_eq!(hashes.md5(&missing, || dir.path().join("gone too"), 1, 2, 1024), None);
    }

    /// For a file found at its path the fallback is never needed.
    fn unreachable() -> PathBuf {
        panic!("the fallback was opened for a file found at its path")
    }

    #[test]
    fn another_file_at_the_path_sends_the_lookup_to_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let (mapped, other) = (dir.path().join("mapped.so"), dir.path().join("other.so"));
        std::fs::write(&mapped, "abc").unwrap();
        std::fs::write(&other, "xyz").unwrap();
        let meta = std::fs::metadata(&mapped).unwrap();
        let mut hashes = FileHashes::default();
        // The kernel named `other`, but the mapped file (device, inode) is `mapped`.
        for _ in 0..2 {
            let md5 = hashes.md5(&other, || mapped.clone(), meta.dev(), meta.ino(), 1024).unwrap();
            assert_eq!(hex::encode(md5), "900150983cd24fb0d6963f7d28e17f72");
        }
        // Without a fallback that opens, the file at the path is the best answer there is.
        let md5 = hashes.md5(&other, || dir.path().join("gone"), meta.dev(), meta.ino(), 1024).unwrap();
        assert_eq!(hex::encode(md5), "d16fb36f0911f878998c136191af705e");
    }
}
