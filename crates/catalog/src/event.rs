use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::table::{Table, TableId};
use crate::value::{Row, Value};

/// A unique event id, shown GUID-like (`2334C7E0-16CF-486A-AF58-E40884ACFFFF`).
///
/// The high 80 bits are random per agent start and the low 48 bits count events, so ids are
/// unique across restarts and hosts, and ids of one run sort in capture order (which keeps the
/// store's eid index appending rather than inserting at random places).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Eid(pub u128);

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xFFFF_FFFF_FFFF
        )
    }
}

/// The text is not of the form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (hex, any case).
#[derive(Debug, thiserror::Error)]
#[error("not an event id (expected 8-4-4-4-12 hex digits): {0:?}")]
pub struct EidParseError(String);

impl FromStr for Eid {
    type Err = EidParseError;
    fn from_str(s: &str) -> Result<Eid, EidParseError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lengths != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(EidParseError(s.to_string()));
        }
        let hex: String = groups.concat();
        u128::from_str_radix(&hex, 16).map(Eid).map_err(|_| EidParseError(s.to_string()))
    }
}

/// The capture envelope: stamped once, when the sensor sees the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub eid: Eid,
    /// Unix seconds.
    pub time: i64,
}

/// Hands out capture stamps. One per agent process ([`Stamper::global`]).
pub struct Stamper {
    prefix: u128,
    counter: AtomicU64,
}

impl Stamper {
    /// A stamper with a fresh random prefix.
    pub fn new() -> Stamper {
        let mut bytes = [0u8; 16];
        // Without an entropy source ids would still be unique within this run; fall back to the
        // clock rather than refusing to start.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            bytes = nanos.to_le_bytes();
        }
        let prefix = u128::from_le_bytes(bytes) & !0xFFFF_FFFF_FFFFu128;
        Stamper { prefix, counter: AtomicU64::new(0) }
    }

    pub fn global() -> &'static Stamper {
        static GLOBAL: LazyLock<Stamper> = LazyLock::new(Stamper::new);
        &GLOBAL
    }

    pub fn stamp(&self) -> Stamp {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF_FFFF;
        Stamp { eid: Eid(self.prefix | u128::from(n)), time: unix_now() }
    }
}

impl Default for Stamper {
    fn default() -> Self {
        Stamper::new()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `Tue Dec 17 09:33:24 2019 UTC`, the asctime form the original extension wrote.
pub fn format_utc_time(unix_seconds: i64) -> String {
    // Rows are produced in capture order, so runs of events share a second: remember the last
    // formatted one (formatting costs more than the rest of a row's envelope).
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != unix_seconds {
            *last = (unix_seconds, format_uncached(unix_seconds));
        }
        last.1.clone()
    })
}

fn format_uncached(unix_seconds: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// One captured event of an evented table. `values` has one slot per catalog column; the
/// envelope slots stay `Null` until [`Event::into_row`] fills them from `eid` and `time`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub table: TableId,
    pub eid: Eid,
    pub time: i64,
    pub values: Vec<Value>,
}

impl Event {
    pub fn new(table: &Table, stamp: Stamp) -> Event {
        Event {
            table: table.id,
            eid: stamp.eid,
            time: stamp.time,
            values: vec![Value::Null; table.columns.len()],
        }
    }

    /// Sets the value of the column at `index` (from [`Table::column_index`]).
    pub fn set(&mut self, index: usize, value: impl Into<Value>) {
        if let Some(slot) = self.values.get_mut(index) {
            *slot = value.into();
        }
    }

    /// The row a query returns: the values with the envelope filled in.
    pub fn into_row(self, table: &Table) -> Row {
        let mut row = self.values;
        row.resize(table.columns.len(), Value::Null);
        if let Some(env) = table.envelope {
            row[env.eid] = Value::Text(self.eid.to_string());
            row[env.time] = Value::Integer(self.time);
            row[env.utc_time] = Value::Text(format_utc_time(self.time));
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eid_round_trips_and_looks_like_a_guid() {
        let eid = Stamper::new().stamp().eid;
        let text = eid.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.matches('-').count(), 4);
        assert_eq!(text.parse::<Eid>().unwrap(), eid);
        assert_eq!(text.to_lowercase().parse::<Eid>().unwrap(), eid);
        assert!("2334C7E0-16CF-486A-AF58".parse::<Eid>().is_err());
        assert!("2334C7E0-16CF-486A-AF58-E40884ACFFFG".parse::<Eid>().is_err());
    }

    #[test]
    fn stamps_are_unique_and_ordered_within_a_run() {
        let stamper = Stamper::new();
        let a = stamper.stamp();
        let b = stamper.stamp();
        assert!(a.eid < b.eid);
        assert_ne!(Stamper::new().stamp().eid, a.eid);
    }

    #[test]
    fn utc_time_matches_the_original_format() {
        assert_eq!(format_utc_time(1_576_575_204), "Tue Dec 17 09:33:24 2019 UTC");
        assert_eq!(format_utc_time(1_575_711_204), "Sat Dec  7 09:33:24 2019 UTC");
        assert_eq!(format_utc_time(1_575_711_204), "Sat Dec  7 09:33:24 2019 UTC", "cached");
        assert_eq!(format_utc_time(1_576_575_204), "Tue Dec 17 09:33:24 2019 UTC");
    }
}
