//! Decoding throughput of the network sensor's packet parsers over typical packets (a DNS
//! query, a DNS response with two answers, an HTTP request head), in packets per second.
//!
//! `cargo bench -p watchpost-sensors --bench packet_parsing` runs the full size; under `cargo
//! test --all-targets` it runs a small smoke version that still checks every packet decodes.

#[cfg(target_os = "linux")]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(target_os = "linux")]
fn main() {
    use std::time::Instant;

    use support::dns_query;
    use watchpost_sensors::linux::network::packets::{parse_dns, parse_http_request, segment};

    let query = dns_query("www.watchpost.test", 1);
    let mut response = query.clone();
    response[2] = 0x81;
    response[3] = 0x80;
    response[7] = 2;
    for address in [[127, 0, 0, 1], [10, 0, 0, 2]] {
        response.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        response.extend(address);
    }
    let http = b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.watchpost.test\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    let packets = [
        ipv4_packet(17, 40000, 53, &query),
        ipv4_packet(17, 53, 40000, &response),
        ipv4_packet(6, 40001, 80, http),
    ];
    let full = std::env::args().any(|arg| arg == "--bench");
    let rounds = if full { 300_000 } else { 1_000 };
    let start = Instant::now();
    let mut decoded = 0usize;
    for _ in 0..rounds {
        for packet in &packets {
            let segment = segment(packet).unwrap().unwrap();
            if segment.src.port() == 53 || segment.dst.port() == 53 {
                decoded += parse_dns(segment.payload).unwrap().questions.len();
            } else {
                decoded += parse_http_request(segment.payload, segment.dst).unwrap().url.len().min(1);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = rounds * packets.len();
    assert_eq!(decoded, total);
    println!("decoded {total} packets in {elapsed:.2} s: {:.0} packets/s", total as f64 / elapsed);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("SKIPPED: the packet parsers are the Linux network sensor's");
}

/// Builds an IPv4 packet from 127.0.0.1:`src_port` to 127.0.0.1:`dst_port` carrying `payload`
/// over UDP (17) or TCP (6, a bare 20-byte header).
#[cfg(target_os = "linux")]
fn ipv4_packet(protocol: u8, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let transport = if protocol == 17 { 8 } else { 20 };
    let total = (20 + transport + payload.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend(total.to_be_bytes());
    packet.extend([0, 0, 0x40, 0, 64, protocol, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
    packet.extend(src_port.to_be_bytes());
    packet.extend(dst_port.to_be_bytes());
    if protocol == 17 {
        packet.extend(((8 + payload.len()) as u16).to_be_bytes());
        packet.extend([0, 0]);
    } else {
        packet.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    }
    packet.extend(payload);
    packet
}
