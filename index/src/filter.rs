//! Search and delete filters: user scope, payload conditions, created-at range.
//!
//! A filter is a conjunction. Payload conditions address a field by a dotted path into the JSON
//! object (`"topic"`, `"source.app"`); a memory without the field does not match.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{IndexError, Result};
use crate::types::MemoryMeta;

/// A conjunction of conditions. `Filter::default()` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Only this user's memories (user-scope recall).
    pub user: Option<String>,
    pub conditions: Vec<Condition>,
    /// Inclusive lower bound on `created_at_ms`.
    pub created_after_ms: Option<i64>,
    /// Exclusive upper bound on `created_at_ms`.
    pub created_before_ms: Option<i64>,
}

/// One condition on a payload field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Equal to a scalar (string, number, bool). Numbers compare by value (1 == 1.0).
    Eq(Value),
    /// Numeric range, inclusive; `None` = open on that side.
    Range { gte: Option<f64>, lte: Option<f64> },
    /// Equal to one of these scalars.
    In(Vec<Value>),
}

impl Filter {
    pub fn user(user: impl Into<String>) -> Self {
        Filter {
            user: Some(user.into()),
            ..Filter::default()
        }
    }

    pub fn and(mut self, field: impl Into<String>, op: Op) -> Self {
        self.conditions.push(Condition {
            field: field.into(),
            op,
        });
        self
    }

    pub fn created_between(mut self, after_ms: Option<i64>, before_ms: Option<i64>) -> Self {
        self.created_after_ms = after_ms;
        self.created_before_ms = before_ms;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.user.is_none()
            && self.conditions.is_empty()
            && self.created_after_ms.is_none()
            && self.created_before_ms.is_none()
    }

    pub fn has_payload_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Rejects filters that cannot mean anything: empty field names, non-scalar values, NaN or
    /// inverted ranges, empty sets.
    pub fn validate(&self) -> Result<()> {
        for c in &self.conditions {
            if c.field.is_empty() || c.field.split('.').any(str::is_empty) {
                return Err(IndexError::InvalidFilter(format!(
                    "bad field path {:?}",
                    c.field
                )));
            }
            match &c.op {
                Op::Eq(v) => check_scalar(&c.field, v)?,
                Op::In(vs) => {
                    if vs.is_empty() {
                        return Err(IndexError::InvalidFilter(format!(
                            "set for field {:?} is empty",
                            c.field
                        )));
                    }
                    vs.iter().try_for_each(|v| check_scalar(&c.field, v))?;
                }
                Op::Range { gte, lte } => {
                    if gte.is_none() && lte.is_none() {
                        return Err(IndexError::InvalidFilter(format!(
                            "range on {:?} has no bound",
                            c.field
                        )));
                    }
                    if gte.is_some_and(f64::is_nan) || lte.is_some_and(f64::is_nan) {
                        return Err(IndexError::InvalidFilter(format!(
                            "range on {:?} has a NaN bound",
                            c.field
                        )));
                    }
                    if let (Some(lo), Some(hi)) = (gte, lte) {
                        if lo > hi {
                            return Err(IndexError::InvalidFilter(format!(
                                "range on {:?} is empty: {lo} > {hi}",
                                c.field
                            )));
                        }
                    }
                }
            }
        }
        if let (Some(a), Some(b)) = (self.created_after_ms, self.created_before_ms) {
            if a >= b {
                return Err(IndexError::InvalidFilter(format!(
                    "created-at range is empty: after {a} >= before {b}"
                )));
            }
        }
        Ok(())
    }

    /// Whether the cheap, always-resident attributes match (user, created-at).
    #[inline]
    pub fn matches_attrs(&self, user: &str, created_at_ms: i64) -> bool {
        if let Some(u) = &self.user {
            if u != user {
                return false;
            }
        }
        if self.created_after_ms.is_some_and(|a| created_at_ms < a) {
            return false;
        }
        if self.created_before_ms.is_some_and(|b| created_at_ms >= b) {
            return false;
        }
        true
    }

    /// Whether the payload conditions match.
    pub fn matches_payload(&self, payload: &Value) -> bool {
        self.conditions.iter().all(|c| c.matches(payload))
    }

