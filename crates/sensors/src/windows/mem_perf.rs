//! `win_mem_perf` on Windows, from `GlobalMemoryStatusEx`, as the original did. All sizes in
//! bytes.

use watchpost_catalog::GenerateError;
use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};

use crate::common::mem_perf::{MemoryStatus, TABLE};

/// Reads the live figures.
pub fn read_memory_status() -> Result<MemoryStatus, GenerateError> {
    // SAFETY: MEMORYSTATUSEX is plain data (integers only), so all-zero is a valid value.
    let mut status: MEMORYSTATUSEX = unsafe { std::mem::zeroed() };
    status.dwLength = std::mem::size_of::<MEMORYSTATUSEX>() as u32;
    // SAFETY: `status` is a valid, writable MEMORYSTATUSEX with dwLength set, as the API requires.
    if unsafe { GlobalMemoryStatusEx(&mut status) } == 0 {
        return Err(GenerateError::Unavailable {
            table: TABLE.to_string(),
            reason: format!("GlobalMemoryStatusEx failed: {}", std::io::Error::last_os_error()),
        });
    }
    Ok(MemoryStatus {
        physical_memory_load: status.dwMemoryLoad,
        total_physical: status.ullTotalPhys,
        available_physical: status.ullAvailPhys,
        total_pagefile: status.ullTotalPageFile,
        available_pagefile: status.ullAvailPageFile,
        total_virtual: status.ullTotalVirtual,
        available_virtual: status.ullAvailVirtual,
        available_extended_memory: status.ullAvailExtendedVirtual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_catalog::QueryContext;

    use crate::SnapshotTable;
    use crate::common::mem_perf::MemPerf;

    #[test]
    fn live_values_are_consistent() {
        let rows = MemPerf.generate(&QueryContext::default()).unwrap();
        assert_eq!(rows.len(), 1);
        let table = watchpost_catalog::catalog().table(TABLE).unwrap();
        let value = |column: &str| rows[0][table.column_index(column).unwrap()].as_i64().unwrap();
        assert!((0..=100).contains(&value("physical_memory_load")));
        assert!(value("total_physical") > 0);
        assert!(value("available_physical") <= value("total_physical"));
        assert!(value("available_pagefile") <= value("total_pagefile"));
        assert!(value("total_virtual") > 0);
        assert!(value("available_virtual") <= value("total_virtual"));
    }
}
