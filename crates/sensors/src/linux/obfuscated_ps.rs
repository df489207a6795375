//! `win_obfuscated_ps` on Linux: PowerShell 7 script blocks from its syslog output, reassembled
//! and scored (see [`crate::common::ps_log`] for the log format and
//! [`crate::common::obfuscation`] for the score).
//!
//! Where the logs are read ([`PsLogSource`], set by `watchpost.powershell_log`): a given syslog file, the journal
//! (`journalctl -o json SYSLOG_IDENTIFIER=powershell`), or, by default, the first that exists of
//! `/var/log/syslog`, `/var/log/messages`, then the journal. Each query reads the log anew: the
//! last [`MAX_LOG_BYTES`] of the file (rotated files are not read), or the whole journal.
//!
//! One row per complete script block, obfuscated or not: `script_id` (the ScriptBlock ID),
//! `time_created` (the log's time of its first part: the syslog file's timestamp as written,
//! or RFC 3339 UTC from the journal), `obfuscated_state` (`Obfuscated` / `Not Obfuscated`),
//! `obfuscated_score` (0.00 to 1.00). A `script_id = X` constraint keeps only that block.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;

use watchpost_catalog::{GenerateError, QueryContext, Row, Value};
use watchpost_config::PowerShellLog;

use crate::common::obfuscation::assess;
use crate::common::ps_log::{ScriptBlockPart, parse_journal_entry, parse_syslog_line, reassemble};
use crate::{SnapshotTable, snapshot_columns};

pub const TABLE: &str = "win_obfuscated_ps";

/// The most of a syslog file read per query: its end, where the recent blocks are.
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// PowerShell's syslog identifier unless `LogIdentity` in `powershell.config.json` changes it.
pub const DEFAULT_IDENTIFIER: &str = "powershell";

const SYSLOG_FILES: [&str; 2] = ["/var/log/syslog", "/var/log/messages"];
const JOURNAL_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// Where script-block logs are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsLogSource {
    /// The first of `/var/log/syslog`, `/var/log/messages`, the journal that exists at query time.
    Auto,
    /// A syslog file written by rsyslog.
    File(PathBuf),
    /// The systemd journal, through `journalctl`.
    Journal,
}

/// The `win_obfuscated_ps` snapshot table.
#[derive(Debug)]
pub struct ObfuscatedPs {
    /// `watchpost.powershell_log`; a config reload replaces it.
    source: RwLock<PsLogSource>,
    identifier: String,
}

impl Default for ObfuscatedPs {
    fn default() -> ObfuscatedPs {
        ObfuscatedPs::new(PsLogSource::Auto, DEFAULT_IDENTIFIER)
    }
}

fn journal_present() -> bool {
    JOURNAL_DIRS.iter().any(|dir| Path::new(dir).is_dir())
}

impl ObfuscatedPs {
    pub fn new(source: PsLogSource, identifier: impl Into<String>) -> ObfuscatedPs {
        ObfuscatedPs { source: RwLock::new(source), identifier: identifier.into() }
    }

    /// The table reading where the config's `watchpost.powershell_log` says.
    pub fn from_config(config: &watchpost_config::Config) -> ObfuscatedPs {
        ObfuscatedPs::new(configured_source(config), DEFAULT_IDENTIFIER)
    }

