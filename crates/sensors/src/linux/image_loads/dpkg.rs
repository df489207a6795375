//! The Linux stand-in for Authenticode in `win_image_load_events`: does an image belong to an
//! installed Debian package, and does its content still match the MD5 that dpkg recorded
//! (`/var/lib/dpkg/info/*.md5sums`)? The index is built on first use and rebuilt when dpkg's
//! database changes (the modification times of `status` and `info/`, looked at every few
//! seconds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the database's modification times are looked at.
const RECHECK: Duration = Duration::from_secs(2);
/// Top-level directories that merged-/usr systems make links into /usr: a package may list
/// `lib/x/libc.so.6` while the kernel names the mapped file `/usr/lib/x/libc.so.6`.
const MERGED_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// What dpkg says about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Listed by `package`; `matches` is whether the file's MD5 is the recorded one (`None`
    /// when the file's MD5 is unknown, e.g. unreadable or over the hashing limit).
    Packaged { package: Arc<str>, matches: Option<bool> },
    /// No installed package lists the file.
    Unpackaged,
    /// There is no dpkg database (not a Debian-like system).
    NoDatabase,
}

impl Verdict {
    /// The `sign_info` text.
    pub fn sign_info(&self) -> String {
        match self {
            Verdict::Packaged { package, matches: Some(true) } => {
                format!("Package: {package} (checksum matches)")
            }
            Verdict::Packaged { package, matches: Some(false) } => {
                format!("Package: {package} (CHECKSUM MISMATCH)")
            }
            Verdict::Packaged { package, matches: None } => {
                format!("Package: {package} (checksum not checked)")
            }
            Verdict::Unpackaged => "Unpackaged".to_string(),
            Verdict::NoDatabase => "No package database".to_string(),
        }
    }

    /// The `trust_info` text: `Trusted` when a package vouches for the exact content,
    /// `Untrusted` when the content differs from its package's or no package lists the file,
    /// `Unknown` when it could not be checked.
    pub fn trust_info(&self) -> &'static str {
        match self {
            Verdict::Packaged { matches: Some(true), .. } => "Trusted",
            Verdict::Packaged { matches: Some(false), .. } | Verdict::Unpackaged => "Untrusted",
            Verdict::Packaged { matches: None, .. } | Verdict::NoDatabase => "Unknown",
        }
    }
}

/// Every file dpkg lists with a checksum (about 100,000 on a desktop-sized system), keyed by a
/// 64-bit hash of its absolute path rather than the path itself: a third of the memory, and a
/// collision among 10^5 paths has a chance near 10^-9.
#[derive(Default)]
struct Files {
    packages: Vec<Arc<str>>,
    /// Path hash -> (index in `packages`, MD5).
    entries: HashMap<u64, (u32, [u8; 16])>,
}

impl Files {
    fn get(&self, path: &str) -> Option<(&Arc<str>, &[u8; 16])> {
        let (package, md5) = self.entries.get(&path_hash(path))?;
        Some((self.packages.get(*package as usize)?, md5))
    }
}

fn path_hash(path: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // DefaultHasher::default has fixed keys: the same path always gives the same hash.
    BuildHasherDefault::<DefaultHasher>::default().hash_one(path)
}

/// Absolute path -> (package, MD5) of every file dpkg lists with a checksum.
pub struct PackageIndex {
    database: PathBuf,
    filesystem_root: PathBuf,
    files: Option<Files>,
    /// Merged directories (`lib` when `/lib` links to `usr/lib`).
    merged: Vec<&'static str>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Option<Instant>,
}

impl Default for PackageIndex {
    fn default() -> PackageIndex {
        PackageIndex::new("/var/lib/dpkg", "/")
    }
}

impl PackageIndex {
    /// The index of the dpkg database in `database` (normally `/var/lib/dpkg`), for the files
    /// under `filesystem_root` (normally `/`). Nothing is read until the first lookup.
    pub fn new(database: impl Into<PathBuf>, filesystem_root: impl Into<PathBuf>) -> PackageIndex {
        PackageIndex {
            database: database.into(),
            filesystem_root: filesystem_root.into(),
            files: None,
            merged: Vec::new(),
            stamp: (None, None),
            checked: None,
        }
    }

    /// What dpkg says of the file at absolute `path` whose MD5 is `md5` (when known).
    pub fn verdict(&mut self, path: &str, md5: Option<&[u8; 16]>) -> Verdict {
        self.refresh();
        let Some(files) = &self.files else {
            return Verdict::NoDatabase;
        };
        let entry = files.get(path).or_else(|| {
            self.merged.iter().find_map(|dir| {
                let other = match path.strip_prefix("/usr") {
                    Some(rest) if rest.strip_prefix('/')?.starts_with(&format!("{dir}/")) => rest.to_string(),
                    _ if path.strip_prefix('/')?.starts_with(&format!("{dir}/")) => format!("/usr{path}"),
                    _ => return None,
                };
                files.get(other.as_str())
            })
        });
        match entry {
            Some((package, recorded)) => {
                Verdict::Packaged { package: Arc::clone(package), matches: md5.map(|md5| md5 == recorded) }
            }
            None => Verdict::Unpackaged,
        }
    }

