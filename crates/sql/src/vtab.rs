//! The `watchpost` SQLite virtual-table module: planning (which constraints reach a table and
//! what a plan costs), the per-statement row cache, and the cursor that hands rows to SQLite.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::types::ValueRef;
use rusqlite::vtab::{
    Context, CreateVTab, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConnection, VTabCursor,
    VTabKind, sqlite3_vtab, sqlite3_vtab_cursor,
};
use rusqlite::{Connection, Error};
use watchpost_catalog::{
    ColumnOptions, Constraint, GenerateError, Op, QueryContext, Row, Table, TableSource, Value,
};

use crate::SqlError;

pub(crate) const MODULE_NAME: &str = "watchpost";

/// What every virtual table of one host shares: the tables, the source, and the state of the
/// statement being run.
pub(crate) struct Shared {
    source: Arc<dyn TableSource>,
    tables: HashMap<String, Arc<Table>>,
    statement: Mutex<StatementScope>,
}

/// Lives for one statement; reset before each statement is prepared.
#[derive(Default)]
struct StatementScope {
    /// Rows already generated, by table and pushed constraints.
    rows: HashMap<RowsKey, Arc<Vec<Row>>>,
    /// Per table, the columns any scan of it in this statement reads (SQLite's `colUsed`).
    columns_used: HashMap<String, Vec<bool>>,
    /// The first table failure, kept typed for the caller (SQLite only carries text).
    failure: Option<(String, GenerateError)>,
}

/// `(table, [(column, op code, expr)])`.
type RowsKey = (String, Vec<(String, u32, String)>);

impl Shared {
    pub(crate) fn new(tables: Vec<Table>, source: Arc<dyn TableSource>) -> Result<Shared, SqlError> {
        let mut by_name = HashMap::with_capacity(tables.len());
        for table in tables {
            let name = table.name.clone();
            if by_name.insert(name.clone(), Arc::new(table)).is_some() {
                return Err(SqlError::Register { table: name, reason: "the table is listed twice".into() });
            }
        }
        Ok(Shared { source, tables: by_name, statement: Mutex::default() })
    }

    pub(crate) fn table(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    pub(crate) fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().cloned().collect();
        names.sort();
        names
    }

    pub(crate) fn begin_statement(&self) {
        *self.scope() = StatementScope::default();
    }

    pub(crate) fn take_failure(&self) -> Option<(String, GenerateError)> {
        self.scope().failure.take()
    }

    fn scope(&self) -> MutexGuard<'_, StatementScope> {
        // A panic elsewhere cannot leave the scope half-updated in a way that matters: at worst
        // a cache entry is missing.
        self.statement.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn note_columns_used(&self, table: &Table, col_used: u64) {
        let mut scope = self.scope();
        let used =
            scope.columns_used.entry(table.name.clone()).or_insert_with(|| vec![false; table.columns.len()]);
        for (i, slot) in used.iter_mut().enumerate() {
            // Bit 63 stands for column 63 and every column after it.
            let bit = i.min(63);
            if col_used & (1u64 << bit) != 0 {
                *slot = true;
            }
        }
    }

    fn columns_used(&self, table: &Table) -> Option<Vec<String>> {
        let scope = self.scope();
        let used = scope.columns_used.get(&table.name)?;
        Some(table.columns.iter().zip(used).filter(|(_, used)| **used).map(|(c, _)| c.name.clone()).collect())
    }

    /// The rows of `table` for `constraints`, generated at most once per statement.
    fn rows(&self, table: &Table, constraints: Vec<Constraint>) -> Result<Arc<Vec<Row>>, Error> {
        let key: RowsKey = (
            table.name.clone(),
            constraints.iter().map(|c| (c.column.clone(), c.op.code(), c.expr.clone())).collect(),
        );
        if let Some(rows) = self.scope().rows.get(&key) {
            return Ok(Arc::clone(rows));
        }
        let context = QueryContext { constraints, columns_used: self.columns_used(table) };
        match self.source.generate(table, &context) {
            Ok(rows) => {
                let rows = Arc::new(rows);
                self.scope().rows.insert(key, Arc::clone(&rows));
                Ok(rows)
            }
            Err(error) => {
                let message = format!("table {}: {error}", table.name);
                let mut scope = self.scope();
                if scope.failure.is_none() {
                    scope.failure = Some((table.name.clone(), error));
                }
                Err(Error::ModuleError(message))
            }
        }
    }
}

