//! Typed values as they come out of a source row, and the row itself.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

/// One column value, with the type the source gave it.
///
/// Decimals stay exact (their canonical text); timestamps are UTC (a timestamp without
/// a zone is taken as UTC). `Unsupported` carries the source type's name: the row that
/// holds it is rejected with a reason instead of crashing the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Decimal(String),
    Text(String),
    Date(NaiveDate),
    Time(NaiveTime),
    Timestamp(DateTime<Utc>),
    Uuid(uuid::Uuid),
    Json(serde_json::Value),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Unsupported(String),
}

impl Value {
    /// A decimal in canonical form: no trailing fractional zeros ("12.50" is "12.5"),
    /// so every engine gives the same text, and the same hash, for the same number.
    pub fn decimal(text: String) -> Value {
        if text.contains('.') && !text.contains(['e', 'E']) {
            let trimmed = text.trim_end_matches('0').trim_end_matches('.');
            if trimmed.len() != text.len() {
                return Value::Decimal(trimmed.to_string());
            }
        }
        Value::Decimal(text)
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a record key or identifier: text, integers, decimals and UUIDs.
    pub fn as_key_text(&self) -> Option<String> {
        match self {
            Value::Text(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Decimal(d) => Some(d.clone()),
            Value::Uuid(u) => Some(u.to_string()),
            _ => None,
        }
    }

    /// The source type's name for messages ("text", "int", ...).
    pub fn kind(&self) -> &str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::Timestamp(_) => "timestamp",
            Value::Uuid(_) => "uuid",
            Value::Json(_) => "json",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Unsupported(t) => t,
        }
    }

    /// ISO-8601 UTC, the one form every stored timestamp takes.
    pub fn iso_timestamp(ts: &DateTime<Utc>) -> String {
        ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// The value as plain JSON, the way stores read records back: numbers as numbers,
    /// timestamps as ISO-8601 UTC, dates and times as ISO text, bytes as hex.
    pub fn to_plain_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null | Value::Unsupported(_) => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => J::from(*f),
            Value::Decimal(d) => plain_number(d),
            Value::Text(s) => J::String(s.clone()),
            Value::Date(d) => J::String(d.to_string()),
            Value::Time(t) => J::String(t.to_string()),
            Value::Timestamp(t) => J::String(Value::iso_timestamp(t)),
            Value::Uuid(u) => J::String(u.to_string()),
            Value::Json(j) => j.clone(),
            Value::Bytes(b) => J::String(hex(b)),
            Value::Array(a) => J::Array(a.iter().map(Value::to_plain_json).collect()),
        }
    }

    /// Feeds the value, with its type, into a content hash.
    pub fn hash_into(&self, h: &mut Xxh3) {
        let tag: u8 = match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Decimal(_) => 4,
            Value::Text(_) => 5,
            Value::Date(_) => 6,
            Value::Time(_) => 7,
            Value::Timestamp(_) => 8,
            Value::Uuid(_) => 9,
            Value::Json(_) => 10,
            Value::Bytes(_) => 11,
            Value::Array(_) => 12,
            Value::Unsupported(_) => 13,
        };
        h.update(&[tag]);
        match self {
            Value::Null => {}
            Value::Bool(b) => h.update(&[*b as u8]),
            Value::Int(i) => h.update(&i.to_le_bytes()),
            Value::Float(f) => h.update(&f.to_bits().to_le_bytes()),
            Value::Decimal(s) | Value::Text(s) | Value::Unsupported(s) => hash_bytes(h, s.as_bytes()),
            Value::Date(d) => hash_bytes(h, d.to_string().as_bytes()),
            Value::Time(t) => hash_bytes(h, t.to_string().as_bytes()),
            Value::Timestamp(t) => {
                h.update(&t.timestamp().to_le_bytes());
                h.update(&t.timestamp_subsec_nanos().to_le_bytes());
            }
            Value::Uuid(u) => h.update(u.as_bytes()),
            Value::Json(j) => hash_bytes(h, j.to_string().as_bytes()),
            Value::Bytes(b) => hash_bytes(h, b),
            Value::Array(a) => {
                h.update(&(a.len() as u64).to_le_bytes());
                a.iter().for_each(|v| v.hash_into(h));
            }
        }
    }
}

/// A number's text as a JSON number: integral values as integers ("75.00" is 75),
/// others as f64.
pub fn plain_number(text: &str) -> serde_json::Value {
    if let Ok(i) = text.parse::<i64>() {
        return i.into();
    }
    match text.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 9e15 => (f as i64).into(),
        Ok(f) => f.into(),
        Err(_) => text.into(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_bytes(h: &mut Xxh3, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

/// One row of a result set. Column names are shared by every row of the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub columns: Arc<[String]>,
    pub values: Vec<Value>,
}

impl Row {
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns.iter().position(|c| c == column).map(|i| &self.values[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns.iter().map(String::as_str).zip(&self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(Value::decimal("12.50".into()), Value::Decimal("12.5".into()));
        assert_eq!(Value::decimal("75.00".into()), Value::Decimal("75".into()));
        assert_eq!(Value::decimal("100".into()), Value::Decimal("100".into()));
        assert_eq!(Value::decimal("1.0e10".into()), Value::Decimal("1.0e10".into()));
    }

    #[test]
    fn plain_numbers_are_integers_when_integral() {
        assert_eq!(plain_number("75"), serde_json::json!(75));
        assert_eq!(plain_number("75.0"), serde_json::json!(75));
        assert_eq!(plain_number("12.5"), serde_json::json!(12.5));
    }
}
