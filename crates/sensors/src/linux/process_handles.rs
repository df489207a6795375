//! `win_process_handles` on Linux: the open file descriptors of every process, from
//! `/proc/PID/fd` (what each one refers to) and `/proc/PID/fdinfo` (its open flags).
//!
//! Columns:
//! - `handle_type`: what the descriptor refers to, see [`classify`]: `file`, `directory`,
//!   `device`, `socket`, `pipe`, `memfd`, `namespace`, `anon_inode:KIND` (e.g.
//!   `anon_inode:eventfd`), or the prefix of any other `prefix:[...]` link;
//! - `object_name`: the link target as `readlink` shows it (`/var/log/syslog`,
//!   `socket:[12345]`, `anon_inode:[eventfd]`, `/tmp/x (deleted)`);
//! - `access_mask`: the `flags:` of fdinfo, the octal open flags (`O_RDWR | O_CLOEXEC | ...`)
//!   as an integer;
//! - `process_guid`: [`process_guid`] of the process.
//!
//! A `pid = N` constraint reads only that process. Processes and descriptors that vanish during
//! the scan are skipped: that is normal on a live system.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use watchpost_catalog::{GenerateError, QueryContext, Row, Value};

use super::process::{process_guid, read_stat, wanted_pids};
use crate::{SnapshotTable, snapshot_columns};

pub const TABLE: &str = "win_process_handles";

/// The `win_process_handles` snapshot table.
#[derive(Clone, Debug)]
pub struct ProcessHandles {
    proc_root: PathBuf,
}

impl Default for ProcessHandles {
    fn default() -> ProcessHandles {
        ProcessHandles { proc_root: PathBuf::from("/proc") }
    }
}

/// One open descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    pub fd: u32,
    pub handle_type: String,
    pub object_name: String,
    pub access_mask: Option<i64>,
}

/// The `handle_type` of a descriptor whose link reads `target`. `file_type` is what `stat`
/// through the descriptor said, when it could be asked (a deleted file cannot).
pub fn classify(target: &str, file_type: Option<std::fs::FileType>) -> String {
    if let Some(kind) = target.strip_prefix("anon_inode:") {
        return format!("anon_inode:{}", kind.trim_start_matches('[').trim_end_matches(']'));
    }
    if target.starts_with("/memfd:") {
        return "memfd".into();
    }
    if target.starts_with('/') {
        return match file_type {
            Some(t) if t.is_char_device() || t.is_block_device() => "device".into(),
            Some(t) if t.is_dir() => "directory".into(),
            Some(t) if t.is_fifo() => "pipe".into(),
            Some(t) if t.is_socket() => "socket".into(),
            _ => "file".into(),
        };
    }
    // `socket:[123]`, `pipe:[123]`, `net:[4026531840]` and the other namespaces, ...
    match target.split_once(":[") {
        Some(("socket", _)) => "socket".into(),
        Some(("pipe", _)) => "pipe".into(),
        Some(("cgroup" | "ipc" | "mnt" | "net" | "pid" | "time" | "user" | "uts", _)) => "namespace".into(),
        Some((prefix, _)) => prefix.to_string(),
        None => "unknown".into(),
    }
}

/// The `flags:` line of a `/proc/PID/fdinfo/N` text (octal), as a number.
pub fn parse_fdinfo_flags(fdinfo: &str) -> Option<i64> {
    let value = fdinfo.lines().find_map(|line| line.strip_prefix("flags:"))?;
    i64::from_str_radix(value.trim(), 8).ok()
}

