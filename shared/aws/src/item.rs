//! Values to DynamoDB attributes and back.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use sluice_core::value::{hex, plain_number};
use sluice_core::{StoredRecord, Value};

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

/// A record's item as the store reads it back: its key, hash, and its fields in the
/// plain JSON view.
pub fn stored_record(item: &Item) -> StoredRecord {
    StoredRecord {
        key: s(item, "record_key").unwrap_or_default(),
        hash: s(item, "_hash").unwrap_or_default(),
        fields: item
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "source_id" | "record_key" | "_hash"))
            .map(|(k, v)| (k.clone(), plain_json(v)))
            .collect(),
    }
}

/// An item in DynamoDB's JSON form (a stream record's image: `{"S": "..."}`, `{"N":
/// "1"}`, ...), as the SDK's attributes. `None` when it is not that form.
pub fn item_from_json(image: &serde_json::Map<String, serde_json::Value>) -> Option<Item> {
    image
        .iter()
        .map(|(k, v)| Some((k.clone(), attribute_from_json(v)?)))
        .collect()
}

fn attribute_from_json(v: &serde_json::Value) -> Option<AttributeValue> {
    let (tag, v) = v.as_object()?.iter().next()?;
    let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
    };
    Some(match tag.as_str() {
        "S" => AttributeValue::S(v.as_str()?.to_string()),
        "N" => AttributeValue::N(v.as_str()?.to_string()),
        "BOOL" => AttributeValue::Bool(v.as_bool()?),
        "NULL" => AttributeValue::Null(true),
        "B" => AttributeValue::B(Blob::new(
            base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?,
        )),
        "L" => AttributeValue::L(v.as_array()?.iter().map(attribute_from_json).collect::<Option<_>>()?),
        "M" => AttributeValue::M(item_from_json(v.as_object()?)?),
        "SS" => AttributeValue::Ss(strings(v)?),
        "NS" => AttributeValue::Ns(strings(v)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_image_reads_as_the_stored_record() {
        let image = serde_json::json!({
            "source_id": {"S": "s"}, "record_key": {"S": "u1"}, "_hash": {"S": "ab"},
            "type": {"S": "identify"}, "n": {"N": "12.50"}, "ok": {"BOOL": true}, "none": {"NULL": true},
            "raw": {"B": "3q0="}, "traits": {"M": {"plan": {"S": "pro"}, "tags": {"L": [{"S": "a"}, {"N": "2"}]}}}
        });
        let item = item_from_json(image.as_object().unwrap()).unwrap();
        let record = stored_record(&item);
        assert_eq!((record.key.as_str(), record.hash.as_str()), ("u1", "ab"));
        assert_eq!(
            serde_json::to_value(&record.fields).unwrap(),
            serde_json::json!({"type": "identify", "n": 12.5, "ok": true, "none": null, "raw": "dead",
                               "traits": {"plan": "pro", "tags": ["a", 2]}})
        );
        assert!(item_from_json(serde_json::json!({"x": {"Q": 1}}).as_object().unwrap()).is_none());
    }
}
