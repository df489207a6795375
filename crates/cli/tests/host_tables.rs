//! Host tables through SQL on the daemon, each provoked by the test itself.
#![cfg(target_os = "linux")]

mod common;

use std::process::{Command, Stdio};

use common::{Daemon, is_root, logger_config, text};

#[test]
fn process_handles_show_a_file_this_test_holds_open() {
    let daemon = Daemon::start(&logger_config(""));
    let held = daemon.dir.path().join("held-open.txt");
    std::fs::write(&held, "x").expect("write");
    let _file = std::fs::File::open(&held).expect("open");
    let pid = std::process::id();
    let rows = daemon.rows(&format!(
        "SELECT handle_type, object_name, process_guid FROM win_process_handles WHERE pid = {pid}"
    ));
    let row = rows
        .iter()
        .find(|r| text(r, "object_name") == held.display().to_string())
        .unwrap_or_else(|| panic!("no handle on {}: {rows:?}", held.display()));
    assert_eq!(text(row, "handle_type"), "file");
    assert_eq!(text(row, "process_guid").len(), 36);
}

#[test]
fn process_perf_reports_a_child_process() {
    let daemon = Daemon::start(&logger_config(""));
    let mut child = Command::new("sleep").arg("30").stdout(Stdio::null()).spawn().expect("spawn sleep");
    let rows = daemon.rows(&format!(
        "SELECT name, thread_count, creating_process_id, working_set FROM win_process_perf WHERE pid = {}",
        child.id()
    ));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(text(&rows[0], "name"), "sleep");
    assert_eq!(text(&rows[0], "thread_count"), "1");
    assert_eq!(text(&rows[0], "creating_process_id"), std::process::id().to_string());
    assert!(text(&rows[0], "working_set").parse::<u64>().unwrap_or(0) > 0, "{rows:?}");
}

#[test]
fn endpoint_protection_lists_clamav_when_installed() {
    if !std::path::Path::new("/usr/bin/clamscan").exists()
        && !std::path::Path::new("/usr/sbin/clamd").exists()
    {
        eprintln!("SKIPPED: ClamAV is not installed (scripts/setup.sh installs it)");
        return;
    }
    let daemon = Daemon::start(&logger_config(""));
    let rows = daemon.rows("SELECT product_name, product_state, product_signatures FROM win_epp_table");
    let clam = rows
        .iter()
        .find(|r| text(r, "product_name").contains("ClamAV"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(["On", "Off"].contains(&text(clam, "product_state").as_str()), "{clam:?}");
    assert!(["Up-to-date", "Out-of-date"].contains(&text(clam, "product_signatures").as_str()), "{clam:?}");
}

/// A loop device made with LOOP_CTL_ADD (the kernel sends an `add` uevent), removed on drop.
struct LoopDevice {
    control: std::fs::File,
    number: libc::c_long,
}

impl LoopDevice {
    fn add() -> LoopDevice {
        use std::os::fd::AsRawFd;
        const LOOP_CTL_ADD: libc::c_ulong = 0x4C80;
        let control = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .expect("/dev/loop-control");
        for number in 300..1000 {
            // SAFETY: LOOP_CTL_ADD takes the device number as its argument.
            if unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_ADD as _, number as libc::c_long) } >= 0 {
                return LoopDevice { control, number };
            }
        }
        panic!("no free loop device number between 300 and 1000");
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        const LOOP_CTL_REMOVE: libc::c_ulong = 0x4C81;
        // SAFETY: LOOP_CTL_REMOVE takes the device number as its argument.
        unsafe { libc::ioctl(self.control.as_raw_fd(), LOOP_CTL_REMOVE as _, self.number) };
    }
}

