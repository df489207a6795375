//! Packet capture for DNS and HTTP: an `AF_PACKET` socket on every interface, in cooked mode
//! (`SOCK_DGRAM`: packets start at the IP header whatever the link), with a classic BPF filter
//! that passes only UDP and TCP to or from port 53 and TCP segments whose payload starts with
//! an HTTP method. The filter is assembled here because the kernel takes it as raw
//! instructions and libpcap is not wanted as a dependency.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::packets::DNS_PORT;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const ARPHRD_LOOPBACK: u16 = 772;
const PACKET_HOST: u8 = 0;
const PACKET_OTHERHOST: u8 = 3;
const PACKET_OUTGOING: u8 = 4;
/// Bytes asked for the socket's receive queue (bursts of DNS queries).
const RECEIVE_BUFFER: libc::c_int = 16 * 1024 * 1024;

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_IMM: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_AND: u16 = 0x50;
const BPF_RSH: u16 = 0x70;
const BPF_ADD: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_X: u16 = 0x08;
const BPF_TAX: u16 = 0x00;
const SKF_AD_OFF: i32 = -0x1000;
const SKF_AD_PROTOCOL: i32 = 0;

/// The first four payload bytes of the HTTP requests the filter passes (network order).
const HTTP_METHODS: [&[u8; 4]; 9] =
    [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC"];
/// What the filter keeps of a passing packet: all of it.
const KEEP_ALL: u32 = 0x0004_0000;

/// Where a jump goes.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Label(&'static str),
}

enum Step {
    Op(u16, u32),
    Jump(u16, u32, Target, Target),
    Label(&'static str),
}

/// The capture filter; offsets count from the IP header (cooked socket).
fn filter_steps() -> Vec<Step> {
    use Step::{Jump, Label, Op};
    use Target::{Label as To, Next};
    let port = u32::from(DNS_PORT);
    let mut steps = vec![
        Op(BPF_LD | BPF_W | BPF_ABS, (SKF_AD_OFF + SKF_AD_PROTOCOL) as u32),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, To("ipv4"), Next),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, To("ipv6"), To("drop")),
        Label("ipv4"),
        // Fragments after the first carry no transport header.
        Op(BPF_LD | BPF_H | BPF_ABS, 6),
        Jump(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, To("drop"), Next),
        Op(BPF_LDX | BPF_B | BPF_MSH, 0),
        Op(BPF_LD | BPF_B | BPF_ABS, 9),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, 17, To("udp"), Next),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, 6, To("tcp"), To("drop")),
        Label("ipv6"),
        // IPv6 extension headers are not followed: their packets are not captured.
        Op(BPF_LDX | BPF_W | BPF_IMM, 40),
        Op(BPF_LD | BPF_B | BPF_ABS, 6),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, 17, To("udp"), Next),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, 6, To("tcp"), To("drop")),
        Label("udp"),
        Op(BPF_LD | BPF_H | BPF_IND, 0),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, port, To("keep"), Next),
        Op(BPF_LD | BPF_H | BPF_IND, 2),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, port, To("keep"), To("drop")),
        Label("tcp"),
        Op(BPF_LD | BPF_H | BPF_IND, 0),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, port, To("keep"), Next),
        Op(BPF_LD | BPF_H | BPF_IND, 2),
        Jump(BPF_JMP | BPF_JEQ | BPF_K, port, To("keep"), Next),
        // X = IP header + TCP header length: the payload's offset.
        Op(BPF_LD | BPF_B | BPF_IND, 12),
        Op(BPF_ALU | BPF_AND | BPF_K, 0xf0),
        Op(BPF_ALU | BPF_RSH | BPF_K, 2),
        Op(BPF_ALU | BPF_ADD | BPF_X, 0),
        Op(BPF_MISC | BPF_TAX, 0),
        Op(BPF_LD | BPF_W | BPF_IND, 0),
    ];
    for (i, method) in HTTP_METHODS.iter().enumerate() {
        let otherwise = if i + 1 == HTTP_METHODS.len() { To("drop") } else { Next };
        steps.push(Jump(BPF_JMP | BPF_JEQ | BPF_K, u32::from_be_bytes(**method), To("keep"), otherwise));
    }
    steps.extend([Label("keep"), Op(BPF_RET | BPF_K, KEEP_ALL), Label("drop"), Op(BPF_RET | BPF_K, 0)]);
    steps
}

