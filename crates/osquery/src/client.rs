//! Clients: [`ManagerClient`] talks to osquery core's extension manager, [`ExtensionClient`]
//! talks to an extension the way core does (tests, benchmarks, health checks).

use std::collections::BTreeMap;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use watchpost_ipc::Stream;

use crate::error::OsqueryError;
use crate::protocol::{
    ExtensionManagerSyncClient, ExtensionResponse, ExtensionStatus, ExtensionSyncClient,
    InternalExtensionInfo, TExtensionManagerSyncClient, TExtensionSyncClient,
};
use crate::transport::{CLIENT_LIMITS, InputProtocol, OutputProtocol, protocols};

/// The SDK version watchpost announces; core refuses extensions older than 1.7.7.
pub const SDK_VERSION: &str = "5.0.0";
/// How long one call may wait for its answer before the connection counts as broken.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A route: one `{"id": "column", ...}` or `{"id": "attributes", ...}` map.
pub type Route = BTreeMap<String, String>;
/// A row as osquery carries it: column name -> text; NULL columns are absent.
pub type OsqueryRow = BTreeMap<String, String>;

type ManagerConnection = ExtensionManagerSyncClient<InputProtocol, OutputProtocol>;

/// A connection to osquery core's extension manager (`--extensions_socket`). A call that fails
/// on the transport drops the connection; the next call connects again.
pub struct ManagerClient {
    socket: String,
    call_timeout: Duration,
    connection: Option<ManagerConnection>,
}

impl ManagerClient {
    /// Connects to core at `socket`, waiting up to `timeout` for it to accept.
    pub fn connect(socket: &str, timeout: Duration) -> Result<ManagerClient, OsqueryError> {
        let unavailable =
            |source| OsqueryError::CoreUnavailable { socket: socket.to_string(), waited: timeout, source };
        let stream = connect_with_retry(socket, timeout).map_err(unavailable)?;
        let mut client = ManagerClient {
            socket: socket.to_string(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connection: None,
        };
        client.connection = Some(client.open(stream).map_err(unavailable)?);
        Ok(client)
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// How long each call waits for core's answer (default [`DEFAULT_CALL_TIMEOUT`]).
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
        self.connection = None;
    }

    pub fn ping(&mut self) -> Result<(), OsqueryError> {
        let status = self.with_connection("ping", |c| c.ping())?;
        check_status("ping", &status).map(|_| ())
    }

    /// Core's flags: name -> value.
    pub fn options(&mut self) -> Result<BTreeMap<String, String>, OsqueryError> {
        let options = self.with_connection("options", |c| c.options())?;
        Ok(options.into_iter().map(|(name, info)| (name, info.value.unwrap_or_default())).collect())
    }

    /// Asks core's config plugin (`--config_plugin`, default `filesystem`) for the config:
    /// source -> config text. Core pushes no config to a table-only extension.
    pub fn gen_config(&mut self) -> Result<BTreeMap<String, String>, OsqueryError> {
        let plugin = self
            .options()?
            .remove("config_plugin")
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "filesystem".to_string());
        let request = BTreeMap::from([("action".to_string(), "genConfig".to_string())]);
        let answer = self.with_connection("call(config, genConfig)", |c| {
            c.call("config".to_string(), plugin.clone(), request.clone())
        })?;
        check_response("call(config, genConfig)", &answer)?;
        Ok(answer.response.unwrap_or_default().into_iter().flatten().collect())
    }

    /// Registers an extension serving `tables` (name, routes); returns the uuid core assigned.
    /// The extension must then serve `<socket>.<uuid>`.
    pub fn register(
        &mut self,
        name: &str,
        version: &str,
        tables: &[(String, Vec<Route>)],
    ) -> Result<i64, OsqueryError> {
        let info = InternalExtensionInfo::new(
            name.to_string(),
            version.to_string(),
            SDK_VERSION.to_string(),
            "0.0.0".to_string(),
        );
        let registry = BTreeMap::from([("table".to_string(), tables.iter().cloned().collect())]);
        let status = self
            .with_connection("registerExtension", |c| c.register_extension(info.clone(), registry.clone()))?;
        if status.code.unwrap_or(0) != 0 {
            return Err(OsqueryError::Refused(status.message.unwrap_or_default()));
        }
        status.uuid.ok_or(OsqueryError::Status {
            call: "registerExtension",
            code: 0,
            message: "the answer carried no uuid".to_string(),
        })
    }

    pub fn deregister(&mut self, uuid: i64) -> Result<(), OsqueryError> {
        let status = self.with_connection("deregisterExtension", |c| c.deregister_extension(uuid))?;
        check_status("deregisterExtension", &status).map(|_| ())
    }

