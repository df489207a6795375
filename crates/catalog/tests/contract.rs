//! The catalog against the upstream contract (`shared/schemas/tables.json`) and the generated docs.

use std::path::PathBuf;

use watchpost_catalog::{ColumnOptions, TableKind, catalog, render_markdown};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn upstream() -> serde_json::Value {
    let path = workspace().join("../shared/schemas/tables.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e} (the shared/ folder must sit beside the checkout)", path.display())
    });
    serde_json::from_str(&text).expect("tables.json is JSON")
}

#[test]
fn every_upstream_table_is_in_the_catalog_column_by_column() {
    let upstream = upstream();
    let tables = upstream["tables"].as_array().expect("tables array");
    assert_eq!(tables.len(), 22);
    for t in tables {
        let name = t["name"].as_str().expect("name");
        let ours = catalog().table(name).unwrap_or_else(|| panic!("{name} missing from the catalog"));
        let kind = match t["kind"].as_str() {
            Some("evented") => TableKind::Evented,
            Some("snapshot") => TableKind::Snapshot,
            other => panic!("{name}: unexpected kind {other:?}"),
        };
        assert_eq!(ours.kind, kind, "{name}: kind");
        let filterable: Vec<&str> = t["filterable_columns"]
            .as_array()
            .expect("filterable")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(ours.filterable, filterable, "{name}: filterable columns");

        let columns = t["columns"].as_array().expect("columns");
        // The upstream columns come first, in order, with the same types.
        for (i, c) in columns.iter().enumerate() {
            let col = &ours.columns[i];
            assert_eq!(col.name, c["name"].as_str().expect("column name"), "{name}: column {i}");
            assert_eq!(col.ty.as_str(), c["type"].as_str().expect("type"), "{name}.{}: type", col.name);
            let upstream_options = match c.get("options").and_then(|o| o.as_str()) {
                None => ColumnOptions::DEFAULT,
                Some(o) => ColumnOptions::from_name(o).expect("known option"),
            };
            // Upstream options are kept; we may only add the bits that make core pass
            // constraints to us (INDEX, ADDITIONAL), never hide or require an upstream column.
            assert!(col.options.contains(upstream_options), "{name}.{}: lost upstream options", col.name);
            let added = ColumnOptions(col.options.0 & !upstream_options.0);
            assert_eq!(
                added.0 & !(ColumnOptions::INDEX.0 | ColumnOptions::ADDITIONAL.0),
                0,
                "{name}.{}: only INDEX/ADDITIONAL may be added to an upstream column",
                col.name
            );
        }
        // Anything beyond the upstream columns is hidden.
        for extra in &ours.columns[columns.len()..] {
            assert!(extra.is_hidden(), "{name}.{}: extra columns must be HIDDEN", extra.name);
        }
    }
}

#[test]
fn evented_tables_carry_the_envelope_and_cursor() {
    for t in catalog().tables().iter().filter(|t| t.is_evented()) {
        let env = t.envelope.unwrap_or_else(|| panic!("{}: no envelope", t.name));
        assert_eq!(t.columns[env.eid].name, "eid");
        assert_eq!(t.columns[env.time].name, "time");
        assert_eq!(t.columns[env.utc_time].name, "utc_time");
        assert_eq!(t.columns[env.consumer].name, "consumer");
        for i in [env.eid, env.time, env.consumer] {
            assert!(
                t.columns[i].options.contains(ColumnOptions::ADDITIONAL),
                "{}.{}",
                t.name,
                t.columns[i].name
            );
        }
        assert!(t.columns[env.consumer].is_hidden());
    }
    let logger = catalog().table("win_logger_events").expect("logger table");
    let visible: Vec<&str> =
        logger.columns.iter().filter(|c| !c.is_hidden()).map(|c| c.name.as_str()).collect();
    assert_eq!(visible, ["logger_name", "logger_watch_file", "log_entry"]);
}

#[test]
fn routes_and_ddl_follow_the_catalog() {
    let t = catalog().table("win_socket_events").expect("socket table");
    let routes = t.osquery_routes();
    assert_eq!(routes[0]["name"], "event_type");
    assert_eq!(routes[0]["op"], "16");
    assert_eq!(routes.last().expect("attributes")["attributes"], "4");
    assert!(t.ddl().starts_with("CREATE TABLE win_socket_events(`event_type` TEXT HIDDEN, `action` TEXT"));
    let snapshot = catalog().table("win_mem_perf").expect("mem table");
    assert_eq!(snapshot.osquery_routes().last().expect("attributes")["attributes"], "0");
}

#[test]
fn generated_docs_are_current() {
    let path = workspace().join("docs/tables.md");
    let fresh = render_markdown(catalog());
    if std::env::var_os("WATCHPOST_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/tables.md");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/tables.md is stale: run `WATCHPOST_BLESS=1 cargo test -p watchpost-catalog --test contract` and commit it"
    );
}
