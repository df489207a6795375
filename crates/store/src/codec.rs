//! The stored form of one event: `time (i64 LE) ‖ eid (u128 LE) ‖ postcard(values)`.
//!
//! The envelope sits in a fixed-size header so that eviction, expiry and time filtering read it
//! without decoding the values; the table id and sequence number live in the key.

use watchpost_catalog::{Eid, Event, TableId, Value};

const HEADER_LEN: usize = 8 + 16;

pub(crate) struct Header {
    pub time: i64,
    pub eid: Eid,
}

pub(crate) fn encode(event: &Event, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let mut bytes = std::mem::take(buf);
    bytes.clear();
    bytes.extend_from_slice(&event.time.to_le_bytes());
    bytes.extend_from_slice(&event.eid.0.to_le_bytes());
    *buf = postcard::to_extend(&event.values, bytes)?;
    Ok(())
}

pub(crate) fn header(bytes: &[u8]) -> Result<Header, String> {
    let time = bytes.get(..8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
    let eid = bytes.get(8..HEADER_LEN).and_then(|b| b.try_into().ok()).map(u128::from_le_bytes);
    match (time, eid) {
        (Some(time), Some(eid)) => Ok(Header { time, eid: Eid(eid) }),
        _ => Err(format!("{} bytes is shorter than the {HEADER_LEN}-byte header", bytes.len())),
    }
}

pub(crate) fn decode(table: TableId, bytes: &[u8]) -> Result<Event, String> {
    let Header { time, eid } = header(bytes)?;
    let values: Vec<Value> = postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| e.to_string())?;
    Ok(Event { table, eid, time, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_value_kind() {
        let event = Event {
            table: TableId(7),
            eid: Eid(0x1234_5678_9ABC_DEF0_1122_3344_5566_7788),
            time: -5,
            values: vec![
                Value::Null,
                Value::Integer(i64::MIN),
                Value::Double(1.5),
                Value::Text("ü x".into()),
            ],
        };
        let mut buf = vec![1, 2, 3];
        encode(&event, &mut buf).unwrap();
        assert_eq!(decode(TableId(7), &buf).unwrap(), event);
        assert!(decode(TableId(7), &buf[..10]).is_err());
    }
}
