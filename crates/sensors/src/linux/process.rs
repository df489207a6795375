//! What the process tables share: listing `/proc`, parsing `/proc/PID/stat`, and
//! [`process_guid`], the stable id of one process instance that every sensor reports.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use watchpost_catalog::{GenerateError, QueryContext};

/// The fields of `/proc/PID/stat` the tables use. Times are in clock ticks
/// ([`clock_ticks_per_second`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// `comm`: the executable name, at most 15 bytes.
    pub comm: String,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    /// The kernel's priority: `20 + nice` for normal processes, `-1 - rt_priority` for real-time.
    pub priority: i64,
    pub nice: i64,
    pub num_threads: u64,
    /// When the process started, in ticks since boot.
    pub start_time: u64,
}

/// `/proc/PID/stat` is not in the expected form.
#[derive(Debug, thiserror::Error)]
#[error("/proc/PID/stat: cannot read field {field} from {text:?}")]
pub struct StatError {
    field: &'static str,
    text: String,
}

/// Parses `/proc/PID/stat`. `comm` may contain spaces and parentheses, so the fields after it are
/// found from the LAST `)`.
pub fn parse_stat(text: &str) -> Result<ProcStat, StatError> {
    let error = |field| StatError { field, text: text.chars().take(200).collect() };
    let open = text.find('(').ok_or_else(|| error("comm"))?;
    let close = text.rfind(')').ok_or_else(|| error("comm"))?;
    if close < open {
        return Err(error("comm"));
    }
    let pid = text[..open].trim().parse().map_err(|_| error("pid"))?;
    let comm = text[open + 1..close].to_string();
    // Index 0 is field 3 (`state`) of proc(5).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |index: usize, name: &'static str| rest.get(index).copied().ok_or_else(|| error(name));
    let unsigned = |index, name| field(index, name)?.parse::<u64>().map_err(|_| error(name));
    let signed = |index, name| field(index, name)?.parse::<i64>().map_err(|_| error(name));
    Ok(ProcStat {
        pid,
        comm,
        ppid: field(1, "ppid")?.parse().map_err(|_| error("ppid"))?,
        utime: unsigned(11, "utime")?,
        stime: unsigned(12, "stime")?,
        priority: signed(15, "priority")?,
        nice: signed(16, "nice")?,
        num_threads: unsigned(17, "num_threads")?,
        start_time: unsigned(19, "starttime")?,
    })
}

/// Reads and parses `/proc/PID/stat`; `None` when the process is gone (or was never there).
pub fn read_stat(proc_root: &Path, pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text).ok()
}

/// The pids of all processes (thread group leaders) under `proc_root`, ascending.
pub fn list_pids(proc_root: &Path) -> Result<Vec<u32>, std::io::Error> {
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The processes a query asks for: the values of its `pid = N` constraints, or all of them.
/// A value that is not a pid matches no process (the SQL engine re-checks the rows anyway).
pub fn wanted_pids(context: &QueryContext, proc_root: &Path, table: &str) -> Result<Vec<u32>, GenerateError> {
    let asked: Vec<&str> = context.equals("pid").collect();
    if asked.is_empty() {
        return list_pids(proc_root).map_err(|e| GenerateError::Unavailable {
            table: table.to_string(),
            reason: format!("cannot list {}: {e}", proc_root.display()),
        });
    }
    let set: BTreeSet<u32> = asked.iter().filter_map(|text| text.trim().parse().ok()).collect();
    Ok(set.into_iter().collect())
}

/// Clock ticks per second (`USER_HZ`), the unit of the times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // SAFETY: sysconf only reads a constant of the C library.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // Linux has used 100 on every architecture for decades; -1 (unknown) is not expected.
        u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
    })
}

/// Seconds since boot on the clock `/proc/PID/stat`'s start times count on (`CLOCK_BOOTTIME`).
pub fn seconds_since_boot() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec the call writes into.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

/// This boot's random id (`/proc/sys/kernel/random/boot_id`), read once.
pub fn boot_id() -> u128 {
    static BOOT_ID: OnceLock<u128> = OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|text| parse_boot_id(&text))
            .unwrap_or(0)
    })
}

