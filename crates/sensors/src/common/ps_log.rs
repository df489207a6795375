//! PowerShell script-block logging (event 4104) as PowerShell 7 writes it on Linux: to syslog
//! (identifier `powershell`) or, through it, to the journal. One event is one part of a script
//! block:
//!
//! ```text
//! (7.4.1:1:80) [ScriptBlock_Compile_Detail:ExecuteCommand.Create.Verbose] Creating Scriptblock
//! text (1 of 2):<newline>SCRIPT TEXT<newline><newline>ScriptBlock ID: GUID<newline>Path: FILE
//! ```
//!
//! rsyslog writes the newlines of a message as `#012` (and tabs as `#011`); those are turned
//! back. Long scripts come in several parts (`N of M`) that [`reassemble`] joins by script
//! block id. A part that syslog cut short stays short: the script is scored on what was logged.

use std::collections::BTreeMap;

const CREATING: &str = "Creating Scriptblock text (";
const ID_MARKER: &str = "ScriptBlock ID: ";

/// One logged part of a script block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptBlockPart {
    pub script_id: String,
    /// 1-based.
    pub part: u32,
    pub total: u32,
    pub text: String,
    /// When it was logged, as the log shows it (see the callers).
    pub time_created: String,
}

/// A complete script block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptBlock {
    pub script_id: String,
    /// When its first part was logged.
    pub time_created: String,
    pub text: String,
}

