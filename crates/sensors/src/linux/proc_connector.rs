//! The netlink process connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`): fork, exec and exit
//! notifications with pids only, for when BPF is unavailable.
//!
//! Hand-written on libc: the protocol is one subscribe message and three fixed structs
//! (linux/cn_proc.h), and the crates that wrap it are unmaintained.

use std::os::fd::{AsRawFd, OwnedFd};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_HEADER: usize = 16;
/// `struct cn_msg` without its data.
const CN_MSG_HEADER: usize = 20;
/// `struct proc_event` up to its `event_data` union.
const PROC_EVENT_HEADER: usize = 16;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// One process notification. Thread events (pid != tgid) are left out by [`decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorEvent {
    Fork { parent_tgid: u32, child_tgid: u32 },
    Exec { tgid: u32 },
    Exit { tgid: u32, exit_code: i32 },
}

/// A subscribed process-connector socket.
pub struct ProcConnector {
    socket: OwnedFd,
}

impl ProcConnector {
    /// Opens the socket, joins the process-events group and subscribes (needs CAP_NET_ADMIN).
    /// `receive` then waits at most `timeout` for a datagram.
    pub fn open(timeout: std::time::Duration) -> std::io::Result<ProcConnector> {
        let socket =
            super::netlink::open_socket(libc::NETLINK_CONNECTOR, CN_IDX_PROC, 8 * 1024 * 1024, timeout)?;
        let message = subscribe_message(std::process::id());
        // SAFETY: the buffer is valid for its length.
        let sent = unsafe { libc::send(socket.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ProcConnector { socket })
    }

    /// One datagram's events; an empty list on timeout. `ENOBUFS` (events lost) is an error of
    /// kind `Other` with that raw code.
    pub fn receive(&self, buffer: &mut [u8]) -> std::io::Result<Vec<ConnectorEvent>> {
        // SAFETY: the buffer is valid for its length.
        let received =
            unsafe { libc::recv(self.socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if received < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        Ok(decode(&buffer[..received as usize]))
    }
}

/// nlmsghdr + cn_msg + `PROC_CN_MCAST_LISTEN`.
fn subscribe_message(port: u32) -> Vec<u8> {
    let total = NLMSG_HEADER + CN_MSG_HEADER + 4;
    let mut message = Vec::with_capacity(total);
    message.extend((total as u32).to_ne_bytes());
    message.extend((libc::NLMSG_DONE as u16).to_ne_bytes());
    message.extend(0u16.to_ne_bytes()); // flags
    message.extend(0u32.to_ne_bytes()); // seq
    message.extend(port.to_ne_bytes());
    message.extend(CN_IDX_PROC.to_ne_bytes());
    message.extend(CN_VAL_PROC.to_ne_bytes());
    message.extend(0u32.to_ne_bytes()); // seq
    message.extend(0u32.to_ne_bytes()); // ack
    message.extend(4u16.to_ne_bytes()); // len
    message.extend(0u16.to_ne_bytes()); // flags
    message.extend(PROC_CN_MCAST_LISTEN.to_ne_bytes());
    message
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(offset..offset + 4)?.try_into().ok()?))
}

/// The process events of one datagram (it may hold several netlink messages).
pub fn decode(datagram: &[u8]) -> Vec<ConnectorEvent> {
    let mut events = Vec::new();
    let mut offset = 0;
    while let Some(length) = u32_at(datagram, offset) {
        let length = length as usize;
        if length < NLMSG_HEADER || offset + length > datagram.len() {
            break;
        }
        let message = &datagram[offset + NLMSG_HEADER..offset + length];
        if let Some(event) = decode_proc_event(message.get(CN_MSG_HEADER..).unwrap_or_default()) {
            events.push(event);
        }
        // Netlink messages are 4-byte aligned.
        offset += (length + 3) & !3;
    }
    events
}

fn decode_proc_event(event: &[u8]) -> Option<ConnectorEvent> {
    let what = u32_at(event, 0)?;
    let field = |index: usize| u32_at(event, PROC_EVENT_HEADER + 4 * index);
    match what {
        PROC_EVENT_FORK => {
            let (parent_tgid, child_pid, child_tgid) = (field(1)?, field(2)?, field(3)?);
            (child_pid == child_tgid).then_some(ConnectorEvent::Fork { parent_tgid, child_tgid })
        }
        PROC_EVENT_EXEC => Some(ConnectorEvent::Exec { tgid: field(1)? }),
        PROC_EVENT_EXIT => {
            let (pid, tgid, exit_code) = (field(0)?, field(1)?, field(2)?);
            (pid == tgid).then_some(ConnectorEvent::Exit { tgid, exit_code: exit_code as i32 })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, fields: &[u32]) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend([0u8; CN_MSG_HEADER]);
        payload.extend(what.to_ne_bytes());
        payload.extend(0u32.to_ne_bytes()); // cpu
        payload.extend(0u64.to_ne_bytes()); // timestamp
        for field in fields {
            payload.extend(field.to_ne_bytes());
        }
        let mut message = Vec::new();
        message.extend(((NLMSG_HEADER + payload.len()) as u32).to_ne_bytes());
        message.extend([0u8; NLMSG_HEADER - 4]);
        message.extend(payload);
        message
    }

    #[test]
    fn process_events_decode_and_threads_are_left_out() {
        let mut datagram = message(PROC_EVENT_FORK, &[10, 10, 11, 11]);
        datagram.extend(message(PROC_EVENT_FORK, &[10, 10, 12, 11])); // a thread
        datagram.extend(message(PROC_EVENT_EXEC, &[11, 11]));
        datagram.extend(message(PROC_EVENT_EXIT, &[11, 11, 256, 17, 10, 10]));
        datagram.extend(message(PROC_EVENT_EXIT, &[12, 11, 0, 17, 10, 10])); // a thread
        assert_eq!(
            decode(&datagram),
            [
                ConnectorEvent::Fork { parent_tgid: 10, child_tgid: 11 },
                ConnectorEvent::Exec { tgid: 11 },
                ConnectorEvent::Exit { tgid: 11, exit_code: 256 },
            ]
        );
        assert_eq!(decode(&datagram[..30]), []);
    }

    #[test]
    fn subscribe_message_has_the_length_it_claims() {
        let message = subscribe_message(7);
        assert_eq!(u32_at(&message, 0), Some(message.len() as u32));
        assert_eq!(u32_at(&message, NLMSG_HEADER), Some(CN_IDX_PROC));
    }
}
