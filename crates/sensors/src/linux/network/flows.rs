//! Which process owns which conversation: a table fed by the socket records, keyed the way a
//! captured packet can name it (protocol, the local port, the remote address and port; the
//! local address is left out because an unconnected UDP socket sends from a wildcard one).
//! A closed conversation stays for [`CLOSED_GRACE`], since its last packets are usually read
//! after its Close record (both are queued in the kernel before the sensor gets to them).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::records::{SocketAction, SocketRecord};

/// How long a closed conversation still attributes its packets.
pub const CLOSED_GRACE: Duration = Duration::from_secs(10);
/// How long an open conversation with no packets stays (an unconnected UDP socket that talked
/// to several peers reports the Close of the last one only).
pub const IDLE_LIMIT: Duration = Duration::from_secs(600);

/// One end of a conversation as seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub protocol: u8,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl FlowKey {
    /// The key of the local end `local_port` talking to `remote`; IPv4-mapped IPv6 addresses
    /// (dual-stack sockets) are keyed as the IPv4 address their packets carry.
    pub fn new(protocol: u8, local_port: u16, remote: SocketAddr) -> FlowKey {
        FlowKey { protocol, local_port, remote: remote.ip().to_canonical(), remote_port: remote.port() }
    }
}

/// The process owning a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOwner {
    pub pid: u32,
    /// 0 when the hook could not read it.
    pub start_boottime_ns: u64,
    /// The owner's exec count (see [`SocketRecord::exec_id`]).
    pub exec_id: u32,
}

impl FlowOwner {
    pub fn of(record: &SocketRecord) -> FlowOwner {
        FlowOwner { pid: record.pid, start_boottime_ns: record.start_boottime_ns, exec_id: record.exec_id }
    }
}

#[derive(Debug)]
struct Entry {
    owner: FlowOwner,
    closed_at: Option<Instant>,
    used_at: Instant,
}

/// The conversation table.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Entry>,
}

impl FlowTable {
    /// Takes in a socket record: Connect and Accept open a conversation, Close ends it.
    pub fn record(&mut self, record: &SocketRecord, now: Instant) {
        let key = FlowKey::new(record.protocol, record.local.port(), record.remote);
        let owner = FlowOwner::of(record);
        match record.action {
            SocketAction::Connect | SocketAction::Accept => {
                self.flows.insert(key, Entry { owner, closed_at: None, used_at: now });
            }
            SocketAction::Close => {
                if let Some(entry) = self.flows.get_mut(&key)
                    && entry.owner.pid == record.pid
                {
                    entry.closed_at = Some(now);
                }
            }
            SocketAction::Listen => {}
        }
    }

    /// The owner of the local end `local_port` talking to `remote`, if known.
    pub fn owner(
        &mut self,
        protocol: u8,
        local_port: u16,
        remote: SocketAddr,
        now: Instant,
    ) -> Option<FlowOwner> {
        let entry = self.flows.get_mut(&FlowKey::new(protocol, local_port, remote))?;
        entry.used_at = now;
        Some(entry.owner)
    }

    /// Forgets closed conversations past their grace and idle ones past [`IDLE_LIMIT`].
    pub fn expire(&mut self, now: Instant) {
        self.flows.retain(|_, entry| match entry.closed_at {
            Some(closed) => now.duration_since(closed) < CLOSED_GRACE,
            None => now.duration_since(entry.used_at) < IDLE_LIMIT,
        });
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: SocketAction, pid: u32, local: &str, remote: &str) -> SocketRecord {
        SocketRecord {
            action,
            protocol: 17,
            ipv6: false,
            pid,
            start_boottime_ns: 0,
            exec_id: 0,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
        }
    }

    #[test]
    fn a_closed_conversation_attributes_its_late_packets_until_the_grace_ends() {
        let mut table = FlowTable::default();
        let start = Instant::now();
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        table.record(&record(SocketAction::Connect, 10, "0.0.0.0:40000", "127.0.0.1:53"), start);
        table.record(&record(SocketAction::Close, 10, "0.0.0.0:40000", "127.0.0.1:53"), start);
        assert_eq!(table.owner(17, 40000, server, start).map(|o| o.pid), Some(10));
        assert_eq!(table.owner(6, 40000, server, start), None, "another protocol");
        table.expire(start + CLOSED_GRACE + Duration::from_secs(1));
        assert!(table.is_empty());
    }

    #[test]
    fn dual_stack_sockets_match_their_ipv4_packets() {
        let mut table = FlowTable::default();
        let now = Instant::now();
        table.record(&record(SocketAction::Connect, 11, "[::]:41000", "[::ffff:127.0.0.1]:53"), now);
        assert_eq!(table.owner(17, 41000, "127.0.0.1:53".parse().unwrap(), now).map(|o| o.pid), Some(11));
    }

    #[test]
    fn a_new_owner_of_a_reused_port_replaces_the_old_one() {
        let mut table = FlowTable::default();
        let now = Instant::now();
        table.record(&record(SocketAction::Connect, 10, "0.0.0.0:40000", "127.0.0.1:53"), now);
        table.record(&record(SocketAction::Connect, 12, "0.0.0.0:40000", "127.0.0.1:53"), now);
        // A late Close of the first owner does not end the second one's conversation.
        table.record(&record(SocketAction::Close, 10, "0.0.0.0:40000", "127.0.0.1:53"), now);
        table.expire(now + CLOSED_GRACE + Duration::from_secs(1));
        assert_eq!(table.owner(17, 40000, "127.0.0.1:53".parse().unwrap(), now).map(|o| o.pid), Some(12));
    }
}
