//! Decoding of captured packets: IP, TCP and UDP headers (etherparse), DNS messages
//! (simple-dns), HTTP/1.x request heads (httparse), and DNS over TCP, whose length-prefixed
//! messages may span segments ([`TcpDnsStreams`]). Nothing here trusts the packet: every
//! failure is a [`PacketError`] for the sensor to count.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// The port of DNS servers (UDP and TCP).
pub const DNS_PORT: u16 = 53;
const HTTP_PORT: u16 = 80;
/// Headers kept of an HTTP request head; more make the request count as malformed.
const MAX_HTTP_HEADERS: usize = 64;
/// A DNS-over-TCP stream with nothing new for this long is forgotten.
const TCP_DNS_IDLE: Duration = Duration::from_secs(30);

/// Why a captured packet could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("malformed IP packet: {0}")]
    Ip(String),
    #[error("malformed DNS message: {0}")]
    Dns(String),
    #[error("malformed HTTP request: {0}")]
    Http(String),
}

/// The transport-level view of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// IP protocol number: 6 TCP, 17 UDP.
    pub protocol: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// TCP FIN or RST: the sender's stream ends.
    pub ends_stream: bool,
}

/// The TCP or UDP segment in an IP packet (starting at the IP header); `Ok(None)` for other
/// protocols and for IP fragments after the first.
pub fn segment(packet: &[u8]) -> Result<Option<Segment<'_>>, PacketError> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| PacketError::Ip(e.to_string()))?;
    let (src, dst): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (ip.header().source_addr().into(), ip.header().destination_addr().into()),
        Some(NetSlice::Ipv6(ip)) => (ip.header().source_addr().into(), ip.header().destination_addr().into()),
        _ => return Ok(None),
    };
    Ok(match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => Some(Segment {
            protocol: 17,
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            payload: udp.payload(),
            ends_stream: false,
        }),
        Some(TransportSlice::Tcp(tcp)) => Some(Segment {
            protocol: 6,
            src: SocketAddr::new(src, tcp.source_port()),
            dst: SocketAddr::new(dst, tcp.destination_port()),
            payload: tcp.payload(),
            ends_stream: tcp.fin() || tcp.rst(),
        }),
        _ => None,
    })
}

/// One question of a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuestion {
    /// The name without the trailing dot, e.g. `watchpost.test`.
    pub name: String,
    /// QTYPE number (1 A, 28 AAAA, ...).
    pub qtype: u16,
    /// QCLASS number (1 IN).
    pub qclass: u16,
}

/// What the sensor reports of a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// QR bit: a response rather than a query.
    pub response: bool,
    pub questions: Vec<DnsQuestion>,
    /// The A and AAAA answers, in message order.
    pub resolved: Vec<IpAddr>,
}

impl DnsMessage {
    /// `resolved` as the `resolved_ip` column shows it: comma-separated.
    pub fn resolved_text(&self) -> String {
        self.resolved.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Decodes a DNS message (UDP payload, or a TCP message without its length prefix).
pub fn parse_dns(payload: &[u8]) -> Result<DnsMessage, PacketError> {
    let packet = simple_dns::Packet::parse(payload).map_err(|e| PacketError::Dns(e.to_string()))?;
    let questions = packet
        .questions
        .iter()
        .map(|q| DnsQuestion { name: q.qname.to_string(), qtype: q.qtype.into(), qclass: q.qclass.into() })
        .collect();
    let resolved = packet
        .answers
        .iter()
        .filter_map(|answer| match &answer.rdata {
            simple_dns::rdata::RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
            simple_dns::rdata::RData::AAAA(aaaa) => Some(IpAddr::V6(Ipv6Addr::from(aaaa.address))),
            _ => None,
        })
        .collect();
    Ok(DnsMessage { response: packet.has_flags(simple_dns::PacketFlag::RESPONSE), questions, resolved })
}

/// What the sensor reports of an HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// `http://host[:port]/path?query`: the Host header, else the server's address.
    pub url: String,
}

/// Decodes the request head at the start of `payload`, sent to `server`. A head cut off by the
/// end of the segment still yields the request line and the header lines that are complete.
pub fn parse_http_request(payload: &[u8], server: SocketAddr) -> Result<HttpRequest, PacketError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let status = request.parse(payload).map_err(|e| PacketError::Http(e.to_string()))?;
    if status.is_partial() {
        // Parse again up to the last complete line, ended as if the head ended there.
        let end = payload.windows(2).rposition(|w| w == b"\r\n").ok_or_else(|| {
            PacketError::Http("the request line does not fit in the first segment".to_string())
        })?;
        let mut head = payload[..end + 2].to_vec();
        head.extend_from_slice(b"\r\n");
        return parse_complete_head(&head, server);
    }
    url_of(&request, server)
}

