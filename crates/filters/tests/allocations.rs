//! `judge` allocates nothing for ASCII text and integers (after the first events have warmed up
//! the regex caches and the thread's lower-case buffer), so the filter stage adds no allocator traffic to the sensors' hot path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use watchpost_catalog::{Event, Stamper, Value, catalog};
use watchpost_filters::{FilterSet, Verdict};

/// Counts the allocations of the current thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn event(table: &str, values: &[(&str, Value)]) -> Event {
    let table = catalog().table(table).unwrap();
    let mut event = Event::new(table, Stamper::global().stamp());
    for (column, value) in values {
        event.set(table.column_index(column).unwrap(), value.clone());
    }
    event
}

#[test]
fn judging_ascii_and_integer_values_allocates_nothing() {
    // Every shape of value: exact, prefix, suffix, substring, general glob.
    let config = r#"{"plgx_event_filters": {
        "win_process_events": {
            "cmdline": {"exclude": {"values": ["C:\\Windows\\system32\\DllHost.exe /Processid*", "*svchost.exe -k *"]}},
            "path": {"exclude": {"values": ["C:\\Windows\\System32\\ctfmon.exe", "*\\OneDrive.exe", "*\\Temp\\*"]}},
            "parent_path": {"exclude": {"values": ["C:\\Program Files\\*\\updater?.exe"]}}},
        "win_socket_events": {
            "remote_port": {"include": {"values": ["443", "80??"]}},
            "remote_address": {"include": {"values": ["10.*"]}}}}}"#;
    let config = watchpost_config::parse("test.conf", config).unwrap();
    let set = FilterSet::compile(&config.filters).unwrap();
    // Past the 256 bytes lowered on the stack: the thread's reused buffer takes them.
    let long_svchost = format!(r"C:\WINDOWS\system32\svchost.exe -k {}", "Arg".repeat(100));
    let long_tool = format!(r"C:\Tools\Run.exe {}", "Arg".repeat(100));
    let processes: Vec<Event> = [
        (r"C:\Windows\system32\DllHost.exe /Processid:{AB}", r"C:\Windows\system32\DllHost.exe", ""),
        (r"C:\WINDOWS\system32\svchost.exe -k netsvcs", r"C:\WINDOWS\system32\svchost.exe", ""),
        ("ctfmon", r"c:\windows\system32\CTFMON.EXE", ""),
        ("onedrive", r"C:\Users\bob\OneDrive.exe", ""),
        ("x", r"C:\Users\bob\AppData\Local\TEMP\x.exe", ""),
        ("u", r"C:\u.exe", r"C:\Program Files\Vendor\Updater1.exe"),
        (
            r"C:\Windows\system32\cmd.exe /c whoami",
            r"C:\Windows\system32\cmd.exe",
            r"C:\Windows\explorer.exe",
        ),
        (long_svchost.as_str(), r"C:\WINDOWS\system32\svchost.exe", ""),
        (long_tool.as_str(), r"C:\Tools\Run.exe", ""),
    ]
    .iter()
    .map(|(cmdline, path, parent)| {
        event(
            "win_process_events",
            &[("cmdline", (*cmdline).into()), ("path", (*path).into()), ("parent_path", (*parent).into())],
        )
    })
    .collect();
    let sockets: Vec<Event> = [(443, "8.8.8.8"), (8080, "1.1.1.1"), (22, "10.0.0.1"), (22, "192.168.0.1")]
        .iter()
        .map(|(port, address)| {
            event(
                "win_socket_events",
                &[("remote_port", Value::Integer(*port)), ("remote_address", (*address).into())],
            )
        })
        .collect();
    let expected = [
        Verdict::Drop,
        Verdict::Drop,
        Verdict::Drop,
        Verdict::Drop,
        Verdict::Drop,
        Verdict::Drop,
        Verdict::Keep,
        Verdict::Drop,
        Verdict::Keep,
        Verdict::Keep,
        Verdict::Keep,
        Verdict::Keep,
        Verdict::Drop,
    ];
    let judge_all = |verdicts: &mut [Verdict; 13]| {
        for (slot, event) in verdicts.iter_mut().zip(processes.iter().chain(&sockets)) {
            *slot = set.judge(event);
        }
    };
    let mut verdicts = [Verdict::Keep; 13];
    judge_all(&mut verdicts);
    assert_eq!(verdicts, expected);

    let mut again = [Verdict::Keep; 13];
    assert_eq!(allocations_during(|| judge_all(&mut again)), 0);
    assert_eq!(again, expected);

    // The counter does see allocations: non-ASCII text is folded into a new string.
    let non_ascii = event("win_process_events", &[("path", r"C:\Users\Jörg\OneDrive.exe".into())]);
    let mut verdict = Verdict::Keep;
    assert_eq!(allocations_during(|| verdict = set.judge(&non_ascii)), 1);
    assert_eq!(verdict, Verdict::Drop);
}
