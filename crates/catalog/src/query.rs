use serde::{Deserialize, Serialize};

use crate::table::Table;
use crate::value::Row;

/// osquery's `ConstraintOperator` (osquery/core/tables.h), with its wire codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Unique,
    Eq,
    Gt,
    Le,
    Lt,
    Ge,
    Match,
    Like,
    Glob,
    Regexp,
}

impl Op {
    pub fn from_code(code: u32) -> Option<Op> {
        Some(match code {
            1 => Op::Unique,
            2 => Op::Eq,
            4 => Op::Gt,
            8 => Op::Le,
            16 => Op::Lt,
            32 => Op::Ge,
            64 => Op::Match,
            65 => Op::Like,
            66 => Op::Glob,
            67 => Op::Regexp,
            _ => return None,
        })
    }

    pub fn code(self) -> u32 {
        match self {
            Op::Unique => 1,
            Op::Eq => 2,
            Op::Gt => 4,
            Op::Le => 8,
            Op::Lt => 16,
            Op::Ge => 32,
            Op::Match => 64,
            Op::Like => 65,
            Op::Glob => 66,
            Op::Regexp => 67,
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Op::Unique => "UNIQUE",
            Op::Eq => "=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Match => "MATCH",
            Op::Like => "LIKE",
            Op::Glob => "GLOB",
            Op::Regexp => "REGEXP",
        }
    }
}

/// One pushed-down constraint: `column op expr`, with `expr` as the text osquery sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub column: String,
    pub op: Op,
    pub expr: String,
}

/// What a query tells a table about the rows it wants. Tables may use the constraints to do
/// less work; the SQL engine re-checks every constraint on the rows returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryContext {
    pub constraints: Vec<Constraint>,
    /// Columns the query reads, when the caller knows (`None`: all).
    pub columns_used: Option<Vec<String>>,
}

impl QueryContext {
    /// Constraints on one column.
    pub fn on<'a>(&'a self, column: &'a str) -> impl Iterator<Item = &'a Constraint> + 'a {
        self.constraints.iter().filter(move |c| c.column == column)
    }

    /// The values of `column = value` constraints.
    pub fn equals<'a>(&'a self, column: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.on(column).filter(|c| c.op == Op::Eq).map(|c| c.expr.as_str())
    }
}

/// Why a table could not produce rows.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("no such table: {0}")]
    UnknownTable(String),
    #[error("bad constraint on {column}: {reason}")]
    BadConstraint { column: String, reason: String },
    #[error("table {table} is not available: {reason}")]
    Unavailable { table: String, reason: String },
    #[error("{0}")]
    Internal(String),
}

/// Anything that produces the rows of catalog tables: the agent's engine (store, snapshot
/// sensors, status), or a test double. Both the osquery extension and the SQL host call this.
pub trait TableSource: Send + Sync {
    fn generate(&self, table: &Table, context: &QueryContext) -> Result<Vec<Row>, GenerateError>;
}

/// How reads of evented tables treat the events they return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Events stay until they expire or are evicted: two queries see the same data.
    #[default]
    Retain,
    /// The original extension's behaviour: a read deletes the events it returns.
    Drain,
}
