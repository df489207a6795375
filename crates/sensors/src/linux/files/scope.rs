//! Which paths the file sensor reports: `win_include_paths` minus `win_exclude_paths`
//! (`{CATEGORY: [PATH or glob, ...]}`, categories only group the entries). Exclusions win; an
//! entry covers the folder it names and everything below it. Without `win_include_paths`, the
//! [`DEFAULT_INCLUDE`] folders are in scope.
//!
//! Entries are absolute Linux paths; `*`, `?`, `[...]` and `**` are globs (`*` does not cross a
//! `/`), and osquery's `%` / `%%` are taken as `*` / `**`. A lone `*` means the whole system.
//! Other entries (relative or Windows paths such as `C:\Users\*`) are ignored and reported.

use std::path::PathBuf;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The folders in scope when the config has no `win_include_paths`.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "/etc",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/bin",
    "/sbin",
    "/tmp",
    "/var/tmp",
    "/home",
    "/root",
    "/dev/shm",
];

/// A set of path entries: plain folders and globs.
#[derive(Clone, Debug, Default)]
struct PathSet {
    /// Folders without a trailing `/` (the root is the empty string).
    folders: Vec<String>,
    globs: GlobSet,
    /// The literal folder each glob starts in (what has to be watched for it).
    glob_roots: Vec<String>,
}

impl PathSet {
    fn build(entries: &[String], problems: &mut Vec<String>, section: &str) -> PathSet {
        let mut set = PathSet::default();
        let mut globs = GlobSetBuilder::new();
        for entry in entries {
            let entry = entry.replace("%%", "**").replace('%', "*");
            if entry == "*" || entry == "**" {
                set.folders.push(String::new());
                continue;
            }
            if !entry.starts_with('/') {
                problems.push(format!(
                    "{section}: {entry:?} is not an absolute Linux path (starting with /); ignored"
                ));
                continue;
            }
            let trimmed = trim_slashes(&entry);
            if !has_glob(trimmed) {
                set.folders.push(trimmed.to_string());
                continue;
            }
            match glob(trimmed) {
                Ok(glob) => {
                    globs.add(glob);
                    set.glob_roots.push(literal_prefix(trimmed).to_string());
                }
                Err(error) => problems.push(format!("{section}: bad glob {entry:?}: {error}; ignored")),
            }
        }
        // Every glob was checked on its own above, so the set compiles.
        set.globs = globs.build().unwrap_or_else(|_| GlobSet::empty());
        set
    }

