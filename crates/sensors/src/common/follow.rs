//! Following one log file by path, like `tail -F`: new bytes become lines, across rotation
//! (rename + new file), truncation and copytruncate.
//!
//! Rotation is detected by file identity ([`super::file_id`]: dev/inode on Unix, volume serial
//! and file index on Windows): while the path is missing the old file stays open and is read, so
//! lines written between the rename and the new file's creation are kept; once a different file
//! is at the path, the old one is read to its end and the new one is followed from its start.
//! Truncation is a size below the read offset: reading restarts at offset 0.
//!
//! Limits, inherent to following by polling a size: if a file is truncated and then grows past
//! the old offset before the next poll, the truncation is not seen and the bytes before the old
//! offset are skipped. A deleted (not renamed) file stays open until a new file appears at the
//! path.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::file_id::{FileId, file_id};
use super::lines::{Line, LineSplitter};

/// Lines longer than this are cut to this length; the rest of the line is dropped.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Where reading starts when a file at the path is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Only what is appended from now on.
    End,
    /// Everything (a file that appeared after we began watching the path).
    Beginning,
}

/// Why a watched file cannot be read. The follower keeps trying on later polls.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is a directory, not a log file: fix the watch_file_path")]
    IsDirectory { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

#[derive(Debug)]
struct OpenLog {
    file: File,
    id: FileId,
    offset: u64,
}

/// One followed path.
#[derive(Debug)]
pub struct FollowedFile {
    path: PathBuf,
    open: Option<OpenLog>,
    /// Where to begin in the file at `path` when it is next opened.
    next_start: StartAt,
    splitter: LineSplitter,
}

impl FollowedFile {
    /// Starts following `path`: a file there now is read from its current end; a file that is
    /// missing now is read from its beginning once it appears. If the file exists but cannot be
    /// opened (permissions), reading begins at its end once it can be opened. The error is
    /// returned for reporting; the follower is usable either way.
    pub fn new(path: impl Into<PathBuf>) -> (FollowedFile, Result<(), FollowError>) {
        let mut file = FollowedFile {
            path: path.into(),
            open: None,
            next_start: StartAt::End,
            splitter: LineSplitter::new(MAX_LINE_BYTES),
        };
        let result = file.try_open().map(|_| ());
        (file, result)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what is new, handing out complete lines. Reads at most about `budget` bytes and
    /// returns true when more is waiting (call again soon). `scratch` is the read buffer.
    pub fn poll(
        &mut self,
        budget: u64,
        scratch: &mut [u8],
        on_line: &mut dyn FnMut(Line<'_>),
    ) -> Result<bool, FollowError> {
        if self.open.is_none() && !self.try_open()? {
            return Ok(false);
        }
        let Some(open) = self.open.as_mut() else { return Ok(false) };
        if drain(open, &self.path, &mut self.splitter, budget, scratch, on_line)? {
            return Ok(true);
        }
        // Caught up with the open file: is it still the one at the path?
        match open_log(&self.path) {
            Ok(current) if current.id == open.id => Ok(false),
            Ok(current) => {
                // Rotated. Anything appended to the old file since the drain above is read first.
                if drain(open, &self.path, &mut self.splitter, budget, scratch, on_line)? {
                    return Ok(true);
                }
                self.splitter.finish(on_line);
                let open = self.open.insert(OpenLog { offset: 0, ..current });
                drain(open, &self.path, &mut self.splitter, budget, scratch, on_line)
            }
            // Renamed away or deleted, nothing new there yet: keep reading the old file.
            Err(FollowError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Opens the file at the path if there is one; false when there is none (yet).
    fn try_open(&mut self) -> Result<bool, FollowError> {
        match open_log(&self.path) {
            Ok(opened) => {
                let offset = match self.next_start {
                    StartAt::End => opened.offset,
                    StartAt::Beginning => 0,
                };
                self.open = Some(OpenLog { offset, ..opened });
                Ok(true)
            }
            Err(FollowError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                self.next_start = StartAt::Beginning;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

/// Opens the log at `path`, with `offset` at its current end.
fn open_log(path: &Path) -> Result<OpenLog, FollowError> {
    let is_directory = || std::fs::metadata(path).is_ok_and(|m| m.is_dir());
    let file = File::open(path).map_err(|source| {
        if is_directory() {
            FollowError::IsDirectory { path: path.to_path_buf() }
        } else {
            FollowError::Open { path: path.to_path_buf(), source }
        }
    })?;
    let metadata =
        file.metadata().map_err(|source| FollowError::Read { path: path.to_path_buf(), source })?;
    if metadata.is_dir() {
        return Err(FollowError::IsDirectory { path: path.to_path_buf() });
    }
    let id = file_id(&file).map_err(|source| FollowError::Read { path: path.to_path_buf(), source })?;
    Ok(OpenLog { file, id, offset: metadata.len() })
}

/// Reads `open` from its offset towards its end; true when the budget ran out first.
fn drain(
    open: &mut OpenLog,
    path: &Path,
    splitter: &mut LineSplitter,
    budget: u64,
    scratch: &mut [u8],
    on_line: &mut dyn FnMut(Line<'_>),
) -> Result<bool, FollowError> {
    let read_error = |source| FollowError::Read { path: path.to_path_buf(), source };
    let mut file = &open.file;
    let len = file.metadata().map_err(read_error)?.len();
    if len < open.offset {
        // Truncated (or copytruncate): the unfinished line will never be completed.
        splitter.finish(on_line);
        open.offset = 0;
    }
    if len == open.offset {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(open.offset)).map_err(read_error)?;
    let mut read = 0u64;
    loop {
        let n = match file.read(scratch) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(read_error(error)),
        };
        open.offset += n as u64;
        read += n as u64;
        splitter.push(&scratch[..n], on_line);
        if read >= budget {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new().create(true).append(true).open(path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn poll(file: &mut FollowedFile) -> Vec<String> {
        let mut scratch = vec![0; 16];
        let mut lines = Vec::new();
        while file
            .poll(64, &mut scratch, &mut |l| lines.push(String::from_utf8_lossy(l.bytes).into_owned()))
            .unwrap()
        {}
        lines
    }

    #[test]
    fn existing_content_is_skipped_and_appends_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        append(&path, "old 1\nold 2\n");
        let (mut file, opened) = FollowedFile::new(&path);
        opened.unwrap();
        assert!(poll(&mut file).is_empty());
        append(&path, "new 1\nnew 2 is longer than the sixty-four byte budget of one poll call..\n");
        assert_eq!(
            poll(&mut file),
            ["new 1", "new 2 is longer than the sixty-four byte budget of one poll call.."]
        );
    }

    #[test]
    fn a_file_created_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.log");
        let (mut file, opened) = FollowedFile::new(&path);
        opened.unwrap();
        assert!(poll(&mut file).is_empty());
        append(&path, "first\n");
        assert_eq!(poll(&mut file), ["first"]);
    }

    #[test]
    fn rotation_reads_the_old_file_to_its_end_then_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        append(&path, "");
        let (mut file, _) = FollowedFile::new(&path);
        append(&path, "before\nhalf");
        assert_eq!(poll(&mut file), ["before"]);
        fs::rename(&path, dir.path().join("r.log.1")).unwrap();
        append(&dir.path().join("r.log.1"), " done\nafter rename\n");
        assert_eq!(poll(&mut file), ["half done", "after rename"]);
        append(&dir.path().join("r.log.1"), "late old\nunfinished");
        append(&path, "new file\n");
        assert_eq!(poll(&mut file), ["late old", "unfinished", "new file"]);
    }

    #[test]
    fn truncation_restarts_at_the_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        append(&path, "");
        let (mut file, _) = FollowedFile::new(&path);
        append(&path, "a long first line\n");
        assert_eq!(poll(&mut file), ["a long first line"]);
        fs::write(&path, "short\n").unwrap();
        assert_eq!(poll(&mut file), ["short"]);
    }

    #[test]
    fn a_directory_is_reported_and_the_follower_keeps_going() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, opened) = FollowedFile::new(dir.path());
        assert!(matches!(opened, Err(FollowError::IsDirectory { .. })), "{opened:?}");
        let mut scratch = vec![0; 16];
        let polled = file.poll(64, &mut scratch, &mut |_| {});
        assert!(matches!(polled, Err(FollowError::IsDirectory { .. })), "{polled:?}");
    }
}
