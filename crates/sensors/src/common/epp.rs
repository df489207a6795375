//! The `win_epp_table` knowledge that is not tied to how a platform is inspected: the list of
//! endpoint protection products and how each is recognised, the dpkg status parser, and ClamAV's
//! signature database header.
//!
//! [`PRODUCTS`] is data: add a product by adding an entry. The names are what the vendors'
//! Linux packages install as far as their public documentation shows; a product is reported
//! when any of its packages, paths, unit files or processes is found. osquery, auditd and other
//! monitoring agents are not endpoint protection and are not listed.

use std::collections::BTreeSet;
use std::time::Duration;

pub const TABLE: &str = "win_epp_table";

/// ClamAV's signatures are `Out-of-date` when the newest database is older than this (freshclam
/// checks every 2 hours by default and ClamAV publishes daily updates, so a week means updates
/// are failing).
pub const CLAMAV_MAX_SIGNATURE_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a product's signature freshness is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signatures {
    /// ClamAV databases (`*.cvd`, `*.cld`) in this directory (relative to the root inspected).
    ClamAv { database_dir: &'static str },
    /// Not visible from outside the product (cloud-delivered content): `Unknown`.
    Unknown,
}

/// One endpoint protection product and what identifies it on Linux.
#[derive(Clone, Copy, Debug)]
pub struct Product {
    pub name: &'static str,
    /// `Antivirus` or `EDR`.
    pub product_type: &'static str,
    /// Debian package names.
    pub packages: &'static [&'static str],
    /// Process names; while one runs, the product is `On`. Compared as the kernel keeps them
    /// (`comm`, cut to 15 bytes).
    pub processes: &'static [&'static str],
    /// systemd unit files.
    pub units: &'static [&'static str],
    /// Files or directories the product installs (absolute, under the root inspected).
    pub paths: &'static [&'static str],
    pub signatures: Signatures,
}