pub(crate) fn register_module(connection: &Connection, shared: Arc<Shared>) -> rusqlite::Result<()> {
    const MODULE: Module<'static, WatchpostTable> = Module::read_only_module();
    connection.create_module(MODULE_NAME, &MODULE, Some(shared))
}

/// Estimated rows of a scan that pushes nothing down.
const FULL_SCAN_ROWS: f64 = 1_000_000.0;

/// How much a pushed constraint narrows a scan, for the planner only: it makes SQLite prefer
/// plans that hand the table `eid =`, `consumer =` and `time` constraints.
fn narrowing(column: &str, options: ColumnOptions, op: Op) -> f64 {
    match (column, op) {
        ("eid", Op::Eq) => FULL_SCAN_ROWS,
        ("consumer", Op::Eq) => 10_000.0,
        ("time", Op::Eq) => 1_000.0,
        ("time", _) => 10.0,
        (_, Op::Eq) if options.contains(ColumnOptions::INDEX) => 1_000.0,
        _ => 2.0,
    }
}

fn pushed_op(op: &IndexConstraintOp) -> Option<Op> {
    Some(match op {
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ => Op::Eq,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GT => Op::Gt,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GE => Op::Ge,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LT => Op::Lt,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LE => Op::Le,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LIKE => Op::Like,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GLOB => Op::Glob,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_REGEXP => Op::Regexp,
        IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_MATCH => Op::Match,
        _ => return None,
    })
}

/// The plan travels from `best_index` to `filter` as idxStr: `column:opcode` per argv slot,
/// comma-separated.
fn encode_plan(pushed: &[(usize, Op)]) -> String {
    pushed.iter().map(|(column, op)| format!("{column}:{}", op.code())).collect::<Vec<_>>().join(",")
}

fn decode_plan(plan: &str) -> Result<Vec<(usize, Op)>, Error> {
    let bad = || Error::ModuleError(format!("internal error: bad plan {plan:?}"));
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    plan.split(',')
        .map(|item| {
            let (column, op) = item.split_once(':').ok_or_else(bad)?;
            let column = column.parse().map_err(|_| bad())?;
            let op = op.parse().ok().and_then(Op::from_code).ok_or_else(bad)?;
            Ok((column, op))
        })
        .collect()
}

/// The text of a constraint's right-hand side; `None` for NULL, which no constraint matches
/// (SQLite's re-check then drops every row), so there is nothing to push down.
fn constraint_text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
    }
}

#[repr(C)]
struct WatchpostTable {
    /// Must be first: SQLite sees this struct as its `sqlite3_vtab`.
    base: sqlite3_vtab,
    shared: Arc<Shared>,
    table: Arc<Table>,
}

// SAFETY: `WatchpostTable` is `#[repr(C)]` with `sqlite3_vtab` as its first field.
unsafe impl<'vtab> VTab<'vtab> for WatchpostTable {
    type Aux = Arc<Shared>;
    type Cursor = WatchpostCursor;

