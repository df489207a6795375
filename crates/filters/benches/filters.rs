//! Events per second through the filter stage: the compiled `FilterSet` against a per-pattern
//! loop with the `wildmatch` crate, on the same patterns and events, in one run.
//!
//! `cargo bench -p watchpost-filters` runs the full size (2,000 patterns spread over all the
//! filterable columns of the catalog, the scale of sysmon-modular); under `cargo test
//! --all-targets` it runs a small smoke version. Override with `WATCHPOST_BENCH_PATTERNS`,
//! `WATCHPOST_BENCH_EVENTS` and `WATCHPOST_BENCH_ROUNDS`. Both matchers must agree on every
//! event, or the run fails.
//!
//! It compares twice: on all the events judged in turn, whose texts then mostly come from
//! memory, and on 500 of them judged over and over, which stay in the cache. The second is the
//! agent's case: a sensor hands the filter each event right after building it.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use watchpost_catalog::{ColumnType, Event, Stamper, Table, Value, catalog};
use watchpost_filters::{FilterSet, Verdict};
use wildmatch::WildMatch;

/// A small deterministic generator (SplitMix64): the benchmark data must be the same on every
/// run, and pulling in a random-number crate for it is not worth a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const DIRECTORIES: &[&str] = &[
    r"C:\Windows\System32",
    r"C:\Windows\SysWOW64",
    r"C:\Windows\WinSxS\amd64_microsoft-windows-servicingstack",
    r"C:\Program Files",
    r"C:\Program Files (x86)",
    r"C:\ProgramData\Microsoft\Windows Defender\Platform",
    r"C:\Users\alice\AppData\Local",
    r"C:\Users\bob\AppData\Roaming",
    r"C:\Users\carol\AppData\Local\Temp",
    r"C:\Windows\Microsoft.NET\Framework64\v4.0.30319",
];
const VENDORS: &[&str] =
    &["Microsoft", "Google", "Mozilla", "Adobe", "NVIDIA Corporation", "VMware", "Dell", "Intel"];
const EXTENSIONS: &[&str] = &[".exe", ".dll", ".sys", ".ps1", ".tmp", ".log"];
const ARGUMENTS: &[&str] =
    &["-Embedding", "/background", "--type=renderer", "-k netsvcs -p -s", "/c", "/quiet"];
const HIVES: &[&str] =
    &[r"HKLM\SOFTWARE", r"HKLM\SYSTEM\CurrentControlSet", r"HKU\S-1-5-21-1004-1001\Software"];
const KEYS: &[&str] = &[
    r"Microsoft\Windows\CurrentVersion\Run",
    r"Microsoft\Windows NT\CurrentVersion\Winlogon",
    r"Services",
    r"Classes\CLSID",
    r"Policies\Microsoft\Windows Defender",
];
const DOMAINS: &[&str] =
    &["microsoft.com", "windowsupdate.com", "google.com", "akamaiedge.net", "example.org"];
const ACTIONS: &[&str] =
    &["REG_SETVALUE", "REG_CREATEKEY", "REG_DELETEVALUE", "REG_QUERYVALUE", "REG_OPENKEY"];
const FUNCTIONS: &[&str] =
    &["LoadLibraryA", "LoadLibraryW", "CreateThread", "RtlUserThreadStart", "NtCreateSection"];

