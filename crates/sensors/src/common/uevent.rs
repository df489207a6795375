//! Kernel uevents (`NETLINK_KOBJECT_UEVENT`) and which of them are removable media, for
//! `win_removable_media_events`. Receiving them is Linux code; the decoding is here.
//!
//! A kernel uevent is `ACTION@DEVPATH\0KEY=VALUE\0KEY=VALUE...`. Messages udev re-broadcasts
//! start with `libudev\0` and are not accepted (only the kernel is trusted).
//!
//! `action` mapping, for block devices that are whole disks (`SUBSYSTEM=block`,
//! `DEVTYPE=disk`; partitions would repeat the same insertion):
//! - `add` of `sr*`, or `change` of `sr*` with `DISK_MEDIA_CHANGE=1` (a disc put in a drive):
//!   `CDROM Inserted`;
//! - `add` of a disk whose `DEVPATH` goes through a USB device (`/usb`): `USB Inserted`;
//! - `add` of `mmcblkN` (SD/MMC cards; not the `bootN`/`rpmb` areas), or of any other disk whose
//!   sysfs `removable` attribute is 1: `Removable Media Inserted`;
//! - `add` of `loopN`: `Loop Device Attached`, only when [`MediaOptions::report_loop_devices`]
//!   is set (tests use loop devices because our machines have no USB bus; a loop device is a
//!   file, not media, so it is not reported by default);
//! - anything else (partitions, fixed disks, `dm-*`, `zram*`, `nbd*`, removals): nothing.
//!
//! Trust: an event counts only if the kernel sent it (netlink sender port 0) and it is not
//! synthetic (no `SYNTH_UUID`: synthetic events are what anyone with write access to a
//! device's `uevent` file in sysfs triggers). [`MediaOptions::accept_synthetic`] lets tests
//! accept synthetic ones; nothing else sets it.

use std::collections::BTreeMap;

/// A decoded uevent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub vars: BTreeMap<String, String>,
}

impl Uevent {
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Triggered by a write to a sysfs `uevent` file rather than by a device change.
    pub fn is_synthetic(&self) -> bool {
        self.vars.contains_key("SYNTH_UUID")
    }
}

