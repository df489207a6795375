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
    Osquery {
        socket: String,
        timeout: Duration,
    },
}

/// What one fetch of the source returned: the raw text (to tell whether anything changed) and
/// the parsed config, or the errors that make it unusable.
pub struct Fetched {
    pub raw: String,
    pub parsed: Result<Config, ConfigErrors>,
    /// osquery core's flags (extension mode only).
    pub core_options: BTreeMap<String, String>,
    /// The source could not be read at all (as opposed to holding an invalid config). osquery
    /// core without a config plugin answers like this.
    pub unavailable: bool,
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
                unavailable: false,
            },
            ConfigSource::File(path) => {
                let name = path.display().to_string();
                match std::fs::read_to_string(path) {
                    Ok(text) => Fetched {
                        parsed: watchpost_config::parse(&name, &text),
                        raw: text,
                        core_options: BTreeMap::new(),
                        unavailable: false,
                    },
                    Err(e) => Fetched {
                        raw: String::new(),
                        parsed: Err(single_error(&name, format!("cannot read the config file: {e}"))),
                        core_options: BTreeMap::new(),
                        unavailable: false,
                    },
                }
            }
            ConfigSource::Osquery { socket, timeout } => {
                let core_options = ManagerClient::connect(socket, *timeout).and_then(|mut c| c.options());
                let sources = ManagerClient::connect(socket, *timeout).and_then(|mut c| c.gen_config());
                let core_options = core_options.unwrap_or_else(|e| {
                    log::warn!("cannot read osquery core's flags: {e}");
                    BTreeMap::new()
                });
                match sources {
                    Ok(sources) => Fetched {
                        raw: sources.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect(),
                        parsed: watchpost_config::parse_sources(&sources),
                        core_options,
                        unavailable: false,
                    },
                    Err(e) => Fetched {
                        raw: String::new(),
                        parsed: Err(single_error(
                            socket,
                            format!("cannot fetch the config from osquery core: {e}"),
                        )),
                        core_options,
                        unavailable: true,
                    },
                }
            }
        }
    }
}

fn single_error(source: &str, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError { source: source.to_string(), line: 0, column: 0, message }])
}
