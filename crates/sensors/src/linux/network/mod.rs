//! The `network` sensor behind `win_socket_events`, `win_dns_events`,
//! `win_dns_response_events` and `win_http_events` on Linux.
//!
//! **Sockets** (`bpf/network.bpf.c`, see there for the hooks): TCP Connect, Accept, Listen and
//! Close from the `inet_sock_set_state` tracepoint and the exits of accept()/accept4(); UDP
//! Connect (connect(), or the first sendto() to a peer), Accept (the first datagram received
//! from a peer) and Close (release of a socket that had one of those), from the connect exit
//! tracepoint and cgroup `sendmsg`/`recvmsg`/`sock_release` programs attached to the cgroup2
//! root. Every record is attributed in the owning process's own context, never in softirq.
//!
//! **DNS and HTTP** ([`capture`]): an `AF_PACKET` socket with a classic BPF filter passes UDP
//! and TCP port 53 and TCP segments that start with an HTTP method; [`packets`] decodes them.
//! A packet is attributed to the process that owns its local end through a table fed by the
//! socket records ([`flows`]): the ring buffer is drained after each batch of packets is read
//! and before it is decoded, and a socket's record is queued before its first packet leaves,
//! so the owner is known. On loopback each packet is seen twice and counted once (the leaving
//! copy). Packets that cannot be decoded are counted ([`NetworkCounters::malformed`]) and
//! reported as the sensor's last error; HTTPS and other TLS contents are out of reach.
//!
//! The agent's own sockets are dropped in the kernel (and its packets here). Kernel ring
//! buffer overruns and capture queue drops are added to the health's `lost` figure.

pub mod capture;
pub mod flows;
pub mod packets;
pub mod records;

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, RingBufferBuilder};
use watchpost_catalog::{Event, Table};

use super::bpf;
use super::process::{clock_ticks_per_second, process_guid};
use super::process_cache::ProcessCache;
use super::process_records::boottime_to_ticks;
use super::sensor_thread::{Ready, SensorThread};
use crate::{Sensor, SensorContext, SensorError, SensorState, catalog_table, column_index};
use capture::{Capture, PacketMeta};
use flows::{FlowOwner, FlowTable};
use packets::{DNS_PORT, DnsMessage, PacketError, Segment, TcpDnsStreams};
use records::SocketRecord;

/// Skeleton of `network.bpf.c`.
#[allow(clippy::all, clippy::pedantic)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/network.skel.rs"));
}

const NAME: &str = "network";
const SOCKET_TABLE: &str = "win_socket_events";
const DNS_TABLE: &str = "win_dns_events";
const DNS_RESPONSE_TABLE: &str = "win_dns_response_events";
const HTTP_TABLE: &str = "win_http_events";
const TABLES: &[&str] = &[SOCKET_TABLE, DNS_TABLE, DNS_RESPONSE_TABLE, HTTP_TABLE];
/// How long one wait for packets or records lasts: the longest a stop request waits.
const POLL: Duration = Duration::from_millis(100);
/// Packets read before the socket records are drained and the batch is decoded.
const BATCH: usize = 64;
/// Room for one packet: loopback's 64 KiB MTU plus headers.
const PACKET_BUFFER: usize = 70 * 1024;
/// How often tables are expired and loss counters read.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Malformed packets are reported as the last error at most this often (they are all counted).
const MALFORMED_REPORT: Duration = Duration::from_secs(5);

/// What the sensor has seen of the packets, for diagnostics and tests.
#[derive(Debug, Default)]
pub struct NetworkCounters {
    /// Packets captured and counted (loopback copies once).
    pub packets: AtomicU64,
    pub dns_messages: AtomicU64,
    pub http_requests: AtomicU64,
    /// Packets (or TCP DNS streams) that could not be decoded.
    pub malformed: AtomicU64,
    /// DNS and HTTP rows whose process was not known (the socket predates the sensor, or its
    /// record was lost).
    pub unattributed: AtomicU64,
}

impl NetworkCounters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Switches for tests; production uses the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkOptions {
    /// Report the sockets and packets of this process too (a test acting as its own client).
    pub report_own_activity: bool,
}

/// The network sensor.
pub struct NetworkSensor {
    cache: Arc<ProcessCache>,
    options: NetworkOptions,
    counters: Arc<NetworkCounters>,
    running: Option<SensorThread>,
}

