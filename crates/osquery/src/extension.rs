//! Serving watchpost's tables to osquery core: register, serve `<socket>.<uuid>`, watch core.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use thrift::server::TProcessor;
use watchpost_catalog::QueryContext;
use watchpost_ipc::{Access, Listener, Stream};

use crate::client::{ManagerClient, OsqueryRow, Route};
use crate::context::parse_context;
use crate::error::OsqueryError;
use crate::protocol::{ExtensionResponse, ExtensionStatus, ExtensionSyncHandler, ExtensionSyncProcessor};
use crate::transport::{SERVER_LIMITS, is_end_of_stream, protocols};

/// The tables an extension serves.
pub trait TablePlugin: Send + Sync {
    /// Route info of a registered table (`columns` action); `None`: no such table.
    fn routes(&self, table: &str) -> Option<Vec<Route>>;
    /// Rows for a query; NULL columns are left out of a row.
    fn generate(&self, table: &str, context: &QueryContext) -> Result<Vec<OsqueryRow>, String>;
}

/// How to reach core and how to behave; osquery passes `--socket`, `--timeout` and
/// `--interval` to the extensions it starts.
#[derive(Clone, Debug)]
pub struct ExtensionOptions {
    /// Core's extension manager endpoint (a Unix socket path or `\\.\pipe\...`).
    pub socket: String,
    /// How long to wait for core's endpoint at start.
    pub timeout: Duration,
    /// How often to ping core; one failed round (after a reconnect) means core is gone.
    pub interval: Duration,
    /// Extension name core registers (must be unique among extensions).
    pub name: String,
    pub version: String,
}

impl ExtensionOptions {
    /// osquery's defaults: 3 s timeout, 3 s interval.
    pub fn new(socket: &str, name: &str, version: &str) -> ExtensionOptions {
        ExtensionOptions {
            socket: socket.to_string(),
            timeout: Duration::from_secs(3),
            interval: Duration::from_secs(3),
            name: name.to_string(),
            version: version.to_string(),
        }
    }
}

/// Why [`Extension::wait`] (or [`Extension::run`]) returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Core called `shutdown()`.
    ShutdownRequested,
    /// Core's manager endpoint stopped answering pings.
    CoreGone,
    /// [`ExtensionStopper::stop`] was called (e.g. on SIGTERM).
    Stopped,
}

enum Event {
    Shutdown,
    Stop,
    ServeFailed(std::io::Error),
}

/// Asks a running [`Extension`] to stop; cloneable, usable from any thread.
#[derive(Clone)]
pub struct ExtensionStopper(mpsc::Sender<Event>);

impl ExtensionStopper {
    pub fn stop(&self) {
        // A send error means the extension has already stopped.
        let _ = self.0.send(Event::Stop);
    }
}

/// A registered extension serving its endpoint.
pub struct Extension {
    options: ExtensionOptions,
    manager: ManagerClient,
    uuid: i64,
    endpoint: String,
    events: mpsc::Receiver<Event>,
    stopper: ExtensionStopper,
    stopping: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl Extension {
    /// Connects to core (waiting up to `timeout` for the socket), registers `tables`, serves
    /// `<socket>.<uuid>` until core calls shutdown() or core stops answering pings (checked
    /// every `interval`), then deregisters (best effort) and returns why it stopped.
    pub fn run(
        options: ExtensionOptions,
        tables: Vec<(String, Vec<Route>)>,
        plugin: Arc<dyn TablePlugin>,
    ) -> Result<StopReason, OsqueryError> {
        Extension::start(options, tables, plugin)?.wait()
    }

    /// Connects, registers and starts serving; [`Extension::wait`] then watches core.
    pub fn start(
        options: ExtensionOptions,
        tables: Vec<(String, Vec<Route>)>,
        plugin: Arc<dyn TablePlugin>,
    ) -> Result<Extension, OsqueryError> {
        let mut manager = ManagerClient::connect(&options.socket, options.timeout)?;
        let uuid = manager.register(&options.name, &options.version, &tables)?;
        let endpoint = format!("{}.{}", options.socket, uuid);
        log::info!(
            "registered extension {} ({} tables) with osquery core as uuid {uuid}; serving {endpoint}",
            options.name,
            tables.len()
        );
        let listener = match Listener::bind(&endpoint, Access::Owner) {
            Ok(listener) => listener,
            Err(source) => {
                let _ = manager.deregister(uuid);
                return Err(OsqueryError::Listen { path: endpoint, source });
            }
        };
        let (sender, events) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared { plugin, events: sender.clone() });
        let accept_stopping = stopping.clone();
        let spawned = thread::Builder::new()
            .name("osquery-accept".to_string())
            .spawn(move || accept_loop(listener, shared, &accept_stopping));
        let acceptor = match spawned {
            Ok(acceptor) => acceptor,
            Err(source) => {
                let _ = manager.deregister(uuid);
                return Err(OsqueryError::Listen { path: endpoint, source });
            }
        };
        Ok(Extension {
            options,
            manager,
            uuid,
            endpoint,
            events,
            stopper: ExtensionStopper(sender),
            stopping,
            acceptor,
        })
    }

