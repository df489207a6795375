//! Measures one `generate` of 50,000 rows of 12 columns through the protocol: the extension
//! serving an in-process fake core's request over a local socket (named pipe on Windows), read
//! by the generated Thrift client as core would. `cargo run --release --example bench_generate`.

#[path = "../tests/support/demo_tables.rs"]
mod demo_tables;
#[path = "../tests/support/fake_core.rs"]
mod fake_core;

use std::sync::Arc;
use std::time::{Duration, Instant};

use demo_tables::{BULK, BULK_COLUMNS, DemoTables, ECHO};
use thrift::protocol::{TBinaryOutputProtocol, TSerializable};
use watchpost_osquery::protocol::{ExtensionResponse, ExtensionStatus};
use watchpost_osquery::{Extension, ExtensionClient, ExtensionOptions, TablePlugin};

const ROWS: usize = 50_000;
const ROUNDS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let core = fake_core::FakeCore::start("{}");
    let plugin = Arc::new(DemoTables::new(ECHO, ROWS));
    let options = ExtensionOptions::new(core.endpoint(), "watchpost_bench", "0");
    let extension = Extension::start(options, plugin.registry(), plugin.clone())?;
    let mut client = ExtensionClient::connect(extension.endpoint(), Duration::from_secs(5))?;

    let mut seconds = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let rows = client.generate(BULK, "{}")?;
        seconds.push(started.elapsed().as_secs_f64());
        assert_eq!(rows.len(), ROWS);
        assert!(rows.iter().all(|row| row.len() == BULK_COLUMNS));
    }
    // Split the round trip: the plugin's own share (formatting 600,000 strings), the
    // extension's encoding of the answer, and the rest (transfer, and decoding by the client,
    // which is core's C++ work in production).
    let mut plugin_seconds = Vec::new();
    let mut encode_seconds = Vec::new();
    let mut encoded_bytes = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let rows = TablePlugin::generate(plugin.as_ref(), BULK, &Default::default())?;
        plugin_seconds.push(started.elapsed().as_secs_f64());
        let answer = ExtensionResponse::new(ExtensionStatus::new(0, "OK".to_string(), 0), rows);
        let started = Instant::now();
        let mut encoded = Vec::new();
        answer.write_to_out_protocol(&mut TBinaryOutputProtocol::new(&mut encoded, true))?;
        encode_seconds.push(started.elapsed().as_secs_f64());
        encoded_bytes = encoded.len();
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let total = median(&mut seconds);
    let (produce, encode) = (median(&mut plugin_seconds), median(&mut encode_seconds));
    println!(
        "generate of {ROWS} rows x {BULK_COLUMNS} columns ({:.1} MB) over the protocol, {ROUNDS} rounds:",
        encoded_bytes as f64 / 1e6
    );
    println!(
        "  round trip: median {total:.3} s (best {:.3} s, worst {:.3} s)",
        seconds[0],
        seconds[ROUNDS - 1]
    );
    println!("  of which the plugin producing the rows: {produce:.3} s");
    println!("  the extension encoding the answer: {encode:.3} s");
    println!("  transfer and client-side decoding: {:.3} s", total - produce - encode);
    extension.stopper().stop();
    extension.wait()?;
    Ok(())
}
