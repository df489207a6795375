//! The `win_msr` row: which model-specific registers are read and how they become columns.
//! Reading them is platform code (`/dev/cpu/N/msr` on Linux).
//!
//! Every column but `turbo_disabled` is the register's raw 64-bit value, as a signed BIGINT
//! (osquery's integers are signed): a register with bit 63 set, such as a locked
//! `MSR_PKG_POWER_LIMIT`, shows as a negative number whose bits are the register's. A register
//! the processor does not have (the read fails) is NULL.

use watchpost_catalog::{GenerateError, Row, Value};

use crate::snapshot_columns;

pub const TABLE: &str = "win_msr";

pub const IA32_MISC_ENABLE: u32 = 0x1A0;
pub const MSR_TURBO_RATIO_LIMIT: u32 = 0x1AD;
pub const MSR_PLATFORM_INFO: u32 = 0xCE;
pub const IA32_PERF_STATUS: u32 = 0x198;
pub const IA32_PERF_CTL: u32 = 0x199;
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
pub const MSR_PKG_POWER_LIMIT: u32 = 0x610;
pub const MSR_PKG_ENERGY_STATUS: u32 = 0x611;
pub const MSR_RAPL_POWER_UNIT: u32 = 0x606;

/// IA32_MISC_ENABLE bit 38: "IDA (turbo) disable".
const TURBO_DISABLE_BIT: u32 = 38;

/// The columns and the register each comes from, in the order they are read.
pub const REGISTERS: [(&str, u32); 9] = [
    ("turbo_disabled", IA32_MISC_ENABLE),
    ("turbo_ratio_limit", MSR_TURBO_RATIO_LIMIT),
    ("platform_info", MSR_PLATFORM_INFO),
    ("perf_status", IA32_PERF_STATUS),
    ("perf_ctl", IA32_PERF_CTL),
    ("feature_control", IA32_FEATURE_CONTROL),
    ("rapl_power_limit", MSR_PKG_POWER_LIMIT),
    ("rapl_energy_status", MSR_PKG_ENERGY_STATUS),
    ("rapl_power_units", MSR_RAPL_POWER_UNIT),
];

/// The registers of one logical processor; `None` for a register that could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrValues {
    pub processor_number: u32,
    /// Indexed like [`REGISTERS`].
    pub values: [Option<u64>; 9],
}

impl MsrValues {
    /// Reads every register of [`REGISTERS`] with `read(address)`.
    pub fn read_with(processor_number: u32, mut read: impl FnMut(u32) -> Option<u64>) -> MsrValues {
        MsrValues { processor_number, values: REGISTERS.map(|(_, address)| read(address)) }
    }

    /// The column value of register `index` of [`REGISTERS`].
    pub fn column_value(&self, index: usize) -> Value {
        match (index, self.values.get(index).copied().flatten()) {
            (_, None) => Value::Null,
            (0, Some(misc_enable)) => Value::Integer(((misc_enable >> TURBO_DISABLE_BIT) & 1) as i64),
            // Same bits, reinterpreted: see the module doc.
            (_, Some(raw)) => Value::Integer(raw as i64),
        }
    }

    pub fn to_row(&self) -> Result<Row, GenerateError> {
        let (table, columns) = snapshot_columns(
            TABLE,
            [
                "turbo_disabled",
                "turbo_ratio_limit",
                "platform_info",
                "perf_status",
                "perf_ctl",
                "feature_control",
                "rapl_power_limit",
                "rapl_energy_status",
                "rapl_power_units",
                "processor_number",
            ],
        )?;
        let mut row = vec![Value::Null; table.columns.len()];
        for (index, at) in columns.iter().take(REGISTERS.len()).enumerate() {
            row[*at] = self.column_value(index);
        }
        row[columns[REGISTERS.len()]] = Value::from(self.processor_number);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog_table;

    /// Recorded with `rdmsr` on an Intel Core i7-8650U (Kaby Lake R), processor 0, turbo on.
    fn recorded(address: u32) -> Option<u64> {
        Some(match address {
            IA32_MISC_ENABLE => 0x0000_0000_0085_0089,
            MSR_TURBO_RATIO_LIMIT => 0x0000_0000_2A2A_2C2C,
            MSR_PLATFORM_INFO => 0x0000_0808_3BF8_1500,
            IA32_PERF_STATUS => 0x0000_2A4F_0000_1F00,
            IA32_PERF_CTL => 0x0000_0000_0000_1F00,
            IA32_FEATURE_CONTROL => 0x0000_0000_0000_0005,
            MSR_PKG_POWER_LIMIT => 0x8042_81D0_00DD_8190,
            MSR_PKG_ENERGY_STATUS => 0x0000_0000_8A3C_1F27,
            MSR_RAPL_POWER_UNIT => 0x0000_0000_000A_0E03,
            _ => return None,
        })
    }

    fn column(row: &Row, name: &str) -> Value {
        row[catalog_table(TABLE).unwrap().column_index(name).unwrap()].clone()
    }

    #[test]
    fn recorded_registers_become_the_row() {
        let row = MsrValues::read_with(3, recorded).to_row().unwrap();
        assert_eq!(column(&row, "processor_number"), Value::Integer(3));
        assert_eq!(column(&row, "turbo_disabled"), Value::Integer(0));
        assert_eq!(column(&row, "turbo_ratio_limit"), Value::Integer(0x2A2A_2C2C));
        assert_eq!(column(&row, "platform_info"), Value::Integer(0x0808_3BF8_1500));
        assert_eq!(column(&row, "perf_status"), Value::Integer(0x2A4F_0000_1F00));
        assert_eq!(column(&row, "perf_ctl"), Value::Integer(0x1F00));
        assert_eq!(column(&row, "feature_control"), Value::Integer(5));
        assert_eq!(column(&row, "rapl_energy_status"), Value::Integer(0x8A3C_1F27));
        assert_eq!(column(&row, "rapl_power_units"), Value::Integer(0xA_0E03));
        // Locked power limit: bit 63 set, shown as the same bits in a signed integer.
        let limit = column(&row, "rapl_power_limit").as_i64().unwrap();
        assert!(limit < 0);
        assert_eq!(limit as u64, 0x8042_81D0_00DD_8190);
    }

    #[test]
    fn turbo_disable_bit_is_decoded() {
        let disabled =
            MsrValues::read_with(0, |address| (address == IA32_MISC_ENABLE).then_some(0x0000_0040_0085_0089));
        let row = disabled.to_row().unwrap();
        assert_eq!(column(&row, "turbo_disabled"), Value::Integer(1));
        // Registers the processor lacks are NULL, not 0.
        assert_eq!(column(&row, "rapl_power_units"), Value::Null);
    }
}
