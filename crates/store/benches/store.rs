//! Store throughput: ingest rate in batches of process events, and a `time > X` read of
//! the newest 1 % answered from the time index versus a full scan, measured in the same run.
//!
//! `cargo bench -p watchpost-store` runs the full sizes; without `--bench` (as under
//! `cargo test --all-targets`) it runs a tiny smoke version. Override the sizes with
//! `WATCHPOST_BENCH_INGEST` (events ingested, default 200,000) and `WATCHPOST_BENCH_RETAINED`
//! (events in the store for the read comparison, default 1,000,000), `WATCHPOST_BENCH_BATCH`
//! (events per append, default 1,000); `WATCHPOST_BENCH_DIR` picks
//! the directory (default: the system temporary directory).

use std::ops::Bound;
use std::time::{Duration, Instant};

use watchpost_catalog::{Event, Stamper, Table, catalog};
use watchpost_store::{Limits, ReadQuery, Store};

const BASE_TIME: i64 = 1_700_000_000;
/// The retained events' capture times span this many seconds.
const TIME_SPAN: i64 = 10_000;

fn size(variable: &str, full: usize, smoke: usize, is_bench: bool) -> usize {
    match std::env::var(variable).ok().and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None if is_bench => full,
        None => smoke,
    }
}

/// A process start as a sensor would capture it: every column filled, realistic lengths.
fn process_event(table: &Table, stamper: &Stamper, n: usize, time: i64) -> Event {
    let mut event = Event::new(table, stamper.stamp());
    event.time = time;
    let column = |name: &str| table.column_index(name).unwrap_or(usize::MAX);
    let pid = 10_000 + (n % 50_000) as i64;
    event.set(column("action"), "PROC_CREATE");
    event.set(column("pid"), pid);
    event.set(column("process_guid"), format!("{pid:08X}-1C2D-4E5F-8091-A2B3C4D5E6F7"));
    event.set(column("path"), "/usr/lib/jvm/java-17-openjdk-amd64/bin/java");
    event.set(
        column("cmdline"),
        format!("java -Xmx2g -jar /opt/app/service.jar --port {} --config /etc/app/app.yml", n % 65_536),
    );
    event.set(column("parent_pid"), pid - 1);
    event.set(column("parent_process_guid"), format!("{:08X}-1C2D-4E5F-8091-A2B3C4D5E6F7", pid - 1));
    event.set(column("parent_path"), "/usr/bin/bash");
    event.set(column("owner_uid"), "www-data");
    event
}

fn fill(
    store: &Store,
    table: &Table,
    batch: usize,
    count: usize,
    time_of: impl Fn(usize) -> i64,
) -> Duration {
    let stamper = Stamper::new();
    let mut elapsed = Duration::ZERO;
    let mut n = 0;
    while n < count {
        let events: Vec<Event> =
            (n..(n + batch).min(count)).map(|i| process_event(table, &stamper, i, time_of(i))).collect();
        let started = Instant::now();
        store.append(&events).expect("append");
        elapsed += started.elapsed();
        n += events.len();
    }
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn main() {
    let is_bench = std::env::args().any(|a| a == "--bench");
    let ingest = size("WATCHPOST_BENCH_INGEST", 200_000, 5_000, is_bench);
    let batch = size("WATCHPOST_BENCH_BATCH", 1_000, 1_000, is_bench).max(1);
    let retained = size("WATCHPOST_BENCH_RETAINED", 1_000_000, 10_000, is_bench).max(100);
    let table = catalog().table("win_process_events").expect("win_process_events is in the catalog");
    let dir = match std::env::var_os("WATCHPOST_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let now = BASE_TIME + TIME_SPAN;
    let no_expiry = u64::MAX / 2;

    // (1) Ingest into an empty store, then at steady state (every batch evicts as many).
    let store = Store::open(
        &dir.path().join("ingest.redb"),
        Limits { events_max: u64::MAX, events_expiry: no_expiry },
    )
    .expect("open");
    let empty = fill(&store, table, batch, ingest, |_| now);
    drop(store);
    let steady_max = (ingest / 4).max(batch) as u64;
    let store = Store::open(
        &dir.path().join("steady.redb"),
        Limits { events_max: steady_max, events_expiry: no_expiry },
    )
    .expect("open");
    fill(&store, table, batch, steady_max as usize, |_| now);
    let steady = fill(&store, table, batch, ingest, |_| now);
    drop(store);

    // (2) `time > X` selecting the newest 1 % of `retained` events.
    let store = Store::open(
        &dir.path().join("query.redb"),
        Limits { events_max: u64::MAX, events_expiry: no_expiry },
    )
    .expect("open");
    let time_of = |i: usize| BASE_TIME + (i as i64 * TIME_SPAN) / retained as i64;
    fill(&store, table, batch, retained, time_of);
    let newest = retained / 100;
    let threshold = time_of(retained - newest) - 1;
    let indexed_query = ReadQuery { time_lower: Bound::Excluded(threshold), ..ReadQuery::all(now) };
    let rounds = if is_bench { 5 } else { 2 };
    let (mut indexed, mut scanned) = (Vec::new(), Vec::new());
    let mut selected = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let rows = store.read(table.id, &indexed_query).expect("indexed read");
        indexed.push(started.elapsed());
        selected = rows.len();

        let started = Instant::now();
        let rows: Vec<Event> = store
            .read(table.id, &ReadQuery::all(now))
            .expect("full read")
            .into_iter()
            .filter(|e| e.time > threshold)
            .collect();
        scanned.push(started.elapsed());
        assert_eq!(rows.len(), selected, "index and scan disagree");
    }
    let (indexed, scanned) = (median(indexed), median(scanned));

    println!("watchpost-store benchmark ({})", if is_bench { "full" } else { "smoke" });
    println!("| measurement | events | result |");
    println!("|---|---:|---:|");
    println!(
        "| ingest, empty store, batches of {batch} | {ingest} | {:.0} events/s |",
        per_second(ingest, empty)
    );
    println!(
        "| ingest, steady state (events_max {steady_max}, evicting) | {ingest} | {:.0} events/s |",
        per_second(ingest, steady)
    );
    println!(
        "| `time > X` via index ({selected} of {retained}) | {selected} | {:.2} ms |",
        indexed.as_secs_f64() * 1e3
    );
    println!("| `time > X` via full scan + filter | {retained} | {:.2} ms |", scanned.as_secs_f64() * 1e3);
    println!(
        "| index speed-up (scan / index) | | {:.1}x |",
        scanned.as_secs_f64() / indexed.as_secs_f64().max(1e-9)
    );
}
