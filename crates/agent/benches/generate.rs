//! osquery's view of watchpost's speed: rows of a retained evented table through `generate`
//! over the extension protocol, end to end (store → engine → Thrift → client), plus the same
//! table with a `time > X` constraint that the store answers from its index. The client
//! decodes with the generated Thrift code, as core does (in C++) in production.
//!
//! `cargo bench -p watchpost-agent --bench generate` runs 50,000 rows; under
//! `cargo test --all-targets` a smoke size. `WATCHPOST_BENCH_ROWS` overrides the row count.

#[path = "../../osquery/tests/support/fake_core.rs"]
mod fake_core;

use std::sync::Arc;
use std::time::{Duration, Instant};

use watchpost_agent::extension::CatalogPlugin;
use watchpost_agent::{Agent, AgentOptions, ConfigSource};
use watchpost_catalog::{Event, Stamper, catalog};
use watchpost_osquery::{Extension, ExtensionClient, ExtensionOptions, TablePlugin};
use watchpost_store::{Limits, Store};

const ROUNDS: usize = 7;
const BASE_TIME: i64 = 1_700_000_000;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let is_bench = std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("WATCHPOST_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { 50_000 } else { 500 });
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");

    // Retain `rows` process events, spread over 1,000 seconds, newest last.
    let table = catalog().table("win_process_events").ok_or("catalog lacks win_process_events")?;
    {
        let store = Store::open(
            &data_dir.join("events.redb"),
            Limits { events_max: rows as u64, events_expiry: u64::MAX / 4 },
        )?;
        let stamper = Stamper::new();
        let column = |name: &str| table.column_index(name).unwrap_or(usize::MAX);
        let now = BASE_TIME;
        let events: Vec<Event> = (0..rows)
            .map(|n| {
                let mut event = Event::new(table, stamper.stamp());
                event.time = now + (n * 1000 / rows) as i64;
                let pid = 10_000 + n as i64;
                event.set(column("action"), "PROC_CREATE");
                event.set(column("pid"), pid);
                event.set(column("process_guid"), format!("{pid:08X}-1C2D-4E5F-8091-A2B3C4D5E6F7"));
                event.set(column("path"), "/usr/bin/python3.11");
                event.set(
                    column("cmdline"),
                    format!("python3 /opt/app/worker.py --shard {n} --config /etc/app.yml"),
                );
                event.set(column("parent_pid"), pid - 1);
                event.set(
                    column("parent_process_guid"),
                    format!("{:08X}-1C2D-4E5F-8091-A2B3C4D5E6F7", pid - 1),
                );
                event.set(column("parent_path"), "/usr/bin/bash");
                event.set(column("owner_uid"), "www-data");
                event
            })
            .collect();
        for chunk in events.chunks(4096) {
            store.append(chunk)?;
        }
    }
    let agent = Agent::start(AgentOptions {
        data_dir,
        config: ConfigSource::None,
        events_max: Some(rows as u64),
        // The synthetic events are from 2023: keep them readable.
        events_expiry: Some(u64::MAX / 4),
        reload_interval: Duration::from_secs(60),
    })?;
    let plugin = Arc::new(CatalogPlugin::new(Agent::tables(), agent.engine()));
    let own_plugin = Arc::clone(&plugin);
    let core = fake_core::FakeCore::start("{}");
    let extension = Extension::start(
        ExtensionOptions::new(core.endpoint(), "watchpost_bench", "0"),
        plugin.registry(),
        plugin,
    )?;
    let mut client = ExtensionClient::connect(extension.endpoint(), Duration::from_secs(10))?;

    let newest_percent = BASE_TIME + 990;
    let time_context = format!(
        r#"{{"constraints":[{{"name":"time","list":[{{"op":4,"expr":"{newest_percent}"}}],"affinity":"BIGINT"}}]}}"#
    );
    // Phases apart: after a 50,000-row answer the server frees it before reading the next
    // request, which would otherwise be billed to whatever call comes next.
    let mut all = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let got = client.generate("win_process_events", "{}")?;
        all.push(started.elapsed().as_secs_f64());
        assert_eq!(got.len(), rows, "every retained event comes back");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut recent = Vec::new();
    let mut recent_rows = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        recent_rows = client.generate("win_process_events", &time_context)?.len();
        recent.push(started.elapsed().as_secs_f64());
    }
    // watchpost's own share of the full answer: store read and conversion to osquery rows,
    // without the Thrift encoding and the client's decoding.
    let mut own = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let got = TablePlugin::generate(own_plugin.as_ref(), "win_process_events", &Default::default())?;
        own.push(started.elapsed().as_secs_f64());
        drop(got);
    }
    let all = median(all);
    let recent = median(recent);
    let own = median(own);
    println!("watchpost generate over the osquery protocol ({})", if is_bench { "full" } else { "smoke" });
    println!("| measurement | rows | median of {ROUNDS} |");
    println!("|---|---:|---:|");
    println!(
        "| `SELECT * FROM win_process_events` ({} columns) | {rows} | {all:.3} s |",
        table.columns.len()
    );
    println!("| of which watchpost's store read and row conversion | {rows} | {own:.3} s |");
    println!(
        "| same with `time > X` (newest 1 %, from the index) | {recent_rows} | {:.1} ms |",
        recent * 1000.0
    );
    println!("| ratio full / indexed | | {:.0}x |", all / recent.max(1e-9));
    drop(client);
    extension.stopper().stop();
    let _ = extension.wait();
    agent.stop();
    Ok(())
}
