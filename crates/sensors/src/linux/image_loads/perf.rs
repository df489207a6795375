//! System-wide perf side-band records: one dummy software event per online CPU, opened with
//! `mmap2` (executable file mappings only: `mmap_data` stays 0), `comm_exec` and `task`, and
//! read from its mmap'd ring buffer. Every record carries a `sample_id` trailer (pid, tid, time)
//! so the records of all CPUs can be put back in time order.
//!
//! The ring reader is hand-written on top of the `perf-event-open-sys` bindings: the one crate
//! that reads these rings (`perf-event2`) has had no release since 2023, panics on unexpected
//! `poll` errors and on malformed headers, and hands out records that borrow the ring one at a
//! time. Reading the ring is a small, stable kernel ABI (head/tail counters around a power-of-two
//! data area, see perf_event_open(2)), so it is done here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use perf_event_open_sys::bindings as sys;

/// Data pages per CPU ring (a power of two): 1 MiB, room for about 7,000 mappings.
const DATA_PAGES: usize = 256;
/// Bytes of the `sample_id` trailer: `u32 pid, tid; u64 time`.
const SAMPLE_ID_BYTES: usize = 16;
const HEADER_BYTES: usize = 8;

/// An executable file mapped into a process (`PERF_RECORD_MMAP2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub pid: u32,
    pub tid: u32,
    pub address: u64,
    pub length: u64,
    pub page_offset: u64,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
    /// `PROT_*` bits.
    pub protection: u32,
    /// `MAP_*` bits.
    pub flags: u32,
    /// The file as the kernel names it: an absolute path (` (deleted)` appended when the file
    /// is gone), or a pseudo name such as `[vdso]` or `//anon`.
    pub path: String,
}

impl Mapping {
    /// The device number as `stat` reports it.
    pub fn device(&self) -> u64 {
        libc::makedev(self.major, self.minor)
    }

    /// Protection as `/proc/PID/maps` shows it, e.g. `r-x`.
    pub fn mode(&self) -> String {
        let bit = |mask: i32, letter: char| if self.protection & mask as u32 != 0 { letter } else { '-' };
        [bit(libc::PROT_READ, 'r'), bit(libc::PROT_WRITE, 'w'), bit(libc::PROT_EXEC, 'x')]
            .into_iter()
            .collect()
    }
}

/// The side-band records the sensor uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideBand {
    Mapped(Mapping),
    /// The process replaced its image (`PERF_RECORD_COMM` with the exec flag).
    Exec {
        pid: u32,
    },
    /// A thread ended (`PERF_RECORD_EXIT`); the process ended when `pid == tid` (its leader).
    Exit {
        pid: u32,
        tid: u32,
    },
    /// The kernel dropped this many records: the ring was full.
    Lost(u64),
}

/// Decodes one record (header included); `None` for record types the sensor does not use and
/// for malformed records. Returns the record's time from its `sample_id` trailer too.
pub fn decode(record: &[u8]) -> Option<(u64, SideBand)> {
    let kind = u32::from_ne_bytes(record.get(0..4)?.try_into().ok()?);
    let misc = u16::from_ne_bytes(record.get(4..6)?.try_into().ok()?);
    let trailer_at = record.len().checked_sub(SAMPLE_ID_BYTES)?;
    let body = record.get(HEADER_BYTES..trailer_at)?;
    let time = u64_at(record, trailer_at + 8)?;
    let decoded = match kind {
        sys::PERF_RECORD_MMAP2 => {
            // Without attr.build_id the union holds maj, min, ino, ino_generation.
            if u32::from(misc) & sys::PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
                return None;
            }
            let name = body.get(64..)?;
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            SideBand::Mapped(Mapping {
                pid: u32_at(body, 0)?,
                tid: u32_at(body, 4)?,
                address: u64_at(body, 8)?,
                length: u64_at(body, 16)?,
                page_offset: u64_at(body, 24)?,
                major: u32_at(body, 32)?,
                minor: u32_at(body, 36)?,
                inode: u64_at(body, 40)?,
                protection: u32_at(body, 56)?,
                flags: u32_at(body, 60)?,
                path: String::from_utf8_lossy(name).into_owned(),
            })
        }
        sys::PERF_RECORD_COMM if u32::from(misc) & sys::PERF_RECORD_MISC_COMM_EXEC != 0 => {
            SideBand::Exec { pid: u32_at(body, 0)? }
        }
        sys::PERF_RECORD_EXIT => SideBand::Exit { pid: u32_at(body, 0)?, tid: u32_at(body, 8)? },
        sys::PERF_RECORD_LOST => SideBand::Lost(u64_at(body, 8)?),
        _ => return None,
    };
    Some((time, decoded))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)?.try_into().ok().map(u32::from_ne_bytes)
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at + 8)?.try_into().ok().map(u64::from_ne_bytes)
}

