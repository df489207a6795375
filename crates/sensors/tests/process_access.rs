//! The process access sensor end to end (Linux, as root): a Python helper (ctypes) attaches to
//! a `sleep` child with ptrace, writes a word of its code back unchanged with PTRACE_POKETEXT
//! (once in sleep's own text, once at libc's `qsort`), reads and rewrites bytes of its libc data
//! with process_vm_readv/writev, and opens its `/proc/PID/mem` for reading, writing and both.
//! The rows must name the helper, the target, the access, and the module and function written
//! to. The process sensor runs alongside on the same process cache, as in the agent.
#![cfg(target_os = "linux")]

mod support;
use support::{Collect, is_root, process_cache, start};

use std::process::Command;
use std::time::{Duration, Instant};

use watchpost_sensors::Sensor;
use watchpost_sensors::linux::process_access::ProcessAccessSensor;

const DEADLINE: Duration = Duration::from_secs(30);

/// Prints `SLEEP_PID TEXT_ADDRESS DATA_ADDRESS LIBC_PATH QSORT_ADDRESS`.
const HELPER: &str = r#"
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
for name in ("process_vm_readv", "process_vm_writev"):
    f = getattr(libc, name)
    f.restype = ctypes.c_ssize_t
    f.argtypes = [ctypes.c_int, ctypes.POINTER(iovec), ctypes.c_ulong, ctypes.POINTER(iovec), ctypes.c_ulong, ctypes.c_ulong]
# Not inheriting the helper's stdout, so the test's read of it ends when the helper exits.
child = subprocess.Popen(["/bin/sleep", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
pid = child.pid
maps = []
# Until the child runs sleep (not the forked copy of this interpreter, which has a libc too)
# and ld.so has mapped libc into it.
while not (any(m[1] == "r-xp" and m[-1].endswith("/sleep") for m in maps)
           and any(m[1] == "rw-p" and "libc.so" in m[-1] for m in maps)):
    maps = [line.split() for line in open(f"/proc/{pid}/maps")]
text = next(int(m[0].split("-")[0], 16) for m in maps if m[1] == "r-xp" and m[-1].endswith("/sleep"))
assert libc.ptrace(16, pid, None, None) == 0, "PTRACE_ATTACH"
os.waitpid(pid, 0)
# Only now, with the target stopped, are its mappings final: ld.so turns libc's first writable
# mapping (RELRO) read-only after relocating, and process_vm_writev honours page protections.
# libc's last writable mapping (.data/.bss) stays writable.
maps = [line.split() for line in open(f"/proc/{pid}/maps")]
data, libc_path = [(int(m[0].split("-")[0], 16), m[-1]) for m in maps if m[1] == "rw-p" and "libc.so" in m[-1]][-1]
word = libc.ptrace(1, pid, text, None) & (2**64 - 1)
assert libc.ptrace(4, pid, text, word) == 0, "PTRACE_POKETEXT"
# qsort in the target: its offset in this process's libc (the same file) from the target's base.
def libc_base(maps_path):
    return min(int(line.split()[0].split("-")[0], 16) for line in open(maps_path) if line.split()[-1] == libc_path)
qsort = ctypes.cast(libc.qsort, ctypes.c_void_p).value - libc_base("/proc/self/maps") + libc_base(f"/proc/{pid}/maps")
word = libc.ptrace(1, pid, qsort, None) & (2**64 - 1)
assert libc.ptrace(4, pid, qsort, word) == 0, "PTRACE_POKETEXT at qsort"
buffer = ctypes.create_string_buffer(16)
local, remote = iovec(ctypes.addressof(buffer), 16), iovec(data, 16)
assert libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == 16
assert libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) == 16
libc.ptrace(17, pid, None, None)
for mode in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):
    os.close(os.open(f"/proc/{pid}/mem", mode))
# The target lives on (the test kills it): module names are resolved from its live mappings.
print(pid, hex(text), hex(data), libc_path, hex(qsort))
"#;

/// The named columns of the rows of `table` so far, as text ("" for NULL).
fn rows(sink: &Collect, table: &str, columns: &[&str]) -> Vec<Vec<String>> {
    support::rows(sink, table).iter().map(|row| columns.iter().map(|c| row[*c].clone()).collect()).collect()
}

