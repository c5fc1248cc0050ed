//! Turning rows into records (DESIGN §3): required columns, record keys, the content hash.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::call::{Call, CallMapper};
use crate::source::SyncType;
use crate::value::{Row, Value};

/// Attribute names the stores use themselves; a column may not take them.
pub const RESERVED_FIELDS: [&str; 3] = ["source_id", "record_key", "_hash"];

/// DynamoDB's item size limit, which every store enforces alike.
pub const MAX_RECORD_BYTES: usize = 400 * 1024;

/// A row turned into what is stored: a key, its fields with their types, a content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: String,
    pub fields: Row,
    /// xxh3-128 of the fields, so a re-read unchanged row is not written again.
    pub hash: u128,
}

impl Record {
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
pub(crate) fn content_hash(row: &Row) -> u128 {
    let mut h = Xxh3::new();
    for (name, value) in row.iter() {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        value.hash_into(&mut h);
    }
    h.digest128()
}

/// Keeps the last record of each key, in first-seen order: DynamoDB refuses duplicate
/// keys in one request, and the last row read is the newest.
pub fn dedup_last(records: Vec<Record>) -> Vec<Record> {
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
    out
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

/// The query's result lacks what the sync type needs: the whole run fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error(
        "the query returns no `{column}` column, which {sync_type} rows require; \
         select it (or alias one: `... AS {column}`). Columns returned: {returned}"
    )]
    MissingColumn {
        column: &'static str,
        sync_type: &'static str,
        returned: String,
    },
    #[error("the column `{column}` collides with an attribute Sluice stores itself; alias it: `... AS {column}_value`")]
    ReservedColumn { column: String },
}

/// A row mapped: the record, for registrations the member it names, and a warning
/// when the row goes through but is doubtful.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub record: Record,
    pub member: Option<Member>,
    pub warning: Option<&'static str>,
}

/// Maps the rows of one result set by the sync type; built once from its columns.
#[derive(Debug, Clone)]
pub enum RecordMapper {
    Registration(RegistrationColumns),
    Call(CallMapper),
}

#[derive(Debug, Clone)]
pub struct RegistrationColumns {
    member_id: usize,
    member_name: usize,
    date: usize,
    reference: usize,
    team_name: Option<usize>,
}

impl RecordMapper {
    /// `run_time` is the timestamp of a call whose row has none.
    pub fn new(sync_type: SyncType, columns: &[String], run_time: DateTime<Utc>) -> Result<Self, MappingError> {
        if let Some(c) = columns.iter().find(|c| RESERVED_FIELDS.contains(&c.as_str())) {
            return Err(MappingError::ReservedColumn { column: c.clone() });
        }
        if let Some(call) = Call::of(sync_type) {
            return Ok(RecordMapper::Call(CallMapper::new(call, columns, run_time)?));
        }
        let find = |column: &'static str| columns.iter().position(|c| c == column);
        let require = |column: &'static str| {
            find(column).ok_or_else(|| MappingError::MissingColumn {
                column,
                sync_type: "registration",
                returned: columns.join(", "),
            })
        };
        Ok(RecordMapper::Registration(RegistrationColumns {
            member_id: require("member_id")?,
            member_name: require("member_name")?,
            date: require("date")?,
            reference: require("reference")?,
            team_name: find("team_name"),
        }))
    }

    /// Maps one row, or says why it is rejected.
    pub fn map(&self, row: Row) -> Result<Mapped, Reject> {
        match self {
            RecordMapper::Registration(columns) => columns.map(row),
            RecordMapper::Call(mapper) => mapper.map(row).map(|call| Mapped {
                record: call.record,
                member: None,
                warning: call.warning,
            }),
        }
    }
}