impl NetworkSensor {
    /// A sensor attributing through the agent's shared cache ([`ProcessCache::shared`]);
    /// nothing of the config applies to it (filters are applied by the agent).
    pub fn from_config(_config: &watchpost_config::Config) -> NetworkSensor {
        NetworkSensor::new(ProcessCache::shared(), NetworkOptions::default())
    }

    pub fn new(cache: Arc<ProcessCache>, options: NetworkOptions) -> NetworkSensor {
        NetworkSensor { cache, options, counters: Arc::new(NetworkCounters::default()), running: None }
    }

    /// The sensor's packet counters (they live across restarts of the sensor).
    pub fn counters(&self) -> Arc<NetworkCounters> {
        Arc::clone(&self.counters)
    }
}

/// Positions of the named columns of one table.
struct Columns<const N: usize> {
    table: &'static Table,
    at: [usize; N],
}

impl<const N: usize> Columns<N> {
    fn resolve(name: &'static str, columns: [&'static str; N]) -> Result<Columns<N>, SensorError> {
        let table = catalog_table(name)?;
        let mut at = [0; N];
        for (slot, column) in at.iter_mut().zip(columns) {
            *slot = column_index(table, name, column)?;
        }
        Ok(Columns { table, at })
    }
}

const SOCKET_COLUMNS: [&str; 11] = [
    "event_type",
    "action",
    "pid",
    "process_guid",
    "process_name",
    "family",
    "protocol",
    "local_address",
    "remote_address",
    "local_port",
    "remote_port",
];
const DNS_COLUMNS: [&str; 8] = [
    "event_type",
    "action",
    "domain_name",
    "request_type",
    "request_class",
    "pid",
    "remote_address",
    "remote_port",
];
const HTTP_COLUMNS: [&str; 8] =
    ["event_type", "action", "url", "pid", "process_guid", "process_name", "remote_address", "remote_port"];

struct TableColumns {
    socket: Columns<11>,
    dns: Columns<8>,
    dns_response: Columns<8>,
    resolved_ip: usize,
    http: Columns<8>,
}

impl TableColumns {
    fn resolve() -> Result<TableColumns, SensorError> {
        let dns_response = Columns::resolve(DNS_RESPONSE_TABLE, DNS_COLUMNS)?;
        Ok(TableColumns {
            socket: Columns::resolve(SOCKET_TABLE, SOCKET_COLUMNS)?,
            dns: Columns::resolve(DNS_TABLE, DNS_COLUMNS)?,
            resolved_ip: column_index(dns_response.table, DNS_RESPONSE_TABLE, "resolved_ip")?,
            dns_response,
            http: Columns::resolve(HTTP_TABLE, HTTP_COLUMNS)?,
        })
    }
}

/// The process a row names: pid, guid and executable path.
struct Acting {
    pid: Option<u32>,
    guid: Option<String>,
    path: Option<String>,
}

struct Worker {
    ctx: SensorContext,
    columns: TableColumns,
    cache: Arc<ProcessCache>,
    counters: Arc<NetworkCounters>,
    own_pid: u32,
    ticks_per_second: u64,
    flows: FlowTable,
    tcp_dns: TcpDnsStreams,
    malformed_reported: Option<Instant>,
}

impl Worker {
    fn acting(&self, owner: FlowOwner) -> Acting {
        let pid = owner.pid;
        let ticks = (owner.start_boottime_ns != 0)
            .then(|| boottime_to_ticks(owner.start_boottime_ns, self.ticks_per_second));
        let info = match ticks {
            Some(ticks) => self.cache.lookup_instance(pid, ticks, owner.exec_id),
            None => self.cache.lookup(pid),
        };
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match (info, ticks) {
            (Some(info), _) => {
                Acting { pid: Some(pid), guid: Some(info.guid.clone()), path: text(&info.path) }
            }
            (None, Some(ticks)) => {
                Acting { pid: Some(pid), guid: Some(process_guid(pid, ticks)), path: None }
            }
            (None, None) => Acting { pid: Some(pid), guid: None, path: None },
        }
    }

