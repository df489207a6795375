//! `win_msr` on Linux: the registers of [`REGISTERS`] read from `/dev/cpu/N/msr` (the kernel's
//! msr driver; an 8-byte read at offset ADDRESS reads register ADDRESS on processor N), one row
//! per logical processor.
//!
//! Without the device (driver not built or loaded, not an x86 processor) or without the right
//! to open it (root / `CAP_SYS_RAWIO`), the table returns no rows and
//! [`SnapshotTable::availability`] says why. A `processor_number = N` constraint reads only
//! that processor.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use watchpost_catalog::{GenerateError, QueryContext, Row};

use crate::SnapshotTable;
use crate::common::msr::{MsrValues, TABLE};

#[cfg(doc)]
use crate::common::msr::REGISTERS;

/// The `win_msr` snapshot table.
#[derive(Clone, Debug)]
pub struct MsrTable {
    dev_root: PathBuf,
}

impl Default for MsrTable {
    fn default() -> MsrTable {
        MsrTable { dev_root: PathBuf::from("/dev/cpu") }
    }
}

/// Reads one register through an open msr device.
pub fn read_register(device: &File, address: u32) -> Option<u64> {
    let mut bytes = [0u8; 8];
    // The driver answers EIO for a register the processor does not have.
    device.read_exact_at(&mut bytes, u64::from(address)).ok()?;
    Some(u64::from_le_bytes(bytes))
}

impl MsrTable {
    /// Reads `DIR/N/msr` instead of `/dev/cpu/N/msr` (tests).
    pub fn with_dev_root(dev_root: impl Into<PathBuf>) -> MsrTable {
        MsrTable { dev_root: dev_root.into() }
    }

    /// The processors that have an msr device, ascending.
    fn processors(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.dev_root) else { return Vec::new() };
        let mut numbers: Vec<u32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|n: &u32| self.device_path(*n).exists())
            .collect();
        numbers.sort_unstable();
        numbers
    }

    fn device_path(&self, processor: u32) -> PathBuf {
        self.dev_root.join(processor.to_string()).join("msr")
    }

    fn read_processor(&self, processor: u32) -> Option<MsrValues> {
        let device = File::open(self.device_path(processor)).ok()?;
        Some(MsrValues::read_with(processor, |address| read_register(&device, address)))
    }
}

fn unavailable_reason(
    dev_root: &Path,
    processors: &[u32],
    first_open: Option<std::io::Error>,
) -> Option<String> {
    let root = dev_root.display();
    if processors.is_empty() {
        return Some(if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
            format!(
                "no {root}/N/msr device: the kernel's msr driver is not loaded (`modprobe msr`; the kernel \
                 needs CONFIG_X86_MSR)"
            )
        } else {
            format!("no {root}/N/msr device: model-specific registers exist on x86 processors only")
        });
    }
    first_open.map(|e| format!("cannot open {root}/{}/msr: {e} (needs root or CAP_SYS_RAWIO)", processors[0]))
}

impl SnapshotTable for MsrTable {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn availability(&self) -> Result<(), String> {
        let processors = self.processors();
        let first_open = processors.first().and_then(|&n| File::open(self.device_path(n)).err());
        unavailable_reason(&self.dev_root, &processors, first_open).map_or(Ok(()), Err)
    }

    fn generate(&self, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let asked: Vec<u32> =
            context.equals("processor_number").filter_map(|text| text.trim().parse().ok()).collect();
        let mut processors = self.processors();
        if context.equals("processor_number").next().is_some() {
            processors.retain(|n| asked.contains(n));
        }
        processors.into_iter().filter_map(|n| self.read_processor(n)).map(|values| values.to_row()).collect()
    }
}

#[cfg(test)]
mod tests {
    use watchpost_catalog::{Constraint, Op, Value};

    use super::*;
    use crate::catalog_table;
    use crate::common::msr::{IA32_MISC_ENABLE, MSR_PKG_POWER_LIMIT, MSR_TURBO_RATIO_LIMIT};

    /// A stand-in for /dev/cpu: files the size of the register space with recorded values at
    /// their addresses (an 8-byte read at offset ADDRESS works on a file just as on the device).
    fn fake_devices(processors: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..processors {
            std::fs::create_dir(dir.path().join(n.to_string())).unwrap();
            let file = File::create(dir.path().join(n.to_string()).join("msr")).unwrap();
            let turbo_off = if n == 1 { 1u64 << 38 } else { 0 };
            file.write_all_at(&(0x0085_0089 | turbo_off).to_le_bytes(), IA32_MISC_ENABLE.into()).unwrap();
            file.write_all_at(&0x2A2A_2C2Cu64.to_le_bytes(), MSR_TURBO_RATIO_LIMIT.into()).unwrap();
            // The last register: the file ends right after it, so a read past it fails.
            file.write_all_at(&0x8042_81D0_00DD_8190u64.to_le_bytes(), MSR_PKG_POWER_LIMIT.into()).unwrap();
        }
        dir
    }

    fn column(row: &Row, name: &str) -> Value {
        row[catalog_table(TABLE).unwrap().column_index(name).unwrap()].clone()
    }

    #[test]
    fn one_row_per_processor_from_the_devices() {
        let dir = fake_devices(2);
        let table = MsrTable::with_dev_root(dir.path());
        assert_eq!(table.availability(), Ok(()));
        let rows = table.generate(&QueryContext::default()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(column(&rows[0], "processor_number"), Value::Integer(0));
        assert_eq!(column(&rows[0], "turbo_disabled"), Value::Integer(0));
        assert_eq!(column(&rows[1], "turbo_disabled"), Value::Integer(1));
        assert_eq!(column(&rows[1], "turbo_ratio_limit"), Value::Integer(0x2A2A_2C2C));
        assert_eq!(column(&rows[1], "rapl_power_limit").as_i64().unwrap() as u64, 0x8042_81D0_00DD_8190);
        // Beyond the end of the file: like a register the processor lacks.
        assert_eq!(column(&rows[1], "rapl_energy_status"), Value::Null);
        assert_eq!(column(&rows[1], "rapl_power_units"), Value::Integer(0));
    }

    #[test]
    fn a_processor_number_constraint_reads_one_processor() {
        let dir = fake_devices(3);
        let context = QueryContext {
            constraints: vec![Constraint { column: "processor_number".into(), op: Op::Eq, expr: "2".into() }],
            columns_used: None,
        };
        let rows = MsrTable::with_dev_root(dir.path()).generate(&context).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(column(&rows[0], "processor_number"), Value::Integer(2));
    }

    #[test]
    fn without_devices_there_are_no_rows_and_availability_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let table = MsrTable::with_dev_root(dir.path());
        assert!(table.generate(&QueryContext::default()).unwrap().is_empty());
        let reason = table.availability().unwrap_err();
        assert!(reason.contains("msr"), "{reason}");
    }

    #[test]
    fn this_machine_reports_what_it_has() {
        let table = MsrTable::default();
        let rows = table.generate(&QueryContext::default()).unwrap();
        match table.availability() {
            // PLATFORM-NOTES: our machines have no msr driver.
            Err(reason) => {
                println!("win_msr unavailable here: {reason}");
                assert!(rows.is_empty());
            }
            Ok(()) => assert!(!rows.is_empty()),
        }
    }
}
