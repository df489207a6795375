//! Compiling rule groups with yara-x and scanning one file's bytes with a group's rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::config::YaraError;

/// The externals every rule may use; all text.
pub const EXTERNALS: [&str; 5] = ["filename", "extension", "filepath", "filetype", "md5"];

/// A scan that takes longer than this is abandoned (a pathological rule must not stall the
/// queue forever).
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// The compiled rules of one `yara.signatures` group: every rule of its files that compiled.
pub struct RuleGroup {
    rules: yara_x::Rules,
    /// Files of the group whose rules are all in `rules`.
    pub loaded_files: usize,
}

impl RuleGroup {
    /// Compiles the files of group `name`. A file that is missing or has any error is
    /// reported (with the line of each error) and left out whole; the group keeps its other
    /// files.
    pub fn compile(name: &str, files: &[PathBuf]) -> (RuleGroup, Vec<YaraError>) {
        // Problems with the position of their file, to report them in config order.
        let mut problems: Vec<(usize, YaraError)> = Vec::new();
        let mut sources = Vec::new();
        for (position, path) in files.iter().enumerate() {
            match std::fs::read_to_string(path) {
                Ok(source) => sources.push((position, path, source)),
                Err(error) => problems.push((
                    position,
                    YaraError::UnreadableRuleFile {
                        group: name.to_string(),
                        path: path.clone(),
                        reason: error.to_string(),
                    },
                )),
            }
        }
        // yara-x keeps the rules of a failing file that did compile; to leave such a file out
        // whole, the group is compiled again without it (a later file may have used its rules,
        // so until no file fails).
        loop {
            let mut compiler = new_compiler();
            let mut failed = Vec::new();
            for (index, (position, path, source)) in sources.iter().enumerate() {
                let errors_before = compiler.errors().len();
                let code = yara_x::SourceCode::from(source.as_str()).with_origin(path.to_string_lossy());
                if compiler.add_source(code).is_err() {
                    failed.push(index);
                    let errors = &compiler.errors()[errors_before..];
                    problems
                        .extend(errors.iter().map(|error| (*position, bad_rule(name, path, source, error))));
                }
            }
            if failed.is_empty() {
                problems.sort_by_key(|(position, _)| *position);
                let problems = problems.into_iter().map(|(_, problem)| problem).collect();
                return (RuleGroup { rules: compiler.build(), loaded_files: sources.len() }, problems);
            }
            for index in failed.into_iter().rev() {
                sources.remove(index);
            }
        }
    }

    /// The identifiers of the (public) rules that match `target`, in rule order.
    pub fn scan(&self, target: &Target<'_>) -> Result<Vec<String>, yara_x::ScanError> {
        let mut scanner = yara_x::Scanner::new(&self.rules);
        scanner.set_timeout(SCAN_TIMEOUT);
        for (name, value) in target.externals() {
            // Defined for every group at compile time, so only a yara-x change could refuse.
            if let Err(error) = scanner.set_global(name, value.as_str()) {
                log::error!("yara external {name}: {error}");
            }
        }
        let results = scanner.scan(target.data)?;
        Ok(results.matching_rules().map(|rule| rule.identifier().to_string()).collect())
    }
}

fn new_compiler() -> yara_x::Compiler<'static> {
    let mut compiler = yara_x::Compiler::new();
    for external in EXTERNALS {
        // The names are valid identifiers defined once, so this cannot fail.
        if let Err(error) = compiler.define_global(external, "") {
            log::error!("yara external {external}: {error}");
        }
    }
    compiler
}

fn bad_rule(group: &str, path: &Path, source: &str, error: &yara_x::errors::CompileError) -> YaraError {
    let label = error.labels().next();
    let offset = label.as_ref().map_or(0, |label| label.span().start());
    let message = match label.as_ref().map(|label| label.text()) {
        Some(detail) if !detail.is_empty() && detail != error.title() => {
            format!("{}: {detail}", error.title())
        }
        _ => error.title().to_string(),
    };
    YaraError::BadRule {
        group: group.to_string(),
        path: path.to_path_buf(),
        line: line_of(source, offset),
        message,
    }
}

/// The 1-based line of byte `offset` in `source`.
fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A file's contents, read once, with the values of the externals.
pub struct Target<'a> {
    pub path: &'a Path,
    pub data: &'a [u8],
    pub md5: &'a str,
}

impl Target<'_> {
    /// `filename` (last component), `extension` (`.exe`, with its dot; empty without one),
    /// `filepath` (the full path), `filetype` (`EXE`), `md5` (lowercase hex).
    pub fn externals(&self) -> [(&'static str, String); 5] {
        let filename = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bare = self.path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let extension = if bare.is_empty() { String::new() } else { format!(".{bare}") };
        [
            ("filename", filename),
            ("extension", extension),
            ("filepath", self.path.to_string_lossy().into_owned()),
            ("filetype", bare.to_uppercase()),
            ("md5", self.md5.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn externals_follow_the_file_name() {
        let target = Target { path: Path::new("/tmp/dir/Setup.Exe"), data: b"", md5: "abc" };
        let values: Vec<String> = target.externals().into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, ["Setup.Exe", ".Exe", "/tmp/dir/Setup.Exe", "EXE", "abc"]);
        let bare = Target { path: Path::new("/tmp/Makefile"), data: b"", md5: "" };
        let values: Vec<String> = bare.externals().into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, ["Makefile", "", "/tmp/Makefile", "", ""]);
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a", 99), 1);
    }
}
