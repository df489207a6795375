//! The extension and the manager client against an in-Rust fake core (tests/support), on
//! every platform: Unix sockets on Linux, named pipes on Windows (run under Wine).

#[path = "support/demo_tables.rs"]
mod demo_tables;
#[path = "support/fake_core.rs"]
mod fake_core;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use demo_tables::{DemoTables, ECHO, NUMBERS};
use fake_core::FakeCore;
use watchpost_ipc::Stream;
use watchpost_osquery::{
    Extension, ExtensionClient, ExtensionOptions, ManagerClient, OsqueryError, StopReason,
};

const CONFIG: &str = r#"{"plgx_events": {"max": 7}}"#;
const WAIT: Duration = Duration::from_secs(5);

fn options(core: &FakeCore, name: &str) -> ExtensionOptions {
    let mut options = ExtensionOptions::new(core.endpoint(), name, "1.2.3");
    options.timeout = Duration::from_secs(2);
    options.interval = Duration::from_millis(100);
    options
}

fn start(core: &FakeCore, name: &str) -> (Extension, Arc<DemoTables>) {
    let plugin = Arc::new(DemoTables::new(ECHO, 0));
    let extension = Extension::start(options(core, name), plugin.registry(), plugin.clone()).unwrap();
    (extension, plugin)
}

fn request(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn extension_answers_core_calls_and_stops_on_shutdown() {
    let core = FakeCore::start(CONFIG);
    let (extension, plugin) = start(&core, "watchpost_test");
    let uuid = extension.uuid();
    let endpoint = extension.endpoint().to_string();
    assert_eq!(endpoint, format!("{}.{uuid}", core.endpoint()));
    {
        let state = core.state();
        let (info, registry) = &state.extensions[&uuid];
        assert_eq!(info.name.as_deref(), Some("watchpost_test"));
        assert_eq!(info.version.as_deref(), Some("1.2.3"));
        let tables: Vec<_> = plugin.registry().into_iter().collect();
        assert_eq!(registry["table"], tables.into_iter().collect::<BTreeMap<_, _>>());
    }
    let serving = thread::spawn(move || extension.wait());

    let mut client = ExtensionClient::connect(&endpoint, WAIT).unwrap();
    let pong = client.ping().unwrap();
    assert_eq!((pong.code, pong.message.as_deref()), (Some(0), Some("pong")));

    // Routes round trip: `columns` answers what was registered.
    let registered = plugin.registry().into_iter().find(|(name, _)| name == ECHO).unwrap().1;
    assert_eq!(client.columns(ECHO).unwrap(), registered);

    let modern = r#"{"constraints":[{"name":"time","list":[{"op":4,"expr":"10"}],"affinity":"BIGINT"}],"colsUsed":["eid","time"],"colsUsedBitset":3}"#;
    let rows = client.generate(ECHO, modern).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["constraints"], "time>10");
    assert_eq!(rows[0]["columns_used"], "eid,time");

    let legacy = r#"{"constraints":[{"name":"n","list":[{"op":"2","expr":"3"}],"affinity":"INTEGER"},{"name":"square","list":"","affinity":"BIGINT"}]}"#;
    let rows = client.generate(NUMBERS, legacy).unwrap();
    assert_eq!(rows, vec![request(&[("n", "3"), ("square", "9")])]);

    // Failures are status code 1 with a message, on a connection that keeps working.
    let failures = [
        ("table", "nope", request(&[("action", "columns")]), "unknown table \"nope\""),
        ("config", "filesystem", request(&[("action", "genConfig")]), "serves only tables"),
        ("table", ECHO, request(&[("action", "insert")]), "unsupported action \"insert\""),
        ("table", ECHO, request(&[("action", "generate"), ("context", "garbage")]), "not JSON"),
        (
            "table",
            NUMBERS,
            request(&[
                ("action", "generate"),
                ("context", r#"{"constraints":[{"name":"n","list":[{"op":2,"expr":"x"}]}]}"#),
            ]),
            "table demo_numbers: n = \"x\" is not an integer",
        ),
    ];
    for (registry, item, request, expected) in failures {
        let answer = client.call(registry, item, request).unwrap();
        let status = answer.status.unwrap();
        assert_eq!(status.code, Some(1));
        let message = status.message.unwrap();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert_eq!(answer.response, Some(vec![]));
    }
    assert_eq!(client.ping().unwrap().code, Some(0));

    // A malformed message closes that connection only: a valid ping followed by bytes that
    // are no message, and a message name claiming to be 2 GiB long.
    let malformed: [&[u8]; 2] = [
        b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x07\x00\x00garbage",
        b"\x80\x01\x00\x01\x7f\xff\xff\xffping",
    ];
    for bytes in malformed {
        let mut raw = Stream::connect(&endpoint).unwrap();
        raw.write_all(bytes).unwrap();
        raw.set_read_timeout(Some(WAIT)).unwrap();
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).expect("the extension closes the connection");
        assert_eq!(client.ping().unwrap().code, Some(0), "other connections are served");
    }

    // Many connections at once.
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let endpoint = endpoint.clone();
            thread::spawn(move || {
                let mut client = ExtensionClient::connect(&endpoint, WAIT).unwrap();
                (0..20).map(|_| client.generate(NUMBERS, "{}").unwrap().len()).sum::<usize>()
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap(), 20 * 10);
    }

    client.shutdown().unwrap();
    assert_eq!(serving.join().unwrap().unwrap(), StopReason::ShutdownRequested);
    assert_eq!(core.state().deregistered, vec![uuid]);
    assert!(
        ExtensionClient::connect(&endpoint, Duration::from_millis(300)).is_err(),
        "the endpoint is closed after the extension stopped"
    );
}

