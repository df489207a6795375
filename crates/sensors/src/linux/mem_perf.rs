//! `win_mem_perf` on Linux, from `/proc/meminfo` and `/proc/self/status`.
//!
//! The Windows original reports `GlobalMemoryStatusEx`; the Linux counterparts, all in BYTES:
//! - `physical_memory_load`: `100 * (MemTotal - MemAvailable) / MemTotal`, rounded;
//! - `total_physical` / `available_physical`: `MemTotal` / `MemAvailable`;
//! - `total_pagefile`: `CommitLimit` (RAM plus swap, under the overcommit ratio);
//! - `available_pagefile`: `CommitLimit - Committed_AS`, or 0 when overcommitted;
//! - `total_virtual`: the user-mode address space of a process, see [`USER_ADDRESS_SPACE`];
//! - `available_virtual`: that minus the agent's own `VmSize`;
//! - `available_extended_memory`: 0, as on Windows.

use watchpost_catalog::GenerateError;

use crate::common::mem_perf::{MemoryStatus, TABLE};

/// Bytes of user-mode virtual address space of a process (the kernel's `TASK_SIZE`).
/// x86_64: 0x7FFF_FFFF_F000 (128 TiB - 4 KiB, 4-level paging; with 5-level paging the kernel
/// hands out higher addresses only on request). aarch64: 256 TiB (48-bit VA, the common kernel
/// configuration). Other 64-bit targets: 128 TiB. 32-bit targets: 3 GiB (the usual 3G/1G split).
#[cfg(target_arch = "x86_64")]
pub const USER_ADDRESS_SPACE: u64 = 0x7FFF_FFFF_F000;
#[cfg(target_arch = "aarch64")]
pub const USER_ADDRESS_SPACE: u64 = 1 << 48;
#[cfg(all(target_pointer_width = "64", not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
pub const USER_ADDRESS_SPACE: u64 = 1 << 47;
#[cfg(target_pointer_width = "32")]
pub const USER_ADDRESS_SPACE: u64 = 0xC000_0000;

/// The `/proc/meminfo` figures the table needs, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total: u64,
    pub mem_available: u64,
    pub commit_limit: u64,
    pub committed_as: u64,
}

/// `/proc` text lacks a field or is not in the expected form.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{file} has no {field} line")]
    Missing { file: &'static str, field: &'static str },
    #[error("{file}: cannot read {field} from {line:?} (expected `{field}: <number> kB`)")]
    Malformed { file: &'static str, field: &'static str, line: String },
}

/// Parses `/proc/meminfo`. Kernels before 3.14 have no `MemAvailable`; then it is estimated as
/// `MemFree + Buffers + Cached`.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let field = |name: &'static str| kilobytes_field(FILE, text, name);
    let required = |name: &'static str| field(name)?.ok_or(ParseError::Missing { file: FILE, field: name });
    let mem_available = match field("MemAvailable")? {
        Some(available) => available,
        None => required("MemFree")? + field("Buffers")?.unwrap_or(0) + field("Cached")?.unwrap_or(0),
    };
    Ok(MemInfo {
        mem_total: required("MemTotal")?,
        mem_available,
        commit_limit: required("CommitLimit")?,
        committed_as: required("Committed_AS")?,
    })
}

/// The `VmSize` of a `/proc/PID/status` text, in bytes.
pub fn parse_vm_size(status: &str) -> Result<u64, ParseError> {
    const FILE: &str = "/proc/self/status";
    kilobytes_field(FILE, status, "VmSize")?.ok_or(ParseError::Missing { file: FILE, field: "VmSize" })
}

/// The value of a `Name:   1234 kB` line, in bytes; `None` when there is no such line.
fn kilobytes_field(file: &'static str, text: &str, field: &'static str) -> Result<Option<u64>, ParseError> {
    let Some(line) = text.lines().find(|line| line.split(':').next() == Some(field)) else {
        return Ok(None);
    };
    let malformed = || ParseError::Malformed { file, field, line: line.to_string() };
    let mut words = line[field.len() + 1..].split_whitespace();
    let number: u64 = words.next().and_then(|n| n.parse().ok()).ok_or_else(malformed)?;
    match words.next() {
        Some("kB") => number.checked_mul(1024).map(Some).ok_or_else(malformed),
        // Fields without a unit are counts, not sizes: not what was asked for.
        _ => Err(malformed()),
    }
}

/// The table's figures from the parsed `/proc` values.
pub fn memory_status(meminfo: &MemInfo, own_vm_size: u64) -> MemoryStatus {
    let total = meminfo.mem_total;
    let available = meminfo.mem_available.min(total);
    let load = if total == 0 {
        0
    } else {
        ((u128::from(total - available) * 100 + u128::from(total / 2)) / u128::from(total)) as u32
    };
    MemoryStatus {
        physical_memory_load: load,
        total_physical: total,
        available_physical: available,
        total_pagefile: meminfo.commit_limit,
        available_pagefile: meminfo.commit_limit.saturating_sub(meminfo.committed_as),
        total_virtual: USER_ADDRESS_SPACE,
        available_virtual: USER_ADDRESS_SPACE.saturating_sub(own_vm_size),
        available_extended_memory: 0,
    }
}