/// `6f2a1b8e-3c4d-4e5f-8a9b-0c1d2e3f4a5b` as a number.
pub fn parse_boot_id(text: &str) -> Option<u128> {
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    (hex.len() == 32).then(|| u128::from_str_radix(&hex, 16).ok()).flatten()
}

/// The GUID-like id of one process instance on this host, unique across pid reuse and reboots,
/// and the same whichever sensor computes it:
///
/// `PPPPPPPP-SSSS-SSSS-SSSS-BBBBBBBBBBBB`
/// - `P`: the pid (32 bits, hex);
/// - `S`: the start time from `/proc/PID/stat` field 22, in clock ticks since boot (48 bits,
///   enough for 89,000 years at 100 Hz);
/// - `B`: the first 48 bits of this boot's `boot_id`, so ids of different boots differ.
///
/// The pid and start time are readable from the id on purpose (they help when investigating).
pub fn process_guid(pid: u32, start_time: u64) -> String {
    format_process_guid(boot_id(), pid, start_time)
}

/// [`process_guid`] for a given boot id.
pub fn format_process_guid(boot_id: u128, pid: u32, start_time: u64) -> String {
    // Formatted for every exec and fork: 16 bytes (pid, the start time's low 48 bits, the boot
    // id's high 48 bits) in upper-case hex, grouped 8-4-4-4-12. `write!` with width and radix
    // took a quarter of the process sensor's time under an exec storm.
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&pid.to_be_bytes());
    bytes[4..10].copy_from_slice(&start_time.to_be_bytes()[2..]);
    bytes[10..].copy_from_slice(&boot_id.to_be_bytes()[..6]);
    let mut digits = [0u8; 32];
    // 16 bytes always fit 32 digits.
    let _ = hex::encode_to_slice(bytes, &mut digits);
    digits.make_ascii_uppercase();
    let mut guid = String::with_capacity(36);
    for (n, group) in [&digits[..8], &digits[8..12], &digits[12..16], &digits[16..20], &digits[20..]]
        .into_iter()
        .enumerate()
    {
        if n > 0 {
            guid.push('-');
        }
        guid.extend(group.iter().map(|&digit| char::from(digit)));
    }
    guid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from a process whose name has a space and a parenthesis.
    const STAT: &str = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 1520 0 3 0 57 21 0 0 20 0 3 0 \
                        123456 9502720 1234 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_found_after_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 4242,
                comm: "my (odd) prog".into(),
                ppid: 1,
                utime: 57,
                stime: 21,
                priority: 20,
                nice: 0,
                num_threads: 3,
                start_time: 123_456,
            }
        );
        assert!(parse_stat("4242 (truncated) S 1").is_err());
    }

    #[test]
    fn process_guid_shows_pid_start_time_and_boot() {
        let boot = parse_boot_id("6f2a1b8e-3c4d-4e5f-8a9b-0c1d2e3f4a5b\n").unwrap();
        let guid = format_process_guid(boot, 4242, 123_456);
        assert_eq!(guid, "00001092-0000-0001-E240-6F2A1B8E3C4D");
        // Same pid, other start time (pid reuse) or other boot: other id.
        assert_ne!(format_process_guid(boot, 4242, 123_457), guid);
        assert_ne!(format_process_guid(boot ^ (1 << 127), 4242, 123_456), guid);
        assert!(guid.parse::<watchpost_catalog::Eid>().is_ok(), "GUID-like: {guid}");
    }

    #[test]
    fn live_boot_id_and_own_stat_are_read() {
        assert_ne!(boot_id(), 0);
        let own = read_stat(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(own.pid, std::process::id());
        assert!(own.num_threads >= 1);
        assert!(list_pids(Path::new("/proc")).unwrap().contains(&std::process::id()));
        let guid = process_guid(own.pid, own.start_time);
        assert!(guid.starts_with(&format!("{:08X}-", own.pid)), "{guid}");
    }
}
