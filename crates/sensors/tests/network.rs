//! The network sensor end to end (Linux, as root, loopback only): TCP and UDP over 127.0.0.1
//! and ::1 by this test process and by child processes, DNS queries (UDP and TCP, hand-built
//! and from Python) to a local dnsmasq on 127.0.0.1:53, and HTTP requests to a local server.
//! The rows must name the right process, addresses and ports. The test acts as its own client,
//! so the sensor runs with `report_own_activity`.
#![cfg(target_os = "linux")]

mod support;
use support::{Collect, Row, dns_query, is_root, process_cache, rows, start};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use watchpost_sensors::SensorHealth;
use watchpost_sensors::linux::network::{NetworkOptions, NetworkSensor};
use watchpost_sensors::linux::process_events::ProcessSensor;

const DEADLINE: Duration = Duration::from_secs(30);

/// Waits for a row of `table` with all the `wanted` column values; panics with what came.
fn wait_row(sink: &Collect, table: &str, wanted: &[(&str, String)]) -> Row {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = rows(sink, table);
        if let Some(row) = all.iter().find(|r| wanted.iter().all(|(c, v)| r.get(*c) == Some(v))) {
            return row.clone();
        }
        if Instant::now() > deadline {
            panic!("no {table} row with {wanted:?}; rows:\n{all:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Running {
    sink: Arc<Collect>,
    health: Arc<SensorHealth>,
    sensor: NetworkSensor,
    /// Keeps the cache the network sensor attributes with current, as in the agent: a child
    /// that has exited by the time its packets are read is named from its exec record.
    _process: ProcessSensor,
}

fn start_sensor() -> Running {
    let (cache, process, _) = process_cache();
    let mut sensor = NetworkSensor::new(cache, NetworkOptions { report_own_activity: true });
    let (sink, health) = start(&mut sensor, "network");
    let snapshot = health.snapshot();
    assert_eq!(
        (snapshot.state.as_str(), snapshot.mode.as_str()),
        ("running", "bpf+af_packet"),
        "{snapshot:?}"
    );
    Running { sink, health, sensor, _process: process }
}

fn own_pid() -> String {
    std::process::id().to_string()
}

fn own_exe() -> String {
    std::fs::read_link("/proc/self/exe").unwrap().display().to_string()
}

fn s(value: impl ToString) -> String {
    value.to_string()
}

fn socket_row(action: &str, pid: &str, local: SocketAddr, remote: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("action", s(action)),
        ("pid", s(pid)),
        ("local_port", s(local.port())),
        ("remote_port", s(remote.port())),
        ("remote_address", s(remote.ip())),
    ]
}

#[test]
fn tcp_listen_accept_connect_close_over_ipv4_and_ipv6() {
    if !is_root() {
        println!("SKIPPED: the network sensor needs root (CI runs as root)");
        return;
    }
    let running = start_sensor();
    let sink = &running.sink;
    for (bind, family) in [("127.0.0.1:0", "AF_INET"), ("[::1]:0", "AF_INET6")] {
        let listener = TcpListener::bind(bind).unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let client_end = client.local_addr().unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client_end);
        drop(client);
        drop(accepted);
        drop(listener);

        let listen = wait_row(
            sink,
            "win_socket_events",
            &[("action", s("Listen")), ("pid", own_pid()), ("local_port", s(server.port()))],
        );
        assert_eq!(listen["family"], family);
        assert_eq!(listen["protocol"], "6");
        assert_eq!(listen["local_address"], s(server.ip()));
        assert_eq!(listen["event_type"], "socket_conn");
        let connect =
            wait_row(sink, "win_socket_events", &socket_row("Connect", &own_pid(), client_end, server));
        assert_eq!(connect["family"], family);
        assert_eq!(connect["local_address"], s(client_end.ip()));
        assert_eq!(connect["process_name"], own_exe());
        assert!(!connect["process_guid"].is_empty());
        wait_row(sink, "win_socket_events", &socket_row("Accept", &own_pid(), server, client_end));
        wait_row(sink, "win_socket_events", &socket_row("Close", &own_pid(), client_end, server));
        wait_row(sink, "win_socket_events", &socket_row("Close", &own_pid(), server, client_end));
        wait_row(
            sink,
            "win_socket_events",
            &[
                ("action", s("Close")),
                ("pid", own_pid()),
                ("local_port", s(server.port())),
                ("remote_port", s(0)),
            ],
        );
    }
}

