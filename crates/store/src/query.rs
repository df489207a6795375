//! What a read asks for, and how pushed-down query constraints map to it.

use std::ops::Bound;

use watchpost_catalog::{Eid, GenerateError, Op, QueryContext, ReadMode};

/// What [`crate::Store::read`] returns: the events of one table that satisfy every field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadQuery {
    /// Capture time bounds (unix seconds), answered from the time index.
    pub time_lower: Bound<i64>,
    pub time_upper: Bound<i64>,
    /// `eid = X` / `eid IN (...)`: exact lookups. `Some(vec![])` matches nothing.
    pub eids: Option<Vec<Eid>>,
    /// Read as this consumer: only events it has not read yet, then advance its cursor.
    pub consumer: Option<String>,
    pub mode: ReadMode,
    /// Unix seconds; events with `time < now - events_expiry` are never returned.
    pub now: i64,
    /// Return at most this many events (the oldest ones).
    pub limit: Option<usize>,
}

impl ReadQuery {
    /// Every unexpired event of the table, retained.
    pub fn all(now: i64) -> ReadQuery {
        ReadQuery {
            time_lower: Bound::Unbounded,
            time_upper: Bound::Unbounded,
            eids: None,
            consumer: None,
            mode: ReadMode::Retain,
            now,
            limit: None,
        }
    }

    /// Maps the constraints a query pushes down: `time` (`=`, `>`, `>=`, `<`, `<=` with integer
    /// text), `eid` (`=`; text that is not an event id matches nothing) and `consumer` (`=`).
    /// Several constraints on one column intersect; two different consumers in one query are an
    /// error, since a read advances exactly one cursor. Other constraints are left to the SQL
    /// engine, which re-checks every constraint anyway.
    pub fn from_context(
        context: &QueryContext,
        now: i64,
        mode: ReadMode,
    ) -> Result<ReadQuery, GenerateError> {
        let mut query = ReadQuery { mode, ..ReadQuery::all(now) };
        for constraint in context.on("time") {
            if !matches!(constraint.op, Op::Eq | Op::Gt | Op::Ge | Op::Lt | Op::Le) {
                continue;
            }
            let Some((floor, ceil)) = whole_seconds(&constraint.expr) else {
                return Err(GenerateError::BadConstraint {
                    column: "time".to_string(),
                    reason: format!("{:?} is not a number (time is in unix seconds)", constraint.expr),
                });
            };
            // A fractional bound widens to the whole seconds around it; SQLite re-checks the
            // exact comparison on every row.
            let value = if matches!(constraint.op, Op::Gt | Op::Ge) { floor } else { ceil };
            if floor != ceil && constraint.op == Op::Eq {
                query.time_lower = tighter_lower(query.time_lower, Bound::Included(floor));
                query.time_upper = tighter_upper(query.time_upper, Bound::Included(ceil));
                continue;
            }
            let (lower, upper) = match constraint.op {
                Op::Eq => (Bound::Included(value), Bound::Included(value)),
                Op::Gt => (Bound::Excluded(value), Bound::Unbounded),
                Op::Ge => (Bound::Included(value), Bound::Unbounded),
                Op::Lt => (Bound::Unbounded, Bound::Excluded(value)),
                _ => (Bound::Unbounded, Bound::Included(value)),
            };
            query.time_lower = tighter_lower(query.time_lower, lower);
            query.time_upper = tighter_upper(query.time_upper, upper);
        }
        for text in context.equals("eid") {
            let wanted: Vec<Eid> = text.trim().parse::<Eid>().ok().into_iter().collect();
            query.eids = Some(match query.eids.take() {
                None => wanted,
                Some(previous) => previous.into_iter().filter(|eid| wanted.contains(eid)).collect(),
            });
        }
        for name in context.equals("consumer") {
            match &query.consumer {
                Some(previous) if previous != name => {
                    return Err(GenerateError::BadConstraint {
                        column: "consumer".to_string(),
                        reason: format!("a query reads as one consumer, not both {previous:?} and {name:?}"),
                    });
                }
                _ => query.consumer = Some(name.to_string()),
            }
        }
        Ok(query)
    }

    /// The inclusive time window this query and the expiry cut leave, or `None` if empty.
    pub(crate) fn time_window(&self, expiry_cut: i64) -> Option<(i64, i64)> {
        let lower = match self.time_lower {
            Bound::Included(t) => t,
            Bound::Excluded(t) => t.checked_add(1)?,
            Bound::Unbounded => i64::MIN,
        };
        let upper = match self.time_upper {
            Bound::Included(t) => t,
            Bound::Excluded(t) => t.checked_sub(1)?,
            Bound::Unbounded => i64::MAX,
        };
        let lower = lower.max(expiry_cut);
        (lower <= upper).then_some((lower, upper))
    }

    pub(crate) fn has_time_bounds(&self) -> bool {
        !matches!((self.time_lower, self.time_upper), (Bound::Unbounded, Bound::Unbounded))
    }
}

/// Lower bounds as the first admitted value (one past `i64::MAX` for `Excluded(i64::MAX)`).
fn lower_rank(bound: Bound<i64>) -> i128 {
    match bound {
        Bound::Included(t) => i128::from(t),
        Bound::Excluded(t) => i128::from(t) + 1,
        Bound::Unbounded => i128::MIN,
    }
}