    /// Builds the index when it is missing or dpkg's database changed.
    fn refresh(&mut self) {
        if self.checked.is_some_and(|at| at.elapsed() < RECHECK) {
            return;
        }
        self.checked = Some(Instant::now());
        let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let stamp = (modified(self.database.join("status")), modified(self.database.join("info")));
        if self.files.is_some() && stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        self.files = read_database(&self.database.join("info"));
        self.merged = MERGED_DIRS
            .into_iter()
            .filter(|dir| {
                std::fs::read_link(self.filesystem_root.join(dir)).is_ok_and(|target| {
                    target == Path::new("usr").join(dir) || target == Path::new("/usr").join(dir)
                })
            })
            .collect();
    }

    /// Files in the index (0 before the first lookup or without a database).
    pub fn len(&self) -> usize {
        self.files.as_ref().map_or(0, |files| files.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every `PACKAGE[:ARCH].md5sums` of dpkg's `info` directory; `None` when it cannot be listed.
fn read_database(info: &Path) -> Option<Files> {
    let mut files = Files::default();
    let mut path = String::new();
    for entry in std::fs::read_dir(info).ok()?.flatten() {
        let name = entry.file_name();
        let Some(package) = name.to_str().and_then(|n| n.strip_suffix(".md5sums")) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let index = u32::try_from(files.packages.len()).ok()?;
        files.packages.push(Arc::from(package.split(':').next().unwrap_or(package)));
        for (md5, relative) in parse_md5sums(&text) {
            path.clear();
            path.push('/');
            path.push_str(relative);
            files.entries.insert(path_hash(&path), (index, md5));
        }
    }
    Some(files)
}

/// `HEX  relative/path` lines; malformed lines are skipped.
pub fn parse_md5sums(text: &str) -> impl Iterator<Item = ([u8; 16], &str)> {
    text.lines().filter_map(|line| {
        let (hex, path) = line.split_once("  ")?;
        Some((parse_md5(hex)?, path.trim_start_matches('/')))
    })
}

/// 32 hex digits as bytes.
pub fn parse_md5(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBC_MD5: &str = "0123456789abcdef0123456789abcdef";

    fn database(dir: &Path) -> PackageIndex {
        let info = dir.join("dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(dir.join("dpkg/status"), "").unwrap();
        std::fs::write(
            info.join("libc6:amd64.md5sums"),
            format!("{LIBC_MD5}  lib/x86_64-linux-gnu/libc.so.6\nnot a line\n"),
        )
        .unwrap();
        std::fs::write(info.join("coreutils.md5sums"), format!("{}  usr/bin/true\n", "f".repeat(32)))
            .unwrap();
        std::fs::write(info.join("coreutils.list"), "/usr/bin/true\n").unwrap();
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        PackageIndex::new(dir.join("dpkg"), root)
    }

    #[test]
    fn verdicts_name_the_package_and_whether_the_checksum_matches() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = database(dir.path());
        let libc_md5 = parse_md5(LIBC_MD5).unwrap();
        // The kernel names the file through the merged /usr; the package lists it under /lib.
        let verdict = index.verdict("/usr/lib/x86_64-linux-gnu/libc.so.6", Some(&libc_md5));
        assert_eq!(verdict.sign_info(), "Package: libc6 (checksum matches)");
        assert_eq!(verdict.trust_info(), "Trusted");
        let verdict = index.verdict("/lib/x86_64-linux-gnu/libc.so.6", Some(&[0; 16]));
        assert_eq!(verdict.sign_info(), "Package: libc6 (CHECKSUM MISMATCH)");
        assert_eq!(verdict.trust_info(), "Untrusted");
        let verdict = index.verdict("/usr/bin/true", None);
        assert_eq!(
            (verdict.sign_info().as_str(), verdict.trust_info()),
            ("Package: coreutils (checksum not checked)", "Unknown")
        );
        let verdict = index.verdict("/bin/true", None);
        assert_eq!(verdict, Verdict::Unpackaged, "/bin is not merged in this root");
        assert_eq!((verdict.sign_info().as_str(), verdict.trust_info()), ("Unpackaged", "Untrusted"));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn the_index_follows_dpkg_changes_and_a_missing_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = database(dir.path());
        assert_eq!(index.verdict("/opt/new", None), Verdict::Unpackaged);
        std::fs::write(dir.path().join("dpkg/info/newpkg.md5sums"), format!("{LIBC_MD5}  opt/new\n"))
            .unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("dpkg/status"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        index.checked = None; // instead of waiting for RECHECK
        assert!(matches!(index.verdict("/opt/new", None), Verdict::Packaged { .. }));
        let mut missing = PackageIndex::new(dir.path().join("nothing"), "/");
        assert_eq!(missing.verdict("/usr/bin/true", None).sign_info(), "No package database");
    }
}