#[test]
fn ptrace_and_process_vm_access_are_reported_with_the_module_written() {
    if !is_root() {
        println!("SKIPPED ptrace_and_process_vm_access_are_reported_with_the_module_written: needs root");
        return;
    }
    let (cache, mut process_sensor, _) = process_cache();
    let mut sensor = ProcessAccessSensor::new(cache);
    let (sink, health) = start(&mut sensor, "process_access");
    assert_eq!(health.snapshot().mode, "bpf");

    let helper = Command::new("/usr/bin/python3").args(["-c", HELPER]).output().unwrap();
    assert!(helper.status.success(), "helper failed: {}", String::from_utf8_lossy(&helper.stderr));
    let printed = String::from_utf8(helper.stdout).unwrap();
    let fields: Vec<&str> = printed.split_whitespace().collect();
    let (sleep_pid, libc_path) = (fields[0].to_string(), fields[3].to_string());

    let open_columns = [
        "action",
        "src_pid",
        "target_pid",
        "src_path",
        "target_path",
        "granted_access",
        "granted_access_value",
        "owner_uid",
        "src_process_guid",
        "target_process_guid",
    ];
    let thread_columns = [
        "action",
        "src_pid",
        "target_pid",
        "src_path",
        "target_path",
        "module_name",
        "function_name",
        "owner_uid",
    ];
    let start = Instant::now();
    let (opens, threads) = loop {
        let opens: Vec<Vec<String>> = rows(&sink, "win_process_open_events", &open_columns)
            .into_iter()
            .filter(|r| r[2] == sleep_pid)
            .collect();
        let threads: Vec<Vec<String>> = rows(&sink, "win_remote_thread_events", &thread_columns)
            .into_iter()
            .filter(|r| r[2] == sleep_pid)
            .collect();
        if (opens.len() >= 6 && threads.len() >= 3) || start.elapsed() > DEADLINE {
            break (opens, threads);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    sensor.stop();
    process_sensor.stop();
    // SAFETY: kill(2) on the helper's sleep child, which the helper left running for the test.
    unsafe { libc::kill(sleep_pid.parse().unwrap(), libc::SIGKILL) };

    let python = std::fs::canonicalize("/usr/bin/python3").unwrap().to_str().unwrap().to_string();
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap().to_str().unwrap().to_string();
    let accesses: Vec<(&str, &str)> = opens.iter().map(|r| (r[5].as_str(), r[6].as_str())).collect();
    assert_eq!(
        accesses,
        [
            ("PTRACE_ATTACH", "0x10000"),
            ("VM_READ", "0x10"),
            ("VM_WRITE", "0x20"),
            ("PROC_MEM_READ", "0x40000"),
            ("PROC_MEM_WRITE", "0x80000"),
            ("PROC_MEM_READ|PROC_MEM_WRITE", "0xc0000")
        ]
    );
    let helper_pid = &opens[0][1];
    for row in &opens {
        assert_eq!(row[0], "PROC_OPEN");
        assert_eq!(&row[1], helper_pid, "one helper did it all");
        assert_eq!(
            (row[3].as_str(), row[4].as_str(), row[7].as_str()),
            (python.as_str(), sleep.as_str(), "root")
        );
        let pid: u32 = sleep_pid.parse().unwrap();
        assert!(row[9].starts_with(&format!("{pid:08X}-")), "target guid {}", row[9]);
        assert!(!row[8].is_empty());
    }
    let injections: Vec<(&str, &str, &str)> =
        threads.iter().map(|r| (r[0].as_str(), r[5].as_str(), r[6].as_str())).collect();
    // sleep is stripped and exports no functions; libc's data holds no function.
    assert_eq!(
        injections,
        [
            ("PTRACE_POKETEXT", sleep.as_str(), ""),
            ("PTRACE_POKETEXT", libc_path.as_str(), "qsort"),
            ("VM_WRITE", libc_path.as_str(), "")
        ]
    );
    for row in &threads {
        assert_eq!(&row[1], helper_pid);
        assert_eq!(
            (row[3].as_str(), row[4].as_str(), row[7].as_str()),
            (python.as_str(), sleep.as_str(), "root")
        );
    }
    assert_eq!(health.snapshot().lost, 0);
}