    /// Whether `path` (absolute, no trailing `/`) or one of its ancestors is in the set.
    fn covers(&self, path: &str) -> bool {
        let folder_hit = self.folders.iter().any(|folder| {
            path.strip_prefix(folder.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if folder_hit {
            return true;
        }
        if self.globs.is_empty() {
            return false;
        }
        // The path itself, then each ancestor: a glob naming a folder covers what is below it.
        let mut end = path.len();
        loop {
            let candidate = &path[..end];
            if !candidate.is_empty() && self.globs.is_match(candidate) {
                return true;
            }
            match candidate.rfind('/') {
                Some(slash) if slash > 0 => end = slash,
                _ => return false,
            }
        }
    }

    fn roots(&self) -> impl Iterator<Item = &str> {
        self.folders.iter().chain(&self.glob_roots).map(String::as_str)
    }
}

/// The paths the sensor reports events for.
#[derive(Clone, Debug)]
pub struct Scope {
    include: PathSet,
    exclude: PathSet,
}

impl Default for Scope {
    /// The [`DEFAULT_INCLUDE`] folders, nothing excluded.
    fn default() -> Scope {
        let defaults: Vec<String> = DEFAULT_INCLUDE.iter().map(|p| p.to_string()).collect();
        Scope::from_entries(&defaults, &[]).0
    }
}

impl Scope {
    /// The scope of `win_include_paths` / `win_exclude_paths`, and what was wrong with them (the
    /// usable entries still apply).
    pub fn from_sections(
        include: Option<&serde_json::Value>,
        exclude: Option<&serde_json::Value>,
    ) -> (Scope, Vec<String>) {
        let mut problems = Vec::new();
        let include = match include {
            Some(value) => entries(value, "win_include_paths", &mut problems),
            None => DEFAULT_INCLUDE.iter().map(|p| p.to_string()).collect(),
        };
        let exclude = exclude.map(|v| entries(v, "win_exclude_paths", &mut problems)).unwrap_or_default();
        let (scope, more) = Scope::from_entries(&include, &exclude);
        problems.extend(more);
        (scope, problems)
    }

    /// A scope of explicit include and exclude entries.
    pub fn from_entries(include: &[String], exclude: &[String]) -> (Scope, Vec<String>) {
        let mut problems = Vec::new();
        let include = PathSet::build(include, &mut problems, "win_include_paths");
        let exclude = PathSet::build(exclude, &mut problems, "win_exclude_paths");
        (Scope { include, exclude }, problems)
    }

    /// Whether events on `path` (absolute) are reported.
    pub fn contains(&self, path: &str) -> bool {
        let path = trim_slashes(path);
        self.include.covers(path) && !self.exclude.covers(path)
    }

    /// The folders whose filesystems must be watched (the root is `/`).
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> =
            self.include.roots().map(|r| PathBuf::from(if r.is_empty() { "/" } else { r })).collect();
        roots.sort();
        roots.dedup();
        roots
    }
}

/// The path strings of a `{CATEGORY: [PATH, ...]}` section.
fn entries(value: &serde_json::Value, section: &str, problems: &mut Vec<String>) -> Vec<String> {
    let Some(categories) = value.as_object() else {
        problems.push(format!("{section}: expected {{\"CATEGORY\": [\"PATH\", ...]}}; section ignored"));
        return Vec::new();
    };
    let mut paths = Vec::new();
    for (category, list) in categories {
        let Some(list) = list.as_array() else {
            problems.push(format!("{section}.{category}: expected a list of paths; ignored"));
            continue;
        };
        for item in list {
            match item.as_str() {
                Some(path) => paths.push(path.to_string()),
                None => problems.push(format!("{section}.{category}: {item} is not a path string; ignored")),
            }
        }
    }
    paths
}

fn trim_slashes(path: &str) -> &str {
    path.trim_end_matches('/')
}

fn has_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// The folder a glob starts in: everything before the `/` that precedes the first wildcard.
fn literal_prefix(pattern: &str) -> &str {
    let first_wild = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    pattern[..first_wild].rfind('/').map_or("", |slash| &pattern[..slash])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(include: &[&str], exclude: &[&str]) -> Scope {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (scope, problems) = Scope::from_entries(&own(include), &own(exclude));
        assert!(problems.is_empty(), "{problems:?}");
        scope
    }

    #[test]
    fn a_folder_covers_its_subfolders_and_exclusions_win() {
        let scope = scope(&["/srv/data/"], &["/srv/data/cache"]);
        assert!(scope.contains("/srv/data"));
        assert!(scope.contains("/srv/data/a/b.txt"));
        assert!(!scope.contains("/srv/database/x"), "a prefix of a name is not a folder");
        assert!(!scope.contains("/srv/data/cache/x"));
        assert!(!scope.contains("/srv/data/cache"));
        assert!(scope.contains("/srv/data/cache2/x"));
        assert!(!scope.contains("/etc/passwd"));
        assert_eq!(scope.roots(), [PathBuf::from("/srv/data")]);
    }

    #[test]
    fn globs_match_a_path_or_one_of_its_folders() {
        let scope = scope(&["/home/*/Downloads", "/opt/%%/bin"], &["/home/*/Downloads/*.part"]);
        assert!(scope.contains("/home/alice/Downloads/tool.exe"));
        assert!(scope.contains("/home/alice/Downloads/sub/tool.exe"));
        assert!(!scope.contains("/home/alice/Documents/a"));
        assert!(!scope.contains("/home/a/b/Downloads/x"), "* does not cross a /");
        assert!(!scope.contains("/home/alice/Downloads/file.part"));
        assert!(scope.contains("/opt/x/y/bin/tool"), "%% is **");
        assert_eq!(scope.roots(), [PathBuf::from("/home"), PathBuf::from("/opt")]);
    }

    #[test]
    fn a_lone_star_is_the_whole_system_and_windows_paths_are_reported() {
        let include = serde_json::json!({"all_files": ["*"], "win": ["C:\\Users\\*"]});
        let exclude = serde_json::json!({"noise": ["/proc", 42]});
        let (scope, problems) = Scope::from_sections(Some(&include), Some(&exclude));
        assert!(scope.contains("/anything/at/all"));
        assert!(!scope.contains("/proc/1/status"));
        assert_eq!(scope.roots(), [PathBuf::from("/")]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("C:\\\\Users")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("42")), "{problems:?}");
    }

    #[test]
    fn without_include_paths_the_defaults_apply() {
        let exclude = serde_json::json!({"x": ["/tmp/skip"]});
        let (scope, problems) = Scope::from_sections(None, Some(&exclude));
        assert!(problems.is_empty());
        assert!(scope.contains("/etc/passwd"));
        assert!(scope.contains("/tmp/a"));
        assert!(!scope.contains("/tmp/skip/a"));
        assert!(!scope.contains("/var/log/syslog"));
        assert_eq!(scope.roots().len(), DEFAULT_INCLUDE.len());
    }
}