    /// The uuid core assigned.
    pub fn uuid(&self) -> i64 {
        self.uuid
    }

    /// The endpoint core calls: `<socket>.<uuid>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn stopper(&self) -> ExtensionStopper {
        self.stopper.clone()
    }

    /// A client for core's manager (options, config), separate from the one watching core.
    pub fn manager(&self) -> Result<ManagerClient, OsqueryError> {
        ManagerClient::connect(&self.options.socket, self.options.timeout)
    }

    /// Serves until core asks to shut down, core goes away, or the stopper is used; then
    /// stops serving and deregisters (best effort).
    pub fn wait(mut self) -> Result<StopReason, OsqueryError> {
        let interval = self.options.interval.max(Duration::from_millis(100));
        let outcome = loop {
            match self.events.recv_timeout(interval) {
                Ok(Event::Shutdown) => break Ok(StopReason::ShutdownRequested),
                Ok(Event::Stop) => break Ok(StopReason::Stopped),
                Ok(Event::ServeFailed(source)) => {
                    break Err(OsqueryError::Serve { path: self.endpoint.clone(), source });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !self.core_answers() {
                        break Ok(StopReason::CoreGone);
                    }
                }
                // Unreachable while `self.stopper` holds a sender.
                Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(StopReason::Stopped),
            }
        };
        log::info!("extension {} stopping: {outcome:?}", self.options.name);
        let Extension { mut manager, uuid, endpoint, stopping, acceptor, .. } = self;
        stop_serving(&endpoint, &stopping, acceptor);
        if !matches!(outcome, Ok(StopReason::CoreGone)) {
            match manager.deregister(uuid) {
                Ok(()) => log::info!("deregistered extension uuid {uuid}"),
                Err(e) => log::warn!("could not deregister extension uuid {uuid}: {e}"),
            }
        }
        outcome
    }

    /// One ping round; a failure drops the connection, so the retry reconnects.
    fn core_answers(&mut self) -> bool {
        match self.manager.ping() {
            Ok(()) => true,
            Err(first) => match self.manager.ping() {
                Ok(()) => true,
                Err(second) => {
                    log::warn!("osquery core does not answer pings: {first}; then: {second}");
                    false
                }
            },
        }
    }
}

fn stop_serving(endpoint: &str, stopping: &AtomicBool, acceptor: JoinHandle<()>) {
    stopping.store(true, Ordering::SeqCst);
    // accept() blocks: a connection of our own wakes it to see `stopping`.
    match Stream::connect_timeout(endpoint, Duration::from_secs(1)) {
        Ok(_) => {
            if acceptor.join().is_err() {
                log::warn!("the accept thread of {endpoint} panicked");
            }
        }
        Err(e) => log::warn!("could not wake the accept thread of {endpoint}: {e}"),
    }
}