/// The descriptors of one process; `None` when the process is gone or its descriptors cannot be
/// listed.
pub fn read_handles(proc_root: &Path, pid: u32) -> Option<Vec<Handle>> {
    let process_dir = proc_root.join(pid.to_string());
    let fd_dir = process_dir.join("fd");
    let mut fds: Vec<u32> = std::fs::read_dir(&fd_dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let handles = fds
        .into_iter()
        .filter_map(|fd| {
            let link = fd_dir.join(fd.to_string());
            // Closed since the listing: skip.
            let target = std::fs::read_link(&link).ok()?;
            let target = target.to_string_lossy().into_owned();
            let file_type = std::fs::metadata(&link).ok().map(|m| m.file_type());
            let fdinfo = std::fs::read_to_string(process_dir.join("fdinfo").join(fd.to_string())).ok();
            Some(Handle {
                fd,
                handle_type: classify(&target, file_type),
                object_name: target,
                access_mask: fdinfo.as_deref().and_then(parse_fdinfo_flags),
            })
        })
        .collect();
    Some(handles)
}

impl ProcessHandles {
    /// Reads processes under `proc_root` instead of `/proc` (tests).
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> ProcessHandles {
        ProcessHandles { proc_root: proc_root.into() }
    }
}

impl SnapshotTable for ProcessHandles {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn generate(&self, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let (table, [pid_at, guid_at, type_at, name_at, mask_at]) =
            snapshot_columns(TABLE, ["pid", "process_guid", "handle_type", "object_name", "access_mask"])?;
        let mut rows = Vec::new();
        for pid in wanted_pids(context, &self.proc_root, TABLE)? {
            let Some(stat) = read_stat(&self.proc_root, pid) else { continue };
            let Some(handles) = read_handles(&self.proc_root, pid) else { continue };
            let guid = process_guid(pid, stat.start_time);
            for handle in handles {
                let mut row = vec![Value::Null; table.columns.len()];
                row[pid_at] = Value::from(pid);
                row[guid_at] = Value::from(guid.as_str());
                row[type_at] = Value::from(handle.handle_type);
                row[name_at] = Value::from(handle.object_name);
                row[mask_at] = Value::from(handle.access_mask);
                rows.push(row);
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use watchpost_catalog::{Constraint, Op};

    use super::*;
    use crate::catalog_table;

    fn pid_query(pid: u32) -> QueryContext {
        QueryContext {
            constraints: vec![Constraint { column: "pid".into(), op: Op::Eq, expr: pid.to_string() }],
            columns_used: None,
        }
    }

    fn column(row: &Row, name: &str) -> Value {
        let table = catalog_table(TABLE).unwrap();
        row[table.column_index(name).unwrap()].clone()
    }

    #[test]
    fn link_targets_are_classified() {
        assert_eq!(classify("socket:[12345]", None), "socket");
        assert_eq!(classify("pipe:[777]", None), "pipe");
        assert_eq!(classify("anon_inode:[eventfd]", None), "anon_inode:eventfd");
        assert_eq!(classify("anon_inode:inotify", None), "anon_inode:inotify");
        assert_eq!(classify("net:[4026531840]", None), "namespace");
        assert_eq!(classify("/memfd:wayland (deleted)", None), "memfd");
        assert_eq!(classify("/tmp/gone (deleted)", None), "file");
        let dev_null = std::fs::metadata("/dev/null").unwrap().file_type();
        assert_eq!(classify("/dev/null", Some(dev_null)), "device");
        let dir = std::fs::metadata("/").unwrap().file_type();
        assert_eq!(classify("/", Some(dir)), "directory");
    }

    #[test]
    fn fdinfo_flags_are_octal() {
        let fdinfo = "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t5\n";
        // O_CLOEXEC | O_LARGEFILE | O_RDWR
        assert_eq!(parse_fdinfo_flags(fdinfo), Some(0o2100002));
        assert_eq!(parse_fdinfo_flags("pos: 0\n"), None);
    }

    #[test]
    fn own_descriptors_are_reported_with_their_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handle-test.txt");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let (socket, _peer) = UnixStream::pair().unwrap();
        let pid = std::process::id();

        let rows = ProcessHandles::default().generate(&pid_query(pid)).unwrap();
        assert!(rows.iter().all(|row| column(row, "pid") == Value::Integer(pid.into())));
        let own_stat = read_stat(Path::new("/proc"), pid).unwrap();
        let guid = process_guid(pid, own_stat.start_time);
        assert!(rows.iter().all(|row| column(row, "process_guid") == Value::from(guid.as_str())));

        let file_row = rows
            .iter()
            .find(|row| column(row, "object_name") == Value::from(path.to_str().unwrap()))
            .expect("the open temp file is listed");
        assert_eq!(column(file_row, "handle_type"), Value::from("file"));
        let mask = column(file_row, "access_mask").as_i64().unwrap();
        assert_eq!(mask & libc::O_ACCMODE as i64, libc::O_WRONLY as i64, "opened write-only: {mask:o}");
        assert_ne!(mask & libc::O_APPEND as i64, 0, "opened for append: {mask:o}");

        assert!(rows.iter().any(|row| column(row, "handle_type") == Value::from("socket")
            && column(row, "object_name").as_str().is_some_and(|name| name.starts_with("socket:["))));
        drop((file, socket));
    }

    #[test]
    fn a_pid_that_does_not_exist_gives_no_rows() {
        let rows = ProcessHandles::default().generate(&pid_query(u32::MAX - 1)).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn a_full_scan_includes_other_processes() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let rows = ProcessHandles::default().generate(&QueryContext::default()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let pids: std::collections::BTreeSet<i64> =
            rows.iter().filter_map(|row| column(row, "pid").as_i64()).collect();
        assert!(pids.contains(&i64::from(child.id())), "the child's stdin/stdout are listed");
        assert!(pids.contains(&i64::from(std::process::id())));
    }
}