/// Decodes a kernel uevent message; `None` for udev's re-broadcasts and malformed messages.
pub fn parse_uevent(message: &[u8]) -> Option<Uevent> {
    let mut fields = message.split(|&b| b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    let vars = fields
        .filter_map(|field| {
            let (key, value) = std::str::from_utf8(field).ok()?.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect();
    Some(Uevent { action: action.to_string(), devpath: devpath.to_string(), vars })
}

/// Test-only switches; both off in production.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaOptions {
    pub report_loop_devices: bool,
    pub accept_synthetic: bool,
}

/// Whether the event may be believed: sent by the kernel, and not synthetic unless allowed.
pub fn is_trusted(event: &Uevent, sender_port: u32, options: MediaOptions) -> bool {
    sender_port == 0 && (!event.is_synthetic() || options.accept_synthetic)
}

/// The `action` text for `event`, see the module doc; `removable` is the disk's sysfs
/// `removable` attribute when it could be read.
pub fn media_action(event: &Uevent, removable: Option<bool>, options: MediaOptions) -> Option<&'static str> {
    if event.var("SUBSYSTEM") != Some("block") || event.var("DEVTYPE") != Some("disk") {
        return None;
    }
    let name = event.var("DEVNAME").unwrap_or_else(|| event.devpath.rsplit('/').next().unwrap_or(""));
    let name = name.trim_start_matches("/dev/");
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    match event.action.as_str() {
        "add" if numbered("sr") => Some("CDROM Inserted"),
        "change" if numbered("sr") && event.var("DISK_MEDIA_CHANGE") == Some("1") => Some("CDROM Inserted"),
        "add" if numbered("loop") => options.report_loop_devices.then_some("Loop Device Attached"),
        "add" if event.devpath.contains("/usb") => Some("USB Inserted"),
        "add" if numbered("mmcblk") || removable == Some(true) => Some("Removable Media Inserted"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(header: &str, vars: &[&str]) -> Vec<u8> {
        let mut bytes = header.as_bytes().to_vec();
        for var in vars {
            bytes.push(0);
            bytes.extend_from_slice(var.as_bytes());
        }
        bytes.push(0);
        bytes
    }

    /// Recorded with `udevadm monitor --kernel --property` when a USB stick was plugged in.
    fn usb_stick() -> Vec<u8> {
        message(
            "add@/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
            &[
                "ACTION=add",
                "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                "SUBSYSTEM=block",
                "MAJOR=8",
                "MINOR=16",
                "DEVNAME=sdb",
                "DEVTYPE=disk",
                "DISKSEQ=9",
                "SEQNUM=5123",
            ],
        )
    }

    fn action(bytes: &[u8], options: MediaOptions) -> Option<&'static str> {
        media_action(&parse_uevent(bytes).unwrap(), None, options)
    }

    #[test]
    fn a_usb_stick_is_usb_inserted_and_its_partition_is_not_repeated() {
        let event = parse_uevent(&usb_stick()).unwrap();
        assert_eq!(event.action, "add");
        assert_eq!(event.var("DEVNAME"), Some("sdb"));
        assert_eq!(media_action(&event, Some(true), MediaOptions::default()), Some("USB Inserted"));
        let partition = String::from_utf8(usb_stick()).unwrap().replace("DEVTYPE=disk", "DEVTYPE=partition");
        assert_eq!(action(partition.as_bytes(), MediaOptions::default()), None);
        let removed = String::from_utf8(usb_stick()).unwrap().replace("add", "remove");
        assert_eq!(action(removed.as_bytes(), MediaOptions::default()), None);
    }

    #[test]
    fn cdroms_cards_and_other_disks() {
        let options = MediaOptions::default();
        let cd = message(
            "change@/devices/pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sr0",
            &["ACTION=change", "SUBSYSTEM=block", "DEVNAME=sr0", "DEVTYPE=disk", "DISK_MEDIA_CHANGE=1"],
        );
        assert_eq!(action(&cd, options), Some("CDROM Inserted"));
        let sd = message(
            "add@/devices/platform/soc/mmc0/mmc0:aaaa/block/mmcblk0",
            &["ACTION=add", "SUBSYSTEM=block", "DEVNAME=mmcblk0", "DEVTYPE=disk"],
        );
        assert_eq!(action(&sd, options), Some("Removable Media Inserted"));
        let boot_area = message(
            "add@/devices/platform/soc/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0boot0",
            &["ACTION=add", "SUBSYSTEM=block", "DEVNAME=mmcblk0boot0", "DEVTYPE=disk"],
        );
        assert_eq!(action(&boot_area, options), None);
        let fixed = message(
            "add@/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
            &["ACTION=add", "SUBSYSTEM=block", "DEVNAME=sda", "DEVTYPE=disk"],
        );
        let event = parse_uevent(&fixed).unwrap();
        assert_eq!(media_action(&event, Some(false), options), None);
        assert_eq!(media_action(&event, Some(true), options), Some("Removable Media Inserted"));
        let mapper = message(
            "add@/devices/virtual/block/dm-0",
            &["ACTION=add", "SUBSYSTEM=block", "DEVNAME=dm-0", "DEVTYPE=disk"],
        );
        assert_eq!(action(&mapper, options), None);
    }

    #[test]
    fn loop_devices_only_when_asked() {
        let lo = message(
            "add@/devices/virtual/block/loop200",
            &[
                "ACTION=add",
                "DEVPATH=/devices/virtual/block/loop200",
                "SUBSYSTEM=block",
                "DEVNAME=loop200",
                "DEVTYPE=disk",
            ],
        );
        assert_eq!(action(&lo, MediaOptions::default()), None);
        let options = MediaOptions { report_loop_devices: true, ..MediaOptions::default() };
        assert_eq!(action(&lo, options), Some("Loop Device Attached"));
    }

    #[test]
    fn only_genuine_kernel_events_are_trusted() {
        let genuine = parse_uevent(&usb_stick()).unwrap();
        let mut synthetic = genuine.clone();
        synthetic.vars.insert("SYNTH_UUID".into(), "0".into());
        let defaults = MediaOptions::default();
        let tests = MediaOptions { accept_synthetic: true, ..defaults };
        assert!(is_trusted(&genuine, 0, defaults));
        assert!(!is_trusted(&genuine, 4242, defaults), "sent by a process, not the kernel");
        assert!(!is_trusted(&genuine, 4242, tests), "never, even in tests");
        assert!(!is_trusted(&synthetic, 0, defaults));
        assert!(is_trusted(&synthetic, 0, tests));
        assert_eq!(parse_uevent(b"libudev\0\xfe\xed\xca\xfe"), None);
    }
}