struct Shared {
    plugin: Arc<dyn TablePlugin>,
    events: mpsc::Sender<Event>,
}

fn accept_loop(listener: Listener, shared: Arc<Shared>, stopping: &AtomicBool) {
    const MAX_FAILURES_IN_A_ROW: u32 = 20;
    let mut failures = 0;
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok(stream) => {
                failures = 0;
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("osquery-conn".to_string())
                    .spawn(move || serve_connection(stream, &shared));
                if let Err(e) = spawned {
                    log::warn!("cannot start a thread for a connection on {}: {e}", listener.path());
                }
            }
            Err(e) => {
                failures += 1;
                log::warn!("accepting on {} failed: {e}", listener.path());
                if failures >= MAX_FAILURES_IN_A_ROW {
                    let _ = shared.events.send(Event::ServeFailed(e));
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Serves one connection until the peer closes it. A malformed message ends this connection
/// only.
fn serve_connection(stream: Stream, shared: &Shared) {
    let (mut input, mut output) = match protocols(stream, SERVER_LIMITS) {
        Ok(halves) => halves,
        Err(e) => {
            log::warn!("cannot use an accepted connection: {e}");
            return;
        }
    };
    let shutdown_asked = Arc::new(AtomicBool::new(false));
    let processor = ExtensionSyncProcessor::new(CallHandler {
        plugin: shared.plugin.clone(),
        shutdown_asked: shutdown_asked.clone(),
    });
    loop {
        match processor.process(&mut input, &mut output) {
            Ok(()) => {}
            Err(e) if is_end_of_stream(&e) => return,
            Err(e) => {
                log::warn!("closing an osquery connection after a bad message: {e}");
                return;
            }
        }
        // Only now is the shutdown() answer flushed: stopping earlier could exit the process
        // before core hears back.
        if shutdown_asked.swap(false, Ordering::SeqCst) {
            let _ = shared.events.send(Event::Shutdown);
        }
    }
}

struct CallHandler {
    plugin: Arc<dyn TablePlugin>,
    shutdown_asked: Arc<AtomicBool>,
}

impl ExtensionSyncHandler for CallHandler {
    fn handle_ping(&self) -> thrift::Result<ExtensionStatus> {
        Ok(status(0, "pong"))
    }

    fn handle_call(
        &self,
        registry: String,
        item: String,
        request: BTreeMap<String, String>,
    ) -> thrift::Result<ExtensionResponse> {
        let answer =
            catch_unwind(AssertUnwindSafe(|| answer_call(self.plugin.as_ref(), &registry, &item, &request)))
                .unwrap_or_else(|_| Err(format!("table {item} failed: the table plugin panicked")));
        Ok(match answer {
            Ok(rows) => ExtensionResponse::new(status(0, "OK"), rows),
            Err(message) => {
                log::debug!("call({registry}, {item}, {request:?}) failed: {message}");
                ExtensionResponse::new(status(1, &message), Vec::new())
            }
        })
    }

    fn handle_shutdown(&self) -> thrift::Result<()> {
        log::info!("osquery core asked the extension to shut down");
        self.shutdown_asked.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn status(code: i32, message: &str) -> ExtensionStatus {
    ExtensionStatus::new(code, message.to_string(), 0)
}

/// What `call` answers; an `Err` becomes status code 1 with that message.
pub(crate) fn answer_call(
    plugin: &dyn TablePlugin,
    registry: &str,
    item: &str,
    request: &BTreeMap<String, String>,
) -> Result<Vec<OsqueryRow>, String> {
    if registry != "table" {
        return Err(format!("unknown registry {registry:?}: this extension serves only tables"));
    }
    let routes = plugin.routes(item).ok_or_else(|| format!("unknown table {item:?}"))?;
    match request.get("action").map(String::as_str) {
        Some("columns") => Ok(routes),
        Some("generate") => {
            let context = parse_context(request.get("context").map_or("", String::as_str))
                .map_err(|e| format!("table {item}: {e}"))?;
            plugin.generate(item, &context).map_err(|e| format!("table {item}: {e}"))
        }
        Some(other) => Err(format!("table {item}: unsupported action {other:?}")),
        None => Err(format!("table {item}: the request has no \"action\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneTable;

    fn routes() -> Vec<Route> {
        vec![
            BTreeMap::from([
                ("id".to_string(), "column".to_string()),
                ("name".to_string(), "pid".to_string()),
                ("type".to_string(), "INTEGER".to_string()),
                ("op".to_string(), "1".to_string()),
            ]),
            BTreeMap::from([
                ("id".to_string(), "attributes".to_string()),
                ("attributes".to_string(), "4".to_string()),
            ]),
        ]
    }

    impl TablePlugin for OneTable {
        fn routes(&self, table: &str) -> Option<Vec<Route>> {
            (table == "one").then(routes)
        }

        fn generate(&self, _: &str, context: &QueryContext) -> Result<Vec<OsqueryRow>, String> {
            match context.equals("pid").next() {
                Some("0") => panic!("pid 0"),
                Some("1") => Err("pid 1 is private".to_string()),
                Some(pid) => Ok(vec![BTreeMap::from([("pid".to_string(), pid.to_string())])]),
                None => Ok(Vec::new()),
            }
        }
    }

    fn call(action: &str, context: Option<&str>) -> ExtensionResponse {
        let handler = CallHandler { plugin: Arc::new(OneTable), shutdown_asked: Default::default() };
        let mut request = BTreeMap::from([("action".to_string(), action.to_string())]);
        if let Some(context) = context {
            request.insert("context".to_string(), context.to_string());
        }
        handler.handle_call("table".to_string(), "one".to_string(), request).unwrap()
    }

    fn pid_context(pid: &str) -> String {
        format!(r#"{{"constraints":[{{"name":"pid","list":[{{"op":2,"expr":"{pid}"}}]}}]}}"#)
    }

    #[test]
    fn columns_answers_the_routes_with_status_ok() {
        let answer = call("columns", None);
        assert_eq!(answer.status, Some(status(0, "OK")));
        assert_eq!(answer.response, Some(routes()));
    }

    #[test]
    fn generate_passes_the_constraints_to_the_plugin() {
        let answer = call("generate", Some(&pid_context("42")));
        assert_eq!(answer.status, Some(status(0, "OK")));
        assert_eq!(answer.response.unwrap()[0]["pid"], "42");
        // No context at all: an unconstrained query.
        assert_eq!(call("generate", None).response, Some(vec![]));
    }

    #[test]
    fn plugin_errors_and_panics_become_status_code_1() {
        let answer = call("generate", Some(&pid_context("1")));
        assert_eq!(answer.status, Some(status(1, "table one: pid 1 is private")));
        let answer = call("generate", Some(&pid_context("0")));
        assert_eq!(answer.status, Some(status(1, "table one failed: the table plugin panicked")));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let plugin = OneTable;
        let ask = |registry: &str, item: &str, pairs: &[(&str, &str)]| {
            let request = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            answer_call(&plugin, registry, item, &request).unwrap_err()
        };
        assert_eq!(
            ask("config", "one", &[("action", "genConfig")]),
            "unknown registry \"config\": this extension serves only tables"
        );
        assert_eq!(ask("table", "two", &[("action", "columns")]), "unknown table \"two\"");
        assert_eq!(ask("table", "one", &[]), "table one: the request has no \"action\"");
        assert_eq!(
            ask("table", "one", &[("action", "generate"), ("context", "{")]),
            "table one: query context is not JSON: EOF while parsing an object at line 1 column 1"
        );
    }

    #[test]
    fn ping_and_shutdown_answers() {
        let asked = Arc::new(AtomicBool::new(false));
        let handler = CallHandler { plugin: Arc::new(OneTable), shutdown_asked: asked.clone() };
        assert_eq!(handler.handle_ping().unwrap(), status(0, "pong"));
        handler.handle_shutdown().unwrap();
        assert!(asked.load(Ordering::SeqCst));
    }
}
