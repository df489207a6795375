//! The local query API: newline-delimited JSON over a Unix socket (a named pipe on Windows).
//!
//! Request, one per line: `{"sql": "SELECT ..."}`. Response, one line per request:
//! `{"columns": ["a", "b"], "rows": [[1, "x"], [2, null]]}` or `{"error": "message"}`.
//! Integers are JSON numbers, text is JSON strings, NULL is `null`. A connection may send any
//! number of requests. The socket is created for its owner only (root for the daemon), and on
//! Unix each peer's uid is checked too. docs/query-api.md documents this for applications.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use watchpost_catalog::{Table, TableSource, Value};
use watchpost_ipc::{Access, Listener, Stream};
use watchpost_sql::SqlHost;

/// Largest request line accepted; longer requests get an error and the connection is closed.
const MAX_REQUEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach the watchpost daemon at {path}: {source} (is `watchpost daemon` running, and are you root?)"
    )]
    Connect { path: String, source: std::io::Error },
    #[error("talking to the watchpost daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon's answer is not valid: {0}")]
    Protocol(String),
    /// The query itself failed (bad SQL, a table error): the daemon's message.
    #[error("{0}")]
    Query(String),
}

#[derive(Serialize, Deserialize)]
struct Request {
    sql: String,
}

/// A query result as the API carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Response {
    Ok(QueryResult),
    Err { error: String },
}

pub fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Double(d) => serde_json::Value::from(*d),
        Value::Text(s) => serde_json::Value::from(s.as_str()),
    }
}

/// Runs `sql` on a fresh SQL host over `source` (what the server does for each request, and
/// what the shell does in-process when no daemon runs).
pub fn run_query(host: &SqlHost, sql: &str) -> Result<QueryResult, String> {
    let result = host.query(sql).map_err(|e| e.to_string())?;
    Ok(QueryResult {
        columns: result.columns,
        rows: result.rows.iter().map(|row| row.iter().map(json_value).collect()).collect(),
    })
}

/// The query socket server.
pub struct Server {
    stop: Arc<AtomicBool>,
    path: String,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `path` (owner-only) and answers queries from `source` over `tables`.
    pub fn start(path: &str, tables: Vec<Table>, source: Arc<dyn TableSource>) -> std::io::Result<Server> {
        let listener = Listener::bind(path, Access::Owner)?;
        log::info!("query socket listening on {path}");
        let stop = Arc::new(AtomicBool::new(false));
        let accept_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new().name("query-api".into()).spawn(move || {
            accept_loop(&listener, &tables, &source, &accept_stop);
        })?;
        Ok(Server { stop, path: path.to_string(), handle: Some(handle) })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = Stream::connect_timeout(&self.path, Duration::from_millis(200));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: &Listener, tables: &[Table], source: &Arc<dyn TableSource>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("query socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if !peer_allowed(&stream) {
            log::warn!("query socket: refused a client with uid {:?}", stream.peer_uid());
            continue;
        }
        let tables = tables.to_vec();
        let source = Arc::clone(source);
        let spawned = std::thread::Builder::new().name("query-client".into()).spawn(move || {
            if let Err(e) = serve_client(stream, tables, source) {
                log::debug!("query client: {e}");
            }
        });
        if let Err(e) = spawned {
            log::warn!("query socket: cannot start a client thread: {e}");
        }
    }
}

/// Same user as the agent (root for the daemon). The socket's mode already says so; this is the
/// second lock on the door.
fn peer_allowed(stream: &Stream) -> bool {
    #[cfg(unix)]
    {
        let me = rustix::process::geteuid().as_raw();
        stream.peer_uid().is_none_or(|uid| uid == me || uid == 0)
    }
    #[cfg(not(unix))]
    {
        let _ = stream;
        true
    }
}

fn serve_client(stream: Stream, tables: Vec<Table>, source: Arc<dyn TableSource>) -> Result<(), ApiError> {
    let host = SqlHost::new(tables, source).map_err(|e| ApiError::Protocol(e.to_string()))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = Read::take(&mut reader, MAX_REQUEST_BYTES).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        let too_long = !line.ends_with('\n') && n as u64 >= MAX_REQUEST_BYTES;
        let response = if too_long {
            Response::Err { error: format!("request longer than {MAX_REQUEST_BYTES} bytes") }
        } else if line.trim().is_empty() {
            continue;
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => match run_query(&host, &request.sql) {
                    Ok(result) => Response::Ok(result),
                    Err(error) => Response::Err { error },
                },
                Err(e) => {
                    Response::Err { error: format!("bad request (expected {{\"sql\": \"...\"}}): {e}") }
                }
            }
        };
        let mut text = serde_json::to_string(&response).map_err(|e| ApiError::Protocol(e.to_string()))?;
        text.push('\n');
        writer.write_all(text.as_bytes())?;
        writer.flush()?;
        if too_long {
            return Ok(());
        }
    }
}

/// A client of the query socket.
pub struct Client {
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Client {
    pub fn connect(path: &str) -> Result<Client, ApiError> {
        let stream =
            Stream::connect(path).map_err(|source| ApiError::Connect { path: path.to_string(), source })?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer })
    }

    pub fn query(&mut self, sql: &str) -> Result<QueryResult, ApiError> {
        let mut text = serde_json::to_string(&Request { sql: sql.to_string() })
            .map_err(|e| ApiError::Protocol(e.to_string()))?;
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        self.writer.flush()?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ApiError::Protocol("the daemon closed the connection".into()));
        }
        match serde_json::from_str::<Response>(&line).map_err(|e| ApiError::Protocol(e.to_string()))? {
            Response::Ok(result) => Ok(result),
            Response::Err { error } => Err(ApiError::Query(error)),
        }
    }
}