fn parse_complete_head(head: &[u8], server: SocketAddr) -> Result<HttpRequest, PacketError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head).map_err(|e| PacketError::Http(e.to_string()))?;
    url_of(&request, server)
}

fn url_of(request: &httparse::Request<'_, '_>, server: SocketAddr) -> Result<HttpRequest, PacketError> {
    let method = request.method.ok_or_else(|| PacketError::Http("no method".to_string()))?;
    let target = request.path.ok_or_else(|| PacketError::Http("no request target".to_string()))?;
    let url = if target.starts_with("http://") || target.starts_with("https://") {
        // Absolute form (requests to a proxy) names the URL itself.
        target.to_string()
    } else {
        let host = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map_or_else(|| authority_of(server), str::to_string);
        if method.eq_ignore_ascii_case("CONNECT") {
            format!("http://{target}")
        } else if target.starts_with('/') {
            format!("http://{host}{target}")
        } else {
            format!("http://{host}/{}", target.trim_start_matches('*'))
        }
    };
    Ok(HttpRequest { method: method.to_string(), url })
}

/// `address[:port]` of a server as a URL names it (port 80 left out, IPv6 in brackets).
fn authority_of(server: SocketAddr) -> String {
    let host = match server.ip().to_canonical() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    if server.port() == HTTP_PORT { host } else { format!("{host}:{}", server.port()) }
}

/// DNS over TCP: each direction of each connection is a stream of messages, each preceded by
/// its length (2 bytes, network order). Segments are taken in capture order (retransmissions
/// and reordering are not undone).
#[derive(Debug, Default)]
pub struct TcpDnsStreams {
    streams: HashMap<(SocketAddr, SocketAddr), (Vec<u8>, Instant)>,
}

