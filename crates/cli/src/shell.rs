//! `watchpost shell`: an osqueryi-like shell. It talks to the running daemon when there is one;
//! otherwise it runs the sensors and store in-process for the life of the shell.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use watchpost_agent::api::{self, ApiError, QueryResult};
use watchpost_agent::{Agent, ConfigSource, default_query_socket};
use watchpost_catalog::{Platform, catalog};
use watchpost_sql::SqlHost;

use crate::StoreArgs;
use crate::commands::{agent_options, init_logging_at};
use crate::output::{self, Format};

enum Backend {
    Daemon(api::Client),
    InProcess { host: SqlHost, agent: Agent },
}

impl Backend {
    fn query(&mut self, sql: &str) -> Result<QueryResult, String> {
        match self {
            Backend::Daemon(client) => client.query(sql).map_err(|e| match e {
                ApiError::Query(message) => message,
                other => other.to_string(),
            }),
            Backend::InProcess { host, .. } => api::run_query(host, sql),
        }
    }
}

const HELP: &str = "\
.tables [PATTERN]   list the tables
.schema [TABLE]     show a table's CREATE statement (all tables without argument)
.mode table|json|csv
.help               this text
.quit / .exit       leave (Ctrl-D too)
SQL statements end with ';' and may span lines.";

pub fn run(config: Option<PathBuf>, verbose: bool, store: StoreArgs) -> Result<ExitCode> {
    let socket = store.query_socket.clone().unwrap_or_else(default_query_socket);
    let mut backend = match api::Client::connect(&socket) {
        Ok(client) => {
            eprintln!("Connected to the watchpost daemon at {socket}.");
            Backend::Daemon(client)
        }
        Err(_) => {
            // The shell's own output is the point: agent logs only when asked for.
            init_logging_at(if verbose { "debug" } else { "warn" });
            let source = config.map_or(ConfigSource::None, ConfigSource::File);
            let agent = Agent::start(agent_options(source, &store))?;
            let host = SqlHost::new(Agent::tables(), agent.engine())?;
            eprintln!("No daemon at {socket}: sensors run inside this shell until it exits.");
            Backend::InProcess { host, agent }
        }
    };
    eprintln!("Type .help for help; SQL ends with ';'.");
    let mut editor = DefaultEditor::new()?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut format = Format::Table;
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "watchpost> " } else { "      ...> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if pending.is_empty() && trimmed.starts_with('.') {
            let _ = editor.add_history_entry(trimmed);
            if !meta_command(trimmed, &mut format) {
                break;
            }
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut pending);
        let _ = editor.add_history_entry(sql.trim());
        match backend.query(&sql) {
            Ok(result) => output::print(&result, format, &mut std::io::stdout().lock())?,
            Err(message) => eprintln!("Error: {message}"),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    if let Backend::InProcess { agent, host } = backend {
        drop(host);
        agent.stop();
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a dot command; false means leave the shell.
fn meta_command(line: &str, format: &mut Format) -> bool {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let argument = words.next();
    let tables = || catalog().for_platform(Platform::current());
    match command {
        ".quit" | ".exit" => return false,
        ".help" => println!("{HELP}"),
        ".tables" => {
            for table in tables().filter(|t| argument.is_none_or(|p| t.name.contains(p))) {
                println!("  => {}", table.name);
            }
        }
        ".schema" => {
            for table in tables().filter(|t| argument.is_none_or(|name| t.name == name)) {
                println!("{};", table.ddl());
            }
        }
        ".mode" => match argument {
            Some("table") => *format = Format::Table,
            Some("json") => *format = Format::Json,
            Some("csv") => *format = Format::Csv,
            _ => eprintln!("usage: .mode table|json|csv"),
        },
        other => eprintln!("unknown command {other}; try .help"),
    }
    true
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(|home| PathBuf::from(home).join(".watchpost_history"))
}
