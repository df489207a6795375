//! Starting, reconfiguring and stopping the agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use watchpost_catalog::{Platform, Stamper, Table, catalog};
use watchpost_config::{Config, ConfigErrors};
use watchpost_filters::FilterSet;
use watchpost_sensors::{Sensor, SensorContext, SensorHealth, SensorState};
use watchpost_store::{Limits, Store};

use crate::config_source::ConfigSource;
use crate::engine::Engine;
use crate::pipeline::{Pipeline, Writer};
use crate::status::{ErrorSlot, SensorEntry};

pub struct AgentOptions {
    /// Folder of the event store (`events.redb`).
    pub data_dir: PathBuf,
    pub config: ConfigSource,
    /// `--events_max` / `--events_expiry` flags; osquery core's options win in extension mode.
    pub events_max: Option<u64>,
    pub events_expiry: Option<u64>,
    /// How often the config source is checked for changes.
    pub reload_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the config is not valid:\n{0}")]
    Config(ConfigErrors),
    #[error("filters: {0}")]
    Filters(String),
    #[error(transparent)]
    Store(#[from] watchpost_store::StoreError),
    #[error("starting a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// `/var/lib/watchpost` (root) or a per-user folder; `C:\ProgramData\watchpost` on Windows.
pub fn default_data_dir() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        return PathBuf::from(base).join("watchpost");
    }
    if is_root() {
        return PathBuf::from("/var/lib/watchpost");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("watchpost")
}

/// `/run/watchpost/query.sock` (root), a per-user path otherwise; `\\.\pipe\watchpost` on Windows.
pub fn default_query_socket() -> String {
    if cfg!(windows) {
        return r"\\.\pipe\watchpost".to_string();
    }
    if is_root() {
        return "/run/watchpost/query.sock".to_string();
    }
    default_data_dir().join("query.sock").display().to_string()
}

/// Whether the agent runs with root's rights (Windows: the default paths need no such test).
pub fn is_root() -> bool {
    #[cfg(unix)]
    return rustix::process::geteuid().is_root();
    #[cfg(not(unix))]
    return false;
}

struct Running {
    sensors: Vec<Box<dyn Sensor>>,
    /// Per sensor: started (some of its tables are not disabled).
    started: Vec<bool>,
    /// Per sensor: what it was (or will be) started with.
    contexts: Vec<SensorContext>,
    /// The config text in force (or last rejected), to skip unchanged re-reads.
    raw: String,
}

pub struct Agent {
    engine: Arc<Engine>,
    writer: Option<Writer>,
    store: Arc<Store>,
    running: Arc<Mutex<Running>>,
    stop: Arc<AtomicBool>,
    reloader: Option<JoinHandle<()>>,
}

/// Whether `sensor` has a table that `watchpost.disabled_tables` does not name.
fn is_wanted(sensor: &dyn Sensor, disabled: &[String]) -> bool {
    sensor.tables().iter().any(|table| !disabled.iter().any(|name| name == table))
}

fn start_sensor(sensor: &mut dyn Sensor, context: &SensorContext) {
    context.health.set_state(SensorState::Starting);
    if let Err(e) = sensor.start(context.clone()) {
        context.health.record_error(format!("could not start: {e}"));
    }
}

impl Agent {
    /// Loads and validates the config, opens the store, puts the filters in force, and only
    /// then starts the sensors.
    pub fn start(options: AgentOptions) -> Result<Agent, AgentError> {
        let fetched = options.config.fetch();
        let config_error = Arc::new(ErrorSlot::default());
        let config = match fetched.parsed {
            Ok(config) => config,
            // Nothing to read is not a bad config: run on defaults and keep asking.
            Err(errors) if fetched.unavailable => {
                config_error.record(format!("running on defaults until a config can be read:\n{errors}"));
                Config::default()
            }
            Err(errors) => return Err(AgentError::Config(errors)),
        };
        let filters = FilterSet::compile(&config.filters).map_err(|e| AgentError::Filters(e.to_string()))?;
        let limits = limits(&config, &fetched.core_options, &options);
        let store = Arc::new(Store::open(&options.data_dir.join("events.redb"), limits)?);
        log::info!(
            "store {} (events_max {}, events_expiry {} s), config from {}",
            store.path().display(),
            limits.events_max,
            limits.events_expiry,
            options.config.describe()
        );
        let (pipeline, writer) = Pipeline::start(filters, Arc::clone(&store))?;
        let engine = Arc::new(Engine::new(
            Arc::clone(&store),
            watchpost_sensors::platform_snapshots(&config),
            config.read_mode,
            Arc::clone(pipeline.stats()),
            Arc::clone(&config_error),
            options.config.describe(),
        ));

        let disabled = &config.sensor_options.disabled_tables;
        pipeline.set_disabled_tables(disabled);
        let mut sensors = watchpost_sensors::platform_sensors(&config);
        let mut entries = Vec::new();
        let (mut started, mut contexts) = (Vec::new(), Vec::new());
        for sensor in &mut sensors {
            let health = Arc::new(SensorHealth::new(sensor.name()));
            let context = SensorContext {
                sink: Arc::clone(&pipeline) as Arc<dyn watchpost_sensors::EventSink>,
                health: Arc::clone(&health),
                stamper: Stamper::global(),
            };
            let wanted = is_wanted(sensor.as_ref(), disabled);
            if wanted {
                start_sensor(sensor.as_mut(), &context);
            } else {
                health.set_state(SensorState::Stopped);
            }
            started.push(wanted);
            contexts.push(context);
            entries.push(SensorEntry { name: sensor.name(), tables: sensor.tables(), health });
        }
        if let Ok(mut list) = engine.sensors.lock() {
            *list = entries;
        }

        let running = Arc::new(Mutex::new(Running { sensors, started, contexts, raw: fetched.raw }));
        let stop = Arc::new(AtomicBool::new(false));
        let reloader = {
            let reload = Reloader {
                source: options.config.clone(),
                interval: options.reload_interval,
                running: Arc::clone(&running),
                pipeline: Arc::clone(&pipeline),
                engine: Arc::clone(&engine),
                store: Arc::clone(&store),
                config_error,
                flags: (options.events_max, options.events_expiry),
                stop: Arc::clone(&stop),
            };
            std::thread::Builder::new().name("config-reload".into()).spawn(move || reload.run())?
        };
        Ok(Agent { engine, writer: Some(writer), store, running, stop, reloader: Some(reloader) })
    }

