//! Where the config comes from: a file (`--config`), osquery core's config plugin (extension
//! mode: core pushes no config to a table-only extension, so we fetch it with `genConfig`), or
//! nowhere (defaults).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use watchpost_config::{Config, ConfigError, ConfigErrors};
use watchpost_osquery::ManagerClient;

#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// No config: no filters, no watched logs, default limits.
    None,
    File(PathBuf),
    /// osquery core's config plugin, reached through the extension manager socket.
    Osquery { socket: String, timeout: Duration },
}

/// What one fetch of the source returned: the raw text (to tell whether anything changed) and
/// the parsed config, or the errors that make it unusable.
pub struct Fetched {
    pub raw: String,
    pub parsed: Result<Config, ConfigErrors>,
    /// osquery core's flags (extension mode only).
    pub core_options: BTreeMap<String, String>,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::None => "defaults".to_string(),
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Osquery { socket, .. } => format!("osquery config plugin via {socket}"),
        }
    }

    pub fn fetch(&self) -> Fetched {
        match self {
            ConfigSource::None => Fetched {
                raw: String::new(),
                parsed: watchpost_config::parse("defaults", "{}"),
                core_options: BTreeMap::new(),
            },
            ConfigSource::File(path) => {
                let name = path.display().to_string();
                match std::fs::read_to_string(path) {
                    Ok(text) => Fetched {
                        parsed: watchpost_config::parse(&name, &text),
                        raw: text,
                        core_options: BTreeMap::new(),
                    },
                    Err(e) => Fetched {
                        raw: String::new(),
                        parsed: Err(single_error(&name, format!("cannot read the config file: {e}"))),
                        core_options: BTreeMap::new(),
                    },
                }
            }
            ConfigSource::Osquery { socket, timeout } => {
                let fetched = ManagerClient::connect(socket, *timeout).and_then(|mut client| {
                    let options = client.options()?;
                    let sources = client.gen_config()?;
                    Ok((options, sources))
                });
                match fetched {
                    Ok((core_options, sources)) => Fetched {
                        raw: sources.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect(),
                        parsed: watchpost_config::parse_sources(&sources),
                        core_options,
                    },
                    Err(e) => Fetched {
                        raw: String::new(),
                        parsed: Err(single_error(socket, format!("cannot fetch the config from osquery core: {e}"))),
                        core_options: BTreeMap::new(),
                    },
                }
            }
        }
    }
}

fn single_error(source: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError { source: source.to_string(), line: 0, column: 0, message }])
}
