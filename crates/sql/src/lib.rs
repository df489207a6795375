//! watchpost's own SQL front end, used by `watchpost query`, `watchpost shell` and the local
//! query socket.
//!
//! It works the way osquery itself does: an in-memory SQLite database in which every catalog
//! table is a virtual table (module `watchpost`) whose rows come from a
//! [`TableSource`](watchpost_catalog::TableSource). The constraints SQLite can hand to a table
//! (on columns marked INDEX, REQUIRED or ADDITIONAL) reach the source as a
//! [`QueryContext`](watchpost_catalog::QueryContext); SQLite re-checks every one of them, so a
//! source may ignore any it does not use. Joins, aggregates and subqueries are plain SQLite.
//!
//! Rules a caller should know:
//! - One [`SqlHost`] owns one SQLite connection: it is `Send` but not `Sync`. Give each thread
//!   its own host (they are cheap: an in-memory database and one module).
//! - Only read-only statements run (`SELECT`, `EXPLAIN`, read-only `PRAGMA`s); `ATTACH` is
//!   disabled, so nothing a query says can touch a file.
//! - A string holding several statements runs them all, in order, and returns the last one's
//!   result set.
//! - Within one statement a table is generated once per distinct set of pushed constraints,
//!   however often SQLite rescans it (joins, subqueries, `IN` lists): reads with side effects
//!   (a `consumer = 'x'` cursor read, drain mode) happen once per statement.
//! - `x REGEXP 'pattern'` works (Rust `regex` syntax), as in osquery.
//! - Because SQLite re-checks constraints, a source's rows must satisfy the ones it acts on:
//!   a `consumer = 'x'` read must echo `x` into the hidden `consumer` column.

mod regexp;
mod vtab;

use std::sync::Arc;

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, Statement};
use watchpost_catalog::{GenerateError, Table, TableSource, Value};

use crate::vtab::Shared;

/// The rows a query returned, with the column names SQLite gave them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// SQLite rejected or failed the statement; the text is SQLite's own message, e.g.
    /// `no such table: foo` or `near "SELEC": syntax error`.
    #[error("{message}")]
    Sql { message: String },
    /// A table could not produce its rows.
    #[error("table {table}: {source}")]
    Table {
        table: String,
        #[source]
        source: GenerateError,
    },
    /// The statement would change the database; only queries are served.
    #[error("only read-only statements (SELECT) are allowed, not: {statement}")]
    NotReadOnly { statement: String },
    /// The SQL text held no statement (empty, or only comments).
    #[error("no SQL statement given")]
    NoStatement,
    /// The host could not be set up: two tables share a name, or SQLite refused a table's DDL.
    #[error("cannot register table {table}: {reason}")]
    Register { table: String, reason: String },
}

/// An SQLite connection with the catalog tables registered as virtual tables. `Send`, not `Sync`:
/// use one host per thread.
pub struct SqlHost {
    connection: Connection,
    shared: Arc<Shared>,
}

// Callers move hosts into worker threads; keep that possible.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<SqlHost>();
};

impl SqlHost {
    /// Registers every table in `tables` (catalog tables for this platform, including
    /// `watchpost_status`), each as `temp."name"`, declared with [`Table::ddl`].
    pub fn new(tables: Vec<Table>, source: Arc<dyn TableSource>) -> Result<SqlHost, SqlError> {
        let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
        let shared = Arc::new(Shared::new(tables, source)?);
        let setup_error = |table: &str, e: rusqlite::Error| SqlError::Register {
            table: table.to_string(),
            reason: e.to_string(),
        };
        let connection = Connection::open_in_memory().map_err(|e| setup_error("(connection)", e))?;
        // ATTACH would let a query create or read database files.
        connection.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0).map_err(|e| setup_error("(connection)", e))?;
        regexp::register(&connection).map_err(|e| setup_error("(regexp function)", e))?;
        vtab::register_module(&connection, Arc::clone(&shared)).map_err(|e| setup_error("(module)", e))?;
        for name in &names {
            let ddl = format!(
                "CREATE VIRTUAL TABLE temp.\"{}\" USING {}",
                rusqlite::vtab::escape_double_quote(name),
                vtab::MODULE_NAME
            );
            connection.execute_batch(&ddl).map_err(|e| setup_error(name, e))?;
        }
        Ok(SqlHost { connection, shared })
    }

    /// Runs `sql` and returns its rows. Several statements run in order; the last one's rows
    /// are returned.
    pub fn query(&self, sql: &str) -> Result<ResultSet, SqlError> {
        let result = self.run_batch(sql);
        // Cached rows may be large; keep them only while a statement runs.
        self.shared.begin_statement();
        result
    }

    /// Names of the registered tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        self.shared.table_names()
    }

    /// The `CREATE TABLE` text of `table`, as declared to SQLite.
    pub fn schema(&self, table: &str) -> Option<String> {
        self.shared.table(table).map(|t| t.ddl())
    }

    fn run_batch(&self, sql: &str) -> Result<ResultSet, SqlError> {
        let mut batch = Batch::new(&self.connection, sql);
        let mut last = None;
        loop {
            // Before preparing: planning records which columns each table's scans use.
            self.shared.begin_statement();
            let statement = match batch.next() {
                Ok(Some(statement)) => statement,
                Ok(None) => break,
                Err(e) => return Err(self.sql_error(e)),
            };
            if !statement.readonly() {
                let statement = statement.expanded_sql().unwrap_or_else(|| sql.trim().to_string());
                return Err(SqlError::NotReadOnly { statement });
            }
            last = Some(self.run_statement(statement)?);
        }
        last.ok_or(SqlError::NoStatement)
    }

    fn run_statement(&self, mut statement: Statement<'_>) -> Result<ResultSet, SqlError> {
        let columns: Vec<String> = statement.column_names().map(str::to_string).collect();
        let width = columns.len();
        let mut rows = Vec::new();
        let mut cursor = statement.raw_query();
        loop {
            let row = match cursor.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => return Err(self.sql_error(e)),
            };
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                let value = row.get_ref(i).map_err(|e| self.sql_error(e))?;
                values.push(to_value(value));
            }
            rows.push(values);
        }
        Ok(ResultSet { columns, rows })
    }

    /// A table's own failure wins over the generic message SQLite wraps it in.
    fn sql_error(&self, error: rusqlite::Error) -> SqlError {
        if let Some((table, source)) = self.shared.take_failure() {
            return SqlError::Table { table, source };
        }
        let message = match error {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            // Its Display appends the whole SQL text; the caller has that already.
            rusqlite::Error::SqlInputError { msg, .. } => msg,
            other => other.to_string(),
        };
        SqlError::Sql { message }
    }
}

/// Blobs cannot come from catalog tables; one made by an expression (`x'00'`) is shown as text.
fn to_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Double(f),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            Value::Text(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}
