//! The filter stage: decides for every captured event whether it is kept, from the
//! `plgx_event_filters` of the config.
//!
//! Semantics (shared/schemas/README.md):
//! - per table and column, include and exclude value lists;
//! - values match the column's whole text case-insensitively (Unicode lower case, char by char);
//!   `*` matches any run of characters (also none), `?` exactly one; `\` is an ordinary
//!   character, never an escape;
//! - an event is dropped if ANY exclude value matches on any column (exclude wins); otherwise, if
//!   the table has include filters, it is kept only if at least one include value matches (OR
//!   across values and columns); a table without filters keeps everything;
//! - numbers match as their decimal text (`443`);
//! - NULL (an absent value) is matched as the empty string: `*` and `""` match it, nothing else.
//!
//! A [`FilterSet`] is built once per config and shared by the sensor threads. Each column's
//! include and exclude lists are compiled into automata (see `compiled.rs`) so that an event is
//! tested against all values of a list at once; `explain` additionally names the first value, in
//! config order, that matched.

mod compiled;
mod glob;

use std::cell::RefCell;
use std::fmt::{self, Write};

use watchpost_catalog::{Event, Table, TableId, Value, catalog};
use watchpost_config::{FilterSpec, FilterValue};

use compiled::CompiledList;
use glob::{Folded, FoldedText, PatternList};

/// Whether an event is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Keep,
    Drop,
}

/// A filter spec that does not fit the catalog, or an `explain` request that names an unknown
/// table or column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown table {table:?}; tables that accept filters: {accepted}")]
    UnknownTable { table: String, accepted: String },
    #[error("{table}: unknown column {column:?}; columns: {known}")]
    UnknownColumn { table: String, column: String, known: String },
    #[error("{table}: column {column:?} cannot be filtered; filterable columns: {filterable}")]
    NotFilterable { table: String, column: String, filterable: String },
}

/// The compiled filters of one config. Cheap to share (`Send + Sync`, immutable).
#[derive(Clone, Debug, Default)]
pub struct FilterSet {
    /// Indexed by `TableId`; a table without filters has no columns here.
    tables: Vec<TableMatcher>,
}

#[derive(Clone, Debug, Default)]
struct TableMatcher {
    columns: Vec<ColumnMatcher>,
    has_include: bool,
}

#[derive(Clone, Debug)]
struct ColumnMatcher {
    name: String,
    /// Position in the catalog table's columns (and so in `Event::values`).
    index: usize,
    /// None for an empty list: most columns filter one way only, and judging then does not read
    /// the other list's (large) structure.
    include: Option<Box<CompiledList>>,
    exclude: Option<Box<CompiledList>>,
    /// The values as written, for explanations.
    include_values: Vec<FilterValue>,
    exclude_values: Vec<FilterValue>,
}

/// Include or exclude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    Include,
    Exclude,
}

impl FilterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKind::Include => "include",
            FilterKind::Exclude => "exclude",
        }
    }
}

/// The filter value that decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub column: String,
    pub kind: FilterKind,
    /// The value as written in the config, with its line and column there.
    pub value: FilterValue,
    /// The event's text in that column.
    pub text: String,
}

/// Why an event is kept or dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The table has no filters.
    NoFilters,
    /// An exclude value matched.
    Excluded(Match),
    /// No exclude value matched and this include value did.
    Included(Match),
    /// No exclude value matched and the table has no include filters.
    NotExcluded,
    /// The table has include filters and none matched.
    NoIncludeMatched,
}

/// The decision for one event and what decided it (`watchpost check-config --explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub table: String,
    pub verdict: Verdict,
    pub reason: Reason,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Keep => "keep",
            Verdict::Drop => "drop",
        };
        write!(f, "{verdict}: ")?;
        match &self.reason {
            Reason::NoFilters => write!(f, "{} has no filters", self.table),
            Reason::Excluded(m) | Reason::Included(m) => write!(
                f,
                "{} {:?} matches {} value {:?} (config line {}, column {})",
                m.column,
                m.text,
                m.kind.as_str(),
                m.value.text,
                m.value.line,
                m.value.column
            ),
            Reason::NotExcluded => {
                write!(f, "no exclude value matched and {} has no include filters", self.table)
            }
            Reason::NoIncludeMatched => write!(f, "{} has include filters and none matched", self.table),
        }
    }
}

/// What decided, as positions into the table's matchers.
enum Decision {
    NoFilters,
    Matched { column: usize, kind: FilterKind, value: usize },
    NotExcluded,
    NoIncludeMatched,
}

