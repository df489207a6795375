//! `watchpost`: the command line.
//!
//! Started by osqueryd as an autoloaded extension (`watchpost --socket PATH --timeout S
//! --interval S [--verbose]`) it registers the catalog's tables with core and serves them. The
//! subcommands run it without osquery (`daemon`, `query`, `shell`) and help with configs
//! (`check-config`, `explain-filter`, `tables`).

mod commands;
mod output;
mod shell;

/// See Cargo.toml: events cross threads, which glibc's allocator handles poorly.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "watchpost",
    version,
    about = "Real-time event tables for osquery, with Sysmon-style filters"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    extension: ExtensionArgs,
}

/// Extension mode: how osqueryd starts an autoloaded extension.
#[derive(Args)]
struct ExtensionArgs {
    /// osquery core's extension manager socket (a named pipe on Windows).
    #[arg(long)]
    socket: Option<String>,
    /// Seconds to wait for core's socket at start.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
    /// Seconds between pings to core; the extension exits when core stops answering.
    #[arg(long, default_value_t = 3)]
    interval: u64,
    /// Log debug detail.
    #[arg(long)]
    verbose: bool,
    /// Read this config instead of asking core's config plugin.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Clone)]
struct StoreArgs {
    /// Folder of the event store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Local query socket (a named pipe on Windows).
    #[arg(long)]
    query_socket: Option<String>,
    /// Events kept per table (osquery's events_max; core's flag wins in extension mode).
    #[arg(long = "events_max", alias = "events-max")]
    events_max: Option<u64>,
    /// Seconds events are kept (osquery's events_expiry; core's flag wins in extension mode).
    #[arg(long = "events_expiry", alias = "events-expiry")]
    events_expiry: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Run sensors and store, and serve the local query socket.
    Daemon {
        /// osquery.conf-style config.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run one SQL query on the running daemon.
    Query {
        /// Output format.
        #[arg(long, value_enum, default_value_t = output::Format::Table)]
        format: output::Format,
        #[arg(long)]
        query_socket: Option<String>,
        sql: String,
    },
    /// An osqueryi-like shell on the daemon, or on sensors run in-process when no daemon runs.
    Shell {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the tables of this platform.
    Tables {
        /// Print docs/tables.md for every platform instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Validate a config and explain what it sets up.
    CheckConfig { file: PathBuf },
    /// Show what the filters of a config decide for one event.
    ExplainFilter {
        #[arg(long)]
        config: PathBuf,
        table: String,
        /// The event's columns as a JSON object, e.g. '{"cmdline": "C:\\Windows\\x.exe"}'.
        event: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => match cli.extension.socket.clone() {
            Some(socket) => commands::extension(socket, cli.extension),
            None => {
                eprintln!(
                    "watchpost: give --socket PATH (extension mode) or a command; see `watchpost --help`"
                );
                return ExitCode::from(2);
            }
        },
        Some(Command::Daemon { config, verbose, store }) => commands::daemon(config, verbose, store),
        Some(Command::Query { format, query_socket, sql }) => commands::query(query_socket, &sql, format),
        Some(Command::Shell { config, verbose, store }) => shell::run(config, verbose, store),
        Some(Command::Tables { markdown }) => commands::tables(markdown),
        Some(Command::CheckConfig { file }) => commands::check_config(&file),
        Some(Command::ExplainFilter { config, table, event }) => {
            commands::explain_filter(&config, &table, &event)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("watchpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}
