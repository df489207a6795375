//! Opening the netlink datagram sockets the Linux sensors read (the process connector, kernel
//! uevents). Hand-written on libc because the sensors need a raw, blocking-with-timeout socket
//! bound to a multicast group and nothing more.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A `protocol` netlink socket bound to the multicast `groups`, with a receive buffer of
/// `receive_buffer` bytes (forced past rmem_max when CAP_NET_ADMIN allows it, so a burst does
/// not overflow it) and reads that give up after `timeout`.
pub(crate) fn open_socket(
    protocol: libc::c_int,
    groups: u32,
    receive_buffer: libc::c_int,
    timeout: Duration,
) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields are then set.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    address.nl_groups = groups;
    // SAFETY: `address` is a sockaddr_nl of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        if set_option(&socket, option, &receive_buffer).is_ok() {
            break;
        }
    }
    let timeout = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    set_option(&socket, libc::SO_RCVTIMEO, &timeout)?;
    Ok(socket)
}

fn set_option<T>(socket: &OwnedFd, option: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` points to a T of the size given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if result == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