#[test]
fn extension_leaves_when_core_stops_answering() {
    let core = FakeCore::start(CONFIG);
    let (extension, _) = start(&core, "watchpost_test");
    let serving = thread::spawn(move || extension.wait());
    core.wait_until(WAIT, |state| state.pings >= 1);
    core.go_away();
    assert_eq!(serving.join().unwrap().unwrap(), StopReason::CoreGone);
    assert_eq!(core.state().deregistered, Vec::<i64>::new());
}

#[test]
fn a_second_extension_with_the_same_name_is_refused() {
    let core = FakeCore::start(CONFIG);
    let (first, _) = start(&core, "watchpost_twice");
    let plugin = Arc::new(DemoTables::new(ECHO, 0));
    let error = Extension::run(options(&core, "watchpost_twice"), plugin.registry(), plugin).unwrap_err();
    assert!(matches!(error, OsqueryError::Refused(_)), "{error:?}");
    assert_eq!(error.to_string(), "osquery core refused the registration: Duplicate extension registered");
    first.stopper().stop();
    assert_eq!(first.wait().unwrap(), StopReason::Stopped);
    assert_eq!(core.state().registrations.len(), 2);
    assert_eq!(core.state().deregistered.len(), 1);
}

#[test]
fn manager_client_reads_options_and_config_and_registers() {
    let core = FakeCore::start(CONFIG);
    let mut manager = ManagerClient::connect(core.endpoint(), WAIT).unwrap();
    manager.ping().unwrap();
    assert_eq!(manager.options().unwrap()["events_max"], "1000");
    assert_eq!(
        manager.gen_config().unwrap(),
        BTreeMap::from([("/etc/osquery/osquery.conf".to_string(), CONFIG.to_string())])
    );
    let tables = DemoTables::new(ECHO, 0).registry();
    let uuid = manager.register("watchpost_manager", "1", &tables).unwrap();
    manager.deregister(uuid).unwrap();
    let error = manager.deregister(uuid).unwrap_err();
    assert_eq!(
        error.to_string(),
        "osquery core answered deregisterExtension with status 1: No extension UUID found"
    );
}

#[test]
fn connecting_to_a_missing_core_says_where_it_looked() {
    let (endpoint, _dir) = fake_core::fresh_endpoint();
    let error = ManagerClient::connect(&endpoint, Duration::from_millis(300)).err().unwrap();
    assert!(matches!(error, OsqueryError::CoreUnavailable { .. }), "{error:?}");
    assert!(error.to_string().contains(&endpoint), "{error}");
}