impl TcpDnsStreams {
    /// Adds a segment sent from `src` to `dst`; returns the messages it completes (at most
    /// 64 KiB each, so a stream that is not DNS cannot make the buffer grow past that).
    pub fn push(&mut self, segment: &Segment<'_>, now: Instant) -> Vec<Vec<u8>> {
        let key = (segment.src, segment.dst);
        if segment.payload.is_empty() {
            if segment.ends_stream {
                self.streams.remove(&key);
            }
            return Vec::new();
        }
        let (buffer, touched) = self.streams.entry(key).or_insert_with(|| (Vec::new(), now));
        *touched = now;
        buffer.extend_from_slice(segment.payload);
        let mut messages = Vec::new();
        while let Some(length) = buffer.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) {
            if buffer.len() < 2 + length {
                break;
            }
            messages.push(buffer[2..2 + length].to_vec());
            buffer.drain(..2 + length);
        }
        if segment.ends_stream || buffer.is_empty() {
            self.streams.remove(&key);
        }
        messages
    }

    /// Forgets streams idle for long.
    pub fn expire(&mut self, now: Instant) {
        self.streams.retain(|_, (_, touched)| now.duration_since(*touched) < TCP_DNS_IDLE);
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype`, class IN, id 0x1234.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend(label.as_bytes());
        }
        message.push(0);
        message.extend(qtype.to_be_bytes());
        message.extend(1u16.to_be_bytes());
        message
    }

    /// The response to `query` with A records for `addresses`.
    fn response(query: &[u8], addresses: &[[u8; 4]]) -> Vec<u8> {
        let mut message = query.to_vec();
        message[2] = 0x81;
        message[3] = 0x80;
        message[6..8].copy_from_slice(&(addresses.len() as u16).to_be_bytes());
        for address in addresses {
            // Name: pointer to the question's name at offset 12.
            message.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            message.extend(address);
        }
        message
    }

    #[test]
    fn queries_and_responses_decode_with_every_address() {
        let q = query("watchpost.test", 1);
        let decoded = parse_dns(&q).unwrap();
        assert!(!decoded.response);
        assert_eq!(
            decoded.questions,
            vec![DnsQuestion { name: "watchpost.test".into(), qtype: 1, qclass: 1 }]
        );
        let r = parse_dns(&response(&q, &[[127, 0, 0, 1], [10, 0, 0, 2]])).unwrap();
        assert!(r.response);
        assert_eq!(r.resolved_text(), "127.0.0.1,10.0.0.2");
    }

    #[test]
    fn broken_dns_is_an_error_not_a_panic() {
        let q = query("watchpost.test", 28);
        for cut in 0..q.len() {
            let _ = parse_dns(&q[..cut]);
        }
        assert!(parse_dns(&q[..5]).is_err());
        let mut looped = q.clone();
        // A compression pointer to itself.
        looped.truncate(12);
        looped.extend([0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_dns(&looped).is_err());
    }

    #[test]
    fn tcp_dns_messages_are_reassembled_across_segments() {
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let q = query("a.example", 1);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend(&q);
        framed.extend(&framed.clone());
        let mut streams = TcpDnsStreams::default();
        let now = Instant::now();
        let seg = |payload| Segment { protocol: 6, src: client, dst: server, payload, ends_stream: false };
        assert!(streams.push(&seg(&framed[..7]), now).is_empty());
        let messages = streams.push(&seg(&framed[7..]), now);
        assert_eq!(messages, vec![q.clone(), q]);
        assert!(streams.is_empty(), "nothing held after whole messages");
        // Not DNS: the "messages" it makes fail to decode, and what is held stays bounded.
        let garbage = vec![0xffu8; 40_000];
        assert!(streams.push(&seg(&garbage), now).is_empty());
        let messages = streams.push(&seg(&garbage), now);
        assert_eq!(messages.len(), 1);
        assert!(parse_dns(&messages[0]).is_err());
        streams.push(&Segment { ends_stream: true, ..seg(&[]) }, now);
        assert!(streams.is_empty());
    }

    #[test]
    fn http_urls_name_the_host_header_else_the_server() {
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let with_host = b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.test:8080\r\nAccept: */*\r\n\r\n";
        let request = parse_http_request(with_host, server).unwrap();
        assert_eq!(
            (request.method.as_str(), request.url.as_str()),
            ("GET", "http://example.test:8080/a/b?x=1")
        );
        let without = b"POST /submit HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_http_request(without, server).unwrap().url, "http://127.0.0.1:8080/submit");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(parse_http_request(b"GET / HTTP/1.0\r\n\r\n", v6).unwrap().url, "http://[::1]/");
        let proxy = b"GET http://example.test/x HTTP/1.1\r\nHost: example.test\r\n\r\n";
        assert_eq!(parse_http_request(proxy, server).unwrap().url, "http://example.test/x");
    }

    #[test]
    fn a_head_cut_by_the_segment_keeps_its_complete_lines() {
        let server: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let cut = b"GET /big HTTP/1.1\r\nHost: h.test\r\nCookie: aaaaaaaaaa";
        assert_eq!(parse_http_request(cut, server).unwrap().url, "http://h.test/big");
        assert!(parse_http_request(b"GET /no-end-of-line", server).is_err());
        assert!(parse_http_request(b"GET\x00 / HTTP/1.1\r\n\r\n", server).is_err());
    }

    #[test]
    fn udp_and_tcp_segments_carry_their_ends_and_payload() {
        // IPv4 + UDP from 127.0.0.1:40000 to 127.0.0.1:53 with payload "hi".
        let mut packet = vec![0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
        packet.extend(40000u16.to_be_bytes());
        packet.extend(53u16.to_be_bytes());
        packet.extend(10u16.to_be_bytes());
        packet.extend([0, 0]);
        packet.extend(b"hi");
        let segment = segment(&packet).unwrap().unwrap();
        assert_eq!((segment.protocol, segment.payload), (17, &b"hi"[..]));
        assert_eq!(segment.src.to_string(), "127.0.0.1:40000");
        assert_eq!(segment.dst.port(), 53);
        assert!(super::segment(&packet[..10]).is_err());
    }
}
