//! What is stored: records with their content hash, the members registrations name,
//! and the rows that were rejected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::value::{Row, Value};

/// DynamoDB's item size limit, which every store enforces alike.
pub const MAX_RECORD_BYTES: usize = 400 * 1024;

/// A row turned into what is stored: a key, its fields with their types, a content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub fields: Row,
    /// xxh3-128 of the row it was made from, so a re-read unchanged row is not written
    /// again.
    pub hash: u128,
}

impl Record {
    /// A record whose hash is of its own fields.
    pub fn new(key: String, fields: Row) -> Self {
        Record {
            hash: content_hash(&fields),
            key,
            fields,
        }
    }

    pub fn hash_hex(&self) -> String {
        format!("{:032x}", self.hash)
    }

    /// The record's date (registrations), for the stores' date index.
    pub fn date(&self) -> Option<DateTime<Utc>> {
        match self.fields.get("date") {
            Some(Value::Timestamp(t)) => Some(*t),
            _ => None,
        }
    }
}

/// xxh3-128 of a row's names, types and values.
pub fn content_hash(row: &Row) -> u128 {
    let mut h = Xxh3::new();
    for (name, value) in row.iter() {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        value.hash_into(&mut h);
    }
    h.digest128()
}

/// Records for one write: one per key. DynamoDB refuses duplicate keys in one request,
/// and the last row read is the newest, so a later record replaces an earlier one of
/// the same key (in first-seen order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordBatch(Vec<Record>);

impl RecordBatch {
    pub fn new(records: Vec<Record>) -> Self {
        let mut index = std::collections::HashMap::with_capacity(records.len());
        let mut out: Vec<Record> = Vec::with_capacity(records.len());
        for r in records {
            match index.get(&r.key) {
                Some(&i) => out[i] = r,
                None => {
                    index.insert(r.key.clone(), out.len());
                    out.push(r);
                }
            }
        }
        RecordBatch(out)
    }

    pub fn records(&self) -> &[Record] {
        &self.0
    }

    pub fn into_records(self) -> Vec<Record> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A member (registrations), upserted with its name and team.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    pub name: String,
    pub team: Option<String>,
}

/// A row that could not become a record, and why. The other rows go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The row's reference (record key) when it could be read.
    pub reference: Option<String>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(key: &str, amount: i64) -> Record {
        let columns: Arc<[String]> = ["reference", "amount"].map(String::from).into();
        Record::new(
            key.into(),
            Row {
                columns,
                values: vec![Value::Text(key.into()), Value::Int(amount)],
            },
        )
    }

    #[test]
    fn a_batch_keeps_the_last_record_of_each_key_in_first_seen_order() {
        let batch = RecordBatch::new(vec![record("a", 1), record("b", 2), record("a", 3)]);
        let keys: Vec<_> = batch.records().iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(batch.records()[0].fields.get("amount"), Some(&Value::Int(3)));
    }

    #[test]
    fn the_hash_follows_content_and_types() {
        assert_eq!(record("a", 1).hash, record("a", 1).hash);
        assert_ne!(record("a", 1).hash, record("a", 2).hash);
        assert_eq!(record("a", 1).hash_hex().len(), 32);
    }
}