#[test]
fn a_child_process_connecting_is_named_as_itself() {
    if !is_root() {
        println!("SKIPPED: the network sensor needs root (CI runs as root)");
        return;
    }
    let running = start_sensor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    // The child's pid execs twice (sh, then python, which may itself be a shim script that
    // execs again) and connects at once: its Connect must carry the last image, not an earlier
    // one the process cache may still hold when the socket record arrives.
    let child = Command::new("/bin/sh")
        .args([
            "-c",
            "exec python3 -c \"$0\" \"$1\"",
            "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); \
             print(s.getsockname()[1], flush=True); s.recv(1); s.close()",
            &server.port().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = child.id().to_string();
    let (accepted, peer) = listener.accept().unwrap();
    drop(accepted);
    let output = child.wait_with_output().unwrap();
    let child_port: u16 = String::from_utf8(output.stdout).unwrap().trim().parse().unwrap();
    assert_eq!(peer.port(), child_port);
    let connect =
        wait_row(&running.sink, "win_socket_events", &socket_row("Connect", &child_pid, peer, server));
    assert!(connect["process_name"].contains("python"), "{connect:?}");
    wait_row(&running.sink, "win_socket_events", &socket_row("Accept", &own_pid(), server, peer));
    wait_row(&running.sink, "win_socket_events", &socket_row("Close", &child_pid, peer, server));
}

#[test]
fn udp_peers_are_reported_once_per_socket_and_closed() {
    if !is_root() {
        println!("SKIPPED: the network sensor needs root (CI runs as root)");
        return;
    }
    let running = start_sensor();
    let sink = &running.sink;
    for (bind, family) in [("127.0.0.1:0", "AF_INET"), ("[::1]:0", "AF_INET6")] {
        let server = UdpSocket::bind(bind).unwrap();
        let server_end = server.local_addr().unwrap();
        let client = UdpSocket::bind(bind).unwrap();
        let client_end = client.local_addr().unwrap();
        let mut buffer = [0u8; 16];
        for _ in 0..3 {
            client.send_to(b"ping", server_end).unwrap();
            let (_, from) = server.recv_from(&mut buffer).unwrap();
            assert_eq!(from, client_end);
            server.send_to(b"pong", from).unwrap();
            client.recv_from(&mut buffer).unwrap();
        }
        // A connected UDP socket: the remote is set by connect().
        let connected = UdpSocket::bind(bind).unwrap();
        connected.connect(server_end).unwrap();
        let connected_end = connected.local_addr().unwrap();
        connected.send(b"hello").unwrap();
        server.recv_from(&mut buffer).unwrap();
        drop((client, connected));

        let connect =
            wait_row(sink, "win_socket_events", &socket_row("Connect", &own_pid(), client_end, server_end));
        assert_eq!((connect["protocol"].as_str(), connect["family"].as_str()), ("17", family));
        wait_row(sink, "win_socket_events", &socket_row("Accept", &own_pid(), server_end, client_end));
        wait_row(sink, "win_socket_events", &socket_row("Connect", &own_pid(), connected_end, server_end));
        wait_row(sink, "win_socket_events", &socket_row("Close", &own_pid(), client_end, server_end));
        wait_row(sink, "win_socket_events", &socket_row("Close", &own_pid(), connected_end, server_end));
        let between = |r: &Row, a: SocketAddr, b: SocketAddr| {
            r["protocol"] == "17" && r["local_port"] == s(a.port()) && r["remote_port"] == s(b.port())
        };
        let all = rows(sink, "win_socket_events");
        let client_rows: Vec<_> = all.iter().filter(|r| between(r, client_end, server_end)).collect();
        assert_eq!(client_rows.len(), 2, "one Connect and one Close for three exchanges: {client_rows:#?}");
        let server_rows: Vec<_> = all.iter().filter(|r| between(r, server_end, client_end)).collect();
        assert_eq!(server_rows.len(), 1, "one Accept; the replies add nothing: {server_rows:#?}");
    }
}

/// dnsmasq answering `watchpost.test` with 127.0.0.1 and ::1 on 127.0.0.1:53 (UDP and TCP).
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start() -> Option<Dnsmasq> {
        if UdpSocket::bind("127.0.0.1:53").is_err() {
            println!("SKIPPED DNS: port 53 on 127.0.0.1 is busy (the sensor captures port 53 only)");
            return None;
        }
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--port=53",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file",
                "--user=root",
                "--address=/watchpost.test/127.0.0.1",
                "--address=/watchpost.test/::1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian dnsmasq-base) is installed");
        let dnsmasq = Dnsmasq(child);
        let deadline = Instant::now() + DEADLINE;
        while udp_query("watchpost.test", 1).is_none() {
            assert!(Instant::now() < deadline, "dnsmasq did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(dnsmasq)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks 127.0.0.1:53 over UDP; the local port used, once answered.
fn udp_query(name: &str, qtype: u16) -> Option<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    socket.send_to(&dns_query(name, qtype), "127.0.0.1:53").unwrap();
    let mut buffer = [0u8; 512];
    socket.recv_from(&mut buffer).ok()?;
    Some(socket.local_addr().unwrap().port())
}

#[test]
fn dns_queries_and_answers_over_udp_and_tcp_name_the_asking_process() {
    if !is_root() {
        println!("SKIPPED: the network sensor needs root (CI runs as root)");
        return;
    }
    let running = start_sensor();
    let Some(_dnsmasq) = Dnsmasq::start() else { return };
    let sink = &running.sink;

    // UDP, hand-built, from this process.
    udp_query("udp.watchpost.test", 1).expect("dnsmasq answers");
    let request = wait_row(sink, "win_dns_events", &[("domain_name", s("udp.watchpost.test"))]);
    assert_eq!(request["event_type"], "dns_req");
    assert_eq!(request["request_type"], "1");
    assert_eq!(request["request_class"], "1");
    assert_eq!(request["pid"], own_pid());
    assert_eq!((request["remote_address"].as_str(), request["remote_port"].as_str()), ("127.0.0.1", "53"));
    let response = wait_row(sink, "win_dns_response_events", &[("domain_name", s("udp.watchpost.test"))]);
    assert_eq!(response["event_type"], "dns_res");
    assert_eq!(response["resolved_ip"], "127.0.0.1");
    assert_eq!(response["pid"], own_pid());

    // TCP (length-prefixed), AAAA.
    let mut stream = TcpStream::connect("127.0.0.1:53").unwrap();
    let query = dns_query("tcp.watchpost.test", 28);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend(&query);
    stream.write_all(&framed).unwrap();
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).unwrap();
    drop(stream);
    let request = wait_row(sink, "win_dns_events", &[("domain_name", s("tcp.watchpost.test"))]);
    assert_eq!((request["request_type"].as_str(), request["pid"].clone()), ("28", own_pid()));
    let response = wait_row(sink, "win_dns_response_events", &[("domain_name", s("tcp.watchpost.test"))]);
    assert_eq!(response["resolved_ip"], "::1");

    // Another process: Python's resolver-free socket, attributed to the child.
    let child = Command::new("python3")
        .args([
            "-c",
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('127.0.0.1', 53)); \
             s.send(bytes.fromhex('abcd01000001000000000000') + b'\\x02py\\x09watchpost\\x04test\\x00' + \
             bytes.fromhex('00010001')); s.recv(512)",
        ])
        .spawn()
        .unwrap();
    let child_pid = child.id().to_string();
    assert!(child.wait_with_output().unwrap().status.success());
    let request = wait_row(sink, "win_dns_events", &[("domain_name", s("py.watchpost.test"))]);
    assert_eq!(request["pid"], child_pid);
    let response = wait_row(sink, "win_dns_response_events", &[("domain_name", s("py.watchpost.test"))]);
    assert_eq!((response["pid"].clone(), response["resolved_ip"].as_str()), (child_pid, "127.0.0.1"));

    // Each query is reported once although loopback shows it twice.
    let udp_requests =
        rows(sink, "win_dns_events").into_iter().filter(|r| r["domain_name"] == "udp.watchpost.test").count();
    assert_eq!(udp_requests, 1);

    // Garbage to port 53 is counted, not reported, and the sensor keeps going.
    let counters = running.sensor.counters();
    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    garbage.send_to(&[0xff; 5], "127.0.0.1:53").unwrap();
    let deadline = Instant::now() + DEADLINE;
    while counters.malformed.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the malformed packet was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running.health.snapshot().last_error.unwrap_or_default().contains("malformed"));
    udp_query("after.watchpost.test", 1).expect("dnsmasq answers");
    wait_row(sink, "win_dns_events", &[("domain_name", s("after.watchpost.test"))]);
}

