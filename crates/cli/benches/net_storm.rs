//! Network storm (issue 6), against the release `watchpost daemon` (every Linux sensor on),
//! loopback only:
//! - TCP: connects to a local listener at a target rate (default 10,000/s); each connection is
//!   accepted and closed, so it should give one Connect, one Accept and two Close rows.
//! - DNS: UDP queries with unique names to a local dnsmasq on 127.0.0.1:53 at a target rate
//!   (default 5,000/s), each from a new socket as a stub resolver does; each answered query
//!   should give one win_dns_events and one win_dns_response_events row.
//!
//! Prints the rates reached (the machine's maximum when lower than the target), rows captured
//! against expected, the agent's CPU seconds and what the sensor counted as lost.
//! `cargo bench -p watchpost --bench net_storm [-- SECONDS]` as root (default 10 s per phase).

#[cfg(target_os = "linux")]
#[path = "../tests/common.rs"]
mod common;
#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
const CONFIG: &str = r#"{ "options": { "events_expiry": 3600, "events_max": 2000000 } }"#;

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Duration;

    if !common::is_root() {
        eprintln!("SKIPPED: the network storm needs root (BPF, packet capture)");
        return;
    }
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    let phase = Duration::from_secs(seconds);
    let daemon = common::Daemon::start(CONFIG);
    let pid = daemon.child.as_ref().map_or(0, |c| c.id());
    support::wait_running(&daemon, "win_socket_events");

    // The rows are counted once the agent is idle, outside the CPU window.
    let (tcp, tcp_cpu) = support::cpu_while(pid, || tcp_storm(phase, 10_000));
    let count = |action: &str| {
        let sql = format!(
            "SELECT count(*) AS n FROM win_socket_events WHERE action = '{action}' AND protocol = 6 \
             AND (local_port = {port} OR remote_port = {port})",
            port = tcp.port
        );
        common::text(&daemon.rows(&sql)[0], "n").parse::<u64>().unwrap_or(0)
    };
    let closes = support::settle(Duration::from_secs(2), 30, || count("Close"));
    let (connects, accepts) = (count("Connect"), count("Accept"));
    println!(
        "TCP: {:.0} connects/s for {:.1} s ({} connections, target 10000/s)",
        tcp.done as f64 / tcp.elapsed.as_secs_f64(),
        tcp.elapsed.as_secs_f64(),
        tcp.done
    );
    let percent = |got: u64, want: u64| if want == 0 { 0.0 } else { 100.0 * got as f64 / want as f64 };
    println!(
        "  rows: Connect {connects} ({:.2} %), Accept {accepts} ({:.2} %), Close {closes} ({:.2} % of {})",
        percent(connects, tcp.done),
        percent(accepts, tcp.done),
        percent(closes, 2 * tcp.done),
        2 * tcp.done
    );
    println!("  agent CPU {tcp_cpu:.2} s ({:.1} µs per connection)", tcp_cpu * 1e6 / tcp.done.max(1) as f64);

    match dns_storm(&daemon, pid, phase, 5_000) {
        Ok(()) => {}
        Err(reason) => println!("DNS: skipped: {reason}"),
    }
    let status = daemon
        .rows("SELECT table_name, lost, evicted, last_error FROM watchpost_status WHERE sensor = 'network'");
    for row in &status {
        println!(
            "  {}: lost {}, evicted {}, last error {:?}",
            common::text(row, "table_name"),
            common::text(row, "lost"),
            common::text(row, "evicted"),
            common::text(row, "last_error")
        );
    }
}

#[cfg(target_os = "linux")]
struct Storm {
    port: u16,
    done: u64,
    elapsed: std::time::Duration,
}

/// Spreads `rate` operations a second over `threads` threads for `length`; each runs `op`
/// (which returns whether it succeeded) on schedule, or as fast as it can when behind.
#[cfg(target_os = "linux")]
fn paced(
    length: std::time::Duration,
    rate: u64,
    threads: u64,
    op: impl Fn(u64, u64) -> bool + Sync,
) -> (u64, std::time::Duration) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (done, op) = (&done, &op);
            scope.spawn(move || {
                let interval = Duration::from_secs_f64(threads as f64 / rate as f64);
                let mut i = 0u64;
                while start.elapsed() < length {
                    let due = start + interval.mul_f64(i as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if op(thread, i) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            });
        }
    });
    (done.into_inner(), start.elapsed())
}

#[cfg(target_os = "linux")]
fn tcp_storm(length: std::time::Duration, rate: u64) -> Storm {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    // The server accepts and closes first, so TIME_WAIT stays on its side and the clients'
    // ephemeral ports are free again at once.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let (done, elapsed) = paced(length, rate, 4, |_, _| {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = stream.read(&mut [0u8; 1]);
        true
    });
    Storm { port, done, elapsed }
}

#[cfg(target_os = "linux")]
fn dns_storm(
    daemon: &common::Daemon,
    pid: u32,
    length: std::time::Duration,
    rate: u64,
) -> Result<(), String> {
    let _dnsmasq = common::Dnsmasq::start(&["--cache-size=0", "--dns-forward-max=10000"])?;
    let tag = format!("s{}", std::process::id());
    let ((answered, elapsed), cpu) = support::cpu_while(pid, || {
        paced(length, rate, 4, |thread, i| common::ask_dns(&format!("q{i}.t{thread}.{tag}.watchpost.test")))
    });
    let count = |table: &str| {
        let sql =
            format!("SELECT count(*) AS n FROM {table} WHERE domain_name LIKE '%.{tag}.watchpost.test'");
        common::text(&daemon.rows(&sql)[0], "n").parse::<u64>().unwrap_or(0)
    };
    let responses =
        support::settle(std::time::Duration::from_secs(2), 30, || count("win_dns_response_events"));
    let requests = count("win_dns_events");
    println!(
        "DNS: {:.0} answered queries/s for {:.1} s ({answered} answered, target {rate}/s)",
        answered as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  rows: requests {requests} ({:.2} %), responses {responses} ({:.2} %) of {answered}",
        100.0 * requests as f64 / answered.max(1) as f64,
        100.0 * responses as f64 / answered.max(1) as f64
    );
    println!("  agent CPU {cpu:.2} s ({:.1} µs per query)", cpu * 1e6 / answered.max(1) as f64);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this benchmark runs on Linux only");
}
