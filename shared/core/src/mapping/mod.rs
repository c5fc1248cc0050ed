//! Turning rows into records (DESIGN §3): one mapper per sync type behind one trait,
//! built once per result set from its columns. Registrations (Plecto) and calls
//! (Customer.io) share the rules of [`rules`]: what a storable value is, how a date is
//! read.

mod call;
mod limits;
mod registration;
mod rules;

use chrono::{DateTime, Utc};

pub use call::{Call, GROUP_WITHOUT_USER};
pub use limits::{MAX_KEY_BYTES, MAX_LEVELS, cut};
pub use rules::as_utc;

use crate::record::{Member, Record, Reject};
use crate::source::SyncType;
use crate::value::Row;

/// Attribute names the stores use themselves; a column may not take them.
pub const RESERVED_FIELDS: [&str; 3] = ["source_id", "record_key", "_hash"];

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
    /// When the row says it happened: a registration's `date`, a call's `timestamp`
    /// column (none when the call took the run's time).
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Maps the rows of one result set.
pub trait RowMapper: Send + Sync {
    /// Maps one row, or says why it is rejected.
    fn map(&self, row: Row) -> Result<Mapped, Reject>;
}

/// The mapper of `sync_type` for a result with `columns`.
pub fn mapper(sync_type: SyncType, columns: &[String]) -> Result<Box<dyn RowMapper>, MappingError> {
    if let Some(c) = columns.iter().find(|c| RESERVED_FIELDS.contains(&c.as_str())) {
        return Err(MappingError::ReservedColumn { column: c.clone() });
    }
    Ok(match Call::of(sync_type) {
        Some(call) => Box::new(call::CallMapper::new(call, columns)?),
        None => Box::new(registration::RegistrationMapper::new(columns)?),
    })
}

/// A mapper built from the columns the session described, or, when it could not tell
/// (a stored procedure), from the first row's.
pub struct LazyMapper {
    sync_type: SyncType,
    mapper: Option<Box<dyn RowMapper>>,
}

impl LazyMapper {
    /// # Errors
    /// When `described` columns lack what the sync type requires.
    pub fn new(sync_type: SyncType, described: &[String]) -> Result<Self, MappingError> {
        let mapper = match described.is_empty() {
            true => None,
            false => Some(mapper(sync_type, described)?),
        };
        Ok(LazyMapper { sync_type, mapper })
    }

    /// Maps `row`; the outer error fails the run (the first row's columns lack what
    /// the sync type requires), the inner one rejects the row.
    pub fn map(&mut self, row: Row) -> Result<Result<Mapped, Reject>, MappingError> {
        let mapper = match &self.mapper {
            Some(m) => m,
            None => self.mapper.insert(mapper(self.sync_type, &row.columns)?),
        };
        Ok(mapper.map(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_columns_fail_every_mapper() {
        for sync_type in [SyncType::Registration, SyncType::Identify] {
            let cols: Vec<String> = ["member_id", "member_name", "date", "reference", "userId", "_hash"]
                .map(String::from)
                .into();
            assert!(matches!(
                mapper(sync_type, &cols),
                Err(MappingError::ReservedColumn { .. })
            ));
        }
    }
}