/// A one-request-per-connection HTTP server on 127.0.0.1; answers 200 to everything.
fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    address
}

#[test]
fn plaintext_http_requests_show_their_url_and_process() {
    if !is_root() {
        println!("SKIPPED: the network sensor needs root (CI runs as root)");
        return;
    }
    let running = start_sensor();
    let server = http_server();
    let port = server.port();
    let mut stream = TcpStream::connect(server).unwrap();
    // One write: the sensor reads the request head from the first segment.
    let head = format!("GET /watchpost/probe?x=1 HTTP/1.1\r\nHost: localhost:{port}\r\nAccept: */*\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let url = format!("http://localhost:{port}/watchpost/probe?x=1");
    let row = wait_row(&running.sink, "win_http_events", &[("url", url)]);
    assert_eq!(row["event_type"], "http_req");
    assert_eq!(row["action"], "GET");
    assert_eq!(row["pid"], own_pid());
    assert_eq!(row["process_name"], own_exe());
    assert_eq!((row["remote_address"].as_str(), row["remote_port"].clone()), ("127.0.0.1", port.to_string()));

    // No Host header: the URL names the server's address.
    let mut stream = TcpStream::connect(server).unwrap();
    stream.write_all(b"POST /form HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    stream.read_to_end(&mut reply).unwrap();
    wait_row(
        &running.sink,
        "win_http_events",
        &[("url", format!("http://127.0.0.1:{port}/form")), ("action", s("POST"))],
    );

    // curl, when installed: attributed to curl.
    if std::path::Path::new("/usr/bin/curl").exists() {
        let child = Command::new("/usr/bin/curl")
            .args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/from-curl")])
            .spawn()
            .unwrap();
        let curl_pid = child.id().to_string();
        assert!(child.wait_with_output().unwrap().status.success());
        let row = wait_row(
            &running.sink,
            "win_http_events",
            &[("url", format!("http://127.0.0.1:{port}/from-curl")), ("pid", curl_pid)],
        );
        assert_eq!(row["process_name"], "/usr/bin/curl");
    }
}
