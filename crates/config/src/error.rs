//! Config errors: each names the source, the line and column, and what to fix.

use std::fmt;

use crate::position::LineIndex;

/// One problem in a config. `line` and `column` are 1-based; both are 0 when the problem has no
/// position (an unreadable file), and then `Display` leaves them out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.source, self.line, self.column, self.message)
        }
    }
}

/// Every problem found in a config (never empty when returned as an error), in source order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

// Not derived with thiserror: it would take the `source` field for the error's cause.
impl std::error::Error for ConfigError {}

impl std::error::Error for ConfigErrors {}

/// Collects the errors of one source text.
pub(crate) struct Reporter<'a> {
    source: &'a str,
    index: LineIndex<'a>,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(source: &'a str, text: &'a str) -> Reporter<'a> {
        Reporter { source, index: LineIndex::new(text), errors: Vec::new() }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        self.index.position(offset)
    }

    /// Records a problem at byte `offset` of the source text.
    pub(crate) fn error(&mut self, offset: usize, message: impl Into<String>) {
        let (line, column) = self.index.position(offset);
        self.errors.push(ConfigError {
            source: self.source.to_string(),
            line,
            column,
            message: message.into(),
        });
    }
}
