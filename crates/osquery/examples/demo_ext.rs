//! A demo osquery extension serving two tables (`demo_echo`, which echoes the pushed-down
//! constraints into its rows, and `demo_numbers`). osquery starts it as
//! `demo_ext --socket PATH --timeout S --interval S [--verbose]`; the tests run it against
//! `/work/shared/osquery-peer/run_ext.sh`.
//!
//! Extra flags: `--name NAME` (extension name), `--echo-table NAME` (rename `demo_echo`, e.g.
//! to a table core already has), `--fetch-config` (log core's options and config first).
//! Exit status: 0 when core shut it down or went away, 1 on any error, 2 on bad usage.

#[path = "../tests/support/demo_tables.rs"]
mod demo_tables;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use demo_tables::{DemoTables, ECHO};
use watchpost_osquery::{Extension, ExtensionOptions, ManagerClient, OsqueryError};

struct Args {
    options: ExtensionOptions,
    echo_table: String,
    fetch_config: bool,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut options = ExtensionOptions::new("", "watchpost_demo", env!("CARGO_PKG_VERSION"));
    let mut echo_table = ECHO.to_string();
    let (mut fetch_config, mut verbose) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let seconds = |text: String| {
            text.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: {text:?} is not a number of seconds"))
        };
        match flag.as_str() {
            "--socket" => options.socket = value()?,
            "--timeout" => options.timeout = seconds(value()?)?,
            "--interval" => options.interval = seconds(value()?)?,
            "--name" => options.name = value()?,
            "--echo-table" => echo_table = value()?,
            "--fetch-config" => fetch_config = true,
            "--verbose" => verbose = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.socket.is_empty() {
        return Err("--socket PATH is required".to_string());
    }
    Ok(Args { options, echo_table, fetch_config, verbose })
}

fn log_config(options: &ExtensionOptions) -> Result<(), OsqueryError> {
    let mut manager = ManagerClient::connect(&options.socket, options.timeout)?;
    for (name, value) in manager.options()? {
        log::info!("core option {name}={value}");
    }
    for (source, text) in manager.gen_config()? {
        log::info!("core config from {source}: {text}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("demo_ext: {message}");
            return ExitCode::from(2);
        }
    };
    let level = if args.verbose { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    if args.fetch_config
        && let Err(e) = log_config(&args.options)
    {
        log::error!("{e}");
        return ExitCode::FAILURE;
    }
    let plugin = Arc::new(DemoTables::new(&args.echo_table, 0));
    match Extension::run(args.options, plugin.registry(), plugin) {
        Ok(reason) => {
            log::info!("demo_ext exits: {reason:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