    fn handle_record(&mut self, record: &SocketRecord, now: Instant) {
        if record.pid == self.own_pid {
            return;
        }
        self.flows.record(record, now);
        let acting = self.acting(FlowOwner::of(record));
        let c = &self.columns.socket;
        let mut event = Event::new(c.table, self.ctx.stamper.stamp());
        let values: [watchpost_catalog::Value; 11] = [
            "socket_conn".into(),
            record.action.name().into(),
            acting.pid.into(),
            acting.guid.into(),
            acting.path.into(),
            record.family_name().into(),
            u32::from(record.protocol).into(),
            record.local.ip().to_string().into(),
            record.remote.ip().to_string().into(),
            u32::from(record.local.port()).into(),
            u32::from(record.remote.port()).into(),
        ];
        for (at, value) in c.at.iter().zip(values) {
            event.set(*at, value);
        }
        self.ctx.sink.emit(event);
    }

    fn malformed(&mut self, error: &PacketError, now: Instant) {
        NetworkCounters::add(&self.counters.malformed);
        if self.malformed_reported.is_none_or(|at| now.duration_since(at) >= MALFORMED_REPORT) {
            self.malformed_reported = Some(now);
            let count = self.counters.malformed.load(Ordering::Relaxed);
            self.ctx.health.record_error(format!("{count} malformed packets so far; last: {error}"));
        }
    }

    fn handle_packet(&mut self, packet: &[u8], meta: PacketMeta, now: Instant) {
        if !meta.counts() {
            return;
        }
        NetworkCounters::add(&self.counters.packets);
        let segment = match packets::segment(packet) {
            Ok(Some(segment)) => segment,
            Ok(None) => return,
            Err(error) => return self.malformed(&error, now),
        };
        if segment.src.port() == DNS_PORT || segment.dst.port() == DNS_PORT {
            self.handle_dns_segment(&segment, now);
        } else if segment.protocol == 6 && !segment.payload.is_empty() {
            self.handle_http_segment(&segment, now);
        }
    }

    fn handle_dns_segment(&mut self, segment: &Segment<'_>, now: Instant) {
        if segment.protocol == 17 {
            match packets::parse_dns(segment.payload) {
                Ok(message) => self.emit_dns(segment, &message, now),
                Err(error) => self.malformed(&error, now),
            }
            return;
        }
        for bytes in self.tcp_dns.push(segment, now) {
            match packets::parse_dns(&bytes) {
                Ok(message) => self.emit_dns(segment, &message, now),
                Err(error) => self.malformed(&error, now),
            }
        }
    }

    /// The process owning the client end `client` of a conversation with `server`.
    fn client_owner(
        &mut self,
        protocol: u8,
        client: SocketAddr,
        server: SocketAddr,
        now: Instant,
    ) -> Option<Acting> {
        match self.flows.owner(protocol, client.port(), server, now) {
            Some(owner) => Some(self.acting(owner)),
            None => {
                NetworkCounters::add(&self.counters.unattributed);
                Some(Acting { pid: None, guid: None, path: None })
            }
        }
        .filter(|acting| acting.pid != Some(self.own_pid))
    }

    fn emit_dns(&mut self, segment: &Segment<'_>, message: &DnsMessage, now: Instant) {
        NetworkCounters::add(&self.counters.dns_messages);
        // The querying process owns the client end: the sender of a query, the receiver of a
        // response.
        let (client, server) =
            if message.response { (segment.dst, segment.src) } else { (segment.src, segment.dst) };
        let Some(acting) = self.client_owner(segment.protocol, client, server, now) else { return };
        let (columns, event_type, action) = if message.response {
            (&self.columns.dns_response, "dns_res", "DNS_RESPONSE")
        } else {
            (&self.columns.dns, "dns_req", "DNS_REQUEST")
        };
        let resolved = message.resolved_text();
        for question in &message.questions {
            let mut event = Event::new(columns.table, self.ctx.stamper.stamp());
            let values: [watchpost_catalog::Value; 8] = [
                event_type.into(),
                action.into(),
                question.name.clone().into(),
                u32::from(question.qtype).into(),
                u32::from(question.qclass).into(),
                acting.pid.into(),
                server.ip().to_canonical().to_string().into(),
                u32::from(server.port()).into(),
            ];
            for (at, value) in columns.at.iter().zip(values) {
                event.set(*at, value);
            }
            if message.response {
                event.set(self.columns.resolved_ip, resolved.clone());
            }
            self.ctx.sink.emit(event);
        }
    }