    /// The source [`PsLogSource::Auto`] stands for now; `None` when there is none.
    fn resolve(&self) -> Option<PsLogSource> {
        let source = self.source.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match source {
            PsLogSource::Auto => SYSLOG_FILES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file())
                .map(PsLogSource::File)
                .or_else(|| journal_present().then_some(PsLogSource::Journal)),
            other => Some(other),
        }
    }

    fn read_parts(&self, source: &PsLogSource) -> Result<Vec<ScriptBlockPart>, GenerateError> {
        let unavailable = |reason: String| GenerateError::Unavailable { table: TABLE.into(), reason };
        match source {
            PsLogSource::File(path) => {
                let text = read_tail(path, MAX_LOG_BYTES)
                    .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
                Ok(text.lines().filter_map(|line| parse_syslog_line(line, &self.identifier)).collect())
            }
            PsLogSource::Journal => {
                let output = Command::new("journalctl")
                    .args(["-o", "json", "--no-pager", "-q"])
                    .arg(format!("SYSLOG_IDENTIFIER={}", self.identifier))
                    .output()
                    .map_err(|e| unavailable(format!("cannot run journalctl: {e}")))?;
                if !output.status.success() {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    return Err(unavailable(format!("journalctl failed: {}", stderr.trim())));
                }
                let text = String::from_utf8_lossy(&output.stdout);
                Ok(text.lines().filter_map(|line| parse_journal_entry(line, &self.identifier)).collect())
            }
            PsLogSource::Auto => Ok(Vec::new()),
        }
    }
}

fn configured_source(config: &watchpost_config::Config) -> PsLogSource {
    match &config.sensor_options.powershell_log {
        PowerShellLog::Auto => PsLogSource::Auto,
        PowerShellLog::Journal => PsLogSource::Journal,
        PowerShellLog::File(path) => PsLogSource::File(PathBuf::from(path)),
    }
}

