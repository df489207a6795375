//! Helpers shared by the end-to-end tests: run the real `watchpost` binary as a daemon and
//! query it the way a user would.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_watchpost");

pub fn watchpost() -> Command {
    let mut command = Command::new(BIN);
    command.env("RUST_LOG", "info");
    command
}

/// Polls `check` until it returns Some or `limit` passes.
/// Whether the test runs as root (the kernel sources need it; CI runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn append(path: &Path, text: &str) {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log for append");
    file.write_all(text.as_bytes()).expect("append");
}

/// A `watchpost daemon` with its own config, store and query socket in a temp dir.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub socket: String,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Writes `config` (with `{LOG}` replaced by the path of `app.log` in the temp dir) and starts the daemon.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with_log(config, None)
    }

    /// Like `start`, with `app.log` holding `existing` before the daemon starts.
    pub fn start_with_log(config: &str, existing: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("app.log");
        if let Some(text) = existing {
            std::fs::write(&log, text).expect("write the existing log");
        }
        let config_path = dir.path().join("osquery.conf");
        std::fs::write(&config_path, config.replace("{LOG}", &log.display().to_string()))
            .expect("write config");
        let socket = dir.path().join("query.sock").display().to_string();
        let mut daemon = Daemon { dir, child: None, socket, config: config_path, log };
        daemon.spawn();
        daemon
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn spawn(&mut self) {
        let stderr = std::fs::File::create(self.dir.path().join("daemon.stderr")).expect("stderr file");
        let child = watchpost()
            .args(["daemon", "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--query-socket", &self.socket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start watchpost daemon");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(30), || {
            let out = self.query_raw("SELECT 1", "json");
            out.status.success().then_some(())
        });
        assert!(up.is_some(), "daemon did not come up; stderr:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.stderr")).unwrap_or_default()
    }

    pub fn query_raw(&self, sql: &str, format: &str) -> Output {
        watchpost()
            .args(["query", "--query-socket", &self.socket, "--format", format, sql])
            .output()
            .expect("run watchpost query")
    }

    /// Rows of `sql` as JSON objects; panics with the error text when the query fails.
    pub fn rows(&self, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let out = self.query_raw(sql, "json");
        assert!(out.status.success(), "query {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// Polls `sql` until it returns at least `n` rows.
    pub fn wait_rows(&self, sql: &str, n: usize) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut last = Vec::new();
        let got = wait_for(Duration::from_secs(20), || {
            last = self.rows(sql);
            (last.len() >= n).then(|| last.clone())
        });
        got.unwrap_or_else(|| panic!("{sql:?}: wanted {n} rows, got {last:?}\nstderr:\n{}", self.stderr()))
    }

    pub fn signal(&mut self, signal: &str) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        self.child = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn text(row: &serde_json::Map<String, serde_json::Value>, column: &str) -> String {
    match row.get(column) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

pub fn logger_config(extra: &str) -> String {
    format!(
        r#"{{
  // comments and trailing commas, as osquery accepts them
  "options": {{ "events_expiry": 3600, }},
  {extra}
  "win_logger_plugin": {{
    "plugins": [
      {{
        "logger_name": "tail",
        "logger_watch_files": [
          {{ "watch_file_path": "{{LOG}}" }},
        ],
      }},
    ],
  }},
}}"#
    )
}

/// A DNS query for the A record of `name` (RFC 1035 wire format, recursion desired).
pub fn dns_query(name: &str) -> Vec<u8> {
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend(label.as_bytes());
    }
    message.extend([0, 0, 1, 0, 1]);
    message
}

/// Asks 127.0.0.1:53 for `name` from a new socket; whether an answer came within a second.
pub fn ask_dns(name: &str) -> bool {
    let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
    if socket.send_to(&dns_query(name), "127.0.0.1:53").is_err() {
        return false;
    }
    socket.recv_from(&mut [0u8; 512]).is_ok()
}

/// Debian's dnsmasq on 127.0.0.1:53, answering every `*.watchpost.test` name with 127.0.0.1;
/// killed when dropped.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Starts it with `extra` arguments and waits up to 20 s until it answers. The error says
    /// why not: the port is taken, dnsmasq is missing, or it does not answer.
    pub fn start(extra: &[&str]) -> Result<Dnsmasq, String> {
        if std::net::UdpSocket::bind("127.0.0.1:53").is_err() {
            return Err("127.0.0.1:53 is busy".into());
        }
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--port=53",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file",
                "--user=root",
                "--address=/watchpost.test/127.0.0.1",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start dnsmasq (Debian dnsmasq-base): {e}"))?;
        let dnsmasq = Dnsmasq(child);
        match wait_for(Duration::from_secs(20), || ask_dns("warmup.watchpost.test").then_some(())) {
            Some(()) => Ok(dnsmasq),
            None => Err("dnsmasq does not answer".into()),
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
