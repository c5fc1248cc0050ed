//! The import log: one `Run` per invocation, whatever its outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mapping::cut;
use crate::record::Reject;

/// How many rejects a run keeps, with their reasons; the count covers all of them.
pub const KEPT_REJECTS: usize = 20;

/// How much of a rejected row's reference and reason a run keeps.
pub const KEPT_REFERENCE_BYTES: usize = 256;
pub const KEPT_REASON_BYTES: usize = 1024;

/// Run logs are kept this long (DynamoDB TTL).
pub const RUN_RETENTION_DAYS: i64 = 90;

/// A kind of doubtful row, and how many rows of a run were of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub message: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
    Backfill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Skipped,
}

/// One import log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Time-sortable (UUIDv7).
    pub id: String,
    pub source_id: String,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// `[window_start, window_end)`: everything this run read.
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
    /// The watermark after the run.
    pub watermark: Option<DateTime<Utc>>,
    /// Where the windows ended and why: the database's clock, or the start of the
    /// oldest transaction still open. Absent when the run read no window of its own
    /// choosing (a backfill chunk, a run that never reached the database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_bound: Option<String>,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_unchanged: u64,
    pub rows_rejected: u64,
    /// Rows a backfill chunk of a query without `{{ upper_date_limit }}` read past the
    /// chunk's end, and left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_past_end: u64,
    /// The first rejected rows, with the reason.
    pub rejects: Vec<Reject>,
    /// Why the run failed or was skipped; credentials redacted.
    pub message: Option<String>,
    /// Rows that went through but are doubtful: each kind once, with its count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// What the login check said of the source's login (cached for an hour per source
    /// and login): it can only read, it can write (and what to drop), or it could not be
    /// checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The backfill job this run is a chunk of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_id: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Run {
    /// A run with the time-sortable `id`, started `at`.
    pub fn start(id: String, source_id: &str, trigger: Trigger, at: DateTime<Utc>) -> Self {
        Run {
            id,
            source_id: source_id.to_string(),
            trigger,
            status: RunStatus::Succeeded,
            started_at: at,
            duration_ms: 0,
            window_start: None,
            window_end: None,
            watermark: None,
            window_bound: None,
            rows_read: 0,
            rows_written: 0,
            rows_unchanged: 0,
            rows_rejected: 0,
            rows_past_end: 0,
            rejects: Vec::new(),
            message: None,
            warnings: Vec::new(),
            login: None,
            backfill_id: None,
        }
    }

    /// Counts a rejected row and keeps the first ones, their reference and reason cut
    /// short: the reject of a 400 KB key must itself fit in the run's log item.
    pub fn reject(&mut self, reject: Reject) {
        self.rows_rejected += 1;
        if self.rejects.len() < KEPT_REJECTS {
            self.rejects.push(Reject {
                reference: reject.reference.map(|r| cut(&r, KEPT_REFERENCE_BYTES)),
                reason: cut(&reject.reason, KEPT_REASON_BYTES),
            });
        }
    }

    pub fn warn(&mut self, message: &str) {
        match self.warnings.iter_mut().find(|w| w.message == message) {
            Some(w) => w.rows += 1,
            None => self.warnings.push(Warning {
                message: message.to_string(),
                rows: 1,
            }),
        }
    }

    /// Seals the run with its outcome, finished `at`.
    pub fn finish(mut self, status: RunStatus, message: Option<String>, at: DateTime<Utc>) -> Self {
        self.status = status;
        self.message = message;
        self.duration_ms = (at - self.started_at).num_milliseconds().max(0) as u64;
        self
    }

    /// When the log entry expires.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.started_at + chrono::Duration::days(RUN_RETENTION_DAYS)
    }
}
