//! The rules every mapper applies: which values a store can hold, and how a date is
//! read.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::value::{Row, Value};

/// Why a required value cannot be used.
pub(super) fn required_reason(column: &str, value: &Value) -> String {
    if value.is_null() {
        format!("{column} is null; it is required")
    } else {
        format!(
            "{column} is malformed: a {} value that cannot be used as {column}",
            value.kind()
        )
    }
}

/// Every column must hold a value a store can take. What DynamoDB's limits refuse is
/// checked on the mapped record ([`super::limits`]); this sees what mapping would hide
/// (a call's NaN becomes a JSON null).
pub(super) fn check_values(row: &Row) -> Result<(), String> {
    for (name, value) in row.iter() {
        match value {
            Value::Unsupported(t) => {
                return Err(format!(
                    "column {name} has the unsupported type {t}; cast it in the query (e.g. `{name}::text`)"
                ));
            }
            Value::Float(f) if !f.is_finite() => {
                return Err(format!(
                    "column {name} holds {f}, which cannot be stored; filter or cast it"
                ));
            }
            _ => {}
        }
    }
    Ok(())
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