/// A realistic text for a column, with enough variety (numbered names) for thousands of
/// distinct values.
fn text_for(column: &str, rng: &mut Rng) -> String {
    let n = rng.below(400);
    match column {
        "target_name" => format!(r"{}\{}\Entry{n}", rng.pick(HIVES), rng.pick(KEYS)),
        "domain_name" => format!("host{n}.region{}.{}", rng.below(20), rng.pick(DOMAINS)),
        "remote_port" => rng.below(65536).to_string(),
        "remote_address" => {
            format!("{}.{}.{}.{}", rng.below(224), rng.below(256), rng.below(256), rng.below(256))
        }
        "action" => rng.pick(ACTIONS).to_string(),
        "granted_access" => format!("0x{:x}", rng.below(0x20_0000)),
        "function_name" => format!("{}{}", rng.pick(FUNCTIONS), n % 8),
        column => {
            let path = format!(
                r"{}\{}\Product{n}\{}{}",
                rng.pick(DIRECTORIES),
                rng.pick(VENDORS),
                ["setup", "update", "helper", "agent", "service"][rng.below(5)],
                rng.pick(EXTENSIONS),
            );
            if column == "cmdline" {
                format!(r#""{path}" {} {}"#, rng.pick(ARGUMENTS), rng.below(10_000))
            } else {
                path
            }
        }
    }
}

/// A pattern of one of the shapes real configs use, made from a realistic text.
fn pattern_from(text: &str, rng: &mut Rng) -> String {
    let chars: Vec<char> = text.chars().collect();
    let cut = |from: usize, to: usize| chars[from..to].iter().collect::<String>();
    let len = chars.len();
    if len < 4 {
        return text.to_string();
    }
    match rng.below(100) {
        0..35 => text.to_string(),
        35..55 => format!("{}*", cut(0, len / 2 + rng.below(len / 2))),
        55..75 => format!("*{}", cut(rng.below(len / 2), len)),
        75..90 => {
            let from = rng.below(len / 2);
            format!("*{}*", cut(from, from + 2 + rng.below(len - from - 2)))
        }
        _ => {
            // A `?` for one character and a `*` for a run in the middle.
            let question = rng.below(len / 2);
            let star = len / 2 + rng.below(len / 2 - 1);
            format!("{}?{}*{}", cut(0, question), cut(question + 1, star), cut(star + 2, len))
        }
    }
}

struct ColumnPatterns {
    table: &'static Table,
    column: String,
    include: bool,
    patterns: Vec<String>,
}

fn generate_patterns(count: usize, rng: &mut Rng) -> Vec<ColumnPatterns> {
    let mut columns: Vec<ColumnPatterns> = Vec::new();
    for table in catalog().tables() {
        for column in &table.filterable {
            // Like sysmon-config: registry and file events are included by location, the
            // rest excluded as noise.
            let include = matches!(column.as_str(), "target_name") || table.name == "win_file_events";
            columns.push(ColumnPatterns { table, column: column.clone(), include, patterns: Vec::new() });
        }
    }
    for index in 0..count {
        // Half of the patterns on the columns real configs fill most (command lines, paths,
        // registry keys, domains), the rest spread over every column.
        let column = if index % 2 == 0 {
            let busy = ["cmdline", "path", "target_name", "domain_name", "image_path"];
            let name = rng.pick(&busy);
            columns.iter().position(|c| c.column == *name).unwrap_or(0)
        } else {
            rng.below(columns.len())
        };
        let text = text_for(&columns[column].column, rng);
        let pattern = pattern_from(&text, rng);
        columns[column].patterns.push(pattern);
    }
    columns.retain(|c| !c.patterns.is_empty());
    columns
}

fn config_json(columns: &[ColumnPatterns]) -> String {
    let mut tables: Vec<(&str, Vec<&ColumnPatterns>)> = Vec::new();
    for column in columns {
        match tables.iter_mut().find(|(name, _)| *name == column.table.name) {
            Some((_, list)) => list.push(column),
            None => tables.push((&column.table.name, vec![column])),
        }
    }
    let mut json = String::from("{\"plgx_event_filters\": {\n");
    for (table, columns) in tables {
        let _ = writeln!(json, "  {table:?}: {{");
        for column in columns {
            let kind = if column.include { "include" } else { "exclude" };
            let values: Vec<String> = column.patterns.iter().map(|p| format!("{p:?}")).collect();
            let _ = writeln!(
                json,
                "    {:?}: {{{kind:?}: {{\"values\": [{},]}}}},",
                column.column,
                values.join(", ")
            );
        }
        json.push_str("  },\n");
    }
    json.push_str("}}\n");
    json
}

fn generate_events(count: usize, columns: &[ColumnPatterns], rng: &mut Rng) -> Vec<Event> {
    let tables: Vec<&Table> = catalog().tables().iter().filter(|t| !t.filterable.is_empty()).collect();
    (0..count)
        .map(|_| {
            let table = *rng.pick(&tables);
            let mut event = Event::new(table, Stamper::global().stamp());
            for column in &table.filterable {
                let mut text = text_for(column, rng);
                // A third of the values come near a configured pattern, so that matches happen.
                let configured = columns.iter().find(|c| c.table.name == table.name && c.column == *column);
                if let Some(configured) = configured
                    && rng.chance(33)
                {
                    text = rng.pick(&configured.patterns).replace('?', "x").replace('*', "QQ");
                }
                let index = table.column_index(column).unwrap_or_default();
                let value = match table.columns[index].ty {
                    ColumnType::Integer | ColumnType::BigInt => {
                        text.parse::<i64>().map(Value::Integer).unwrap_or(Value::Text(text))
                    }
                    _ => Value::Text(text),
                };
                event.set(index, value);
            }
            event
        })
        .collect()
}

/// One column's patterns: (column index, include patterns, exclude patterns).
type LoopColumn = (usize, Vec<WildMatch>, Vec<WildMatch>);

/// The obvious implementation: every pattern of every column in turn, with a wildcard crate.
struct PatternLoop {
    /// Per table id.
    tables: Vec<Vec<LoopColumn>>,
}

impl PatternLoop {
    fn new(columns: &[ColumnPatterns]) -> PatternLoop {
        let mut tables: Vec<Vec<LoopColumn>> = vec![Vec::new(); catalog().tables().len()];
        for column in columns {
            let index = column.table.column_index(&column.column).unwrap_or_default();
            let compiled: Vec<WildMatch> =
                column.patterns.iter().map(|p| WildMatch::new_case_insensitive(p)).collect();
            let (include, exclude) =
                if column.include { (compiled, Vec::new()) } else { (Vec::new(), compiled) };
            tables[usize::from(column.table.id.0)].push((index, include, exclude));
        }
        PatternLoop { tables }
    }

    /// Only reads the text of every filtered column, for the floor of the run.
    fn read_texts(&self, event: &Event) -> usize {
        let columns = &self.tables[usize::from(event.table.0)];
        let texts = columns.iter().filter_map(|(index, _, _)| match &event.values[*index] {
            Value::Text(text) => Some(text),
            _ => None,
        });
        texts.map(|text| text.bytes().map(usize::from).sum::<usize>()).sum()
    }

    fn judge(&self, event: &Event, number: &mut String) -> Verdict {
        let columns = &self.tables[usize::from(event.table.0)];
        let has_include = columns.iter().any(|(_, include, _)| !include.is_empty());
        let mut included = false;
        for (index, include, exclude) in columns {
            let text = match &event.values[*index] {
                Value::Text(text) => text.as_str(),
                Value::Integer(n) => {
                    number.clear();
                    let _ = write!(number, "{n}");
                    number.as_str()
                }
                _ => "",
            };
            if exclude.iter().any(|p| p.matches(text)) {
                return Verdict::Drop;
            }
            included = included || include.iter().any(|p| p.matches(text));
        }
        if has_include && !included { Verdict::Drop } else { Verdict::Keep }
    }
}

/// The best of `rounds` timings of judging every event (the machine is shared and noisy).
fn best_time(rounds: usize, mut judge_all: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut kept = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        kept = black_box(judge_all());
        best = best.min(start.elapsed());
    }
    (best, kept)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let pattern_count = env_or("WATCHPOST_BENCH_PATTERNS", if full { 2000 } else { 200 });
    let event_count = env_or("WATCHPOST_BENCH_EVENTS", if full { 20_000 } else { 500 });
    let rounds = env_or("WATCHPOST_BENCH_ROUNDS", if full { 5 } else { 1 });

    let mut rng = Rng(0x5EED);
    let columns = generate_patterns(pattern_count, &mut rng);
    let events = generate_events(event_count, &columns, &mut rng);
    let config =
        watchpost_config::parse("bench.conf", &config_json(&columns)).expect("the generated config parses");

    let start = Instant::now();
    let compiled = FilterSet::compile(&config.filters).expect("the generated config compiles");
    let compiled_build = start.elapsed();
    let start = Instant::now();
    let pattern_loop = PatternLoop::new(&columns);
    let loop_build = start.elapsed();

    let mut number = String::new();
    let mismatches: Vec<&Event> = events
        .iter()
        .filter(|event| compiled.judge(event) != pattern_loop.judge(event, &mut number))
        .collect();
    assert!(
        mismatches.is_empty(),
        "the matchers disagree on {} events, first: {:?}",
        mismatches.len(),
        mismatches[0]
    );

    let (compiled_time, compiled_kept) =
        best_time(rounds, || events.iter().filter(|e| compiled.judge(e) == Verdict::Keep).count());
    let (loop_time, loop_kept) = best_time(rounds, || {
        events.iter().filter(|e| pattern_loop.judge(e, &mut number) == Verdict::Keep).count()
    });
    assert_eq!(compiled_kept, loop_kept);

    // What no matcher can go below: reading the filtered columns' values of every event.
    let (reading_time, _) = best_time(rounds, || {
        events.iter().filter(|event| black_box(pattern_loop.read_texts(event)).is_multiple_of(2)).count()
    });
    let per_second = |time: Duration| event_count as f64 / time.as_secs_f64().max(1e-9);
    let nanos = |time: Duration| time.as_nanos() as f64 / event_count.max(1) as f64;
    let columns_used = columns.len();
    let tables_used = {
        let mut names: Vec<&str> = columns.iter().map(|c| c.table.name.as_str()).collect();
        names.dedup();
        names.len()
    };
    println!(
        "filter stage: {pattern_count} patterns over {columns_used} columns of {tables_used} tables, \
         {event_count} events ({} kept), best of {rounds}",
        compiled_kept
    );
    println!("{:<34} {:>10} {:>14} {:>10}", "matcher", "build ms", "events/s", "ns/event");
    for (name, build, time) in [
        ("compiled FilterSet", compiled_build, compiled_time),
        ("per-pattern loop (wildmatch)", loop_build, loop_time),
    ] {
        println!(
            "{name:<34} {:>10.1} {:>14.0} {:>10.0}",
            build.as_secs_f64() * 1000.0,
            per_second(time),
            nanos(time)
        );
    }
    println!(
        "{:<34} {:>10} {:>14.0} {:>10.0}",
        "(reading the values only)",
        "",
        per_second(reading_time),
        nanos(reading_time)
    );
    println!(
        "speed-up, {event_count} events judged in turn (their texts mostly from memory): {:.1}x",
        loop_time.as_secs_f64() / compiled_time.as_secs_f64().max(1e-9)
    );

    // In the agent an event is judged right after its sensor built it, so its texts are in the
    // cache; above, 20,000 events are judged in turn and most texts come from memory. The same
    // comparison on a few hundred events judged over and over shows the in-cache case.
    let cached = &events[..events.len().min(CACHED_EVENTS)];
    let cached_rounds = rounds * (events.len() / cached.len().max(1)).clamp(1, 40);
    let (compiled_cached, _) =
        best_time(cached_rounds, || cached.iter().filter(|e| compiled.judge(e) == Verdict::Keep).count());
    let (loop_cached, _) = best_time(cached_rounds, || {
        cached.iter().filter(|e| pattern_loop.judge(e, &mut number) == Verdict::Keep).count()
    });
    let cached_nanos = |time: Duration| time.as_nanos() as f64 / cached.len().max(1) as f64;
    println!(
        "speed-up, {} events judged over and over (in cache, as in the agent; best of \
         {cached_rounds}): {:.1}x (compiled {:.0} ns/event, loop {:.0} ns/event)",
        cached.len(),
        loop_cached.as_secs_f64() / compiled_cached.as_secs_f64().max(1e-9),
        cached_nanos(compiled_cached),
        cached_nanos(loop_cached),
    );
}

/// Events few enough that they stay in the cache between rounds.
const CACHED_EVENTS: usize = 500;