/// The last `max` bytes of the file, from the first complete line on.
fn read_tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let start = length.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    if start > 0 {
        let first_line_end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first_line_end);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl SnapshotTable for ObfuscatedPs {
    fn table(&self) -> &'static str {
        TABLE
    }

    fn reconfigure(&self, config: &watchpost_config::Config) {
        *self.source.write().unwrap_or_else(std::sync::PoisonError::into_inner) = configured_source(config);
    }

    fn availability(&self) -> Result<(), String> {
        match self.resolve() {
            Some(PsLogSource::File(path)) if !path.is_file() => {
                Err(format!("the PowerShell log file {} does not exist", path.display()))
            }
            Some(_) => Ok(()),
            None => Err(format!(
                "no PowerShell log: neither {} exists, and there is no systemd journal",
                SYSLOG_FILES.join(" nor ")
            )),
        }
    }

    fn generate(&self, context: &QueryContext) -> Result<Vec<Row>, GenerateError> {
        let (table, [id_at, time_at, state_at, score_at]) =
            snapshot_columns(TABLE, ["script_id", "time_created", "obfuscated_state", "obfuscated_score"])?;
        let Some(source) = self.resolve() else { return Ok(Vec::new()) };
        let asked: Vec<&str> = context.equals("script_id").collect();
        let parts = self.read_parts(&source)?.into_iter().filter(|part| {
            asked.is_empty() || asked.iter().any(|id| id.eq_ignore_ascii_case(&part.script_id))
        });
        Ok(reassemble(parts)
            .into_iter()
            .map(|block| {
                let assessment = assess(&block.text);
                let mut row = vec![Value::Null; table.columns.len()];
                row[id_at] = Value::from(block.script_id);
                row[time_at] = Value::from(block.time_created);
                row[state_at] = Value::from(assessment.state());
                row[score_at] = Value::from(assessment.score_text());
                row
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use watchpost_catalog::{Constraint, Op};

    use super::*;
    use crate::catalog_table;

    const PLAIN_ID: &str = "11111111-2222-4333-8444-555555555555";
    const OBFUSCATED_ID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

    const PLAIN: &str = "$files = Get-ChildItem -Path /var/log -Filter '*.log'\n\
                         foreach ($file in $files) {\n    Write-Host \"$($file.Name): $($file.Length) bytes\"\n}";
    const OBFUSCATED_1: &str = "$a = ('{3}{0}{2}{1}' -f 'oke-','on','Expressi','Inv')\n";
    const OBFUSCATED_2: &str =
        "$b = 'Wri'+'te-'+'Ho'+'st'+' '+'hi'\n&$a $b; I`E`X (nEw-oBjEcT NeT.wEbClIeNt)";

    /// A syslog line as rsyslog writes PowerShell's event 4104.
    fn line(time: &str, id: &str, part: u32, total: u32, text: &str) -> String {
        format!(
            "{time} host1 powershell[4242]: (7.4.1:1:80) [ScriptBlock_Compile_Detail:ExecuteCommand.Create.Verbose] \
             Creating Scriptblock text ({part} of {total}):#012{}#012#012ScriptBlock ID: {id}#012Path: \n",
            text.replace('\n', "#012")
        )
    }

    fn write_log() -> tempfile::NamedTempFile {
        let mut log = tempfile::NamedTempFile::new().unwrap();
        let lines = [
            "2024-03-07T08:23:09.000000+00:00 host1 sshd[99]: Accepted publickey for root\n".to_string(),
            line("2024-03-07T08:23:10.000000+00:00", PLAIN_ID, 1, 1, PLAIN),
            line("2024-03-07T08:23:11.000000+00:00", OBFUSCATED_ID, 1, 2, OBFUSCATED_1),
            "2024-03-07T08:23:11.500000+00:00 host1 powershell[4242]: (7.4.1:1:80) [Perftrack_ConsoleStartupStop] done\n"
                .to_string(),
            line("2024-03-07T08:23:12.000000+00:00", OBFUSCATED_ID, 2, 2, OBFUSCATED_2),
        ];
        log.write_all(lines.concat().as_bytes()).unwrap();
        log
    }

    fn column(row: &Row, name: &str) -> String {
        row[catalog_table(TABLE).unwrap().column_index(name).unwrap()].to_text().unwrap()
    }

    #[test]
    fn logged_blocks_are_scored() {
        let log = write_log();
        let table = ObfuscatedPs::new(PsLogSource::File(log.path().into()), DEFAULT_IDENTIFIER);
        assert_eq!(table.availability(), Ok(()));
        let rows = table.generate(&QueryContext::default()).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");

        assert_eq!(column(&rows[0], "script_id"), PLAIN_ID);
        assert_eq!(column(&rows[0], "time_created"), "2024-03-07T08:23:10.000000+00:00");
        assert_eq!(column(&rows[0], "obfuscated_state"), "Not Obfuscated");
        let plain_score: f64 = column(&rows[0], "obfuscated_score").parse().unwrap();
        assert!(plain_score < 0.5);

        assert_eq!(column(&rows[1], "script_id"), OBFUSCATED_ID);
        assert_eq!(column(&rows[1], "time_created"), "2024-03-07T08:23:11.000000+00:00", "the first part's");
        assert_eq!(column(&rows[1], "obfuscated_state"), "Obfuscated");
        let score: f64 = column(&rows[1], "obfuscated_score").parse().unwrap();
        assert!((0.5..=1.0).contains(&score), "{score}");
    }

    #[test]
    fn a_script_id_constraint_keeps_one_block() {
        let log = write_log();
        let table = ObfuscatedPs::new(PsLogSource::File(log.path().into()), DEFAULT_IDENTIFIER);
        let context = QueryContext {
            constraints: vec![Constraint {
                column: "script_id".into(),
                op: Op::Eq,
                expr: OBFUSCATED_ID.to_uppercase(),
            }],
            columns_used: None,
        };
        let rows = table.generate(&context).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(column(&rows[0], "obfuscated_state"), "Obfuscated");
    }

    #[test]
    fn only_the_end_of_a_big_log_is_read() {
        let log = write_log();
        let last_line = line("2024-03-07T08:23:12.000000+00:00", OBFUSCATED_ID, 2, 2, OBFUSCATED_2);
        // A little more than the last line: the cut line before it is dropped.
        let text = read_tail(log.path(), last_line.len() as u64 + 5).unwrap();
        assert_eq!(text, last_line);
    }

    #[test]
    fn a_missing_log_file_is_reported() {
        let table = ObfuscatedPs::new(PsLogSource::File("/nonexistent/syslog".into()), DEFAULT_IDENTIFIER);
        assert!(table.availability().unwrap_err().contains("/nonexistent/syslog"));
        assert!(matches!(table.generate(&QueryContext::default()), Err(GenerateError::Unavailable { .. })));
    }
}
