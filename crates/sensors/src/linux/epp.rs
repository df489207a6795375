//! `win_epp_table` on Linux: the endpoint protection products of [`PRODUCTS`] found on this
//! host, one row each.
//!
//! A product is found when one of its Debian packages is installed (`/var/lib/dpkg/status`;
//! RPM databases are not read), one of its paths or systemd unit files
//! (`/etc/systemd/system`, `/lib/systemd/system`, `/usr/lib/systemd/system`) exists, or one of
//! its processes runs. Columns:
//! - `product_type`: `Antivirus` or `EDR`; `product_name`: as in [`PRODUCTS`];
//! - `product_state`: `On` while one of its processes runs (a `/proc` scan, so it works without
//!   systemd), `Off` otherwise;
//! - `product_signatures`: for ClamAV, from the newest database in `/var/lib/clamav`
//!   (`*.cvd`/`*.cld`; the build time in its header, else its modification time): `Up-to-date`
//!   if at most 7 days old, `Out-of-date` if older or when there is none. `Unknown` for products
//!   whose signatures are not visible from outside.
//!
//! A `product_name = X` constraint inspects only that product. Everything is read below an
//! injectable root directory so tests can build fake hosts.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use watchpost_catalog::{GenerateError, QueryContext, Row, Value};

use crate::common::epp::{
    PRODUCTS, Product, Signatures, TABLE, clamav_build_time, clamav_signature_state, comm_matches,
    installed_packages,
};
use crate::{SnapshotTable, snapshot_columns};

const UNIT_DIRS: [&str; 3] = ["etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"];

/// The `win_epp_table` snapshot table.
#[derive(Clone, Debug)]
pub struct EppTable {
    root: PathBuf,
}

impl Default for EppTable {
    fn default() -> EppTable {
        EppTable { root: PathBuf::from("/") }
    }
}

/// One product found, as the table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub product_type: &'static str,
    pub product_name: &'static str,
    pub product_state: &'static str,
    pub product_signatures: &'static str,
}

impl EppTable {
    /// Inspects the host whose file system is at `root` (with its `/proc` at `root/proc`).
    pub fn with_root(root: impl Into<PathBuf>) -> EppTable {
        EppTable { root: root.into() }
    }

    fn under(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// The `comm` of every running process.
    fn process_names(&self) -> BTreeSet<String> {
        let Ok(entries) = std::fs::read_dir(self.under("/proc")) else { return BTreeSet::new() };
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                entry.file_name().to_str()?.parse::<u32>().ok()?;
                // Gone since the listing: skip.
                let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                Some(comm.trim_end_matches('\n').to_string())
            })
            .collect()
    }

    /// The products found, in [`PRODUCTS`] order; only `names` when given.
    pub fn detect(&self, names: Option<&[&str]>) -> Vec<Detected> {
        let wanted = |product: &&Product| names.is_none_or(|names| names.contains(&product.name));
        let products: Vec<&Product> = PRODUCTS.iter().filter(wanted).collect();
        if products.is_empty() {
            return Vec::new();
        }
        let packages = std::fs::read_to_string(self.under("/var/lib/dpkg/status"))
            .map(|text| installed_packages(&text))
            .unwrap_or_default();
        let processes = self.process_names();
        let now = unix_now();
        products
            .into_iter()
            .filter_map(|product| {
                let running = product
                    .processes
                    .iter()
                    .any(|name| processes.iter().any(|comm| comm_matches(comm, name)));
                let installed = running
                    || product.packages.iter().any(|p| packages.contains(*p))
                    || product.paths.iter().any(|p| self.under(p).exists())
                    || product
                        .units
                        .iter()
                        .any(|unit| UNIT_DIRS.iter().any(|dir| self.root.join(dir).join(unit).exists()));
                installed.then(|| Detected {
                    product_type: product.product_type,
                    product_name: product.name,
                    product_state: if running { "On" } else { "Off" },
                    product_signatures: match product.signatures {
                        Signatures::ClamAv { database_dir } => {
                            clamav_signature_state(newest_clamav_database(&self.under(database_dir)), now)
                        }
                        Signatures::Unknown => "Unknown",
                    },
                })
            })
            .collect()
    }
}