    fn handle_http_segment(&mut self, segment: &Segment<'_>, now: Instant) {
        let request = match packets::parse_http_request(segment.payload, segment.dst) {
            Ok(request) => request,
            Err(error) => return self.malformed(&error, now),
        };
        NetworkCounters::add(&self.counters.http_requests);
        let Some(acting) = self.client_owner(6, segment.src, segment.dst, now) else { return };
        let c = &self.columns.http;
        let mut event = Event::new(c.table, self.ctx.stamper.stamp());
        let values: [watchpost_catalog::Value; 8] = [
            "http_req".into(),
            request.method.into(),
            request.url.into(),
            acting.pid.into(),
            acting.guid.into(),
            acting.path.into(),
            segment.dst.ip().to_canonical().to_string().into(),
            u32::from(segment.dst.port()).into(),
        ];
        for (at, value) in c.at.iter().zip(values) {
            event.set(*at, value);
        }
        self.ctx.sink.emit(event);
    }
}

/// The cgroup2 hierarchy's root: where the cgroup programs attach to see every process.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, path, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(path))
        })
        .min_by_key(|path| path.components().count())
}

struct Loaded<'obj> {
    skel: skel::NetworkSkel<'obj>,
    /// The cgroup programs' attachments (detached when dropped).
    _links: Vec<Link>,
    /// Why UDP is not covered, when the cgroup programs could not be attached.
    udp_gap: Option<String>,
}

fn load_programs(
    object: &mut MaybeUninit<libbpf_rs::OpenObject>,
    own_pid: u32,
) -> Result<Loaded<'_>, String> {
    bpf::ensure_tracefs()?;
    let mut open = skel::NetworkSkelBuilder::default().open(object).map_err(|e| e.to_string())?;
    let rodata =
        open.maps.rodata_data.as_deref_mut().ok_or("the BPF object has no read-only data section")?;
    rodata.agent_pid = own_pid;
    let mut skel = open.load().map_err(|e| e.to_string())?;
    skel.attach().map_err(|e| e.to_string())?;
    let mut links = Vec::new();
    let udp_gap = match cgroup2_root() {
        None => Some("no cgroup2 hierarchy is mounted".to_string()),
        Some(root) => match std::fs::File::open(&root) {
            Err(error) => Some(format!("cannot open {}: {error}", root.display())),
            Ok(cgroup) => {
                let progs = &skel.progs;
                [
                    &progs.handle_sendmsg4,
                    &progs.handle_sendmsg6,
                    &progs.handle_recvmsg4,
                    &progs.handle_recvmsg6,
                    &progs.handle_sock_release,
                ]
                .into_iter()
                .map(|prog| prog.attach_cgroup(cgroup.as_raw_fd()))
                .collect::<Result<Vec<_>, _>>()
                .map(|attached| links.extend(attached))
                .err()
                .map(|error| format!("cannot attach to the cgroup2 root {}: {error}", root.display()))
            }
        },
    };
    Ok(Loaded { skel, _links: links, udp_gap })
}