pub const PRODUCTS: &[Product] = &[
    Product {
        name: "ClamAV",
        product_type: "Antivirus",
        packages: &["clamav", "clamav-daemon", "clamav-freshclam", "clamdscan"],
        processes: &["clamd", "freshclam", "clamonacc"],
        units: &["clamav-daemon.service", "clamav-freshclam.service", "clamav-clamonacc.service"],
        paths: &[],
        signatures: Signatures::ClamAv { database_dir: "/var/lib/clamav" },
    },
    Product {
        name: "CrowdStrike Falcon",
        product_type: "EDR",
        packages: &["falcon-sensor"],
        processes: &["falcon-sensor"],
        units: &["falcon-sensor.service"],
        paths: &["/opt/CrowdStrike/falconctl"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "SentinelOne",
        product_type: "EDR",
        packages: &["sentinelagent", "SentinelAgent"],
        processes: &["s1-agent", "s1-orchestrator", "SentinelAgent"],
        units: &["sentinelone.service"],
        paths: &["/opt/sentinelone/bin/sentinelctl"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "Microsoft Defender for Endpoint",
        product_type: "Antivirus",
        packages: &["mdatp"],
        processes: &["wdavdaemon"],
        units: &["mdatp.service"],
        paths: &["/opt/microsoft/mdatp"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "Carbon Black Cloud",
        product_type: "EDR",
        packages: &["cb-psc-sensor"],
        processes: &["cbagentd"],
        units: &["cbagentd.service"],
        paths: &["/opt/carbonblack/psc"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "Sophos Protection for Linux",
        product_type: "Antivirus",
        packages: &[],
        processes: &["sophos_managementagent", "sophos_threat_detector", "savd"],
        units: &["sophos-spl.service", "sav-protect.service"],
        paths: &["/opt/sophos-spl", "/opt/sophos-av"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "ESET Server Security",
        product_type: "Antivirus",
        packages: &["efs", "eea", "esets"],
        processes: &["esets_daemon", "oaeventd"],
        units: &["efs.service", "eea.service", "esets.service"],
        paths: &["/opt/eset"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "Trend Micro Deep Security Agent",
        product_type: "Antivirus",
        packages: &["ds-agent"],
        processes: &["ds_agent"],
        units: &["ds_agent.service"],
        paths: &["/opt/ds_agent"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "Trellix Endpoint Security",
        product_type: "Antivirus",
        packages: &["mcafeetp", "mfetp"],
        processes: &["mfetpd"],
        units: &["mfetpd.service"],
        paths: &["/opt/McAfee/ens"],
        signatures: Signatures::Unknown,
    },
    Product {
        name: "Elastic Defend",
        product_type: "EDR",
        packages: &[],
        processes: &["elastic-endpoint"],
        units: &["ElasticEndpoint.service"],
        paths: &["/opt/Elastic/Endpoint"],
        signatures: Signatures::Unknown,
    },
];

/// The names of the packages dpkg has installed, from the text of `/var/lib/dpkg/status`: the
/// stanzas whose `Status:` ends in `installed` (not `config-files`, `half-installed`, ...).
pub fn installed_packages(dpkg_status: &str) -> BTreeSet<String> {
    let mut installed = BTreeSet::new();
    for stanza in dpkg_status.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
        };
        if let (Some(package), Some(status)) = (field("Package"), field("Status"))
            && status.split_whitespace().last() == Some("installed")
        {
            installed.insert(package.to_string());
        }
    }
    installed
}

/// The build time (unix seconds) in the 512-byte header of a ClamAV `.cvd`/`.cld` database:
/// `ClamAV-VDB:<date>:<version>:<signatures>:<level>:<md5>:<signature>:<builder>:<build time>`.
pub fn clamav_build_time(header: &[u8]) -> Option<i64> {
    let header = header.get(..512.min(header.len()))?;
    let text = std::str::from_utf8(header.split(|&b| b == 0).next()?).ok()?;
    let fields: Vec<&str> = text.strip_prefix("ClamAV-VDB:")?.split(':').collect();
    fields.get(7)?.trim().parse().ok()
}

/// `Up-to-date` when the newest database is at most [`CLAMAV_MAX_SIGNATURE_AGE`] old at `now`,
/// `Out-of-date` otherwise, including when there is no database at all.
pub fn clamav_signature_state(newest_build_time: Option<i64>, now: i64) -> &'static str {
    let max_age = CLAMAV_MAX_SIGNATURE_AGE.as_secs() as i64;
    match newest_build_time {
        Some(built) if now - built <= max_age => "Up-to-date",
        _ => "Out-of-date",
    }
}

/// Whether the kernel's name of a process (`comm`, at most 15 bytes) is `name`.
pub fn comm_matches(comm: &str, name: &str) -> bool {
    const COMM_LEN: usize = 15;
    let cut = name.char_indices().map(|(i, _)| i).chain([name.len()]).take_while(|&i| i <= COMM_LEN).last();
    comm == &name[..cut.unwrap_or(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shortened from a Debian 12 host: clamav installed, clamav-daemon removed but its
    /// configuration kept.
    const DPKG_STATUS: &str = "\
Package: adduser
Status: install ok installed
Priority: important
Version: 3.134

Package: clamav
Status: install ok installed
Priority: optional
Section: utils
Depends: clamav-freshclam (>= 1.0.7+dfsg-1~deb12u1) | clamav-data, libc6 (>= 2.34)
Description: anti-virus utility for Unix - command-line interface
 Clam AntiVirus is an anti-virus toolkit for Unix.

Package: clamav-daemon
Status: deinstall ok config-files
Priority: optional
Version: 1.0.7+dfsg-1~deb12u1
";

    #[test]
    fn only_installed_packages_are_listed() {
        let installed = installed_packages(DPKG_STATUS);
        assert_eq!(installed.into_iter().collect::<Vec<_>>(), ["adduser", "clamav"]);
    }

    #[test]
    fn clamav_header_gives_the_build_time() {
        let mut header =
            b"ClamAV-VDB:07 Mar 2024 08-23 +0000:27206:2054117:90:X:Y:raynman:1709799790".to_vec();
        header.resize(512, b' ');
        header.extend_from_slice(b"\x1f\x8b rest of the database");
        assert_eq!(clamav_build_time(&header), Some(1_709_799_790));
        assert_eq!(clamav_build_time(b"not a database"), None);
    }

    #[test]
    fn signatures_older_than_a_week_are_out_of_date() {
        let now = 1_709_799_790 + 3600;
        assert_eq!(clamav_signature_state(Some(now - 3600), now), "Up-to-date");
        assert_eq!(clamav_signature_state(Some(now - 7 * 24 * 3600), now), "Up-to-date");
        assert_eq!(clamav_signature_state(Some(now - 8 * 24 * 3600), now), "Out-of-date");
        assert_eq!(clamav_signature_state(None, now), "Out-of-date");
    }

    #[test]
    fn long_process_names_match_their_cut_comm() {
        assert!(comm_matches("sophos_threat_d", "sophos_threat_detector"));
        assert!(comm_matches("clamd", "clamd"));
        assert!(!comm_matches("clamdscan", "clamd"));
        assert!(!comm_matches("sophos_threat", "sophos_threat_detector"));
    }

    #[test]
    fn osquery_is_not_an_endpoint_protection_product() {
        assert!(PRODUCTS.iter().all(|p| !p.processes.iter().any(|name| name.starts_with("osquery"))));
        let names: BTreeSet<&str> = PRODUCTS.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PRODUCTS.len(), "product names are unique (they are the table's index)");
    }
}
