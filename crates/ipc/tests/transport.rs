//! Behaviour of the local transport that must hold on every platform (run on Linux, and on
//! Windows builds under Wine): connect, exchange bytes, clone halves, end-of-file, errors.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use watchpost_ipc::{Access, IpcError, Listener, Stream, endpoint_exists};

/// A fresh endpoint path for one test; keeps the temporary directory alive on Unix.
struct Endpoint {
    path: String,
    #[cfg(unix)]
    _dir: tempfile::TempDir,
}

fn endpoint(test: &str) -> Endpoint {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let unique = format!("{}-{}-{test}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    #[cfg(unix)]
    {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(format!("{unique}.sock")).to_str().expect("utf-8 path").to_owned();
        Endpoint { path, _dir: dir }
    }
    #[cfg(windows)]
    {
        Endpoint { path: format!(r"\\.\pipe\watchpost-ipc-test-{unique}") }
    }
}

fn read_exactly(stream: &mut Stream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).expect("read");
    buf
}

/// Serves `clients` connections, echoing every byte back until the client closes.
fn spawn_echo_server(listener: Listener, clients: usize) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut workers = Vec::new();
        for _ in 0..clients {
            let mut stream = listener.accept().expect("accept");
            workers.push(thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                io::copy(&mut stream, &mut writer).expect("echo");
            }));
        }
        for worker in workers {
            worker.join().expect("echo worker");
        }
    })
}

#[test]
fn bytes_travel_both_ways() {
    let endpoint = endpoint("both-ways");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let server = thread::spawn(move || {
        let mut stream = listener.accept().unwrap();
        let request = read_exactly(&mut stream, 5);
        stream.write_all(b"pong:").unwrap();
        stream.write_all(&request).unwrap();
    });
    let mut client = Stream::connect(&endpoint.path).unwrap();
    client.write_all(b"hello").unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"pong:hello");
    server.join().unwrap();
}

#[test]
fn several_clients_are_served_at_once() {
    const CLIENTS: usize = 6;
    let endpoint = endpoint("several");
    let server = spawn_echo_server(Listener::bind(&endpoint.path, Access::Owner).unwrap(), CLIENTS);
    // Connect them all before any talks, so the server holds every connection at once.
    let mut clients: Vec<Stream> = (0..CLIENTS).map(|_| Stream::connect(&endpoint.path).unwrap()).collect();
    for (index, client) in clients.iter_mut().enumerate() {
        client.write_all(format!("client {index}").as_bytes()).unwrap();
    }
    for (index, client) in clients.iter_mut().enumerate() {
        let expected = format!("client {index}");
        assert_eq!(read_exactly(client, expected.len()), expected.as_bytes());
    }
    drop(clients);
    server.join().unwrap();
}

#[test]
fn a_large_payload_arrives_intact() {
    let endpoint = endpoint("large");
    let server = spawn_echo_server(Listener::bind(&endpoint.path, Access::Owner).unwrap(), 1);
    let payload: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let mut client = Stream::connect(&endpoint.path).unwrap();
    let mut writer = client.try_clone().unwrap();
    let sent = payload.clone();
    // The echo fills the buffers long before 1 MiB is written: write and read concurrently.
    let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
    let echoed = read_exactly(&mut client, payload.len());
    sender.join().unwrap();
    assert!(echoed == payload, "the echoed 1 MiB differs from what was sent");
    drop(client);
    server.join().unwrap();
}

#[test]
fn cloned_halves_work_from_two_threads() {
    let endpoint = endpoint("halves");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let server = thread::spawn(move || {
        let stream = listener.accept().unwrap();
        let mut reader = stream.try_clone().unwrap();
        let mut writer = stream;
        let reading = thread::spawn(move || {
            let mut received = Vec::new();
            reader.read_to_end(&mut received).unwrap();
            received
        });
        let writing = thread::spawn(move || {
            for i in 0..100u8 {
                writer.write_all(&[i; 100]).unwrap();
            }
        });
        writing.join().unwrap();
        reading.join().unwrap()
    });

    let client = Stream::connect(&endpoint.path).unwrap();
    let mut client_writer = client.try_clone().unwrap();
    let mut client_reader = client;
    let writing = thread::spawn(move || {
        for i in 0..50u8 {
            client_writer.write_all(&[i; 200]).unwrap();
        }
        // The server reads to end-of-file once this and the reader handle are both gone.
    });
    let received_by_client = read_exactly(&mut client_reader, 100 * 100);
    writing.join().unwrap();
    drop(client_reader);

    let received_by_server = server.join().unwrap();
    let expected_by_client: Vec<u8> = (0..100u8).flat_map(|i| [i; 100]).collect();
    let expected_by_server: Vec<u8> = (0..50u8).flat_map(|i| [i; 200]).collect();
    assert!(received_by_client == expected_by_client, "client got the server's bytes out of order");
    assert!(received_by_server == expected_by_server, "server got the client's bytes out of order");
}

#[test]
fn client_reads_end_of_file_when_the_server_side_drops() {
    let endpoint = endpoint("server-drops");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let server = thread::spawn(move || {
        let mut stream = listener.accept().unwrap();
        stream.write_all(b"bye").unwrap();
    });
    let mut client = Stream::connect(&endpoint.path).unwrap();
    server.join().unwrap();
    assert_eq!(read_exactly(&mut client, 3), b"bye");
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).unwrap(), 0, "expected end-of-file after the server hung up");
}

