//! The services around the stores: connection secrets, per-source schedules, Sluice's
//! own events, and whoever watches finished runs (metrics).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::BackendError;
use crate::backfill::Backfill;
use crate::run::Run;
use crate::source::ConnectionSecret;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "secret `{id}` does not exist; create it (see README \"Connection secrets\") or fix the source's secret_id"
    )]
    NotFound { id: String },
    #[error("secret `{id}` is not a valid connection secret: {reason}")]
    Malformed { id: String, reason: String },
    #[error("reading secret `{id}` failed: {source}")]
    Backend {
        id: String,
        #[source]
        source: BackendError,
    },
}

/// Secrets by id: JSON documents, a database's connection (DESIGN §5) or a
/// destination's write key (`{"write_key": "..."}`). Adapters implement `value`; the
/// typed readers and writers are the same for all.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// The secret's JSON document.
    ///
    /// # Errors
    /// `NotFound`, `Malformed` (not JSON), or `Backend`.
    async fn value(&self, secret_id: &str) -> Result<serde_json::Value, SecretsError>;

    /// A connection secret; `Malformed` names the field, never a value.
    async fn connection(&self, secret_id: &str) -> Result<ConnectionSecret, SecretsError> {
        let value = self.value(secret_id).await?;
        ConnectionSecret::from_value(value).map_err(|reason| SecretsError::Malformed {
            id: secret_id.to_string(),
            reason,
        })
    }

    /// A destination's write key.
    async fn write_key(&self, secret_id: &str) -> Result<WriteKey, SecretsError> {
        match self.value(secret_id).await?.get("write_key") {
            Some(serde_json::Value::String(key)) if !key.is_empty() => Ok(WriteKey(key.clone())),
            _ => Err(SecretsError::Malformed {
                id: secret_id.to_string(),
                reason: "expected {\"write_key\": \"...\"}".into(),
            }),
        }
    }
}

/// A destination's write key. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct WriteKey(pub String);

impl std::fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteKey(<redacted>)")
    }
}

/// Writes secrets (the API stores the connection and the write key a new source
/// brings).
#[async_trait]
pub trait SecretWriter: Send + Sync {
    /// Creates the secret with this JSON document, or replaces its value.
    async fn put(&self, secret_id: &str, value: &serde_json::Value) -> Result<(), SecretsError>;

    /// Creates the secret with this JSON document only when no secret has the name, so
    /// that two requests at once never both write it. `false`: it exists, and nothing
    /// was written.
    ///
    /// # Errors
    /// `Backend` when the service fails.
    async fn create(&self, secret_id: &str, value: &serde_json::Value) -> Result<bool, SecretsError>;

    /// Deletes the secret at once (no recovery window); absent is fine.
    async fn delete(&self, secret_id: &str) -> Result<(), SecretsError>;

    async fn put_connection(&self, secret_id: &str, connection: &ConnectionSecret) -> Result<(), SecretsError> {
        self.put(secret_id, &serde_json::to_value(connection).expect("secrets serialize"))
            .await
    }

    async fn put_write_key(&self, secret_id: &str, key: &WriteKey) -> Result<(), SecretsError> {
        self.put(secret_id, &serde_json::json!({ "write_key": key.0 })).await
    }
}

/// A source's schedule: `rate(every_minutes)` from `start_at`, invoking the sync with
/// `{"source_id"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub source_id: String,
    pub every_minutes: u32,
    pub start_at: Option<DateTime<Utc>>,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{operation} the schedule of `{source_id}` failed: {source}")]
pub struct ScheduleError {
    pub operation: &'static str,
    pub source_id: String,
    #[source]
    pub source: BackendError,
}

/// One schedule per source (EventBridge Scheduler in AWS).
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Creates the schedule or brings it to `schedule`.
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), ScheduleError>;

    /// Deletes the schedule; absent is fine.
    async fn delete_schedule(&self, source_id: &str) -> Result<(), ScheduleError>;

    /// Changes only how often an existing schedule runs (the adaptive frequency).
    async fn set_rate(&self, source_id: &str, every_minutes: u32) -> Result<(), ScheduleError>;
}

#[derive(Debug, thiserror::Error)]
#[error("publishing {event} failed: {source}")]
pub struct EventsError {
    pub event: &'static str,
    #[source]
    pub source: BackendError,
}

/// Sluice's own events (`sluice.run.completed`, `sluice.backfill.requested`).
#[async_trait]
pub trait Events: Send + Sync {
    async fn run_completed(&self, run: &Run) -> Result<(), EventsError>;

    /// Asks a worker to start on a new job now (the pump would within a minute).
    async fn backfill_requested(&self, job: &Backfill) -> Result<(), EventsError>;
}

/// Sees every run once it is logged: metrics (CloudWatch's Embedded Metric Format in
/// Lambda). It must not block: it runs on the sync's path.
pub trait RunObserver: Send + Sync {
    fn run_finished(&self, run: &Run, at: DateTime<Utc>);
}

/// Observes nothing (the CLI).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl RunObserver for NoObserver {
    fn run_finished(&self, _run: &Run, _at: DateTime<Utc>) {}
}
