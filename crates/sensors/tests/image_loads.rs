//! The image load sensor end to end (Linux, as root): a Python helper `dlopen`s a private copy
//! of a small library, closes it and opens it again (so the same image is mapped twice in one
//! process), and `/bin/true` is exec'd fresh. Two sensors watch at once, one with the default
//! per-process de-duplication and one reporting every mapping, next to the process sensor that
//! fills the shared cache as in the agent.
#![cfg(target_os = "linux")]

mod support;
use support::{Collect, is_root, process_cache, start};

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_catalog::catalog;
use watchpost_config::{Config, ImageLoadDedup};
use watchpost_sensors::Sensor;
use watchpost_sensors::linux::image_loads::ImageLoadSensor;
use watchpost_sensors::linux::process_cache::ProcessCache;

const DEADLINE: Duration = Duration::from_secs(30);
/// A small packaged library that depends on libc only and that Python does not load itself.
const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/libXau.so.6";
const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

/// Loads the library at argv[1], unloads it (unmapped: nothing else holds it), loads it again,
/// and prints its pid.
const HELPER: &str = r#"
import ctypes, _ctypes, os, sys
library = ctypes.CDLL(sys.argv[1])
_ctypes.dlclose(library._handle)
library = ctypes.CDLL(sys.argv[1])
print(os.getpid())
"#;

/// The named columns of the rows of `table` whose pid is `pid`, as text ("" for NULL).
fn rows(sink: &Collect, table: &str, pid: u32, columns: &[&str]) -> Vec<Vec<String>> {
    support::rows(sink, table)
        .iter()
        .filter(|row| row["pid"] == pid.to_string())
        .map(|row| columns.iter().map(|c| row[*c].clone()).collect())
        .collect()
}

