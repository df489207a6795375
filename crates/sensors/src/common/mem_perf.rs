//! The `win_mem_perf` row, shared by the platform implementations that fill it.

use watchpost_catalog::{GenerateError, QueryContext, Row, Value};

#[cfg(target_os = "linux")]
use crate::linux::mem_perf::read_memory_status;
#[cfg(windows)]
use crate::windows::mem_perf::read_memory_status;
use crate::{SnapshotTable, catalog_table};

pub const TABLE: &str = "win_mem_perf";

/// System memory figures as `GlobalMemoryStatusEx` reports them. All sizes in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStatus {
    /// Percent of physical memory in use, 0..=100.
    pub physical_memory_load: u32,
    pub total_physical: u64,
    pub available_physical: u64,
    /// Commit limit: physical memory plus page file / swap.
    pub total_pagefile: u64,
    pub available_pagefile: u64,
    /// User-mode virtual address space of a process.
    pub total_virtual: u64,
    /// Of that, what the agent process has not reserved.
    pub available_virtual: u64,
    /// Reserved by Windows, always 0.
    pub available_extended_memory: u64,
}

impl MemoryStatus {
    /// The table row, values in catalog column order.
    pub fn to_row(&self) -> Result<Row, GenerateError> {
        let table = catalog_table(TABLE).map_err(|e| GenerateError::Internal(e.to_string()))?;
        let mut row = vec![Value::Null; table.columns.len()];
        let values: [(&str, Value); 8] = [
            ("physical_memory_load", self.physical_memory_load.into()),
            ("total_physical", self.total_physical.into()),
            ("available_physical", self.available_physical.into()),
            ("total_pagefile", self.total_pagefile.into()),
            ("available_pagefile", self.available_pagefile.into()),
            ("total_virtual", self.total_virtual.into()),
            ("available_virtual", self.available_virtual.into()),
            ("available_extended_memory", self.available_extended_memory.into()),
        ];
        for (column, value) in values {
            let index = table
                .column_index(column)
                .ok_or_else(|| GenerateError::Internal(format!("{TABLE} has no column {column}")))?;
            row[index] = value;
        }
        Ok(row)
    }
}

/// The `win_mem_perf` snapshot table, filled by the platform's `read_memory_status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemPerf;

impl SnapshotTable for MemPerf {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn generate(&self, _context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        Ok(vec![read_memory_status()?.to_row()?])
    }
}