/// Reads the live figures.
pub fn read_memory_status() -> Result<MemoryStatus, GenerateError> {
    let unavailable = |reason: String| GenerateError::Unavailable { table: TABLE.to_string(), reason };
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|e| unavailable(format!("cannot read {path}: {e}")))
    };
    let meminfo = parse_meminfo(&read("/proc/meminfo")?).map_err(|e| unavailable(e.to_string()))?;
    let vm_size = parse_vm_size(&read("/proc/self/status")?).map_err(|e| unavailable(e.to_string()))?;
    Ok(memory_status(&meminfo, vm_size))
}

#[cfg(test)]
mod tests {
    use watchpost_catalog::Value;

    use super::*;
    use watchpost_catalog::QueryContext;

    use crate::SnapshotTable;
    use crate::common::mem_perf::MemPerf;

    /// Recorded on a Debian 12 VM (kernel 6.x).
    const MEMINFO: &str = "\
MemTotal:        4010256 kB
MemFree:          612340 kB
MemAvailable:    2890112 kB
Buffers:          120884 kB
Cached:          2201048 kB
SwapCached:            0 kB
Active:          1710968 kB
Inactive:        1332876 kB
SwapTotal:       1048572 kB
SwapFree:        1048572 kB
Dirty:               312 kB
CommitLimit:     3053700 kB
Committed_AS:    2456124 kB
VmallocTotal:   34359738367 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn meminfo_values_become_bytes() {
        let info = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(
            info,
            MemInfo {
                mem_total: 4_010_256 * 1024,
                mem_available: 2_890_112 * 1024,
                commit_limit: 3_053_700 * 1024,
                committed_as: 2_456_124 * 1024,
            }
        );
    }

    #[test]
    fn status_follows_the_documented_formulas() {
        let info = parse_meminfo(MEMINFO).unwrap();
        let status = memory_status(&info, 100 * 1024 * 1024);
        // (4010256 - 2890112) / 4010256 = 27.93 %
        assert_eq!(status.physical_memory_load, 28);
        assert_eq!(status.total_physical, 4_010_256 * 1024);
        assert_eq!(status.available_physical, 2_890_112 * 1024);
        assert_eq!(status.total_pagefile, 3_053_700 * 1024);
        assert_eq!(status.available_pagefile, (3_053_700 - 2_456_124) * 1024);
        assert_eq!(status.total_virtual, USER_ADDRESS_SPACE);
        assert_eq!(status.available_virtual, USER_ADDRESS_SPACE - 100 * 1024 * 1024);
        assert_eq!(status.available_extended_memory, 0);
    }

    #[test]
    fn overcommitted_pagefile_is_zero_not_negative() {
        let info = MemInfo { mem_total: 100, mem_available: 0, commit_limit: 10, committed_as: 50 };
        let status = memory_status(&info, 0);
        assert_eq!(status.available_pagefile, 0);
        assert_eq!(status.physical_memory_load, 100);
    }

    #[test]
    fn old_kernels_without_memavailable_get_an_estimate() {
        let text = MEMINFO.replace("MemAvailable:    2890112 kB\n", "");
        let info = parse_meminfo(&text).unwrap();
        assert_eq!(info.mem_available, (612_340 + 120_884 + 2_201_048) * 1024);
    }

    #[test]
    fn broken_input_is_an_error_that_names_the_field() {
        let missing = parse_meminfo("MemTotal: 5 kB\nMemAvailable: 3 kB\n").unwrap_err().to_string();
        assert!(missing.contains("CommitLimit"), "{missing}");
        let malformed = parse_meminfo(&MEMINFO.replace("4010256 kB", "lots")).unwrap_err().to_string();
        assert!(malformed.contains("MemTotal"), "{malformed}");
        // A field whose name only starts like the wanted one is not it.
        assert!(parse_vm_size("VmSizeX: 4 kB\n").is_err());
        assert_eq!(parse_vm_size("Name:\tx\nVmSize:\t  2048 kB\n").unwrap(), 2048 * 1024);
    }

    #[test]
    fn live_row_matches_proc_meminfo() {
        let rows = MemPerf.generate(&QueryContext::default()).unwrap();
        assert_eq!(rows.len(), 1);
        let table = watchpost_catalog::catalog().table(TABLE).unwrap();
        let value = |column: &str| rows[0][table.column_index(column).unwrap()].as_i64().unwrap();

        // MemTotal read independently of the parser.
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let mem_total_kb: i64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(value("total_physical"), mem_total_kb * 1024);

        assert!((0..=100).contains(&value("physical_memory_load")));
        assert!(value("available_physical") <= value("total_physical"));
        assert!(value("available_physical") > 0);
        assert!(value("available_pagefile") <= value("total_pagefile"));
        assert!(value("available_virtual") < value("total_virtual"));
        assert_eq!(value("total_virtual"), USER_ADDRESS_SPACE as i64);
        assert_eq!(rows[0][table.column_index("available_extended_memory").unwrap()], Value::Integer(0));
    }
}
