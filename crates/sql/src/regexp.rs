//! The `regexp(pattern, text)` SQL function behind `text REGEXP pattern`, which SQLite leaves
//! to the application. Patterns use the `regex` crate's syntax (as osquery's RE2-like one does).

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Error};

/// Compiled patterns kept at most; past that the cache starts over. Queries use a handful of
/// patterns, but one built from column values could otherwise grow without bound.
const MAX_CACHED_PATTERNS: usize = 256;

pub(crate) fn register(connection: &Connection) -> rusqlite::Result<()> {
    // SQLite calls the function only from the connection's thread, one call at a time.
    let compiled: RefCell<HashMap<String, Regex>> = RefCell::default();
    connection.create_scalar_function(
        "regexp",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |context| {
            let (Some(pattern), Some(text)) = (as_text(context.get_raw(0)), as_text(context.get_raw(1)))
            else {
                return Ok(None);
            };
            let mut compiled = compiled.borrow_mut();
            if !compiled.contains_key(pattern.as_ref()) {
                let regex = Regex::new(&pattern).map_err(|e| Error::UserFunctionError(Box::new(e)))?;
                if compiled.len() >= MAX_CACHED_PATTERNS {
                    compiled.clear();
                }
                compiled.insert(pattern.to_string(), regex);
            }
            let is_match = compiled.get(pattern.as_ref()).is_some_and(|regex| regex.is_match(&text));
            Ok(Some(is_match))
        },
    )
}

/// Numbers match as their decimal text, as SQLite's own string functions treat them.
fn as_text(value: ValueRef<'_>) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into()),
        ValueRef::Real(f) => Some(f.to_string().into()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Some(String::from_utf8_lossy(bytes)),
    }
}