/// Turns rsyslog's `#ooo` escapes of control characters (`#012` newline, `#011` tab) back.
pub fn unescape_syslog(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('#') {
        out.push_str(&rest[..at]);
        let digits = rest.get(at + 1..at + 4).filter(|d| d.bytes().all(|b| (b'0'..=b'7').contains(&b)));
        match digits.and_then(|d| u8::from_str_radix(d, 8).ok()).filter(|b| *b < 0x20) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('#');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses the message of a script-block event (newlines already real). `None` for any other
/// PowerShell message.
pub fn parse_message(message: &str, time_created: &str) -> Option<ScriptBlockPart> {
    let after = &message[message.find(CREATING)? + CREATING.len()..];
    let (counts, body) = after.split_once("):")?;
    let (part, total) = counts.split_once(" of ")?;
    let (part, total): (u32, u32) = (part.trim().parse().ok()?, total.trim().parse().ok()?);
    if part == 0 || part > total {
        return None;
    }
    let id_at = body.rfind(ID_MARKER)?;
    let script_id = body[id_at + ID_MARKER.len()..].lines().next()?.trim().to_string();
    if script_id.is_empty() {
        return None;
    }
    let text = body[..id_at].strip_prefix('\n').unwrap_or(&body[..id_at]);
    let text = text.strip_suffix("\n\n").or_else(|| text.strip_suffix('\n')).unwrap_or(text);
    Some(ScriptBlockPart {
        script_id,
        part,
        total,
        text: text.to_string(),
        time_created: time_created.into(),
    })
}

/// Parses one line of a syslog file written by rsyslog: `TIME HOST IDENT[PID]: MESSAGE`, where
/// TIME is RFC 3339 (`2024-03-07T08:23:10.123456+00:00`, Debian's default) or the traditional
/// `Mar  7 08:23:10`. Only lines of `identifier` count; `time_created` is TIME as written.
pub fn parse_syslog_line(line: &str, identifier: &str) -> Option<ScriptBlockPart> {
    if !line.contains(CREATING) {
        return None;
    }
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let time_created = if first.starts_with(|c: char| c.is_ascii_digit()) {
        first.to_string()
    } else {
        format!("{first} {} {}", words.next()?, words.next()?)
    };
    let _host = words.next()?;
    let tag = words.next()?;
    let ident = tag.split(['[', ':']).next()?;
    if ident != identifier {
        return None;
    }
    let message = &line[line.find(tag)? + tag.len()..];
    parse_message(&unescape_syslog(message.trim_start()), &time_created)
}

/// Parses one entry of `journalctl -o json` (one JSON object per line). Only entries whose
/// `SYSLOG_IDENTIFIER` is `identifier` count; `time_created` is `__REALTIME_TIMESTAMP` as
/// RFC 3339 UTC with microseconds (`2024-03-07T08:23:10.123456Z`).
pub fn parse_journal_entry(line: &str, identifier: &str) -> Option<ScriptBlockPart> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    if entry.get("SYSLOG_IDENTIFIER")?.as_str()? != identifier {
        return None;
    }
    // Messages that are not valid UTF-8 come as byte arrays: not PowerShell's.
    let message = entry.get("MESSAGE")?.as_str()?;
    let micros: i64 = entry.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()?;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    parse_message(message, &time.format(&format).ok()?)
}

/// Joins parts into complete script blocks, in the order their first part appeared. Blocks
/// with a part missing are left out; a part logged twice counts once.
pub fn reassemble(parts: impl IntoIterator<Item = ScriptBlockPart>) -> Vec<ScriptBlock> {
    let mut order: Vec<String> = Vec::new();
    let mut blocks: BTreeMap<String, (u32, String, BTreeMap<u32, String>)> = BTreeMap::new();
    for part in parts {
        let entry = blocks.entry(part.script_id.clone()).or_insert_with(|| {
            order.push(part.script_id.clone());
            (part.total, part.time_created.clone(), BTreeMap::new())
        });
        if part.part == 1 {
            entry.1 = part.time_created;
        }
        entry.2.entry(part.part).or_insert(part.text);
    }
    order
        .into_iter()
        .filter_map(|id| {
            let (total, time_created, texts) = blocks.remove(&id)?;
            (texts.len() == total as usize).then(|| ScriptBlock {
                script_id: id,
                time_created,
                text: texts.into_values().collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5ad4b1c5-2a2b-4b0e-9c1c-0e7a1d3f4b21";

    fn syslog(time: &str, part: u32, total: u32, text: &str) -> String {
        let text = text.replace('\n', "#012");
        format!(
            "{time} host1 powershell[4242]: (7.4.1:1:80) [ScriptBlock_Compile_Detail:ExecuteCommand.Create.Verbose] \
             Creating Scriptblock text ({part} of {total}):#012{text}#012#012ScriptBlock ID: {ID}#012Path: /tmp/a.ps1"
        )
    }

    #[test]
    fn syslog_lines_become_parts() {
        let line = syslog("2024-03-07T08:23:10.123456+00:00", 1, 1, "Write-Host 'a#b'\n$x = 1");
        let part = parse_syslog_line(&line, "powershell").unwrap();
        assert_eq!(part.script_id, ID);
        assert_eq!((part.part, part.total), (1, 1));
        assert_eq!(part.text, "Write-Host 'a#b'\n$x = 1");
        assert_eq!(part.time_created, "2024-03-07T08:23:10.123456+00:00");

        let old_style = syslog("Mar  7 08:23:10", 1, 1, "Get-Date");
        assert_eq!(parse_syslog_line(&old_style, "powershell").unwrap().time_created, "Mar 7 08:23:10");
        assert!(parse_syslog_line(&line, "pwsh-custom").is_none(), "other identifiers are ignored");
        assert!(
            parse_syslog_line("2024-03-07T08:23:10Z host1 powershell[1]: (7.4.1:1:80) started", "powershell")
                .is_none()
        );
    }

    #[test]
    fn multi_part_blocks_are_joined_in_order() {
        let parts = [
            parse_syslog_line(&syslog("2024-03-07T08:23:11Z", 2, 2, "part two"), "powershell").unwrap(),
            parse_syslog_line(&syslog("2024-03-07T08:23:10Z", 1, 2, "part one, "), "powershell").unwrap(),
        ];
        let blocks = reassemble(parts.clone());
        assert_eq!(
            blocks,
            [ScriptBlock {
                script_id: ID.into(),
                time_created: "2024-03-07T08:23:10Z".into(),
                text: "part one, part two".into()
            }]
        );
        assert!(reassemble(parts[..1].to_vec()).is_empty(), "incomplete blocks are left out");
    }

    #[test]
    fn journal_entries_become_parts() {
        let message = format!(
            "(7.4.1:1:80) [ScriptBlock_Compile_Detail:ExecuteCommand.Create.Verbose] Creating Scriptblock text \
             (1 of 1):\nGet-Process\n\nScriptBlock ID: {ID}\nPath: "
        );
        let entry = serde_json::json!({
            "__REALTIME_TIMESTAMP": "1709799790123456",
            "SYSLOG_IDENTIFIER": "powershell",
            "_PID": "4242",
            "MESSAGE": message,
        })
        .to_string();
        let part = parse_journal_entry(&entry, "powershell").unwrap();
        assert_eq!(part.text, "Get-Process");
        assert_eq!(part.script_id, ID);
        assert_eq!(part.time_created, "2024-03-07T08:23:10.123456Z");
        assert!(parse_journal_entry(&entry.replace("\"powershell\"", "\"sshd\""), "powershell").is_none());
        assert!(parse_journal_entry("not json", "powershell").is_none());
    }

    #[test]
    fn escapes_are_turned_back() {
        assert_eq!(unescape_syslog("a#012b#011c#35d#999"), "a\nb\tc#35d#999");
    }
}