/// Resolves the labels of `steps` into classic BPF instructions.
fn assemble(steps: &[Step]) -> Vec<libc::sock_filter> {
    let mut labels = std::collections::HashMap::new();
    let mut position = 0usize;
    for step in steps {
        match step {
            Step::Label(name) => {
                labels.insert(*name, position);
            }
            _ => position += 1,
        }
    }
    let mut program = Vec::with_capacity(position);
    for step in steps {
        let here = program.len();
        let offset = |target: &Target| -> u8 {
            match target {
                Target::Next => 0,
                // Jumps are forward and short; the filter is fixed, so a bad label is a bug
                // caught by the unit test.
                Target::Label(name) => labels.get(name).map_or(0, |&at| (at - here - 1) as u8),
            }
        };
        match step {
            Step::Op(code, k) => program.push(libc::sock_filter { code: *code, jt: 0, jf: 0, k: *k }),
            Step::Jump(code, k, yes, no) => {
                program.push(libc::sock_filter { code: *code, jt: offset(yes), jf: offset(no), k: *k })
            }
            Step::Label(_) => {}
        }
    }
    program
}

/// How a captured packet travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// `sll_pkttype`: PACKET_HOST (0), PACKET_OUTGOING (4), ...
    pub packet_type: u8,
    /// Captured on a loopback interface.
    pub loopback: bool,
}

impl PacketMeta {
    /// Whether this copy is the one to count: loopback shows every packet twice (leaving and
    /// arriving) and only the leaving copy counts; other hosts' packets (promiscuous
    /// interfaces) do not count.
    pub fn counts(self) -> bool {
        match self.packet_type {
            PACKET_OTHERHOST => false,
            PACKET_HOST => !self.loopback,
            _ => true,
        }
    }

    pub fn outgoing(self) -> bool {
        self.packet_type == PACKET_OUTGOING
    }
}

/// The capture socket.
#[derive(Debug)]
pub struct Capture {
    socket: OwnedFd,
}

impl Capture {
    /// Opens the socket with its filter (needs CAP_NET_RAW), non-blocking.
    pub fn open() -> io::Result<Capture> {
        let protocol = i32::from(ETH_P_ALL.to_be());
        // SAFETY: plain socket call; the descriptor is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let capture = Capture { socket: unsafe { OwnedFd::from_raw_fd(fd) } };
        let program = assemble(&filter_steps());
        let filter = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut _ };
        capture.set_option(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &filter)?;
        if capture.set_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RECEIVE_BUFFER).is_err() {
            capture.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, &RECEIVE_BUFFER)?;
        }
        // What arrived before the filter was attached was not filtered: throw it away.
        let mut scratch = vec![0u8; 2048];
        while capture.receive(&mut scratch)?.is_some() {}
        Ok(capture)
    }

    fn set_option<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: value points to a live T of the given size for the duration of the call.
        let result = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The next packet into `buffer`: its captured length (at most the buffer's) and how it
    /// travelled; `None` when no packet is waiting.
    pub fn receive(&self, buffer: &mut [u8]) -> io::Result<Option<(usize, PacketMeta)>> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut address_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buffer and address are valid for writes of the lengths passed.
        let received = unsafe {
            libc::recvfrom(
                self.socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
                (&mut address as *mut libc::sockaddr_ll).cast(),
                &mut address_len,
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => self.receive(buffer),
                _ => Err(error),
            };
        }
        let length = (received as usize).min(buffer.len());
        let meta =
            PacketMeta { packet_type: address.sll_pkttype, loopback: address.sll_hatype == ARPHRD_LOOPBACK };
        Ok(Some((length, meta)))
    }

    /// Packets the kernel dropped for want of queue space since the last call.
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut stats = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut length = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: stats is valid for writes of `length` bytes.
        let result = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut length,
            )
        };
        if result == 0 { Ok(u64::from(stats.tp_drops)) } else { Err(io::Error::last_os_error()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let steps = filter_steps();
        let program = assemble(&steps);
        let labels = steps.iter().filter(|s| matches!(s, Step::Label(_))).count();
        assert_eq!(program.len(), steps.len() - labels);
        for (at, instruction) in program.iter().enumerate().filter(|(_, i)| i.code & 0x07 == BPF_JMP) {
            let last = program.len() - 1;
            assert!(at + 1 + usize::from(instruction.jt) <= last, "jt of {at}");
            assert!(at + 1 + usize::from(instruction.jf) <= last, "jf of {at}");
        }
        assert_eq!(program.last().map(|i| (i.code, i.k)), Some((BPF_RET | BPF_K, 0)));
    }

    #[test]
    fn loopback_packets_count_once() {
        let leaving = PacketMeta { packet_type: PACKET_OUTGOING, loopback: true };
        let arriving = PacketMeta { packet_type: PACKET_HOST, loopback: true };
        let from_outside = PacketMeta { packet_type: PACKET_HOST, loopback: false };
        let others = PacketMeta { packet_type: PACKET_OTHERHOST, loopback: false };
        assert!(leaving.counts() && !arriving.counts() && from_outside.counts() && !others.counts());
    }
}
