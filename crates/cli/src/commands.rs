//! The non-interactive commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use watchpost_agent::api::{self, ApiError};
use watchpost_agent::extension::CatalogPlugin;
use watchpost_agent::{Agent, AgentOptions, ConfigSource, default_data_dir, default_query_socket};
use watchpost_catalog::{Platform, catalog, render_markdown};
use watchpost_filters::FilterSet;
use watchpost_osquery::{Extension, ExtensionOptions, StopReason};

use crate::output::{self, Format};
use crate::{ExtensionArgs, StoreArgs};

/// Logs go to stderr; `RUST_LOG` overrides the level.
pub fn init_logging(verbose: bool) {
    init_logging_at(if verbose { "debug" } else { "info" });
}

pub fn init_logging_at(level: &str) {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .try_init();
}

pub fn agent_options(config: ConfigSource, store: &StoreArgs) -> AgentOptions {
    AgentOptions {
        data_dir: store.data_dir.clone().unwrap_or_else(default_data_dir),
        config,
        events_max: store.events_max,
        events_expiry: store.events_expiry,
        reload_interval: Duration::from_secs(2),
    }
}

fn file_or_nothing(config: Option<PathBuf>) -> ConfigSource {
    config.map_or(ConfigSource::None, ConfigSource::File)
}

/// The local query socket, best effort: the agent works without it.
fn start_api(store: &StoreArgs, agent: &Agent) -> Option<api::Server> {
    let path = store.query_socket.clone().unwrap_or_else(default_query_socket);
    match api::Server::start(&path, Agent::tables(), agent.engine()) {
        Ok(server) => Some(server),
        Err(e) => {
            log::warn!("no local query socket at {path}: {e}");
            None
        }
    }
}

pub fn extension(socket: String, args: ExtensionArgs) -> Result<ExitCode> {
    init_logging(args.verbose);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let config = match args.config {
        Some(path) => ConfigSource::File(path),
        None => ConfigSource::Osquery { socket: socket.clone(), timeout },
    };
    let agent = Agent::start(agent_options(config, &args.store))?;
    let api = start_api(&args.store, &agent);
    let plugin = Arc::new(CatalogPlugin::new(Agent::tables(), agent.engine()));
    let options = ExtensionOptions {
        socket,
        timeout,
        interval: Duration::from_secs(args.interval.max(1)),
        name: "watchpost".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let registry = plugin.registry();
    let result = Extension::start(options, registry, plugin).and_then(|extension| {
        let stopper = extension.stopper();
        // osqueryd stops extensions with SIGTERM when it exits without calling shutdown().
        if let Err(e) = ctrlc::set_handler(move || stopper.stop()) {
            log::warn!("no signal handler: {e}");
        }
        log::info!(
            "registered with osquery core as extension {} at {}",
            extension.uuid(),
            extension.endpoint()
        );
        extension.wait()
    });
    if let Some(api) = api {
        api.stop();
    }
    agent.stop();
    match result {
        Ok(StopReason::ShutdownRequested) => log::info!("osquery core asked us to shut down"),
        Ok(StopReason::CoreGone) => log::info!("osquery core went away; exiting"),
        Ok(StopReason::Stopped) => log::info!("stopped by signal"),
        Err(e) => bail!("osquery extension: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn daemon(config: Option<PathBuf>, verbose: bool, store: StoreArgs) -> Result<ExitCode> {
    init_logging(verbose);
    let agent = Agent::start(agent_options(file_or_nothing(config), &store))?;
    let path = store.query_socket.clone().unwrap_or_else(default_query_socket);
    let server = api::Server::start(&path, Agent::tables(), agent.engine())
        .with_context(|| format!("cannot serve the query socket {path}"))?;
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the signal handler")?;
    log::info!("watchpost daemon running; stop with SIGTERM or Ctrl-C");
    let _ = rx.recv();
    log::info!("stopping");
    server.stop();
    agent.stop();
    Ok(ExitCode::SUCCESS)
}

pub fn query(query_socket: Option<String>, sql: &str, format: Format) -> Result<ExitCode> {
    let path = query_socket.unwrap_or_else(default_query_socket);
    let mut client = api::Client::connect(&path)?;
    match client.query(sql) {
        Ok(result) => {
            output::print(&result, format, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(ApiError::Query(message)) => {
            eprintln!("watchpost: query failed: {message}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn tables(markdown: bool) -> Result<ExitCode> {
    if markdown {
        print!("{}", render_markdown(catalog()));
        return Ok(ExitCode::SUCCESS);
    }
    for table in catalog().for_platform(Platform::current()) {
        println!("{:<28} {:<9} {}", table.name, table.kind.as_str(), table.description);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check_config(file: &Path) -> Result<ExitCode> {
    let config = match watchpost_config::load(file) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: not valid ({} problem(s))", file.display(), errors.0.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Err(e) = FilterSet::compile(&config.filters) {
        eprintln!("{}: filters: {e}", file.display());
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: valid", file.display());
    print!("{}", watchpost_config::explain(&config));
    Ok(ExitCode::SUCCESS)
}

pub fn explain_filter(config: &Path, table: &str, event: &str) -> Result<ExitCode> {
    let config = watchpost_config::load(config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let filters = FilterSet::compile(&config.filters)?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(event).context("the event must be a JSON object of column names to values")?;
    let values: Vec<(String, String)> = object
        .into_iter()
        .map(|(column, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (column, text)
        })
        .collect();
    let explanation = filters.explain(table, &values)?;
    println!("{explanation}");
    Ok(ExitCode::SUCCESS)
}
