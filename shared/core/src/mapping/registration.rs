//! Plecto-style registrations: `member_id`, `member_name`, `date` and `reference`
//! (the record key), `team_name` optional; every other column is kept with its type.

use super::limits;
use super::rules::{as_utc, check_values, required_reason};
use super::{Mapped, MappingError, RowMapper};
use crate::record::{Member, Record, Reject};
use crate::value::{Row, Value};

/// Where the registration's columns are in the result.
#[derive(Debug, Clone)]
pub(super) struct RegistrationMapper {
    member_id: usize,
    member_name: usize,
    date: usize,
    reference: usize,
    team_name: Option<usize>,
}

impl RegistrationMapper {
    pub(super) fn new(columns: &[String]) -> Result<Self, MappingError> {
        let find = |column: &'static str| columns.iter().position(|c| c == column);
        let require = |column: &'static str| {
            find(column).ok_or_else(|| MappingError::MissingColumn {
                column,
                sync_type: "registration",
                returned: columns.join(", "),
            })
        };
        Ok(RegistrationMapper {
            member_id: require("member_id")?,
            member_name: require("member_name")?,
            date: require("date")?,
            reference: require("reference")?,
            team_name: find("team_name"),
        })
    }
}

impl RowMapper for RegistrationMapper {
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
            // An empty team is no team (DynamoDB refuses an empty key, and '' is how
            // many schemas say none).
            None | Some(Value::Null) => None,
            Some(Value::Text(s)) if s.trim().is_empty() => None,
            Some(Value::Text(s)) => Some(s.clone()),
            Some(other) => {
                return Err(reject(format!("team_name must be text, got {}", other.kind())));
            }
        };
        check_values(&row).map_err(&reject)?;
        let mapped = Mapped {
            record: Record::new(key, row),
            member: Some(Member { member_id, name, team }),
            warning: None,
            occurred_at: Some(date),
        };
        limits::check(&mapped, "reference").map_err(reject)?;
        Ok(mapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MAX_RECORD_BYTES;
    use chrono::{TimeZone, Utc};
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

    fn mapper() -> RegistrationMapper {
        RegistrationMapper::new(&columns()).unwrap()
    }

    #[test]
    fn maps_a_registration_and_its_member() {
        let mapped = mapper().map(row(good())).unwrap();
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
    fn missing_columns_fail_the_mapper() {
        let cols: Vec<String> = ["member_id", "date", "reference"].map(String::from).into();
        let e = RegistrationMapper::new(&cols).unwrap_err();
        assert!(e.to_string().contains("no `member_name` column"), "{e}");
    }

    #[test]
    fn bad_required_values_reject_the_row_with_a_reason() {
        let m = mapper();
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
        let mut v = good();
        v[3] = Value::Text("r".repeat(1025));
        let r = m.map(row(v)).unwrap_err();
        assert_eq!(r.reference, Some("r".repeat(1025)), "the run's log cuts it");
        assert!(r.reason.starts_with("reference is 1025 bytes"), "{}", r.reason);
    }

    #[test]
    fn an_empty_team_is_no_team() {
        let mut v = good();
        v[4] = Value::Text(String::new());
        assert_eq!(mapper().map(row(v)).unwrap().member.unwrap().team, None);
    }

    #[test]
    fn the_hash_follows_content_and_types() {
        let m = mapper();
        let a = m.map(row(good())).unwrap().record;
        assert_eq!(a.hash, m.map(row(good())).unwrap().record.hash);
        let mut v = good();
        v[5] = Value::Text("12.50".into());
        assert_ne!(a.hash, m.map(row(v)).unwrap().record.hash);
    }
}
