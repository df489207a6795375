//! osquery's `file_paths` patterns: which files a YARA category covers.
//!
//! - `/dir/%%` (or `/dir/name%%`): everything below `/dir` (whose path starts with `/dir/name`).
//! - `/dir/%`, `/dir/%.exe`: the entries directly in `/dir` (whose name fits); not deeper.
//! - `%` elsewhere stands for any part of one path component: `/home/%/Downloads`.
//! - a plain path, `/dir` or `/dir/`: that path and everything below it (a folder is recursive).
//!
//! Hand-written as a translation to a regex because osquery's `%`/`%%` syntax is not a glob
//! syntax any glob crate speaks.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

/// Why a `file_paths` entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("is not an absolute path (start it with /)")]
    NotAbsolute,
    #[error("cannot be turned into a matcher: {0}")]
    Regex(String),
}

/// One `file_paths` entry.
#[derive(Clone, Debug)]
pub struct PathPattern {
    text: String,
    regex: Regex,
    root: PathBuf,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        if !text.starts_with('/') {
            return Err(PatternError::NotAbsolute);
        }
        let source = if let Some(body) = text.strip_suffix("%%") {
            format!("^{}.*$", translate(body))
        } else {
            let trimmed = trim_trailing_slashes(text);
            let last_component = trimmed.rsplit('/').next().unwrap_or_default();
            if last_component.contains('%') {
                format!("^{}$", translate(trimmed))
            } else {
                format!("^{}(/.*)?$", translate(trimmed))
            }
        };
        let regex = Regex::new(&source).map_err(|e| PatternError::Regex(e.to_string()))?;
        Ok(PathPattern { text: text.to_string(), regex, root: literal_root(text) })
    }

    /// Whether `path` (absolute, as the kernel reports it) is covered.
    pub fn matches(&self, path: &Path) -> bool {
        self.regex.is_match(path.as_os_str().as_bytes())
    }

    /// The deepest folder (or file) every covered path is in or is: the part before the first
    /// wildcard.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

fn trim_trailing_slashes(text: &str) -> &str {
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() { "" } else { trimmed }
}

/// The regex for `text` where `%` is any run of characters within one component.
fn translate(text: &str) -> String {
    text.split('%').map(regex::escape).collect::<Vec<_>>().join("[^/]*")
}

fn literal_root(text: &str) -> PathBuf {
    let literal = match text.find('%') {
        // The component holding the wildcard is not literal: cut back to its folder.
        Some(at) => text[..at].rsplit_once('/').map_or("", |(folder, _)| folder),
        None => trim_trailing_slashes(text),
    };
    if literal.is_empty() { PathBuf::from("/") } else { PathBuf::from(literal) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(Path::new(path))
    }

    #[test]
    fn double_percent_is_recursive() {
        assert!(covers("/tmp/drop/%%", "/tmp/drop/a.exe"));
        assert!(covers("/tmp/drop/%%", "/tmp/drop/x/y/z.bin"));
        assert!(!covers("/tmp/drop/%%", "/tmp/dropped/a.exe"));
        assert!(!covers("/tmp/drop/%%", "/tmp/a.exe"));
        assert!(covers("/tmp/dr%%", "/tmp/drop/x/y"));
    }

    #[test]
    fn single_percent_is_one_level() {
        assert!(covers("/tmp/drop/%", "/tmp/drop/a.exe"));
        assert!(!covers("/tmp/drop/%", "/tmp/drop/x/a.exe"));
        assert!(covers("/tmp/drop/%.exe", "/tmp/drop/a.exe"));
        assert!(!covers("/tmp/drop/%.exe", "/tmp/drop/a.txt"));
        assert!(covers("/home/%/Downloads", "/home/ann/Downloads/x/setup.sh"));
        assert!(!covers("/home/%/Downloads", "/home/ann/bob/Downloads/setup.sh"));
    }

    #[test]
    fn plain_folders_are_recursive_and_exact() {
        assert!(covers("/opt/app", "/opt/app/bin/run"));
        assert!(covers("/opt/app/", "/opt/app/bin/run"));
        assert!(covers("/opt/app", "/opt/app"));
        assert!(!covers("/opt/app", "/opt/application/run"));
        assert!(covers("/", "/anything/at/all"));
    }

    #[test]
    fn regex_characters_are_literal() {
        assert!(covers("/tmp/a.b+c", "/tmp/a.b+c/f"));
        assert!(!covers("/tmp/a.b+c", "/tmp/aXb+c/f"));
    }

    #[test]
    fn roots_are_the_literal_folders() {
        let root = |p: &str| PathPattern::parse(p).unwrap().root().to_path_buf();
        assert_eq!(root("/tmp/drop/%%"), Path::new("/tmp/drop"));
        assert_eq!(root("/tmp/drop/%"), Path::new("/tmp/drop"));
        assert_eq!(root("/tmp/dr%%"), Path::new("/tmp"));
        assert_eq!(root("/home/%/Downloads"), Path::new("/home"));
        assert_eq!(root("/opt/app/"), Path::new("/opt/app"));
        assert_eq!(root("/%%"), Path::new("/"));
    }

    #[test]
    fn relative_paths_are_refused() {
        assert_eq!(PathPattern::parse("tmp/%%").unwrap_err(), PatternError::NotAbsolute);
    }
}
