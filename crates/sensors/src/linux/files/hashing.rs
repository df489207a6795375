//! Hashing written files off the event path: the event thread hands an open file and the rows
//! waiting for its hashes to one worker through a bounded queue; when the queue is full the rows
//! go out at once with `hashed = 0`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use md5::Md5;
use sha2::{Digest, Sha256};
use watchpost_catalog::Event;

use super::emit::{ActorColumns, Emitter};

/// Files waiting to be hashed; each holds an open descriptor.
pub const QUEUE_LEN: usize = 256;
const CHUNK: usize = 64 * 1024;

/// MD5 and SHA-256 of a file's contents, lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub md5: String,
    pub sha256: String,
}

/// Hashes the whole of `file` from its start (its offset is not used).
pub fn digest(file: &File) -> io::Result<Digests> {
    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buffer, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        md5.update(&buffer[..n]);
        sha256.update(&buffer[..n]);
        offset += n as u64;
    }
    Ok(Digests { md5: hex::encode(md5.finalize()), sha256: hex::encode(sha256.finalize()) })
}

/// Whether `file` starts with the magic of a PE (`MZ`) or ELF (`\x7fELF`) executable.
pub fn is_executable(file: &File) -> bool {
    let mut magic = [0u8; 4];
    let n = file.read_at(&mut magic, 0).unwrap_or(0);
    magic[..n].starts_with(b"MZ") || magic[..n].starts_with(b"\x7fELF")
}

/// Where a row takes the hashes.
#[derive(Clone, Copy, Debug)]
pub struct HashSlots {
    pub md5: usize,
    pub sha256: Option<usize>,
    pub hashed: usize,
}

/// A row that waits for the hashes of a file, and the process it is attributed to.
#[derive(Debug)]
pub struct PendingRow {
    pub event: Event,
    pub slots: HashSlots,
    pub pid: u32,
    pub actor: ActorColumns,
}

impl PendingRow {
    /// Emits the row with the hashes filled in, or with `hashed = 0` without them.
    pub fn emit(self, digests: Option<&Digests>, emitter: &Emitter) {
        let (pid, actor) = (self.pid, self.actor);
        emitter.emit(self.finish(digests), pid, actor);
    }

    fn finish(mut self, digests: Option<&Digests>) -> Event {
        let slots = self.slots;
        match digests {
            Some(d) => {
                self.event.set(slots.md5, d.md5.as_str());
                if let Some(sha256) = slots.sha256 {
                    self.event.set(sha256, d.sha256.as_str());
                }
                self.event.set(slots.hashed, 1i64);
            }
            None => self.event.set(slots.hashed, 0i64),
        }
        self.event
    }
}

/// An open file and the rows that want its hashes.
#[derive(Debug)]
pub struct HashJob {
    pub file: File,
    pub rows: Vec<PendingRow>,
}

/// Runs the hash worker until the event thread drops the sending side.
pub fn run_worker(jobs: crossbeam_channel::Receiver<HashJob>, emitter: Arc<Emitter>) {
    for job in jobs {
        let digests = digest(&job.file).ok();
        drop(job.file);
        for row in job.rows {
            row.emit(digests.as_ref(), &emitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_values_and_magic_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        let d = digest(&file).unwrap();
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(!is_executable(&file));
        // Larger than one chunk.
        let big = vec![7u8; CHUNK * 2 + 5];
        std::fs::write(&path, &big).unwrap();
        let d = digest(&File::open(&path).unwrap()).unwrap();
        assert_eq!(d.md5, hex::encode(Md5::digest(&big)));
        std::fs::write(&path, b"MZ\x90\x00rest").unwrap();
        assert!(is_executable(&File::open(&path).unwrap()));
        std::fs::write(&path, b"\x7fELF\x02").unwrap();
        assert!(is_executable(&File::open(&path).unwrap()));
        std::fs::write(&path, b"M").unwrap();
        assert!(!is_executable(&File::open(&path).unwrap()));
    }
}