    fn open(&self, stream: Stream) -> io::Result<ManagerConnection> {
        stream.set_read_timeout(Some(self.call_timeout))?;
        let (input, output) = protocols(stream, CLIENT_LIMITS)?;
        Ok(ExtensionManagerSyncClient::new(input, output))
    }

    fn with_connection<T>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&mut ManagerConnection) -> thrift::Result<T>,
    ) -> Result<T, OsqueryError> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let stream = Stream::connect_timeout(&self.socket, Duration::from_secs(1))
                    .and_then(|stream| self.open(stream))
                    .map_err(|e| OsqueryError::Call { call, source: e.into() })?;
                self.connection.insert(stream)
            }
        };
        f(connection).map_err(|source| {
            if !matches!(source, thrift::Error::Application(_) | thrift::Error::User(_)) {
                self.connection = None; // the stream is out of step or gone
            }
            OsqueryError::Call { call, source }
        })
    }
}

type ExtensionConnection = ExtensionSyncClient<InputProtocol, OutputProtocol>;

/// A connection to an extension's endpoint (`<socket>.<uuid>`), calling it as core does.
pub struct ExtensionClient {
    connection: ExtensionConnection,
}

impl ExtensionClient {
    pub fn connect(path: &str, timeout: Duration) -> Result<ExtensionClient, OsqueryError> {
        let unavailable = |source| OsqueryError::ExtensionUnavailable {
            endpoint: path.to_string(),
            waited: timeout,
            source,
        };
        let stream = connect_with_retry(path, timeout).map_err(unavailable)?;
        stream.set_read_timeout(Some(DEFAULT_CALL_TIMEOUT)).map_err(unavailable)?;
        let (input, output) = protocols(stream, CLIENT_LIMITS).map_err(unavailable)?;
        Ok(ExtensionClient { connection: ExtensionSyncClient::new(input, output) })
    }

    pub fn ping(&mut self) -> Result<ExtensionStatus, OsqueryError> {
        self.connection.ping().map_err(|source| OsqueryError::Call { call: "ping", source })
    }

    /// The raw `call`: the status is returned, not checked.
    pub fn call(
        &mut self,
        registry: &str,
        item: &str,
        request: BTreeMap<String, String>,
    ) -> Result<ExtensionResponse, OsqueryError> {
        self.connection
            .call(registry.to_string(), item.to_string(), request)
            .map_err(|source| OsqueryError::Call { call: "call", source })
    }

    /// A table's routes (`columns` action); a non-zero status is an error.
    pub fn columns(&mut self, table: &str) -> Result<Vec<Route>, OsqueryError> {
        let request = BTreeMap::from([("action".to_string(), "columns".to_string())]);
        let answer = self.call("table", table, request)?;
        check_response("call(table, columns)", &answer)?;
        Ok(answer.response.unwrap_or_default())
    }

    /// A table's rows for a query context (JSON as core sends it); a non-zero status is an error.
    pub fn generate(&mut self, table: &str, context_json: &str) -> Result<Vec<OsqueryRow>, OsqueryError> {
        let request = BTreeMap::from([
            ("action".to_string(), "generate".to_string()),
            ("context".to_string(), context_json.to_string()),
        ]);
        let answer = self.call("table", table, request)?;
        check_response("call(table, generate)", &answer)?;
        Ok(answer.response.unwrap_or_default())
    }

    pub fn shutdown(&mut self) -> Result<(), OsqueryError> {
        self.connection.shutdown().map_err(|source| OsqueryError::Call { call: "shutdown", source })
    }
}

/// Connects, retrying while the endpoint is missing or refusing, until `timeout` has passed.
fn connect_with_retry(path: &str, timeout: Duration) -> io::Result<Stream> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match Stream::connect_timeout(path, left.max(RETRY_PAUSE)) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() + RETRY_PAUSE >= deadline => return Err(e),
            Err(e) => {
                log::debug!("{path} not ready yet: {e}");
                thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

fn check_status(call: &'static str, status: &ExtensionStatus) -> Result<i64, OsqueryError> {
    // Core reads an unset code as success, and so do we.
    match status.code.unwrap_or(0) {
        0 => Ok(status.uuid.unwrap_or(0)),
        code => Err(OsqueryError::Status { call, code, message: status.message.clone().unwrap_or_default() }),
    }
}

fn check_response(call: &'static str, response: &ExtensionResponse) -> Result<(), OsqueryError> {
    match &response.status {
        Some(status) => check_status(call, status).map(|_| ()),
        None => Ok(()),
    }
}