/// The build time of the newest ClamAV database in `dir` (unix seconds).
fn newest_clamav_database(dir: &Path) -> Option<i64> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let extension = path.extension()?.to_str()?;
            if extension != "cvd" && extension != "cld" {
                return None;
            }
            let mut header = Vec::with_capacity(512);
            std::fs::File::open(&path).ok()?.take(512).read_to_end(&mut header).ok()?;
            clamav_build_time(&header).or_else(|| {
                let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
                Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
            })
        })
        .max()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl SnapshotTable for EppTable {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn generate(&self, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let (table, [type_at, name_at, state_at, signatures_at]) =
            snapshot_columns(TABLE, ["product_type", "product_name", "product_state", "product_signatures"])?;
        let asked: Vec<&str> = context.equals("product_name").collect();
        let detected = self.detect((!asked.is_empty()).then_some(asked.as_slice()));
        Ok(detected
            .into_iter()
            .map(|product| {
                let mut row = vec![Value::Null; table.columns.len()];
                row[type_at] = Value::from(product.product_type);
                row[name_at] = Value::from(product.product_name);
                row[state_at] = Value::from(product.product_state);
                row[signatures_at] = Value::from(product.product_signatures);
                row
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use watchpost_catalog::{Constraint, Op};

    use super::*;

    fn write(root: &Path, path: &str, contents: &[u8]) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn clamav_database(built: i64) -> Vec<u8> {
        let mut header =
            format!("ClamAV-VDB:07 Mar 2024 08-23 +0000:27206:2054117:90:X:Y:raynman:{built}").into_bytes();
        header.resize(512, b' ');
        header
    }

    const CLAMAV_STATUS: &str = "Package: clamav\nStatus: install ok installed\nVersion: 1.0.7\n\n\
                                 Package: clamav-daemon\nStatus: install ok installed\n";

    fn by_name<'a>(detected: &'a [Detected], name: &str) -> Option<&'a Detected> {
        detected.iter().find(|d| d.product_name == name)
    }

    #[test]
    fn clamav_running_with_fresh_signatures() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "var/lib/dpkg/status", CLAMAV_STATUS.as_bytes());
        write(root.path(), "proc/812/comm", b"clamd\n");
        write(root.path(), "proc/900/comm", b"bash\n");
        write(root.path(), "var/lib/clamav/main.cvd", &clamav_database(unix_now() - 90 * 24 * 3600));
        write(root.path(), "var/lib/clamav/daily.cld", &clamav_database(unix_now() - 3600));
        let detected = EppTable::with_root(root.path()).detect(None);
        assert_eq!(
            detected,
            [Detected {
                product_type: "Antivirus",
                product_name: "ClamAV",
                product_state: "On",
                product_signatures: "Up-to-date",
            }]
        );
    }

    #[test]
    fn clamav_stopped_with_old_or_missing_signatures() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "var/lib/dpkg/status", CLAMAV_STATUS.as_bytes());
        let table = EppTable::with_root(root.path());
        let clamav = table.detect(None);
        assert_eq!(clamav[0].product_state, "Off");
        assert_eq!(clamav[0].product_signatures, "Out-of-date", "no database at all");

        write(root.path(), "var/lib/clamav/daily.cvd", &clamav_database(unix_now() - 10 * 24 * 3600));
        assert_eq!(table.detect(None)[0].product_signatures, "Out-of-date");

        // A database without a readable header: its modification time counts (just now).
        write(root.path(), "var/lib/clamav/bytecode.cld", b"garbage");
        assert_eq!(table.detect(None)[0].product_signatures, "Up-to-date");
    }

    #[test]
    fn edr_agents_are_found_by_unit_path_or_process() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "lib/systemd/system/falcon-sensor.service", b"[Unit]\n");
        write(root.path(), "opt/microsoft/mdatp/version.txt", b"101.0\n");
        write(root.path(), "proc/77/comm", b"wdavdaemon\n");
        write(root.path(), "proc/78/comm", b"sophos_threat_d\n");
        write(root.path(), "proc/79/comm", b"osqueryd\n");
        let detected = EppTable::with_root(root.path()).detect(None);
        let names: Vec<&str> = detected.iter().map(|d| d.product_name).collect();
        assert_eq!(
            names,
            ["CrowdStrike Falcon", "Microsoft Defender for Endpoint", "Sophos Protection for Linux"]
        );
        assert_eq!(by_name(&detected, "CrowdStrike Falcon").unwrap().product_state, "Off");
        assert_eq!(by_name(&detected, "CrowdStrike Falcon").unwrap().product_type, "EDR");
        assert_eq!(by_name(&detected, "Microsoft Defender for Endpoint").unwrap().product_state, "On");
        assert_eq!(by_name(&detected, "Sophos Protection for Linux").unwrap().product_signatures, "Unknown");
    }

    #[test]
    fn an_empty_host_has_no_rows_and_a_name_constraint_narrows() {
        let root = tempfile::tempdir().unwrap();
        assert!(EppTable::with_root(root.path()).generate(&QueryContext::default()).unwrap().is_empty());
        write(root.path(), "var/lib/dpkg/status", CLAMAV_STATUS.as_bytes());
        write(root.path(), "etc/systemd/system/cbagentd.service", b"");
        let table = EppTable::with_root(root.path());
        assert_eq!(table.generate(&QueryContext::default()).unwrap().len(), 2);
        let context = QueryContext {
            constraints: vec![Constraint {
                column: "product_name".into(),
                op: Op::Eq,
                expr: "ClamAV".into(),
            }],
            columns_used: None,
        };
        let rows = table.generate(&context).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].contains(&Value::from("ClamAV")));
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// The real host with Debian's ClamAV: installed here when the test runs as root.
    #[test]
    fn live_clamav_from_debian() {
        if !is_root() {
            println!("SKIPPED live_clamav_from_debian: needs root to `apt-get install -y clamav`");
            return;
        }
        let installed = std::fs::read_to_string("/var/lib/dpkg/status")
            .map(|text| installed_packages(&text).contains("clamav"))
            .unwrap_or(false);
        if !installed {
            let status = Command::new("apt-get")
                .args(["install", "-y", "-q", "clamav"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .expect("apt-get runs");
            assert!(status.success(), "apt-get install -y clamav failed");
        }
        let table = EppTable::default();
        let clamav = |table: &EppTable| {
            table.detect(Some(&["ClamAV"])).into_iter().next().expect("ClamAV is reported once installed")
        };
        let before = clamav(&table);
        assert_eq!(before.product_type, "Antivirus");
        let expected =
            clamav_signature_state(newest_clamav_database(Path::new("/var/lib/clamav")), unix_now());
        assert_eq!(before.product_signatures, expected);

        // A process named like ClamAV's daemon turns the product on (no systemd here to start
        // the real one, and no network for its signatures).
        let dir = tempfile::tempdir().unwrap();
        let fake_clamd = dir.path().join("clamd");
        std::fs::copy("/bin/sleep", &fake_clamd).unwrap();
        let mut child = Command::new(&fake_clamd).arg("30").spawn().unwrap();
        let during = clamav(&table);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(during.product_state, "On");
        let real_daemon_running =
            table.process_names().iter().any(|comm| comm == "clamd" || comm == "freshclam");
        if !real_daemon_running {
            assert_eq!(clamav(&table).product_state, "Off");
        }
    }
}