fn upper_rank(bound: Bound<i64>) -> i128 {
    match bound {
        Bound::Included(t) => i128::from(t),
        Bound::Excluded(t) => i128::from(t) - 1,
        Bound::Unbounded => i128::MAX,
    }
}

fn tighter_lower(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    if lower_rank(b) > lower_rank(a) { b } else { a }
}

fn tighter_upper(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    if upper_rank(b) < upper_rank(a) { b } else { a }
}

/// The whole seconds at or below and at or above a numeric constraint value: `(7, 7)` for
/// `7`, `(1, 2)` for `1.5`; `None` for text that is not a number.
fn whole_seconds(expr: &str) -> Option<(i64, i64)> {
    let expr = expr.trim();
    if let Ok(value) = expr.parse::<i64>() {
        return Some((value, value));
    }
    let value = expr.parse::<f64>().ok().filter(|v| v.is_finite())?;
    // `as` saturates at the i64 range, which is what a bound beyond it means.
    Some((value.floor() as i64, value.ceil() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use watchpost_catalog::Constraint;

    fn context(constraints: &[(&str, Op, &str)]) -> QueryContext {
        QueryContext {
            constraints: constraints
                .iter()
                .map(|(column, op, expr)| Constraint {
                    column: column.to_string(),
                    op: *op,
                    expr: expr.to_string(),
                })
                .collect(),
            columns_used: None,
        }
    }

    #[test]
    fn time_constraints_intersect() {
        let q = ReadQuery::from_context(
            &context(&[
                ("time", Op::Gt, "10"),
                ("time", Op::Ge, "12"),
                ("time", Op::Lt, "20"),
                ("time", Op::Le, "30"),
            ]),
            100,
            ReadMode::Drain,
        )
        .unwrap();
        assert_eq!(q.time_lower, Bound::Included(12));
        assert_eq!(q.time_upper, Bound::Excluded(20));
        assert_eq!(q.mode, ReadMode::Drain);
        assert_eq!(q.now, 100);
        assert_eq!(q.time_window(0), Some((12, 19)));
        assert_eq!(q.time_window(15), Some((15, 19)));
        assert_eq!(q.time_window(25), None);

        let eq = ReadQuery::from_context(
            &context(&[("time", Op::Eq, " 7 "), ("time", Op::Gt, "3")]),
            0,
            ReadMode::Retain,
        )
        .unwrap();
        assert_eq!((eq.time_lower, eq.time_upper), (Bound::Included(7), Bound::Included(7)));
    }

    #[test]
    fn fractional_times_widen_to_whole_seconds() {
        let gt =
            ReadQuery::from_context(&context(&[("time", Op::Gt, "1.5e1")]), 0, ReadMode::Retain).unwrap();
        assert_eq!(gt.time_lower, Bound::Excluded(15));
        let gt = ReadQuery::from_context(&context(&[("time", Op::Gt, "14.5")]), 0, ReadMode::Retain).unwrap();
        assert_eq!(gt.time_lower, Bound::Excluded(14));
        let le = ReadQuery::from_context(&context(&[("time", Op::Le, "14.5")]), 0, ReadMode::Retain).unwrap();
        assert_eq!(le.time_upper, Bound::Included(15));
        let eq = ReadQuery::from_context(&context(&[("time", Op::Eq, "14.5")]), 0, ReadMode::Retain).unwrap();
        assert_eq!((eq.time_lower, eq.time_upper), (Bound::Included(14), Bound::Included(15)));
    }

    #[test]
    fn a_non_integer_time_is_a_bad_constraint() {
        let err = ReadQuery::from_context(&context(&[("time", Op::Gt, "yesterday")]), 0, ReadMode::Retain)
            .unwrap_err();
        assert!(matches!(err, GenerateError::BadConstraint { ref column, .. } if column == "time"), "{err}");
        assert!(err.to_string().contains("yesterday"));
        // Operators the store does not push down are left to the SQL engine.
        let like =
            ReadQuery::from_context(&context(&[("time", Op::Like, "1%")]), 0, ReadMode::Retain).unwrap();
        assert_eq!(like, ReadQuery::all(0));
    }

    #[test]
    fn eid_and_consumer_constraints() {
        let a = "2334C7E0-16CF-486A-AF58-E40884ACFFFF";
        let q = ReadQuery::from_context(
            &context(&[("eid", Op::Eq, a), ("consumer", Op::Eq, "siem"), ("consumer", Op::Eq, "siem")]),
            0,
            ReadMode::Retain,
        )
        .unwrap();
        assert_eq!(q.eids, Some(vec![a.parse().unwrap()]));
        assert_eq!(q.consumer.as_deref(), Some("siem"));

        let garbage =
            ReadQuery::from_context(&context(&[("eid", Op::Eq, "nope")]), 0, ReadMode::Retain).unwrap();
        assert_eq!(garbage.eids, Some(vec![]));
        let disjoint = ReadQuery::from_context(
            &context(&[("eid", Op::Eq, a), ("eid", Op::Eq, "00000000-0000-0000-0000-000000000001")]),
            0,
            ReadMode::Retain,
        )
        .unwrap();
        assert_eq!(disjoint.eids, Some(vec![]));

        let two = ReadQuery::from_context(
            &context(&[("consumer", Op::Eq, "a"), ("consumer", Op::Eq, "b")]),
            0,
            ReadMode::Retain,
        );
        assert!(matches!(two, Err(GenerateError::BadConstraint { .. })));
    }
}
