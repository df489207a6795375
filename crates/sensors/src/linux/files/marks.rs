//! Which filesystems to mark for a set of folders, and the marks in force.
//!
//! A folder's filesystem is the mount it lies in (it need not exist yet: the mount of its
//! nearest mounted ancestor); the filesystems mounted below it are covered too. Pseudo
//! filesystems (proc, sysfs, cgroup, ...) are skipped. One mark per filesystem, deduplicated
//! by device number; each marked filesystem keeps an open descriptor (its *mount fd*) that
//! `open_by_handle_at` resolves its handles through.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fanotify::{Fanotify, Fsid, fsid_of};

/// Filesystem types with nothing of interest or no file handles.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "pstore",
    "mqueue",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "hugetlbfs",
];

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor`.
    pub device: String,
    /// The folder of the filesystem that is mounted here (`/` for a whole filesystem).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// The mounts of a `/proc/self/mountinfo` text (unparsable lines skipped).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            Some(Mount {
                device: fields.get(2)?.to_string(),
                root: unescape(fields.get(3)?),
                mount_point: unescape(fields.get(4)?),
                fs_type: right.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                out.push(digits.iter().fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_under(path: &Path, folder: &Path) -> bool {
    path.starts_with(folder)
}

/// The filesystems to mark for `folders`, by device, each with the mount point to open: the
/// mount each folder lies in plus every mount below a folder; for a device mounted several
/// times, a mount of its whole filesystem (root `/`) with the shortest mount point.
pub fn plan(folders: &[PathBuf], mounts: &[Mount]) -> BTreeMap<String, PathBuf> {
    let mut wanted: Vec<&Mount> = Vec::new();
    for folder in folders {
        let containing = mounts
            .iter()
            .filter(|m| is_under(folder, Path::new(&m.mount_point)))
            .max_by_key(|m| Path::new(&m.mount_point).components().count());
        wanted.extend(containing);
        wanted.extend(mounts.iter().filter(|m| is_under(Path::new(&m.mount_point), folder)));
    }
    let mut chosen: BTreeMap<String, &Mount> = BTreeMap::new();
    for mount in wanted.into_iter().filter(|m| !PSEUDO_FILESYSTEMS.contains(&m.fs_type.as_str())) {
        // Prefer a whole-filesystem mount, then the shortest path: resolved paths read from it.
        let rank = |m: &Mount| (m.root != "/", m.mount_point.len());
        let all_mounts = mounts.iter().filter(|m| m.device == mount.device);
        let best = all_mounts.min_by_key(|m| rank(m)).unwrap_or(mount);
        chosen.entry(mount.device.clone()).or_insert(best);
    }
    chosen.into_iter().map(|(device, mount)| (device, PathBuf::from(&mount.mount_point))).collect()
}

/// A marked filesystem.
#[derive(Debug)]
pub struct Marked {
    pub fsid: Fsid,
    pub mount_point: PathBuf,
    pub mount_fd: Arc<File>,
}

/// The marks of one fanotify group, by device.
#[derive(Debug, Default)]
pub struct Marks {
    by_device: BTreeMap<String, Marked>,
    /// The plan last applied.
    plan: BTreeMap<String, PathBuf>,
}

impl Marks {
    /// Marks the filesystems of `plan` not marked yet and unmarks those no longer in it (the
    /// others keep their marks, so their events flow on). Returns what failed, one line each.
    pub fn apply(&mut self, fanotify: &Fanotify, plan: &BTreeMap<String, PathBuf>) -> Vec<String> {
        let mut problems = Vec::new();
        self.plan = plan.clone();
        let gone: Vec<String> = self.by_device.keys().filter(|d| !plan.contains_key(*d)).cloned().collect();
        for device in gone {
            if let Some(marked) = self.by_device.remove(&device)
                && let Err(error) = fanotify.unmark_filesystem(marked.mount_fd.as_fd())
            {
                // The filesystem may be unmounted already, which removed the mark with it.
                log::debug!("unmark {}: {error}", marked.mount_point.display());
            }
        }
        for (device, mount_point) in plan {
            if self.by_device.contains_key(device) {
                continue;
            }
            match mark(fanotify, mount_point) {
                Ok(marked) if self.by_device.values().any(|m| m.fsid == marked.fsid) => {
                    // Two devices with one fsid: their handles could not be told apart.
                    let _ = fanotify.unmark_filesystem(marked.mount_fd.as_fd());
                    problems.push(format!(
                        "{}: same filesystem id as another marked filesystem; not watched",
                        mount_point.display()
                    ));
                }
                Ok(marked) => {
                    self.by_device.insert(device.clone(), marked);
                }
                Err(error) => problems.push(format!("{}: {error}", mount_point.display())),
            }
        }
        problems
    }

    /// The plan last applied.
    pub fn plan(&self) -> &BTreeMap<String, PathBuf> {
        &self.plan
    }

    /// fsid -> mount fd, for resolving handles.
    pub fn mount_fds(&self) -> HashMap<Fsid, Arc<File>> {
        self.by_device.values().map(|m| (m.fsid, Arc::clone(&m.mount_fd))).collect()
    }

    pub fn mount_points(&self) -> Vec<PathBuf> {
        self.by_device.values().map(|m| m.mount_point.clone()).collect()
    }
}

fn mark(fanotify: &Fanotify, mount_point: &Path) -> Result<Marked, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(mount_point)
        .map_err(|e| format!("cannot open: {e}"))?;
    let fsid = fsid_of(file.as_fd()).map_err(|e| format!("statfs: {e}"))?;
    fanotify.mark_filesystem(file.as_fd()).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => "fanotify mark refused (needs CAP_SYS_ADMIN: run as root)".to_string(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) | Some(libc::EXDEV) => {
            format!("this filesystem cannot be watched by file handle ({e})")
        }
        _ => format!("fanotify mark: {e}"),
    })?;
    Ok(Marked { fsid, mount_point: mount_point.to_path_buf(), mount_fd: Arc::new(file) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /dev/shm rw - tmpfs tmpfs rw
25 22 0:23 / /home/al\\040ice/mnt rw - tmpfs tmpfs rw
26 22 254:0 /srv/data /data rw - ext4 /dev/vda rw
27 22 0:30 / /data/cache rw - xfs /dev/vdb rw
";

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[3].mount_point, "/home/al ice/mnt");
        assert_eq!(mounts[4].root, "/srv/data");
        assert_eq!(mounts[1].fs_type, "proc");
    }

    #[test]
    fn folders_map_to_their_mount_and_the_mounts_below_them() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let folders = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        let plan_of = |list: &[&str]| -> Vec<(String, String)> {
            plan(&folders(list), &mounts).into_iter().map(|(d, p)| (d, p.display().to_string())).collect()
        };
        assert_eq!(plan_of(&["/etc", "/tmp/not-yet-created"]), [("254:0".to_string(), "/".to_string())]);
        assert_eq!(
            plan_of(&["/home"]),
            [("0:23".to_string(), "/home/al ice/mnt".to_string()), ("254:0".to_string(), "/".to_string())]
        );
        // A bind mount of a folder resolves through the whole-filesystem mount.
        assert_eq!(
            plan_of(&["/data"]),
            [("0:30".to_string(), "/data/cache".to_string()), ("254:0".to_string(), "/".to_string())]
        );
        // The whole system: every real filesystem, not /proc.
        let all = plan_of(&["/"]);
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(!all.iter().any(|(d, _)| d == "0:21"));
    }
}
