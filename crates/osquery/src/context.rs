//! The query context osquery core sends with `generate` (`TablePlugin::setRequestFromContext`
//! in osquery/core/tables.cpp), parsed into the catalog's [`QueryContext`].

use serde_json::Value as Json;
use watchpost_catalog::{Constraint, Op, QueryContext};

/// Parses the `context` JSON of a `generate` request.
///
/// Modern shape: `{"constraints":[{"name":"pid","list":[{"op":2,"expr":"1"}],
/// "affinity":"INTEGER"}],"colsUsed":["pid"],"colsUsedBitset":1}`. Before osquery 3.0 the
/// operator was a string (`"op":"2"`) and an empty list was `""`. An empty text is an empty
/// context. Operators this crate does not know are skipped (SQLite re-checks every
/// constraint, so skipping only costs work); anything else malformed is an error.
pub fn parse_context(json: &str) -> Result<QueryContext, String> {
    if json.trim().is_empty() {
        return Ok(QueryContext::default());
    }
    let doc: Json = serde_json::from_str(json).map_err(|e| format!("query context is not JSON: {e}"))?;
    let Json::Object(doc) = doc else {
        return Err(format!("query context must be a JSON object, got {}", kind(&doc)));
    };
    let mut context = QueryContext::default();
    match doc.get("constraints") {
        None | Some(Json::Null) => {}
        Some(Json::Array(entries)) => {
            for (index, entry) in entries.iter().enumerate() {
                parse_column_constraints(entry, &mut context.constraints)
                    .map_err(|e| format!("query context: constraints[{index}]: {e}"))?;
            }
        }
        Some(other) => {
            return Err(format!("query context: \"constraints\" must be an array, got {}", kind(other)));
        }
    }
    match doc.get("colsUsed") {
        None | Some(Json::Null) => {}
        Some(Json::Array(names)) => {
            let names = names
                .iter()
                .map(|name| {
                    name.as_str().map(str::to_string).ok_or_else(|| {
                        format!("query context: \"colsUsed\" holds {}, not a name", kind(name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            context.columns_used = Some(names);
        }
        Some(other) => {
            return Err(format!("query context: \"colsUsed\" must be an array, got {}", kind(other)));
        }
    }
    Ok(context)
}

/// One `{"name":..,"list":[..],"affinity":..}` entry.
fn parse_column_constraints(entry: &Json, out: &mut Vec<Constraint>) -> Result<(), String> {
    let Json::Object(entry) = entry else {
        return Err(format!("expected an object, got {}", kind(entry)));
    };
    let column = match entry.get("name") {
        Some(Json::String(name)) if !name.is_empty() => name.clone(),
        Some(other) => return Err(format!("\"name\" must be a column name, got {}", kind(other))),
        None => return Err("missing \"name\"".to_string()),
    };
    let list = match entry.get("list") {
        None | Some(Json::Null) => return Ok(()),
        // pre-3.0 cores wrote an empty list as "".
        Some(Json::String(text)) if text.is_empty() => return Ok(()),
        Some(Json::Array(list)) => list,
        Some(other) => {
            return Err(format!("{column}: \"list\" must be an array, got {}", kind(other)));
        }
    };
    for (index, item) in list.iter().enumerate() {
        let Json::Object(item) = item else {
            return Err(format!("{column}: list[{index}] must be an object, got {}", kind(item)));
        };
        let code = match item.get("op") {
            Some(Json::Number(n)) => n.as_u64(),
            Some(Json::String(text)) => text.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "{column}: list[{index}].op must be an operator code, got {}",
                item.get("op").map_or("nothing".to_string(), describe)
            )
        })?;
        let expr = match item.get("expr") {
            Some(Json::String(text)) => text.clone(),
            Some(Json::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(format!("{column}: list[{index}].expr must be text, got {}", kind(other)));
            }
            None => return Err(format!("{column}: list[{index}] has no \"expr\"")),
        };
        match u32::try_from(code).ok().and_then(Op::from_code) {
            Some(op) => out.push(Constraint { column: column.clone(), op, expr }),
            None => log::debug!("query context: skipping unknown operator {code} on {column}"),
        }
    }
    Ok(())
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn describe(value: &Json) -> String {
    let text = value.to_string();
    if text.len() > 40 { format!("{}…", &text[..text.floor_char_boundary(40)]) } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint(column: &str, op: Op, expr: &str) -> Constraint {
        Constraint { column: column.to_string(), op, expr: expr.to_string() }
    }

    #[test]
    fn modern_context_as_osquery_5_sends_it() {
        let json = r#"{"colsUsed":["cmdline","pid"],"colsUsedBitset":5,"constraints":[
            {"name":"cmdline","list":[],"affinity":"TEXT"},
            {"name":"pid","list":[{"op":2,"expr":"1"},{"op":32,"expr":"100"}],"affinity":"INTEGER"}]}"#;
        let context = parse_context(json).unwrap();
        assert_eq!(
            context.constraints,
            vec![constraint("pid", Op::Eq, "1"), constraint("pid", Op::Ge, "100")]
        );
        assert_eq!(context.columns_used, Some(vec!["cmdline".to_string(), "pid".to_string()]));
        assert_eq!(context.equals("pid").collect::<Vec<_>>(), vec!["1"]);
    }

    #[test]
    fn legacy_context_with_string_ops_and_empty_lists_as_text() {
        let json = r#"{"constraints":[{"name":"path","list":"","affinity":"TEXT"},
            {"name":"time","list":[{"op":"16","expr":"1700000000"},{"op":"65","expr":"a%"}],"affinity":"BIGINT"}]}"#;
        let context = parse_context(json).unwrap();
        assert_eq!(
            context.constraints,
            vec![constraint("time", Op::Lt, "1700000000"), constraint("time", Op::Like, "a%")]
        );
        assert_eq!(context.columns_used, None);
    }

    #[test]
    fn empty_text_and_empty_object_mean_no_constraints() {
        assert_eq!(parse_context("").unwrap(), QueryContext::default());
        assert_eq!(parse_context("{}").unwrap(), QueryContext::default());
    }

    #[test]
    fn unknown_operators_are_skipped_not_fatal() {
        let json = r#"{"constraints":[{"name":"pid","list":[{"op":72,"expr":"1"},{"op":4,"expr":"9"}]}]}"#;
        assert_eq!(parse_context(json).unwrap().constraints, vec![constraint("pid", Op::Gt, "9")]);
    }

    #[test]
    fn garbage_is_an_error_that_says_what_is_wrong() {
        let cases = [
            ("garbage", "not JSON"),
            ("[1,2]", "must be a JSON object, got an array"),
            (r#"{"constraints":{}}"#, "\"constraints\" must be an array"),
            (r#"{"constraints":[{"list":[]}]}"#, "constraints[0]: missing \"name\""),
            (
                r#"{"constraints":[{"name":"pid","list":[{"op":"eq","expr":"1"}]}]}"#,
                "pid: list[0].op must be an operator code, got \"eq\"",
            ),
            (r#"{"constraints":[{"name":"pid","list":[{"op":2}]}]}"#, "pid: list[0] has no \"expr\""),
            (r#"{"constraints":[],"colsUsed":[3]}"#, "\"colsUsed\" holds a number"),
        ];
        for (json, expected) in cases {
            let error = parse_context(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error:?} lacks {expected:?}");
        }
    }
}