impl RegistrationColumns {
    fn map(&self, mut row: Row) -> Result<Mapped, Reject> {
        let c = self;
        let reference = row.values[c.reference].as_key_text();
        let reject = |reason: String| Reject {
            reference: reference.clone(),
            reason,
        };
        let Some(key) = reference.clone() else {
            return Err(reject(required_reason("reference", &row.values[c.reference])));
        };
        let member_id = row.values[c.member_id]
            .as_key_text()
            .ok_or_else(|| reject(required_reason("member_id", &row.values[c.member_id])))?;
        let name = match &row.values[c.member_name] {
            Value::Text(s) if !s.trim().is_empty() => s.clone(),
            other => return Err(reject(required_reason("member_name", other))),
        };
        let date = as_utc(&row.values[c.date]).ok_or_else(|| reject(required_reason("date", &row.values[c.date])))?;
        row.values[c.date] = Value::Timestamp(date);
        let team = match c.team_name.map(|i| &row.values[i]) {
            None | Some(Value::Null) => None,
            Some(Value::Text(s)) => Some(s.clone()),
            Some(other) => {
                return Err(reject(format!("team_name must be text, got {}", other.kind())));
            }
        };
        check_values(&row).map_err(&reject)?;
        Ok(Mapped {
            record: Record::new(key, row),
            member: Some(Member { member_id, name, team }),
            warning: None,
        })
    }
}

fn required_reason(column: &str, value: &Value) -> String {
    if value.is_null() {
        format!("{column} is null; it is required")
    } else {
        format!(
            "{column} is malformed: a {} value that cannot be used as {column}",
            value.kind()
        )
    }
}

/// Every value must be storable, and the record must fit in one item.
pub(crate) fn check_values(row: &Row) -> Result<(), String> {
    let mut size = 0;
    for (name, value) in row.iter() {
        match value {
            Value::Unsupported(t) => {
                return Err(format!(
                    "column {name} has the unsupported type {t}; cast it in the query (e.g. `{name}::text`)"
                ));
            }
            Value::Decimal(d) if significant_digits(d) > 38 => {
                return Err(format!(
                    "column {name} has more than 38 significant digits, more than a DynamoDB number holds; round it or cast it to text"
                ));
            }
            Value::Float(f) if !f.is_finite() => {
                return Err(format!(
                    "column {name} holds {f}, which cannot be stored; filter or cast it"
                ));
            }
            _ => size += name.len() + value.approx_size(),
        }
    }
    if size > MAX_RECORD_BYTES {
        return Err(format!(
            "the record is about {size} bytes, over the 400 KB item limit; select fewer or smaller columns"
        ));
    }
    Ok(())
}

fn significant_digits(decimal: &str) -> usize {
    let digits: String = decimal
        .chars()
        .take_while(|c| *c != 'e' && *c != 'E')
        .filter(char::is_ascii_digit)
        .collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

/// A date column as a UTC instant. A timestamp without a zone is taken as UTC.
pub fn as_utc(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Timestamp(t) => Some(*t),
        Value::Date(d) => Some(d.and_hms_opt(0, 0, 0)?.and_utc()),
        Value::Text(s) => parse_timestamp(s.trim()),
        _ => None,
    }
}

fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| Some(d.and_hms_opt(0, 0, 0)?.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Arc;

    fn columns() -> Arc<[String]> {
        ["member_id", "member_name", "date", "reference", "team_name", "amount"]
            .map(String::from)
            .into()
    }

    fn row(values: Vec<Value>) -> Row {
        Row {
            columns: columns(),
            values,
        }
    }

    fn good() -> Vec<Value> {
        vec![
            Value::Int(7),
            Value::Text("Ada".into()),
            Value::Text("2025-01-02 03:04:05".into()),
            Value::Text("r-1".into()),
            Value::Text("North".into()),
            Value::Decimal("12.50".into()),
        ]
    }

    #[test]
    fn maps_a_registration_and_its_member() {
        let m = RecordMapper::new(SyncType::Registration, &columns(), Utc::now()).unwrap();
        let mapped = m.map(row(good())).unwrap();
        assert_eq!(mapped.record.key, "r-1");
        assert_eq!(
            mapped.record.fields.get("date"),
            Some(&Value::Timestamp(Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()))
        );
        assert_eq!(
            mapped.record.fields.get("amount"),
            Some(&Value::Decimal("12.50".into()))
        );
        assert_eq!(
            mapped.member,
            Some(Member {
                member_id: "7".into(),
                name: "Ada".into(),
                team: Some("North".into())
            })
        );
    }

    #[test]
    fn missing_and_reserved_columns_fail_the_mapper() {
        let cols: Vec<String> = ["member_id", "date", "reference"].map(String::from).into();
        let e = RecordMapper::new(SyncType::Registration, &cols, Utc::now()).unwrap_err();
        assert!(e.to_string().contains("no `member_name` column"), "{e}");
        let cols: Vec<String> = ["member_id", "member_name", "date", "reference", "source_id"]
            .map(String::from)
            .into();
        assert!(matches!(
            RecordMapper::new(SyncType::Registration, &cols, Utc::now()),
            Err(MappingError::ReservedColumn { .. })
        ));
    }

    #[test]
    fn bad_required_values_reject_the_row_with_a_reason() {
        let m = RecordMapper::new(SyncType::Registration, &columns(), Utc::now()).unwrap();
        let mut v = good();
        v[0] = Value::Null;
        let r = m.map(row(v)).unwrap_err();
        assert_eq!(
            r,
            Reject {
                reference: Some("r-1".into()),
                reason: "member_id is null; it is required".into()
            }
        );
        let mut v = good();
        v[2] = Value::Text("yesterday".into());
        assert!(m.map(row(v)).unwrap_err().reason.contains("date is malformed"));
        let mut v = good();
        v[5] = Value::Unsupported("INTERVAL".into());
        assert!(m.map(row(v)).unwrap_err().reason.contains("unsupported type INTERVAL"));
        let mut v = good();
        v[5] = Value::Text("x".repeat(MAX_RECORD_BYTES + 1));
        assert!(m.map(row(v)).unwrap_err().reason.contains("400 KB"));
        let mut v = good();
        v[5] = Value::Decimal(format!("1.{}", "3".repeat(40)));
        assert!(m.map(row(v)).unwrap_err().reason.contains("38 significant digits"));
    }

    #[test]
    fn the_hash_follows_content_and_types() {
        let m = RecordMapper::new(SyncType::Registration, &columns(), Utc::now()).unwrap();
        let a = m.map(row(good())).unwrap().record;
        assert_eq!(a.hash, m.map(row(good())).unwrap().record.hash);
        let mut v = good();
        v[5] = Value::Text("12.50".into());
        assert_ne!(a.hash, m.map(row(v)).unwrap().record.hash);
        assert_eq!(a.hash_hex().len(), 32);
    }

    #[test]
    fn duplicate_keys_keep_the_last_in_first_seen_order() {
        let m = RecordMapper::new(SyncType::Registration, &columns(), Utc::now()).unwrap();
        let rec = |key: &str, amount: &str| {
            let mut v = good();
            v[3] = Value::Text(key.into());
            v[5] = Value::Decimal(amount.into());
            m.map(row(v)).unwrap().record
        };
        let out = dedup_last(vec![rec("a", "1"), rec("b", "2"), rec("a", "3")]);
        assert_eq!(out.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(out[0].fields.get("amount"), Some(&Value::Decimal("3".into())));
    }

    #[test]
    fn dates_are_read_as_utc() {
        let t = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(as_utc(&Value::Text("2025-01-02T05:04:05+02:00".into())), Some(t));
        assert_eq!(as_utc(&Value::Text("2025-01-02T03:04:05".into())), Some(t));
        assert_eq!(as_utc(&Value::Text("2025-01-02 03:04:05+00".into())), Some(t));
        assert_eq!(
            as_utc(&Value::Date(NaiveDate::from_ymd_opt(2025, 1, 2).unwrap())),
            Some(Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap())
        );
        assert_eq!(as_utc(&Value::Int(5)), None);
    }
}