fn md5sum(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

const EVENT_COLUMNS: [&str; 7] =
    ["image_path", "md5", "uid", "process_guid", "sign_info", "trust_info", "action"];

#[test]
fn image_loads_are_reported_once_per_process_with_hash_and_package() {
    if !is_root() {
        println!("SKIPPED: system-wide perf events need root (CI runs as root)");
        return;
    }
    let (cache, mut process_sensor, processes) = process_cache();
    let mut per_process = ImageLoadSensor::new(Arc::clone(&cache), &Config::default());
    let (sink, health) = start(&mut per_process, "image_loads");
    let mut every = Config::default();
    every.sensor_options.image_load_dedup = ImageLoadDedup::None;
    let mut every_mapping = ImageLoadSensor::new(Arc::clone(&cache), &every);
    let (every_sink, _) = start(&mut every_mapping, "image_loads");
    assert_eq!(health.snapshot().mode, "perf");

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libwatchpost-test.so");
    std::fs::copy(LIBRARY, &copy).unwrap();
    let copy_path = copy.to_str().unwrap().to_string();
    let helper = Command::new("/usr/bin/python3").args(["-c", HELPER, &copy_path]).output().unwrap();
    assert!(helper.status.success(), "helper failed: {}", String::from_utf8_lossy(&helper.stderr));
    let helper_pid: u32 = String::from_utf8(helper.stdout).unwrap().trim().parse().unwrap();
    let true_pid = {
        let mut child = Command::new("/bin/true").spawn().unwrap();
        assert!(child.wait().unwrap().success());
        child.id()
    };

    let started = Instant::now();
    let (helper_rows, true_rows, every_copies) = loop {
        let helper_rows = rows(&sink, "win_image_load_events", helper_pid, &EVENT_COLUMNS);
        let true_rows = rows(&sink, "win_image_load_events", true_pid, &EVENT_COLUMNS);
        let every_copies: Vec<_> = rows(&every_sink, "win_image_load_events", helper_pid, &EVENT_COLUMNS)
            .into_iter()
            .filter(|r| r[0] == copy_path)
            .collect();
        let true_done =
            true_rows.iter().any(|r| r[0] == LIBC) && true_rows.iter().any(|r| r[0] == "/usr/bin/true");
        if (helper_rows.iter().any(|r| r[0] == copy_path) && every_copies.len() >= 2 && true_done)
            || started.elapsed() > DEADLINE
        {
            break (helper_rows, true_rows, every_copies);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let helper_map = rows(
        &sink,
        "win_image_load_process_map",
        helper_pid,
        &["image_path", "md5", "process_guid", "image_base", "image_size", "image_memory_mode"],
    );
    per_process.stop();
    every_mapping.stop();
    process_sensor.stop();

    // The library mapped twice in one process: two rows when every mapping counts, one by default.
    assert_eq!(every_copies.len(), 2, "{every_copies:?}");
    let copies: Vec<_> = helper_rows.iter().filter(|r| r[0] == copy_path).collect();
    assert_eq!(copies.len(), 1, "{helper_rows:?}");
    let copy_row = copies[0];
    let helper_guid = copy_row[3].clone();
    assert!(helper_guid.starts_with(&format!("{helper_pid:08X}-")), "{copy_row:?}");
    assert_eq!(
        copy_row[..],
        [
            copy_path.clone(),
            md5sum(&copy),
            "root".into(),
            helper_guid.clone(),
            "Unpackaged".into(),
            "Untrusted".into(),
            "IMAGE_LOAD".into()
        ]
    );
    // The interpreter's own image, with the same process guid.
    assert!(
        helper_rows.iter().any(|r| r[0] == "/usr/bin/python3.11" && r[3] == helper_guid),
        "{helper_rows:?}"
    );
    let map_row = helper_map.iter().find(|r| r[0] == copy_path).expect("a process map row for the copy");
    assert_eq!(
        (map_row[1].as_str(), map_row[2].as_str(), map_row[5].as_str()),
        (copy_row[1].as_str(), helper_guid.as_str(), "r-x")
    );
    assert!(
        map_row[3].starts_with("0x") && u64::from_str_radix(&map_row[3][2..], 16).unwrap() % 4096 == 0,
        "{map_row:?}"
    );
    assert!(map_row[4].parse::<u64>().unwrap() >= 4096, "{map_row:?}");

    // A fresh exec: the main image and libc, each once, hashed and vouched for by their packages.
    let true_images: Vec<&str> = true_rows.iter().map(|r| r[0].as_str()).collect();
    for image in ["/usr/bin/true", LIBC] {
        assert_eq!(true_images.iter().filter(|i| **i == image).count(), 1, "{true_rows:?}");
    }
    let true_guid = &true_rows[0][3];
    assert!(true_guid.starts_with(&format!("{true_pid:08X}-")), "{true_rows:?}");
    for (image, package) in [("/usr/bin/true", "coreutils"), (LIBC, "libc6")] {
        let row = true_rows.iter().find(|r| r[0] == image).unwrap();
        assert_eq!(
            row[1..6],
            [
                md5sum(Path::new(image)),
                "root".into(),
                true_guid.clone(),
                format!("Package: {package} (checksum matches)"),
                "Trusted".into()
            ]
        );
    }
    // The same guid as the process sensor's row for that exec.
    let process_table = catalog().table("win_process_events").unwrap();
    let guid_at = process_table.column_index("process_guid").unwrap();
    let pid_at = process_table.column_index("pid").unwrap();
    let process_guids: Vec<String> = processes
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.values[pid_at].to_text() == Some(true_pid.to_string()))
        .filter_map(|e| e.values[guid_at].to_text())
        .collect();
    assert!(process_guids.contains(true_guid), "{process_guids:?} vs {true_guid}");
    assert_eq!(health.snapshot().lost, 0);
}

#[test]
fn the_agents_own_loads_are_not_reported() {
    if !is_root() {
        println!("SKIPPED: system-wide perf events need root (CI runs as root)");
        return;
    }
    let cache = Arc::new(ProcessCache::default());
    let mut sensor = ImageLoadSensor::new(Arc::clone(&cache), &Config::default());
    let (sink, _) = start(&mut sensor, "image_loads");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libwatchpost-own.so");
    std::fs::copy(LIBRARY, &copy).unwrap();
    // Maps the copy executable into this (the "agent's") process, then a child does the same:
    // the child's load proves the sensor saw the file, and the own load must be missing.
    let file = std::fs::File::open(&copy).unwrap();
    // SAFETY: a private read+exec mapping of a file this test owns; unmapped right after.
    unsafe {
        use std::os::fd::AsRawFd;
        let address = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(address, libc::MAP_FAILED);
        libc::munmap(address, 4096);
    }
    let helper =
        Command::new("/usr/bin/python3").args(["-c", HELPER, copy.to_str().unwrap()]).output().unwrap();
    assert!(helper.status.success(), "helper failed: {}", String::from_utf8_lossy(&helper.stderr));
    let helper_pid: u32 = String::from_utf8(helper.stdout).unwrap().trim().parse().unwrap();
    let started = Instant::now();
    while rows(&sink, "win_image_load_events", helper_pid, &EVENT_COLUMNS)
        .iter()
        .all(|r| r[0] != copy.to_str().unwrap())
        && started.elapsed() < DEADLINE
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    sensor.stop();
    assert!(
        rows(&sink, "win_image_load_events", helper_pid, &EVENT_COLUMNS)
            .iter()
            .any(|r| r[0] == copy.to_str().unwrap())
    );
    assert!(rows(&sink, "win_image_load_events", std::process::id(), &EVENT_COLUMNS).is_empty());
}
