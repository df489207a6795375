//! Decoding of the records `bpf/process.bpf.c` writes into its ring buffer. The layouts are
//! fixed there (`struct event_header`, `exec_event`, `exit_event`, `fork_event`); this file
//! mirrors them by offset and reads them without `unsafe`.

/// Bytes of `struct event_header`.
const HEADER: usize = 40;
const FILENAME_MAX_BYTES: usize = 4096;
const ARGS_MAX_BYTES: usize = 4096;
/// Offset of `exec_event.filename`.
const EXEC_FILENAME: usize = HEADER + 16;
/// Offset of `exec_event.args`.
const EXEC_ARGS: usize = EXEC_FILENAME + FILENAME_MAX_BYTES;

const KIND_EXEC: u32 = 1;
const KIND_EXIT: u32 = 2;
const KIND_FORK: u32 = 3;

/// The ids every record carries. Start times are nanoseconds since boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Thread group id.
    pub pid: u32,
    /// The real parent's thread group id.
    pub ppid: u32,
    /// Effective uid.
    pub uid: u32,
    pub start_boottime_ns: u64,
    pub parent_start_boottime_ns: u64,
    /// The task's `self_exec_id`: one more at every exec, inherited by fork. With the start
    /// time it tells which image of a process another sensor's record was made under.
    pub exec_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessRecord {
    Exec {
        header: RecordHeader,
        /// The file run, as given to execve (may be relative); for a script, its interpreter.
        filename: String,
        /// argv, NUL-separated as in the process's memory.
        args: Vec<u8>,
        /// argv was longer than the kernel side copies.
        args_truncated: bool,
    },
    Exit {
        header: RecordHeader,
        exit_code: i32,
    },
    /// `header` describes the child.
    Fork {
        header: RecordHeader,
    },
}

/// A record that is shorter than its kind needs, or of an unknown kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed process record ({length} bytes, kind {kind}): BPF program and sensor disagree")]
pub struct RecordError {
    kind: u32,
    length: usize,
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(offset..offset + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(data.get(offset..offset + 8)?.try_into().ok()?))
}

/// The bytes of a C string field up to its first NUL.
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

pub fn decode(data: &[u8]) -> Result<ProcessRecord, RecordError> {
    let kind = u32_at(data, 0).unwrap_or(0);
    let error = RecordError { kind, length: data.len() };
    let header = || -> Option<RecordHeader> {
        Some(RecordHeader {
            pid: u32_at(data, 4)?,
            ppid: u32_at(data, 8)?,
            uid: u32_at(data, 12)?,
            start_boottime_ns: u64_at(data, 16)?,
            parent_start_boottime_ns: u64_at(data, 24)?,
            exec_id: u64_at(data, 32)?,
        })
    };
    let record = match kind {
        KIND_EXEC => (|| {
            let filename_len = (u32_at(data, HEADER)? as usize).min(FILENAME_MAX_BYTES);
            let args_len = (u32_at(data, HEADER + 4)? as usize).min(ARGS_MAX_BYTES);
            let args_truncated = u32_at(data, HEADER + 8)? != 0;
            Some(ProcessRecord::Exec {
                header: header()?,
                filename: c_string(data.get(EXEC_FILENAME..EXEC_FILENAME + filename_len)?),
                args: data.get(EXEC_ARGS..EXEC_ARGS + args_len)?.to_vec(),
                args_truncated,
            })
        })(),
        KIND_EXIT => {
            (|| Some(ProcessRecord::Exit { header: header()?, exit_code: u32_at(data, HEADER)? as i32 }))()
        }
        KIND_FORK => header().map(|header| ProcessRecord::Fork { header }),
        _ => None,
    };
    record.ok_or(error)
}

/// Nanoseconds since boot in the clock ticks `/proc/PID/stat` counts start times in (the
/// kernel's `nsec_to_clock_t`), so guids from events and from `/proc` agree.
pub fn boottime_to_ticks(nanoseconds: u64, ticks_per_second: u64) -> u64 {
    nanoseconds / (1_000_000_000 / ticks_per_second.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(kind: u32) -> Vec<u8> {
        let mut data = Vec::new();
        for value in [kind, 4242, 1, 1000] {
            data.extend(value.to_ne_bytes());
        }
        data.extend(1_234_567_890u64.to_ne_bytes());
        data.extend(5_000_000u64.to_ne_bytes());
        data.extend(7u64.to_ne_bytes());
        data
    }

    fn header() -> RecordHeader {
        RecordHeader {
            pid: 4242,
            ppid: 1,
            uid: 1000,
            start_boottime_ns: 1_234_567_890,
            parent_start_boottime_ns: 5_000_000,
            exec_id: 7,
        }
    }

    #[test]
    fn exec_records_carry_filename_and_args() {
        let mut data = header_bytes(KIND_EXEC);
        let filename = b"/bin/true\0";
        let args = b"/bin/true\0MARKER\0";
        for value in [filename.len() as u32, args.len() as u32, 0, 0] {
            data.extend(value.to_ne_bytes());
        }
        let mut field = vec![0u8; FILENAME_MAX_BYTES];
        field[..filename.len()].copy_from_slice(filename);
        data.extend(&field);
        let mut field = vec![0u8; ARGS_MAX_BYTES];
        field[..args.len()].copy_from_slice(args);
        data.extend(&field);
        assert_eq!(
            decode(&data).unwrap(),
            ProcessRecord::Exec {
                header: header(),
                filename: "/bin/true".into(),
                args: args.to_vec(),
                args_truncated: false
            }
        );
        assert!(decode(&data[..100]).is_err(), "a cut record is refused");
    }

    #[test]
    fn exit_and_fork_records_decode() {
        let mut data = header_bytes(KIND_EXIT);
        data.extend(256i32.to_ne_bytes());
        data.extend(0u32.to_ne_bytes());
        assert_eq!(decode(&data).unwrap(), ProcessRecord::Exit { header: header(), exit_code: 256 });
        assert_eq!(decode(&header_bytes(KIND_FORK)).unwrap(), ProcessRecord::Fork { header: header() });
        assert_eq!(decode(&header_bytes(9)), Err(RecordError { kind: 9, length: 40 }));
    }

    #[test]
    fn boot_nanoseconds_become_clock_ticks() {
        assert_eq!(boottime_to_ticks(1_234_567_890, 100), 123);
        assert_eq!(boottime_to_ticks(1_234_567_890, 1000), 1234);
    }
}
