//! A minimal osquery core stand-in in Rust, on the generated `ExtensionManager` processor: it
//! accepts registrations (refusing duplicate extension names), answers ping, options and
//! genConfig, records deregistrations, and can "go away" (drop every connection) to test
//! that an extension notices. Used where python is not (Windows under Wine, the benchmark).
// Shared by several test and example targets, each using a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport};
use watchpost_ipc::{Access, Listener, Stream};
use watchpost_osquery::protocol::{
    ExtensionManagerSyncHandler, ExtensionManagerSyncProcessor, ExtensionRegistry, ExtensionResponse,
    ExtensionStatus, ExtensionSyncHandler, InternalExtensionInfo, InternalExtensionList, InternalOptionInfo,
    InternalOptionList,
};

#[derive(Default)]
pub struct CoreState {
    pub extensions: BTreeMap<i64, (InternalExtensionInfo, ExtensionRegistry)>,
    pub registrations: Vec<(InternalExtensionInfo, ExtensionStatus)>,
    pub deregistered: Vec<i64>,
    pub pings: u32,
}

pub struct FakeCore {
    endpoint: String,
    state: Arc<Mutex<CoreState>>,
    gone: Arc<AtomicBool>,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh endpoint name: a socket in a new temporary directory, or a named pipe.
pub fn fresh_endpoint() -> (String, Option<tempfile::TempDir>) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    if cfg!(windows) {
        (format!(r"\\.\pipe\watchpost-osquery-test-{}-{n}", std::process::id()), None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("osquery.em").to_str().unwrap().to_string();
        (path, Some(dir))
    }
}

impl FakeCore {
    pub fn start(config: &str) -> FakeCore {
        let (endpoint, dir) = fresh_endpoint();
        let listener = Listener::bind(&endpoint, Access::Owner).unwrap();
        let state = Arc::new(Mutex::new(CoreState::default()));
        let gone = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(Manager { state: state.clone(), config: config.to_string() });
        let accept_gone = gone.clone();
        thread::spawn(move || {
            while let Ok(stream) = listener.accept() {
                if accept_gone.load(Ordering::SeqCst) {
                    continue; // dropped: the peer reads end-of-stream
                }
                let handler = handler.clone();
                let gone = accept_gone.clone();
                thread::spawn(move || serve(stream, handler, &gone));
            }
        });
        FakeCore { endpoint, state, gone, _dir: dir }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, CoreState> {
        self.state.lock().unwrap()
    }

    /// From now on every connection is closed after at most one more answer.
    pub fn go_away(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    /// Waits until `condition` holds on the state (panics after `timeout`).
    pub fn wait_until(&self, timeout: Duration, condition: impl Fn(&CoreState) -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition(&self.state()) {
            assert!(Instant::now() < deadline, "fake core: condition not met within {timeout:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A Thrift connection over a watchpost-ipc stream, as the crate builds them.
pub fn protocols(
    stream: Stream,
) -> (
    TBinaryInputProtocol<TBufferedReadTransport<Stream>>,
    TBinaryOutputProtocol<TBufferedWriteTransport<Stream>>,
) {
    let reader = stream.try_clone().unwrap();
    (
        TBinaryInputProtocol::new(TBufferedReadTransport::new(reader), true),
        TBinaryOutputProtocol::new(TBufferedWriteTransport::new(stream), true),
    )
}

fn serve(stream: Stream, handler: Arc<Manager>, gone: &AtomicBool) {
    let (mut input, mut output) = protocols(stream);
    let processor = ExtensionManagerSyncProcessor::new(SharedManager(handler));
    while processor.process(&mut input, &mut output).is_ok() {
        if gone.load(Ordering::SeqCst) {
            return;
        }
    }
}

struct Manager {
    state: Arc<Mutex<CoreState>>,
    config: String,
}

struct SharedManager(Arc<Manager>);

fn status(code: i32, message: &str, uuid: i64) -> ExtensionStatus {
    ExtensionStatus::new(code, message.to_string(), uuid)
}

impl ExtensionSyncHandler for SharedManager {
    fn handle_ping(&self) -> thrift::Result<ExtensionStatus> {
        self.0.state.lock().unwrap().pings += 1;
        Ok(status(0, "pong", 0))
    }

    fn handle_call(
        &self,
        registry: String,
        item: String,
        request: BTreeMap<String, String>,
    ) -> thrift::Result<ExtensionResponse> {
        if (registry.as_str(), item.as_str()) == ("config", "filesystem")
            && request.get("action").map(String::as_str) == Some("genConfig")
        {
            let source = BTreeMap::from([("/etc/osquery/osquery.conf".to_string(), self.0.config.clone())]);
            return Ok(ExtensionResponse::new(status(0, "OK", 0), vec![source]));
        }
        Ok(ExtensionResponse::new(status(1, "no such plugin", 0), Vec::new()))
    }

    fn handle_shutdown(&self) -> thrift::Result<()> {
        Ok(())
    }
}

impl ExtensionManagerSyncHandler for SharedManager {
    fn handle_extensions(&self) -> thrift::Result<InternalExtensionList> {
        let state = self.0.state.lock().unwrap();
        Ok(state.extensions.iter().map(|(uuid, (info, _))| (*uuid, info.clone())).collect())
    }

    fn handle_options(&self) -> thrift::Result<InternalOptionList> {
        let option =
            |value: &str| InternalOptionInfo::new(value.to_string(), value.to_string(), "string".to_string());
        Ok(BTreeMap::from([
            ("config_plugin".to_string(), option("filesystem")),
            ("events_max".to_string(), option("1000")),
        ]))
    }

    fn handle_register_extension(
        &self,
        info: InternalExtensionInfo,
        registry: ExtensionRegistry,
    ) -> thrift::Result<ExtensionStatus> {
        let mut state = self.0.state.lock().unwrap();
        let answer = if state.extensions.values().any(|(known, _)| known.name == info.name) {
            status(1, "Duplicate extension registered", 0)
        } else {
            let uuid = 1000 + state.registrations.len() as i64;
            state.extensions.insert(uuid, (info.clone(), registry));
            status(0, "OK", uuid)
        };
        state.registrations.push((info, answer.clone()));
        Ok(answer)
    }

    fn handle_deregister_extension(&self, uuid: i64) -> thrift::Result<ExtensionStatus> {
        let mut state = self.0.state.lock().unwrap();
        if state.extensions.remove(&uuid).is_none() {
            return Ok(status(1, "No extension UUID found", 0));
        }
        state.deregistered.push(uuid);
        Ok(status(0, "OK", 0))
    }

    fn handle_query(&self, _sql: String) -> thrift::Result<ExtensionResponse> {
        Ok(ExtensionResponse::new(status(1, "no SQL here", 0), Vec::new()))
    }

    fn handle_get_query_columns(&self, _sql: String) -> thrift::Result<ExtensionResponse> {
        Ok(ExtensionResponse::new(status(1, "no SQL here", 0), Vec::new()))
    }
}