    /// The table source for queries.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The tables this platform serves, `watchpost_status` included.
    pub fn tables() -> Vec<Table> {
        catalog().for_platform(Platform::current()).cloned().collect()
    }

    /// Stops the sensors, commits every queued event and closes the store.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reloader) = self.reloader.take() {
            let _ = reloader.join();
        }
        if let Ok(mut running) = self.running.lock() {
            for sensor in &mut running.sensors {
                sensor.stop();
            }
            running.sensors.clear();
        }
        if let Some(writer) = self.writer.take() {
            writer.finish();
        }
    }
}

fn parse_flag(options: &BTreeMap<String, String>, name: &str) -> Option<u64> {
    options.get(name).and_then(|v| v.trim().parse().ok())
}

/// events_max / events_expiry: osquery core's flags (extension mode), else the command line,
/// else the config's `options`, else the defaults.
fn limits(config: &Config, core: &BTreeMap<String, String>, options: &AgentOptions) -> Limits {
    let defaults = Limits::default();
    Limits {
        events_max: parse_flag(core, "events_max")
            .or(options.events_max)
            .or(config.events_max)
            .unwrap_or(defaults.events_max),
        events_expiry: parse_flag(core, "events_expiry")
            .or(options.events_expiry)
            .or(config.events_expiry)
            .unwrap_or(defaults.events_expiry),
    }
}

struct Reloader {
    source: ConfigSource,
    interval: Duration,
    running: Arc<Mutex<Running>>,
    pipeline: Arc<Pipeline>,
    engine: Arc<Engine>,
    store: Arc<Store>,
    config_error: Arc<ErrorSlot>,
    flags: (Option<u64>, Option<u64>),
    stop: Arc<AtomicBool>,
}

impl Reloader {
    fn run(self) {
        if matches!(self.source, ConfigSource::None) {
            return;
        }
        let mut next = Instant::now() + self.interval;
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + self.interval;
            self.reload_once();
        }
    }

    fn reload_once(&self) {
        let fetched = self.source.fetch();
        let Ok(mut running) = self.running.lock() else { return };
        if fetched.raw == running.raw && !fetched.raw.is_empty() {
            return;
        }
        let config = match fetched.parsed {
            Ok(config) => config,
            Err(errors) if fetched.unavailable => {
                self.config_error
                    .record(format!("cannot read the config, the previous one stays in force:\n{errors}"));
                return;
            }
            Err(errors) => {
                self.config_error
                    .record(format!("config not applied, the previous one stays in force:\n{errors}"));
                running.raw = fetched.raw;
                return;
            }
        };
        let filters = match FilterSet::compile(&config.filters) {
            Ok(filters) => filters,
            Err(e) => {
                self.config_error
                    .record(format!("filters not applied, the previous ones stay in force: {e}"));
                running.raw = fetched.raw;
                return;
            }
        };
        let options = AgentOptions {
            data_dir: PathBuf::new(),
            config: self.source.clone(),
            events_max: self.flags.0,
            events_expiry: self.flags.1,
            reload_interval: self.interval,
        };
        self.store.set_limits(limits(&config, &fetched.core_options, &options));
        self.pipeline.swap_filters(filters);
        self.engine.read_mode.store(Arc::new(config.read_mode));
        self.engine.reconfigure_snapshots(&config);
        self.config_error.clear();
        let disabled = &config.sensor_options.disabled_tables;
        self.pipeline.set_disabled_tables(disabled);
        let Running { sensors, started, contexts, .. } = &mut *running;
        for ((sensor, started), context) in sensors.iter_mut().zip(started.iter_mut()).zip(contexts.iter()) {
            let wanted = is_wanted(sensor.as_ref(), disabled);
            if wanted && !*started {
                // Started with the new config: `from_config` only saw the one at start.
                if let Err(e) = sensor.reconfigure(&config) {
                    self.config_error.record(format!("sensor {}: {e}", sensor.name()));
                }
                start_sensor(sensor.as_mut(), context);
                log::info!("sensor {} started: some of its tables are no longer disabled", sensor.name());
            } else if !wanted && *started {
                sensor.stop();
                context.health.set_state(SensorState::Stopped);
                log::info!("sensor {} stopped: all its tables are disabled", sensor.name());
            } else if wanted && let Err(e) = sensor.reconfigure(&config) {
                self.config_error.record(format!("sensor {}: {e}", sensor.name()));
            }
            *started = wanted;
        }
        log::info!("config from {} applied", self.source.describe());
        running.raw = fetched.raw;
    }
}