#[test]
fn server_reads_end_of_file_when_the_client_drops() {
    let endpoint = endpoint("client-drops");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let client = Stream::connect(&endpoint.path).unwrap();
    let mut stream = listener.accept().unwrap();
    drop(client);
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).unwrap(), 0, "expected end-of-file after the client hung up");
}

#[test]
fn connect_fails_naming_the_path_when_nobody_listens() {
    let endpoint = endpoint("nobody");
    let error = Stream::connect(&endpoint.path).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert!(error.to_string().contains(&endpoint.path), "error does not name the path: {error}");
}

#[test]
fn connect_timeout_gives_up_with_a_clear_error_when_nobody_listens() {
    let endpoint = endpoint("timeout");
    let error = Stream::connect_timeout(&endpoint.path, Duration::from_millis(200)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    let message = error.to_string();
    assert!(message.contains(&endpoint.path), "error does not name the path: {message}");
    assert!(message.contains("is the server running?"), "error does not say what to check: {message}");
    let inner = error.get_ref().and_then(|inner| inner.downcast_ref::<IpcError>());
    assert!(matches!(inner, Some(IpcError::ConnectTimeout { .. })), "not a ConnectTimeout: {error:?}");
}

#[test]
fn connect_timeout_waits_for_a_server_that_starts_late() {
    let endpoint = endpoint("late");
    let path = endpoint.path.clone();
    let server = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let listener = Listener::bind(&path, Access::Owner).unwrap();
        let mut stream = listener.accept().unwrap();
        stream.write_all(b"late").unwrap();
    });
    let mut client = Stream::connect_timeout(&endpoint.path, Duration::from_secs(60)).unwrap();
    assert_eq!(read_exactly(&mut client, 4), b"late");
    server.join().unwrap();
}

#[test]
fn endpoint_exists_only_while_a_listener_is_bound() {
    let endpoint = endpoint("exists");
    assert!(!endpoint_exists(&endpoint.path));
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    assert!(endpoint_exists(&endpoint.path));
    drop(listener);
    assert!(!endpoint_exists(&endpoint.path));
}

#[test]
fn a_second_listener_on_a_live_endpoint_is_refused() {
    let endpoint = endpoint("in-use");
    let first = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let error = Listener::bind(&endpoint.path, Access::Owner).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains(&endpoint.path), "error does not name the path: {error}");
    // The first listener still serves. On Unix the refused bind probed it with a connection
    // (to tell a live socket from a stale one), which the server sees as an empty client.
    let connections = if cfg!(unix) { 2 } else { 1 };
    let server = spawn_echo_server(first, connections);
    let mut client = Stream::connect(&endpoint.path).unwrap();
    client.write_all(b"still here").unwrap();
    assert_eq!(read_exactly(&mut client, 10), b"still here");
    drop(client);
    server.join().unwrap();
}

#[test]
fn anyone_access_accepts_connections() {
    let endpoint = endpoint("anyone");
    let server = spawn_echo_server(Listener::bind(&endpoint.path, Access::Anyone).unwrap(), 1);
    let mut client = Stream::connect(&endpoint.path).unwrap();
    client.write_all(b"open").unwrap();
    assert_eq!(read_exactly(&mut client, 4), b"open");
    drop(client);
    server.join().unwrap();
}

#[test]
fn a_read_with_a_timeout_fails_when_no_data_comes() {
    let endpoint = endpoint("read-timeout");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let mut client = Stream::connect(&endpoint.path).unwrap();
    let mut server_side = listener.accept().unwrap();
    client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(client.read(&mut buf).unwrap_err().kind(), io::ErrorKind::TimedOut);
    // Data that arrives later is still read, and clearing the timeout blocks again normally.
    server_side.write_all(b"data").unwrap();
    client.set_read_timeout(None).unwrap();
    assert_eq!(read_exactly(&mut client, 4), b"data");
    assert_eq!(
        client.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn listener_reports_its_path() {
    let endpoint = endpoint("path");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    assert_eq!(listener.path(), endpoint.path);
}

#[cfg(windows)]
#[test]
fn a_bare_pipe_name_gets_the_pipe_prefix() {
    let name = format!("watchpost-ipc-test-{}-bare", std::process::id());
    let listener = Listener::bind(&name, Access::Owner).unwrap();
    assert_eq!(listener.path(), format!(r"\\.\pipe\{name}"));
    let server = spawn_echo_server(listener, 1);
    let mut client = Stream::connect(&name).unwrap();
    client.write_all(b"bare").unwrap();
    assert_eq!(read_exactly(&mut client, 4), b"bare");
    drop(client);
    server.join().unwrap();
}

#[cfg(windows)]
#[test]
fn peer_uid_is_unknown_on_windows() {
    let endpoint = endpoint("peer-uid");
    let listener = Listener::bind(&endpoint.path, Access::Owner).unwrap();
    let client = Stream::connect(&endpoint.path).unwrap();
    assert_eq!(client.peer_uid(), None);
    assert_eq!(listener.accept().unwrap().peer_uid(), None);
}