/// Why the side-band events could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error("cannot read the online CPUs from {path}: {source}")]
    Cpus { path: &'static str, source: io::Error },
    #[error(
        "perf_event_open on CPU {cpu} failed: {source} (needs root or CAP_PERFMON, or \
         kernel.perf_event_paranoid <= -1)"
    )]
    Open { cpu: u32, source: io::Error },
    #[error("cannot map the perf ring of CPU {cpu}: {source} (raise kernel.perf_event_mlock_kb?)")]
    Map { cpu: u32, source: io::Error },
}

/// The rings of all online CPUs.
pub struct SideBandRings {
    rings: Vec<Ring>,
}

impl SideBandRings {
    /// Opens one side-band event per online CPU.
    pub fn open() -> Result<SideBandRings, PerfError> {
        const ONLINE: &str = "/sys/devices/system/cpu/online";
        let text =
            std::fs::read_to_string(ONLINE).map_err(|source| PerfError::Cpus { path: ONLINE, source })?;
        let cpus = parse_cpu_list(&text).ok_or_else(|| PerfError::Cpus {
            path: ONLINE,
            source: io::Error::new(io::ErrorKind::InvalidData, format!("unexpected list {text:?}")),
        })?;
        let rings = cpus.into_iter().map(Ring::open).collect::<Result<Vec<_>, _>>()?;
        Ok(SideBandRings { rings })
    }

    /// Waits up to `timeout_ms` for a ring to pass its wake-up mark, then appends every record
    /// of every ring to `out` (raw, header included, one `Vec` per record).
    pub fn wait_and_drain(&mut self, timeout_ms: i32, out: &mut Vec<Vec<u8>>) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|ring| libc::pollfd { fd: ring.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd of the given length for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        // Below the wake-up mark records still wait: drain every ring each round, so a quiet
        // system sees its records within one timeout.
        for ring in &mut self.rings {
            ring.drain(out);
        }
        Ok(())
    }
}

/// "0-3,5,7-8" -> [0, 1, 2, 3, 5, 7, 8].
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<u32>().ok()?..=last.parse::<u32>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// One CPU's event and its mapped ring: a metadata page, then `DATA_PAGES` pages of records.
struct Ring {
    fd: OwnedFd,
    base: NonNull<u8>,
    mapped_bytes: usize,
}

// SAFETY: the mapping is owned by this value alone (unmapped on drop) and only read through
// `&mut self`; the kernel is the only other party and synchronises through data_head/data_tail.
unsafe impl Send for Ring {}

impl Ring {
    fn open(cpu: u32) -> Result<Ring, PerfError> {
        // SAFETY: perf_event_attr is plain data; all-zero is its documented "nothing" value.
        let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = sys::PERF_TYPE_SOFTWARE;
        attr.size = std::mem::size_of::<sys::perf_event_attr>() as u32;
        attr.config = u64::from(sys::PERF_COUNT_SW_DUMMY);
        attr.sample_type = u64::from(sys::PERF_SAMPLE_TID | sys::PERF_SAMPLE_TIME);
        attr.set_sample_id_all(1);
        attr.set_mmap(1);
        attr.set_mmap2(1);
        attr.set_mmap_data(0);
        attr.set_comm(1);
        attr.set_comm_exec(1);
        attr.set_task(1);
        attr.set_watermark(1);
        let data_bytes = DATA_PAGES * page_size();
        attr.__bindgen_anon_2.wakeup_watermark = (data_bytes / 4) as u32;
        // SAFETY: `attr` is a valid, fully initialised perf_event_attr; pid -1 with a cpu means
        // every process on that CPU.
        let fd = unsafe {
            perf_event_open_sys::perf_event_open(
                &mut attr,
                -1,
                cpu as i32,
                -1,
                u64::from(sys::PERF_FLAG_FD_CLOEXEC),
            )
        };
        if fd < 0 {
            return Err(PerfError::Open { cpu, source: io::Error::last_os_error() });
        }
        // SAFETY: `fd` was just returned by perf_event_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mapped_bytes = data_bytes + page_size();
        // SAFETY: a fresh shared mapping of the event fd; the kernel checks the length.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(PerfError::Map { cpu, source: io::Error::last_os_error() });
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| PerfError::Map { cpu, source: io::Error::other("mmap returned NULL") })?;
        Ok(Ring { fd, base, mapped_bytes })
    }

    fn page(&self) -> *mut sys::perf_event_mmap_page {
        self.base.as_ptr().cast()
    }

    /// Copies every complete record out of the ring and frees its space.
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        let page = self.page();
        // SAFETY: `page` is the live metadata page of the mapping. data_head is written by the
        // kernel: the acquire load pairs with its release store so the records before it are
        // visible. data_tail is ours; data_offset and data_size are fixed at mmap time.
        let (head, mut tail, offset, size) = unsafe {
            (
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_head)).load(Ordering::Acquire),
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_tail)).load(Ordering::Relaxed),
                (*page).data_offset as usize,
                (*page).data_size as usize,
            )
        };
        if size == 0 || offset + size > self.mapped_bytes {
            return;
        }
        // SAFETY: offset..offset+size lies inside the mapping (checked above).
        let data = unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset), size) };
        while head.wrapping_sub(tail) >= HEADER_BYTES as u64 {
            let header = copy_wrapped(data, tail, HEADER_BYTES);
            let length = u16::from_ne_bytes([header[6], header[7]]) as usize;
            if length < HEADER_BYTES || head.wrapping_sub(tail) < length as u64 {
                // Cannot happen with a sane kernel; skip everything rather than loop forever.
                tail = head;
                break;
            }
            out.push(copy_wrapped(data, tail, length));
            tail = tail.wrapping_add(length as u64);
        }
        // SAFETY: as above; the release store tells the kernel the space is free only after the
        // copies are done.
        unsafe {
            AtomicU64::from_ptr(std::ptr::addr_of_mut!((*page).data_tail)).store(tail, Ordering::Release)
        };
    }
}