fn run(mut worker: Worker, stop: &AtomicBool, ready: &Ready) {
    let mut object = MaybeUninit::uninit();
    let loaded = match load_programs(&mut object, worker.own_pid) {
        Ok(loaded) => loaded,
        Err(error) => {
            // The receiver waits in `start`; if it is gone there is nobody to tell.
            let _ = ready.send(Err(format!("cannot load the BPF programs: {error}")));
            return;
        }
    };
    let pending: Rc<RefCell<Vec<SocketRecord>>> = Rc::default();
    let bad_records = Rc::new(std::cell::Cell::new(0usize));
    let mut builder = RingBufferBuilder::new();
    let (queue, bad) = (Rc::clone(&pending), Rc::clone(&bad_records));
    let added = builder
        .add(&loaded.skel.maps.events, move |data: &[u8]| {
            match SocketRecord::decode(data) {
                Some(record) => queue.borrow_mut().push(record),
                None => bad.set(bad.get() + 1),
            }
            0
        })
        .map(|_| ());
    let ring = match added.and_then(|()| builder.build()) {
        Ok(ring) => ring,
        Err(error) => {
            let _ = ready.send(Err(format!("cannot read the BPF ring buffer: {error}")));
            return;
        }
    };
    let capture = Capture::open();
    let health = Arc::clone(&worker.ctx.health);
    let mut gaps = Vec::new();
    if let Some(gap) = &loaded.udp_gap {
        gaps.push(format!("UDP sockets not covered: {gap}"));
    }
    match &capture {
        Ok(_) => health.set_mode("bpf+af_packet"),
        Err(error) => {
            health.set_mode("bpf");
            gaps.push(format!("no DNS or HTTP events: cannot open the packet capture socket: {error}"));
        }
    }
    health.set_state(if gaps.is_empty() {
        SensorState::Running
    } else {
        SensorState::Degraded(gaps.join("; "))
    });
    let _ = ready.send(Ok(()));

    let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; PACKET_BUFFER]).collect();
    let mut batch: Vec<(usize, PacketMeta)> = Vec::with_capacity(BATCH);
    // Skipped runs of network.bpf.c lose no record (each has a second source there).
    let mut losses = bpf::KernelLosses::with_recovered_misses();
    let mut last_housekeeping = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = vec![libc::pollfd { fd: ring.epoll_fd(), events: libc::POLLIN, revents: 0 }];
        if let Ok(capture) = &capture {
            fds.push(libc::pollfd { fd: capture.fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: fds is a valid array of pollfd of the length passed.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL.as_millis() as libc::c_int) };
        loop {
            batch.clear();
            if let Ok(capture) = &capture {
                for buffer in buffers.iter_mut() {
                    match capture.receive(buffer) {
                        Ok(Some(packet)) => batch.push(packet),
                        Ok(None) => break,
                        Err(error) => {
                            health.record_error(format!("packet capture: {error}"));
                            break;
                        }
                    }
                }
            }
            // After reading the packets: every socket record queued before they left is in.
            if let Err(error) = ring.consume() {
                health.record_error(format!("BPF ring buffer: {error}"));
            }
            let now = Instant::now();
            let records = std::mem::take(&mut *pending.borrow_mut());
            for record in &records {
                worker.handle_record(record, now);
            }
            for ((length, meta), buffer) in batch.iter().zip(&buffers) {
                worker.handle_packet(&buffer[..*length], *meta, now);
            }
            if batch.len() < BATCH || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if bad_records.get() > 0 {
            health.record_error(format!(
                "{} malformed socket records: BPF program and sensor disagree",
                bad_records.replace(0)
            ));
        }
        let now = Instant::now();
        if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
            last_housekeeping = now;
            worker.flows.expire(now);
            worker.tcp_dns.expire(now);
            losses.report(loaded.skel.object(), &loaded.skel.maps.lost, &health);
            if let Ok(capture) = &capture {
                match capture.take_drops() {
                    Ok(0) | Err(_) => {}
                    Ok(drops) => {
                        health.add_lost(drops);
                        health.record_error(format!(
                            "the packet capture queue was full: {drops} packets dropped"
                        ));
                    }
                }
            }
        }
    }
}

impl Sensor for NetworkSensor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn start(&mut self, ctx: SensorContext) -> Result<(), SensorError> {
        self.stop();
        let worker = Worker {
            ctx: ctx.clone(),
            columns: TableColumns::resolve()?,
            cache: Arc::clone(&self.cache),
            counters: Arc::clone(&self.counters),
            // No process has pid u32::MAX (pid_max is at most 2^22).
            own_pid: if self.options.report_own_activity { u32::MAX } else { std::process::id() },
            ticks_per_second: clock_ticks_per_second(),
            flows: FlowTable::default(),
            tcp_dns: TcpDnsStreams::default(),
            malformed_reported: None,
        };
        let started = SensorThread::spawn_when_ready(NAME, "watchpost-network", Arc::clone(&ctx.health), {
            move |stop, ready| run(worker, stop, ready)
        })?;
        match started {
            Ok(thread) => {
                self.running = Some(thread);
                Ok(())
            }
            Err(reason) => {
                let reason = reason.unwrap_or_else(|| "the network sensor thread ended early".to_string());
                ctx.health.set_state(SensorState::Failed(reason.clone()));
                Err(SensorError::Source { sensor: NAME, reason })
            }
        }
    }

    fn reconfigure(&mut self, _config: &watchpost_config::Config) -> Result<(), SensorError> {
        // Nothing of the config applies to this sensor (filters are applied by the agent).
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop("the network sensor thread");
        }
    }
}

impl Drop for NetworkSensor {
    fn drop(&mut self) {
        self.stop();
    }
}
