//! Values to DynamoDB attributes and back.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use sluice_core::Value;
use sluice_core::value::{hex, plain_number};

pub type Item = HashMap<String, AttributeValue>;

pub fn attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null | Value::Unsupported(_) => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Int(i) => AttributeValue::N(i.to_string()),
        Value::Float(f) => AttributeValue::N(f.to_string()),
        Value::Decimal(d) => AttributeValue::N(d.clone()),
        Value::Text(s) => AttributeValue::S(s.clone()),
        Value::Date(d) => AttributeValue::S(d.to_string()),
        Value::Time(t) => AttributeValue::S(t.to_string()),
        Value::Timestamp(t) => AttributeValue::S(Value::iso_timestamp(t)),
        Value::Uuid(u) => AttributeValue::S(u.to_string()),
        Value::Json(j) => json_attribute(j),
        Value::Bytes(b) => AttributeValue::B(Blob::new(b.clone())),
        Value::Array(a) => AttributeValue::L(a.iter().map(attribute).collect()),
    }
}

fn json_attribute(j: &serde_json::Value) -> AttributeValue {
    use serde_json::Value as J;
    match j {
        J::Null => AttributeValue::Null(true),
        J::Bool(b) => AttributeValue::Bool(*b),
        J::Number(n) => AttributeValue::N(n.to_string()),
        J::String(s) => AttributeValue::S(s.clone()),
        J::Array(a) => AttributeValue::L(a.iter().map(json_attribute).collect()),
        J::Object(o) => AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), json_attribute(v))).collect()),
    }
}

/// An attribute as plain JSON, the view `StoredRecord` gives (see `Value::to_plain_json`).
pub fn plain_json(a: &AttributeValue) -> serde_json::Value {
    use serde_json::Value as J;
    match a {
        AttributeValue::S(s) => J::String(s.clone()),
        AttributeValue::N(n) => plain_number(n),
        AttributeValue::Bool(b) => J::Bool(*b),
        AttributeValue::B(b) => J::String(hex(b.as_ref())),
        AttributeValue::L(l) => J::Array(l.iter().map(plain_json).collect()),
        AttributeValue::M(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), plain_json(v))).collect()),
        AttributeValue::Ss(s) => J::Array(s.iter().cloned().map(J::String).collect()),
        AttributeValue::Ns(n) => J::Array(n.iter().map(|n| plain_number(n)).collect()),
        _ => J::Null,
    }
}

pub fn s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

pub fn n(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}