impl Decision {
    fn verdict(&self) -> Verdict {
        match self {
            Decision::NoFilters | Decision::NotExcluded => Verdict::Keep,
            Decision::Matched { kind: FilterKind::Include, .. } => Verdict::Keep,
            Decision::Matched { kind: FilterKind::Exclude, .. } | Decision::NoIncludeMatched => Verdict::Drop,
        }
    }
}

impl FilterSet {
    /// Keeps everything.
    pub fn empty() -> FilterSet {
        FilterSet::default()
    }

    /// Resolves the spec's table and column names against the catalog and compiles the values.
    /// Several entries for one table (or one column) are combined.
    pub fn compile(spec: &FilterSpec) -> Result<FilterSet, FilterError> {
        let catalog = catalog();
        let mut tables = vec![TableMatcher::default(); catalog.tables().len()];
        for table_spec in &spec.tables {
            let table = catalog.table(&table_spec.table).ok_or_else(|| unknown_table(&table_spec.table))?;
            let matcher = &mut tables[usize::from(table.id.0)];
            for column_spec in &table_spec.columns {
                let index = filterable_column(table, &column_spec.column)?;
                let position = match matcher.columns.iter().position(|c| c.index == index) {
                    Some(position) => position,
                    None => {
                        matcher.columns.push(ColumnMatcher {
                            name: column_spec.column.clone(),
                            index,
                            include: None,
                            exclude: None,
                            include_values: Vec::new(),
                            exclude_values: Vec::new(),
                        });
                        matcher.columns.len() - 1
                    }
                };
                let column = &mut matcher.columns[position];
                column.include_values.extend(column_spec.include.iter().cloned());
                column.exclude_values.extend(column_spec.exclude.iter().cloned());
            }
        }
        for matcher in &mut tables {
            // Columns with no values at all would only cost time on the hot path.
            matcher.columns.retain(|c| !c.include_values.is_empty() || !c.exclude_values.is_empty());
            for column in &mut matcher.columns {
                column.include = compile_list(&column.include_values);
                column.exclude = compile_list(&column.exclude_values);
            }
            matcher.has_include = matcher.columns.iter().any(|c| c.include.is_some());
        }
        Ok(FilterSet { tables })
    }

    /// Keep or drop `event`. Allocates nothing when the table has no filters, nor for ASCII text
    /// and integer values (once the thread's buffer for texts past 256 bytes has grown to the
    /// longest one).
    pub fn judge(&self, event: &Event) -> Verdict {
        match self.tables.get(usize::from(event.table.0)) {
            Some(matcher) if !matcher.columns.is_empty() => decide(matcher, &event.values).verdict(),
            _ => Verdict::Keep,
        }
    }

    /// The decision for an event of `table` with the given `(column, text)` values (columns left
    /// out are NULL), and which filter value of which column decided it.
    pub fn explain(&self, table: &str, values: &[(String, String)]) -> Result<Explanation, FilterError> {
        let catalog_table = catalog().table(table).ok_or_else(|| unknown_table(table))?;
        let mut row = vec![Value::Null; catalog_table.columns.len()];
        for (column, text) in values {
            let index = catalog_table.column_index(column).ok_or_else(|| FilterError::UnknownColumn {
                table: table.to_string(),
                column: column.clone(),
                known: column_names(catalog_table),
            })?;
            row[index] = Value::Text(text.clone());
        }
        let matcher = self.tables.get(usize::from(catalog_table.id.0));
        let decision = match matcher {
            Some(matcher) if !matcher.columns.is_empty() => decide(matcher, &row),
            _ => Decision::NoFilters,
        };
        let verdict = decision.verdict();
        let reason = match decision {
            Decision::NoFilters => Reason::NoFilters,
            Decision::NotExcluded => Reason::NotExcluded,
            Decision::NoIncludeMatched => Reason::NoIncludeMatched,
            Decision::Matched { column, kind, value } => {
                // `decide` only returns positions inside this matcher.
                let column = &matcher.map(|m| &m.columns[column]).ok_or_else(|| unknown_table(table))?;
                let values = match kind {
                    FilterKind::Include => &column.include_values,
                    FilterKind::Exclude => &column.exclude_values,
                };
                let text = row[column.index].to_text().unwrap_or_default();
                // The automata report some matching value; name the first one in config order.
                let first = PatternList::new(values.iter().map(|v| v.text.as_str()))
                    .first_match(&FoldedText::new(&text));
                let value = values[first.unwrap_or(value)].clone();
                let m = Match { column: column.name.clone(), kind, value, text };
                match kind {
                    FilterKind::Include => Reason::Included(m),
                    FilterKind::Exclude => Reason::Excluded(m),
                }
            }
        };
        Ok(Explanation { table: table.to_string(), verdict, reason })
    }

