use serde::{Deserialize, Serialize};

/// One cell of a row. Integer columns hold `Integer`, TEXT columns `Text`; `Null` is an absent
/// value (osquery leaves the key out of the row).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Value {
    #[default]
    Null,
    Integer(i64),
    Double(f64),
    Text(String),
}

/// A table row: one value per catalog column, in catalog order.
pub type Row = Vec<Value>;

impl Value {
    /// The text osquery transports (all values travel as strings); `None` for NULL.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Integer(i) => Some(i.to_string()),
            Value::Double(d) => Some(d.to_string()),
            Value::Text(s) => Some(s.clone()),
        }
    }

    /// Like [`Value::to_text`], without copying text.
    pub fn into_text(self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s),
            other => other.to_text(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Integer(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Integer(v.into())
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Integer(v.into())
    }
}

/// Saturates at `i64::MAX`: osquery's BIGINT is signed.
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Double(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
