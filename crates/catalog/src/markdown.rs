use std::fmt::Write;

use crate::spec::Catalog;
use crate::table::TableKind;

/// `docs/tables.md`: every table with its columns, types, options and filterable columns.
/// A test fails when the committed file differs from this output.
pub fn render_markdown(catalog: &Catalog) -> String {
    let mut out = String::new();
    out.push_str("# Tables\n\n");
    out.push_str(
        "Generated from `crates/catalog/specs/` by `watchpost tables --markdown`; do not edit by hand \
         (`WATCHPOST_BLESS=1 cargo test -p watchpost-catalog` rewrites it).\n\n",
    );
    out.push_str(
        "Evented tables also have the hidden column `consumer` (a per-consumer cursor: \
         `WHERE consumer = 'NAME'` returns only the events NAME has not read yet and advances its \
         cursor), and `eid`, `time`, `utc_time` (hidden where the original table lacked them). \
         Options are osquery ColumnOptions; constraints on INDEX and ADDITIONAL columns reach \
         watchpost, the others are filtered by SQLite.\n\n",
    );
    out.push_str("| table | kind | platforms | description |\n|---|---|---|---|\n");
    for t in catalog.tables() {
        let platforms: Vec<&str> = t.platforms.iter().map(|p| p.as_str()).collect();
        writeln!(
            out,
            "| [{0}](#{0}) | {1} | {2} | {3} |",
            t.name,
            t.kind.as_str(),
            platforms.join(", "),
            t.description
        )
        .expect("write to string");
    }
    for t in catalog.tables() {
        writeln!(out, "\n## {}\n\n{}\n", t.name, t.description).expect("write to string");
        let kind = match t.kind {
            TableKind::Evented => "Evented: rows are events kept in the store.",
            TableKind::Snapshot => "Snapshot: rows are computed at query time.",
            TableKind::Status => "Status: watchpost's own counters.",
        };
        writeln!(out, "{kind}").expect("write to string");
        if !t.filterable.is_empty() {
            writeln!(out, "Filterable in `plgx_event_filters`: {}.", t.filterable.join(", "))
                .expect("write to string");
        }
        out.push_str("\n| column | type | options | description |\n|---|---|---|---|\n");
        for c in &t.columns {
            writeln!(out, "| {} | {} | {} | {} |", c.name, c.ty, c.options.names().join(", "), c.description)
                .expect("write to string");
        }
    }
    out
}