    /// Number of filter values (include and exclude) on `table`.
    pub fn filter_count(&self, table: TableId) -> usize {
        self.tables
            .get(usize::from(table.0))
            .map_or(0, |m| m.columns.iter().map(|c| c.include_values.len() + c.exclude_values.len()).sum())
    }

    /// No table has filters.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|m| m.columns.is_empty())
    }
}

/// The compiled `values`, None if there are none.
fn compile_list(values: &[FilterValue]) -> Option<Box<CompiledList>> {
    let list = CompiledList::new(values.iter().map(|v| v.text.as_str()));
    (!list.is_empty()).then(|| Box::new(list))
}

/// The filter semantics, shared by `judge` and `explain` so that they cannot disagree.
fn decide(matcher: &TableMatcher, values: &[Value]) -> Decision {
    let mut included: Option<Decision> = None;
    for (position, column) in matcher.columns.iter().enumerate() {
        let value = values.get(column.index).unwrap_or(&Value::Null);
        let decision = with_text(value, |text| {
            with_folded(text, |text| {
                // One folded text for both lists of the column.
                if let Some(value) = column.exclude.as_ref().and_then(|list| list.find(text)) {
                    return Some(Decision::Matched { column: position, kind: FilterKind::Exclude, value });
                }
                if included.is_none()
                    && let Some(value) = column.include.as_ref().and_then(|list| list.find(text))
                {
                    included = Some(Decision::Matched { column: position, kind: FilterKind::Include, value });
                }
                None
            })
        });
        if let Some(excluded) = decision {
            return excluded;
        }
    }
    match included {
        Some(decision) => decision,
        None if matcher.has_include => Decision::NoIncludeMatched,
        None => Decision::NotExcluded,
    }
}

/// Calls `f` with `text` folded as the compiled lists take it: each character replaced by its
/// Unicode lower case. ASCII text (nearly all) is lowered into a stack buffer, or past 256 bytes
/// into the thread's reused one; other text is folded into a new string (one allocation).
fn with_folded<R>(text: &str, f: impl FnOnce(Folded<'_>) -> R) -> R {
    let bytes = text.as_bytes();
    if bytes.len() <= STACK_TEXT {
        let mut buffer = [0u8; STACK_TEXT];
        let lowered = &mut buffer[..bytes.len()];
        if glob::lower_ascii(bytes, lowered) {
            return f(Folded::Ascii(lowered));
        }
    } else if text.is_ascii() {
        return LONG_LOWERED.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.resize(bytes.len(), 0);
                glob::lower_ascii(bytes, &mut buffer);
                f(Folded::Ascii(&buffer))
            }
            // Only if `f` judged another event from inside: not done, but not worth a panic.
            Err(_) => f(Folded::Ascii(text.to_ascii_lowercase().as_bytes())),
        });
    }
    f(Folded::Unicode(&glob::fold(text)))
}

/// Texts up to this many bytes (most paths and command lines) are lowered on the stack.
const STACK_TEXT: usize = 256;

thread_local! {
    /// The lower case of an ASCII text longer than `STACK_TEXT`: reused, so that judging long
    /// command lines allocates nothing either.
    static LONG_LOWERED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the text a value is matched as: its decimal text for numbers, "" for NULL.
/// Integers are formatted on the stack.
fn with_text<R>(value: &Value, f: impl FnOnce(&str) -> R) -> R {
    match value {
        Value::Null => f(""),
        Value::Text(text) => f(text),
        Value::Integer(n) => {
            let mut buffer = StackText::default();
            // An i64 has at most 20 characters, which the buffer holds.
            let _ = write!(buffer, "{n}");
            f(buffer.as_str())
        }
        Value::Double(d) => f(&d.to_string()),
    }
}

/// A small `fmt::Write` target on the stack, for integer text.
#[derive(Default)]
struct StackText {
    bytes: [u8; 24],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever written in.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn filterable_column(table: &Table, column: &str) -> Result<usize, FilterError> {
    let index = table.column_index(column).ok_or_else(|| FilterError::UnknownColumn {
        table: table.name.clone(),
        column: column.to_string(),
        known: column_names(table),
    })?;
    if !table.is_filterable(column) {
        return Err(FilterError::NotFilterable {
            table: table.name.clone(),
            column: column.to_string(),
            filterable: table.filterable.join(", "),
        });
    }
    Ok(index)
}

fn unknown_table(table: &str) -> FilterError {
    let accepted: Vec<&str> =
        catalog().tables().iter().filter(|t| !t.filterable.is_empty()).map(|t| t.name.as_str()).collect();
    FilterError::UnknownTable { table: table.to_string(), accepted: accepted.join(", ") }
}

fn column_names(table: &Table) -> String {
    table.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
}
