//! Network telemetry through SQL on the daemon (Linux, as root, loopback only): a TCP
//! listener and client, a DNS query to a local dnsmasq and an HTTP GET by this test process,
//! asserted on the rows a user sees, with this process's pid (the daemon is another process).
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};

use common::{Daemon, Dnsmasq, ask_dns, is_root, logger_config, text};

#[test]
fn sockets_dns_and_http_arrive_through_sql() {
    if !is_root() {
        eprintln!("SKIPPED: the network sensor needs root (CI runs as root)");
        return;
    }
    let daemon = Daemon::start(&logger_config(""));
    let pid = std::process::id().to_string();
    let status = daemon
        .wait_rows("SELECT state, mode FROM watchpost_status WHERE table_name = 'win_socket_events'", 1);
    assert_eq!(text(&status[0], "state"), "running", "{status:?}\n{}", daemon.stderr());
    assert_eq!(text(&status[0], "mode"), "bpf+af_packet");

    // TCP: Listen, Accept, Connect and Close, all by this process.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let client_port = client.local_addr().expect("address").port();
    let (accepted, _) = listener.accept().expect("accept");
    drop((client, accepted, listener));
    let sql = format!(
        "SELECT action, pid, process_name, process_guid, family, protocol, local_address, remote_address, \
         local_port, remote_port FROM win_socket_events WHERE pid = {pid} AND (local_port = {port} OR \
         (local_port = {client_port} AND remote_port = {port}))"
    );
    let rows = daemon.wait_rows(&sql, 6);
    let count = |action: &str| rows.iter().filter(|r| text(r, "action") == action).count();
    assert_eq!(
        (count("Listen"), count("Accept"), count("Connect"), count("Close")),
        (1, 1, 1, 3),
        "{rows:?}"
    );
    let connect = rows.iter().find(|r| text(r, "action") == "Connect").expect("a Connect row");
    assert_eq!(text(connect, "remote_port"), port.to_string());
    assert_eq!(text(connect, "local_port"), client_port.to_string());
    assert_eq!(text(connect, "family"), "AF_INET");
    assert_eq!(text(connect, "protocol"), "6");
    assert_eq!(text(connect, "remote_address"), "127.0.0.1");
    assert!(!text(connect, "process_guid").is_empty());
    let own_exe = std::fs::read_link("/proc/self/exe").expect("exe").display().to_string();
    assert_eq!(text(connect, "process_name"), own_exe);

    // HTTP GET to a local server.
    let server = TcpListener::bind("127.0.0.1:0").expect("http listen");
    let http_port = server.local_addr().expect("address").port();
    let serving = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = server.accept() {
            let _ = stream.read(&mut [0u8; 2048]);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let mut stream = TcpStream::connect(("127.0.0.1", http_port)).expect("http connect");
    let head = format!("GET /sql/probe?id=7 HTTP/1.1\r\nHost: 127.0.0.1:{http_port}\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("request");
    let _ = stream.read_to_end(&mut Vec::new());
    serving.join().expect("server thread");
    let url = format!("http://127.0.0.1:{http_port}/sql/probe?id=7");
    let rows = daemon
        .wait_rows(&format!("SELECT url, pid, remote_port FROM win_http_events WHERE url = '{url}'"), 1);
    assert_eq!(text(&rows[0], "pid"), pid);
    assert_eq!(text(&rows[0], "remote_port"), http_port.to_string());

    // DNS to dnsmasq on 127.0.0.1:53, when the port is free.
    if UdpSocket::bind("127.0.0.1:53").is_err() {
        eprintln!("SKIPPED DNS part: 127.0.0.1:53 is busy");
        return;
    }
    let _dnsmasq = Dnsmasq::start(&[]).expect("dnsmasq (Debian dnsmasq-base) answers on 127.0.0.1:53");
    assert!(ask_dns("sql.watchpost.test"));
    let rows = daemon.wait_rows(
        "SELECT domain_name, request_type, pid, remote_address, remote_port FROM win_dns_events \
         WHERE domain_name = 'sql.watchpost.test'",
        1,
    );
    assert_eq!(text(&rows[0], "pid"), pid);
    assert_eq!(text(&rows[0], "request_type"), "1");
    assert_eq!(text(&rows[0], "remote_port"), "53");
    let rows = daemon.wait_rows(
        "SELECT resolved_ip, pid FROM win_dns_response_events WHERE domain_name = 'sql.watchpost.test'",
        1,
    );
    assert_eq!(text(&rows[0], "resolved_ip"), "127.0.0.1");
    assert_eq!(text(&rows[0], "pid"), pid);
}
