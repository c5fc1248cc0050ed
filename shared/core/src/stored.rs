//! How every store encodes what it keeps, decided once: a source's config and state,
//! runs and backfill jobs as JSON bodies, instants as microseconds. A store only maps
//! these to its own columns or attributes.

use chrono::{DateTime, Utc};

use crate::backfill::{Backfill, JobStatus};
use crate::cadence::Cadence;
use crate::ports::{Lease, SourceState, StoreError};
use crate::run::Run;
use crate::source::SourceConfig;

/// An instant as the stores keep it: microseconds since the Unix epoch.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::UNIX_EPOCH)
}

/// A source as a store keeps it: its config as JSON, and its state as plain columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSource {
    pub config: Option<String>,
    pub watermark_us: Option<i64>,
    pub lease_token: Option<String>,
    pub lease_expires_us: Option<i64>,
    pub active_backfill: Option<String>,
    pub effective_minutes: Option<i64>,
    pub fast_runs: Option<i64>,
    pub narrowed_window_s: Option<i64>,
    pub ssh_host_key: Option<String>,
}

impl StoredSource {
    /// The source's state; `id` names it when its config cannot be read.
    pub fn decode(self, id: &str) -> Result<SourceState, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            what: format!("source {id}"),
            reason,
        };
        let config = self.config.ok_or_else(|| corrupt("no config".into()))?;
        let config: SourceConfig = serde_json::from_str(&config).map_err(|e| corrupt(e.to_string()))?;
        let lease = match (self.lease_token, self.lease_expires_us) {
            (Some(token), Some(us)) => Some(Lease {
                token,
                expires_at: from_micros(us),
            }),
            _ => None,
        };
        Ok(SourceState {
            config,
            watermark: self.watermark_us.map(from_micros),
            lease,
            active_backfill: self.active_backfill,
            cadence: Cadence {
                effective_minutes: self.effective_minutes.unwrap_or(0) as u32,
                fast_runs: self.fast_runs.unwrap_or(0) as u32,
            },
            narrowed_window_seconds: self.narrowed_window_s,
            ssh_host_key: self.ssh_host_key,
        })
    }
}

pub fn encode_config(config: &SourceConfig) -> String {
    serde_json::to_string(config).expect("configs serialize")
}

pub fn encode_run(run: &Run) -> String {
    serde_json::to_string(run).expect("runs serialize")
}

pub fn decode_run(source_id: &str, body: &str) -> Result<Run, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: format!("a run of {source_id}"),
        reason: e.to_string(),
    })
}

pub fn encode_job(job: &Backfill) -> String {
    serde_json::to_string(job).expect("jobs serialize")
}

/// A job from its body and the attributes a store keeps beside it: the version that
/// saves check, and the cancel request that saves never overwrite.
pub fn decode_job(
    job_id: &str,
    body: &str,
    version: i64,
    cancel_requested_us: Option<i64>,
) -> Result<Backfill, StoreError> {
    let mut job: Backfill = serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: format!("backfill {job_id}"),
        reason: e.to_string(),
    })?;
    job.version = version.max(0) as u64;
    job.cancel_requested_at = cancel_requested_us.map(from_micros);
    Ok(job)
}

/// A job's status as stores index it.
pub fn job_status(job: &Backfill) -> &'static str {
    match job.status {
        JobStatus::Pending => "pending",
        JobStatus::Running => "running",
        JobStatus::Done => "done",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_without_a_readable_config_is_corrupt_and_named() {
        let e = StoredSource::default().decode("sales").unwrap_err();
        assert_eq!(
            e.to_string(),
            "stored data for `source sales` cannot be read: no config"
        );
        let e = StoredSource {
            config: Some("{".into()),
            ..StoredSource::default()
        }
        .decode("sales")
        .unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn instants_round_trip_in_microseconds() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.123456Z")
            .unwrap()
            .to_utc();
        assert_eq!(from_micros(to_micros(t)), t);
    }
}
