//! The socket records of `bpf/network.bpf.c` (`struct socket_event`) and what they mean.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of `struct socket_event`.
pub const RECORD: usize = 56;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The `action` of a `win_socket_events` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketAction {
    Connect,
    Accept,
    Listen,
    Close,
}

impl SocketAction {
    pub fn name(self) -> &'static str {
        match self {
            SocketAction::Connect => "Connect",
            SocketAction::Accept => "Accept",
            SocketAction::Listen => "Listen",
            SocketAction::Close => "Close",
        }
    }

    fn from_code(code: u8) -> Option<SocketAction> {
        match code {
            1 => Some(SocketAction::Connect),
            2 => Some(SocketAction::Accept),
            3 => Some(SocketAction::Listen),
            4 => Some(SocketAction::Close),
            _ => None,
        }
    }
}

/// One decoded socket record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    pub action: SocketAction,
    /// IP protocol number: 6 TCP, 17 UDP.
    pub protocol: u8,
    pub ipv6: bool,
    /// Owning process (thread group id).
    pub pid: u32,
    /// Start of the owner in ns since boot; 0 when the hook could not read it (cgroup hooks).
    pub start_boottime_ns: u64,
    /// The owner's `self_exec_id` (low 32 bits; see the process records), meaningful only
    /// when `start_boottime_ns` is known.
    pub exec_id: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl SocketRecord {
    pub fn decode(data: &[u8]) -> Option<SocketRecord> {
        let data = data.get(..RECORD)?;
        let u16_at = |at: usize| data.get(at..at + 2).and_then(|b| b.try_into().ok()).map(u16::from_ne_bytes);
        let u32_at = |at: usize| data.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        let u64_at = |at: usize| data.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        let family = u16_at(2)?;
        let ipv6 = match family {
            AF_INET => false,
            AF_INET6 => true,
            _ => return None,
        };
        let address = |at: usize| -> Option<IpAddr> {
            if ipv6 {
                let bytes: [u8; 16] = data.get(at..at + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(bytes)))
            } else {
                let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(bytes)))
            }
        };
        Some(SocketRecord {
            action: SocketAction::from_code(data[0])?,
            protocol: data[1],
            ipv6,
            pid: u32_at(4)?,
            start_boottime_ns: u64_at(8)?,
            exec_id: u32_at(20)?,
            local: SocketAddr::new(address(24)?, u16_at(16)?),
            remote: SocketAddr::new(address(40)?, u16_at(18)?),
        })
    }

    /// The `family` column: `AF_INET` or `AF_INET6`.
    pub fn family_name(&self) -> &'static str {
        if self.ipv6 { "AF_INET6" } else { "AF_INET" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: u8, family: u16, local: &[u8], remote: &[u8]) -> Vec<u8> {
        let mut data = vec![action, 6];
        data.extend(family.to_ne_bytes());
        data.extend(4242u32.to_ne_bytes());
        data.extend(7_000_000u64.to_ne_bytes());
        data.extend(40000u16.to_ne_bytes());
        data.extend(80u16.to_ne_bytes());
        data.extend(0u32.to_ne_bytes());
        let mut padded = |bytes: &[u8]| {
            let mut slot = [0u8; 16];
            slot[..bytes.len()].copy_from_slice(bytes);
            data.extend(slot);
        };
        padded(local);
        padded(remote);
        data
    }

    #[test]
    fn ipv4_and_ipv6_records_decode_with_their_addresses() {
        let v4 = SocketRecord::decode(&record(1, 2, &[127, 0, 0, 1], &[10, 1, 2, 3])).unwrap();
        assert_eq!(v4.action, SocketAction::Connect);
        assert_eq!((v4.pid, v4.protocol, v4.family_name()), (4242, 6, "AF_INET"));
        assert_eq!(v4.local.to_string(), "127.0.0.1:40000");
        assert_eq!(v4.remote.to_string(), "10.1.2.3:80");
        let loopback6 = Ipv6Addr::LOCALHOST.octets();
        let v6 = SocketRecord::decode(&record(4, 10, &loopback6, &loopback6)).unwrap();
        assert_eq!((v6.action, v6.family_name()), (SocketAction::Close, "AF_INET6"));
        assert_eq!(v6.remote.to_string(), "[::1]:80");
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        let good = record(2, 2, &[127, 0, 0, 1], &[127, 0, 0, 1]);
        assert!(SocketRecord::decode(&good[..RECORD - 1]).is_none());
        assert!(SocketRecord::decode(&record(9, 2, &[0; 4], &[0; 4])).is_none());
        assert!(SocketRecord::decode(&record(1, 1, &[0; 4], &[0; 4])).is_none());
    }
}