/// `length` bytes of the ring `data` from position `at`, across the end if need be.
fn copy_wrapped(data: &[u8], at: u64, length: usize) -> Vec<u8> {
    let start = (at % data.len() as u64) as usize;
    let first = length.min(data.len() - start);
    let mut bytes = Vec::with_capacity(length);
    bytes.extend_from_slice(&data[start..start + first]);
    bytes.extend_from_slice(&data[..length - first]);
    bytes
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `open`, which nothing uses any more.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, misc: u16, body: &[u8], time: u64) -> Vec<u8> {
        let length = (HEADER_BYTES + body.len() + SAMPLE_ID_BYTES) as u16;
        let mut bytes = Vec::new();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(misc.to_ne_bytes());
        bytes.extend(length.to_ne_bytes());
        bytes.extend(body);
        bytes.extend([0u8; 8]);
        bytes.extend(time.to_ne_bytes());
        bytes
    }

    #[test]
    fn an_mmap2_record_decodes_to_a_mapping() {
        let mut body = Vec::new();
        body.extend(10u32.to_ne_bytes());
        body.extend(11u32.to_ne_bytes());
        for value in [0x7f00_0000_1000u64, 0x2000, 0x1000] {
            body.extend(value.to_ne_bytes());
        }
        body.extend(254u32.to_ne_bytes());
        body.extend(1u32.to_ne_bytes());
        body.extend(4242u64.to_ne_bytes());
        body.extend(0u64.to_ne_bytes());
        body.extend(((libc::PROT_READ | libc::PROT_EXEC) as u32).to_ne_bytes());
        body.extend((libc::MAP_PRIVATE as u32).to_ne_bytes());
        body.extend(b"/usr/lib/libfoo.so\0\0\0\0\0\0");
        let (time, decoded) = decode(&record(sys::PERF_RECORD_MMAP2, 2, &body, 77)).unwrap();
        assert_eq!(time, 77);
        let SideBand::Mapped(mapping) = decoded else { panic!("{decoded:?}") };
        assert_eq!(
            (mapping.pid, mapping.tid, mapping.address, mapping.length),
            (10, 11, 0x7f00_0000_1000, 0x2000)
        );
        assert_eq!((mapping.inode, mapping.device()), (4242, libc::makedev(254, 1)));
        assert_eq!(mapping.path, "/usr/lib/libfoo.so");
        assert_eq!(mapping.mode(), "r-x");
    }

    #[test]
    fn exec_exit_and_lost_records_decode_and_others_are_skipped() {
        let comm = [5u32.to_ne_bytes(), 5u32.to_ne_bytes()].concat();
        let exec = record(sys::PERF_RECORD_COMM, sys::PERF_RECORD_MISC_COMM_EXEC as u16, &comm, 1);
        assert_eq!(decode(&exec), Some((1, SideBand::Exec { pid: 5 })));
        assert_eq!(decode(&record(sys::PERF_RECORD_COMM, 0, &comm, 1)), None, "a rename, not an exec");
        let exit: Vec<u8> =
            [7u32, 1, 8, 1].iter().flat_map(|v| v.to_ne_bytes()).chain(9u64.to_ne_bytes()).collect();
        assert_eq!(
            decode(&record(sys::PERF_RECORD_EXIT, 0, &exit, 2)),
            Some((2, SideBand::Exit { pid: 7, tid: 8 }))
        );
        let lost = [1u64.to_ne_bytes(), 42u64.to_ne_bytes()].concat();
        assert_eq!(decode(&record(sys::PERF_RECORD_LOST, 0, &lost, 3)), Some((3, SideBand::Lost(42))));
        assert_eq!(decode(&record(sys::PERF_RECORD_FORK, 0, &exit, 4)), None);
        assert_eq!(decode(&exec[..10]), None, "truncated");
    }

    #[test]
    fn cpu_lists_and_wrapped_copies() {
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), Some(vec![0, 1, 2, 3, 5, 7, 8]));
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("x"), None);
        let ring = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(copy_wrapped(&ring, 6, 4), [7, 8, 1, 2]);
        assert_eq!(copy_wrapped(&ring, 8 + 1, 3), [2, 3, 4], "positions count up past the size");
    }
}