    fn connect(
        _db: &mut VTabConnection,
        aux: Option<&Arc<Shared>>,
        _module_name: &[u8],
        _database_name: &[u8],
        table_name: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(std::borrow::Cow<'static, CStr>, Self)> {
        let shared =
            aux.ok_or_else(|| Error::ModuleError("watchpost module registered without tables".into()))?;
        let name = String::from_utf8_lossy(table_name);
        let table = shared
            .table(&name)
            .map(Arc::clone)
            .ok_or_else(|| Error::ModuleError(format!("{name} is not a catalog table this host serves")))?;
        let ddl = CString::new(table.ddl())
            .map_err(|_| Error::ModuleError(format!("table {name}: DDL contains a NUL byte")))?;
        Ok((ddl.into(), WatchpostTable { base: sqlite3_vtab::default(), shared: Arc::clone(shared), table }))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let mut pushed: Vec<(usize, Op)> = Vec::new();
        let mut rows = FULL_SCAN_ROWS;
        for (constraint, mut usage) in info.constraints_and_usages() {
            if !constraint.is_usable() {
                continue;
            }
            // Negative: a constraint on the rowid, which means nothing to a table.
            let Ok(index) = usize::try_from(constraint.column()) else { continue };
            let Some(column) = self.table.columns.get(index) else { continue };
            if !column.options.is_pushed_down() {
                continue;
            }
            let Some(op) = pushed_op(&constraint.operator()) else { continue };
            pushed.push((index, op));
            // Never `omit`: SQLite re-checks every constraint, so a source may ignore any.
            usage.set_argv_index(c_int::try_from(pushed.len()).unwrap_or(c_int::MAX));
            rows /= narrowing(&column.name, column.options, op);
        }
        let required_missing = self.table.columns.iter().enumerate().any(|(i, c)| {
            c.options.contains(ColumnOptions::REQUIRED)
                && !pushed.iter().any(|(p, op)| *p == i && *op == Op::Eq)
        });
        // As osquery does: a plan lacking a required constraint is possible but never preferred.
        let cost = if required_missing { 1e12 } else { rows.max(1.0) };
        info.set_idx_str(&encode_plan(&pushed));
        info.set_estimated_cost(cost);
        info.set_estimated_rows(cost as i64);
        self.shared.note_columns_used(&self.table, info.col_used());
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<WatchpostCursor> {
        Ok(WatchpostCursor {
            base: sqlite3_vtab_cursor::default(),
            shared: Arc::clone(&self.shared),
            table: Arc::clone(&self.table),
            rows: Arc::default(),
            position: 0,
        })
    }
}

impl CreateVTab<'_> for WatchpostTable {
    const KIND: VTabKind = VTabKind::Default;
}

#[repr(C)]
struct WatchpostCursor {
    /// Must be first: SQLite sees this struct as its `sqlite3_vtab_cursor`.
    base: sqlite3_vtab_cursor,
    shared: Arc<Shared>,
    table: Arc<Table>,
    rows: Arc<Vec<Row>>,
    position: usize,
}

// SAFETY: `WatchpostCursor` is `#[repr(C)]` with `sqlite3_vtab_cursor` as its first field.
unsafe impl VTabCursor for WatchpostCursor {
    fn filter(&mut self, _idx_num: c_int, idx_str: Option<&str>, args: &Filters<'_>) -> rusqlite::Result<()> {
        let plan = decode_plan(idx_str.unwrap_or_default())?;
        let mut constraints = Vec::with_capacity(plan.len());
        for ((column, op), value) in plan.into_iter().zip(args.iter()) {
            let Some(expr) = constraint_text(value) else { continue };
            let Some(column) = self.table.columns.get(column) else { continue };
            constraints.push(Constraint { column: column.name.clone(), op, expr });
        }
        self.rows = self.shared.rows(&self.table, constraints)?;
        self.position = 0;
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.position += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.position >= self.rows.len()
    }

    fn column(&self, context: &mut Context, column: c_int) -> rusqlite::Result<()> {
        let value = usize::try_from(column)
            .ok()
            .and_then(|column| self.rows.get(self.position)?.get(column))
            .unwrap_or(&Value::Null);
        match value {
            Value::Null => context.set_result(rusqlite::types::Null),
            Value::Integer(i) => context.set_result(i),
            Value::Double(f) => context.set_result(f),
            Value::Text(s) => context.set_result(s.as_str()),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(i64::try_from(self.position).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_survive_the_trip_through_idx_str() {
        let plan = vec![(3, Op::Eq), (12, Op::Regexp), (0, Op::Like)];
        assert_eq!(decode_plan(&encode_plan(&plan)).unwrap(), plan);
        assert_eq!(decode_plan("").unwrap(), vec![]);
        assert!(decode_plan("3:999").is_err());
        assert!(decode_plan("x").is_err());
    }
}