    /// Whether a memory matches the whole filter.
    #[inline]
    pub fn matches(&self, meta: &MemoryMeta) -> bool {
        self.matches_attrs(&meta.user, meta.created_at_ms) && self.matches_payload(&meta.payload)
    }
}

fn check_scalar(field: &str, v: &Value) -> Result<()> {
    match v {
        Value::String(_) | Value::Bool(_) => Ok(()),
        Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(()),
        _ => Err(IndexError::InvalidFilter(format!(
            "value {v} for field {field:?} is not a string, finite number or bool"
        ))),
    }
}

impl Condition {
    fn matches(&self, payload: &Value) -> bool {
        let Some(v) = lookup(payload, &self.field) else {
            return false;
        };
        match &self.op {
            Op::Eq(want) => scalar_eq(v, want),
            Op::In(set) => set.iter().any(|want| scalar_eq(v, want)),
            Op::Range { gte, lte } => match v.as_f64() {
                Some(x) => gte.is_none_or(|lo| x >= lo) && lte.is_none_or(|hi| x <= hi),
                None => false,
            },
        }
    }
}

fn lookup<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(payload, |v, key| v.as_object()?.get(key))
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(user: &str, created: i64, payload: Value) -> MemoryMeta {
        MemoryMeta {
            id: "m".into(),
            user: user.into(),
            payload,
            text: None,
            created_at_ms: created,
            last_accessed_ms: created,
            importance: 0.0,
        }
    }

    #[test]
    fn conditions_match_as_documented() {
        let m = meta(
            "alice",
            100,
            json!({"topic": "food", "n": 3, "src": {"app": "chat"}}),
        );
        assert!(Filter::user("alice").matches(&m));
        assert!(!Filter::user("bob").matches(&m));
        assert!(Filter::default()
            .and("topic", Op::Eq(json!("food")))
            .matches(&m));
        assert!(Filter::default().and("n", Op::Eq(json!(3.0))).matches(&m));
        assert!(Filter::default()
            .and("src.app", Op::Eq(json!("chat")))
            .matches(&m));
        assert!(!Filter::default()
            .and("missing", Op::Eq(json!("x")))
            .matches(&m));
        assert!(Filter::default()
            .and(
                "n",
                Op::Range {
                    gte: Some(3.0),
                    lte: None
                }
            )
            .matches(&m));
        assert!(!Filter::default()
            .and(
                "n",
                Op::Range {
                    gte: None,
                    lte: Some(2.5)
                }
            )
            .matches(&m));
        assert!(!Filter::default()
            .and(
                "topic",
                Op::Range {
                    gte: Some(0.0),
                    lte: None
                }
            )
            .matches(&m));
        assert!(Filter::default()
            .and("topic", Op::In(vec![json!("x"), json!("food")]))
            .matches(&m));
        assert!(Filter::default()
            .created_between(Some(100), Some(101))
            .matches(&m));
        assert!(!Filter::default()
            .created_between(Some(101), None)
            .matches(&m));
        assert!(!Filter::default()
            .created_between(None, Some(100))
            .matches(&m));
    }

    #[test]
    fn nonsense_filters_are_rejected_with_the_field_named() {
        let bad = [
            Filter::default().and("", Op::Eq(json!(1))),
            Filter::default().and("a..b", Op::Eq(json!(1))),
            Filter::default().and("a", Op::Eq(json!({"x": 1}))),
            Filter::default().and("a", Op::In(vec![])),
            Filter::default().and(
                "a",
                Op::Range {
                    gte: None,
                    lte: None,
                },
            ),
            Filter::default().and(
                "a",
                Op::Range {
                    gte: Some(f64::NAN),
                    lte: None,
                },
            ),
            Filter::default().and(
                "a",
                Op::Range {
                    gte: Some(2.0),
                    lte: Some(1.0),
                },
            ),
            Filter::default().created_between(Some(5), Some(5)),
        ];
        for f in bad {
            let err = f.validate().unwrap_err();
            assert!(
                matches!(err, IndexError::InvalidFilter(_)),
                "{f:?} gave {err:?}"
            );
        }
    }
}