#[test]
fn a_loop_device_shows_as_removable_media_only_when_the_config_opts_in() {
    if !is_root() {
        eprintln!("SKIPPED: loop devices need root (CI runs as root)");
        return;
    }
    let opted_in = Daemon::start(&logger_config(r#""watchpost": {"removable_media_loop_devices": true},"#));
    let default = Daemon::start(&logger_config(""));
    for daemon in [&opted_in, &default] {
        let running = common::wait_for(std::time::Duration::from_secs(20), || {
            let rows = daemon
                .rows("SELECT state FROM watchpost_status WHERE table_name = 'win_removable_media_events'");
            rows.first().filter(|r| text(r, "state") == "running").map(|_| ())
        });
        assert!(running.is_some(), "the removable media sensor is not running:\n{}", daemon.stderr());
    }
    let device = LoopDevice::add();
    let rows = opted_in.wait_rows("SELECT action, eid, utc_time FROM win_removable_media_events", 1);
    assert_eq!(text(&rows[0], "action"), "Loop Device Attached", "{rows:?}");
    assert!(text(&rows[0], "utc_time").ends_with(" UTC"), "{rows:?}");
    // Both daemons got the same kernel event; give the default one time to have stored it, were
    // it (wrongly) to report loop devices.
    std::thread::sleep(std::time::Duration::from_secs(1));
    drop(device);
    let rows = default.rows("SELECT action FROM win_removable_media_events");
    assert!(rows.is_empty(), "loop devices are not removable media by default: {rows:?}");
}

#[test]
fn obfuscated_powershell_is_scored_from_the_configured_log() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log = log_dir.path().join("syslog");
    let block = |time: &str, id: &str, part: u32, total: u32, script: &str| {
        format!(
            "{time} host1 powershell[4242]: (7.4.1:1:80) [ScriptBlock_Compile_Detail:ExecuteCommand.Create.Verbose] \
             Creating Scriptblock text ({part} of {total}):#012{}#012#012ScriptBlock ID: {id}#012Path: \n",
            script.replace('\n', "#012")
        )
    };
    let plain_id = "11111111-2222-4333-8444-555555555555";
    let obfuscated_id = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    let text_log = [
        block(
            "2024-03-07T08:23:10.000000+00:00",
            plain_id,
            1,
            1,
            "$files = Get-ChildItem -Path /var/log -Filter '*.log'\nforeach ($file in $files) {\n    Write-Host \"$($file.Name): $($file.Length) bytes\"\n}",
        ),
        block("2024-03-07T08:23:11.000000+00:00", obfuscated_id, 1, 2, "$a = ('{3}{0}{2}{1}' -f 'oke-','on','Expressi','Inv')\n"),
        block(
            "2024-03-07T08:23:12.000000+00:00",
            obfuscated_id,
            2,
            2,
            "$b = 'Wri'+'te-'+'Ho'+'st'+' '+'hi'\n&$a $b; I`E`X (nEw-oBjEcT NeT.wEbClIeNt)",
        ),
    ]
    .concat();
    std::fs::write(&log, text_log).expect("write the PowerShell log");
    let daemon =
        Daemon::start(&logger_config(&format!(r#""watchpost": {{"powershell_log": "{}"}},"#, log.display())));
    let rows = daemon.rows(
        "SELECT script_id, time_created, obfuscated_state, obfuscated_score FROM win_obfuscated_ps ORDER BY time_created",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(text(&rows[0], "script_id"), plain_id);
    assert_eq!(text(&rows[0], "obfuscated_state"), "Not Obfuscated");
    assert_eq!(text(&rows[1], "script_id"), obfuscated_id);
    assert_eq!(text(&rows[1], "time_created"), "2024-03-07T08:23:11.000000+00:00");
    assert_eq!(text(&rows[1], "obfuscated_state"), "Obfuscated");
    let score: f64 = text(&rows[1], "obfuscated_score").parse().expect("a score");
    assert!(score > 0.5 && score <= 1.0, "{rows:?}");
    let status = daemon.rows("SELECT state FROM watchpost_status WHERE table_name = 'win_obfuscated_ps'");
    assert_eq!(text(&status[0], "state"), "available", "{status:?}");
}
