//! The ports: what the sync needs from the outside, and each one's error contract.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::backfill::Backfill;
use crate::cadence::Cadence;
use crate::record::{Member, Record};
use crate::run::Run;
use crate::source::{ConnectionSecret, SourceConfig};
use crate::template::RenderedQuery;
use crate::value::Row;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with the source database. `message` names the cause and the fix and
/// never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The secret or config cannot describe a connection.
    Config,
    /// Host unreachable, refused, DNS.
    Connect,
    /// Wrong user or password, or no access to the database.
    Auth,
    /// TLS negotiation or certificate verification.
    Tls,
    /// The query failed on the server (syntax, missing table, permissions).
    Query,
    /// The statement timeout was reached.
    Timeout,
}

impl SourceError {
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
        }
    }
}

/// Opens sessions on source databases.
#[async_trait]
pub trait SourceReader: Send + Sync {
    /// Connects with `secret` and returns a session that is read-only, set to UTC, and
    /// has `query_timeout` as its statement timeout.
    ///
    /// # Errors
    /// A [`SourceError`] whose kind says which step failed (connect, auth, TLS).
    async fn open(
        &self,
        secret: &ConnectionSecret,
        query_timeout: Duration,
    ) -> Result<Box<dyn SourceSession>, SourceError>;
}

/// One read-only connection to a source database.
#[async_trait]
pub trait SourceSession: Send {
    /// The database's own clock, in UTC: the upper bound of the window.
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError>;

    /// The names of the columns `query` returns, found without running it, so a
    /// missing column is reported even when the window holds no rows. Empty when the
    /// engine cannot tell before running (a stored procedure, say).
    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError>;

    /// Streams the rows of `query`, converting each value to a typed [`crate::Value`].
    /// Never collects the result set.
    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>>;
}

/// What a store knows of a source: its config, watermark and lease.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceState {
    pub config: SourceConfig,
    pub watermark: Option<DateTime<Utc>>,
    pub lease: Option<Lease>,
    /// The id of the source's pending or running backfill job.
    pub active_backfill: Option<String>,
    /// Where the adaptive schedule stands.
    pub cadence: Cadence,
    /// While a window held more than `max_rows_per_run` rows: how long the windows of
    /// the next runs are, until they catch up.
    pub narrowed_window_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    Acquired(SourceState),
    /// Another run holds the lease until then.
    Held {
        expires_at: DateTime<Utc>,
    },
    NotFound,
}

/// What creating a backfill job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillCreated {
    Created,
    SourceNotFound,
    /// The source already has an active job: this one.
    Conflict {
        existing: String,
    },
}

/// What one write call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub written: u64,
    /// Records whose stored hash was already the same: not written.
    pub unchanged: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.written += o.written;
        self.unchanged += o.unchanged;
    }
}

/// A record as read back from a store, in a plain JSON view (see [`crate::Value::to_plain_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub key: String,
    pub hash: String,
    pub fields: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the lease on source `{source_id}` is no longer ours (it expired and another run took it)")]
    LeaseLost { source_id: String },
    #[error("{operation} failed: {source}")]
    Backend {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("stored data for `{what}` cannot be read: {reason}")]
    Corrupt { what: String, reason: String },
}

impl StoreError {
    pub fn backend(operation: &'static str, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            operation,
            source: source.into(),
        }
    }
}

/// Where sources, records, runs and members live. Implemented by the DynamoDB store and
/// the embedded SQLite store; one contract suite runs against both.
#[async_trait]
pub trait Store: Send + Sync {
    /// Creates the source or replaces its config, keeping its watermark and lease.
    async fn put_source(&self, config: &SourceConfig) -> Result<(), StoreError>;

    async fn get_source(&self, id: &str) -> Result<Option<SourceState>, StoreError>;

    /// Takes the source's lease when it is free or expired at `now`, or extends it when
    /// `token` already holds it.
    async fn acquire_lease(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Frees the lease if `token` still holds it; otherwise does nothing.
    async fn release_lease(&self, id: &str, token: &str) -> Result<(), StoreError>;

    /// Moves the watermark to `watermark` while `token` holds the lease. A watermark
    /// already later is left as it is (never backwards).
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the lease is not `token`'s any more.
    async fn advance_watermark(&self, id: &str, token: &str, watermark: DateTime<Utc>) -> Result<(), StoreError>;

    /// Upserts records. Duplicate keys in `records` are merged (the last wins). With
    /// `check_unchanged`, records whose stored hash is the same are not written.
    /// Durable when it returns.
    async fn write_records(
        &self,
        source_id: &str,
        records: Vec<Record>,
        check_unchanged: bool,
    ) -> Result<WriteStats, StoreError>;

    /// Upserts members and their teams, creating those that are absent.
    async fn upsert_members(&self, member_id_source: &str, members: Vec<Member>) -> Result<(), StoreError>;

    async fn put_run(&self, run: &Run) -> Result<(), StoreError>;

    /// The newest `limit` runs of a source older than the run `before` (a page cursor:
    /// the last run id of the previous page), newest first.
    async fn list_runs(&self, source_id: &str, limit: usize, before: Option<&str>) -> Result<Vec<Run>, StoreError>;

    async fn get_run(&self, source_id: &str, run_id: &str) -> Result<Option<Run>, StoreError>;

    /// Every source, sorted by id.
    async fn list_sources(&self) -> Result<Vec<SourceState>, StoreError>;

    /// Deletes the source; with `purge_records`, its records too (returns how many).
    /// Its runs expire by themselves.
    async fn delete_source(&self, id: &str, purge_records: bool) -> Result<u64, StoreError>;

    async fn get_record(&self, source_id: &str, key: &str) -> Result<Option<StoredRecord>, StoreError>;

    async fn count_records(&self, source_id: &str) -> Result<u64, StoreError>;

    /// Members of a namespace, with the teams known there, sorted by member id.
    async fn list_members(&self, member_id_source: &str) -> Result<(Vec<Member>, Vec<String>), StoreError>;

    /// Sets (or clears) the narrowed window length of the source.
    async fn set_narrowed_window(&self, id: &str, seconds: Option<i64>) -> Result<(), StoreError>;

    /// Saves where the source's adaptive schedule stands.
    async fn set_cadence(&self, id: &str, cadence: Cadence) -> Result<(), StoreError>;

    /// Stores a new job and makes it its source's active job, atomically, unless the
    /// source has one already.
    async fn create_backfill(&self, job: &Backfill) -> Result<BackfillCreated, StoreError>;

    async fn get_backfill(&self, source_id: &str, job_id: &str) -> Result<Option<Backfill>, StoreError>;

    /// The newest `limit` jobs of a source, newest first.
    async fn list_backfills(&self, source_id: &str, limit: usize) -> Result<Vec<Backfill>, StoreError>;

    /// Saves `job` if the stored copy is still at `job.version`, then bumps the version;
    /// a job that is no longer active frees its source's slot in the same write.
    /// `false` when another writer got there first (reload and look again). Never
    /// overwrites `cancel_requested_at`.
    async fn save_backfill(&self, job: &mut Backfill) -> Result<bool, StoreError>;

    /// Marks a job cancelled-on-request at `at` (kept if already set). `false` when there
    /// is no such job.
    async fn request_backfill_cancel(
        &self,
        source_id: &str,
        job_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// `(source_id, job_id)` of every active job: what the pump works on.
    async fn active_backfills(&self) -> Result<Vec<(String, String)>, StoreError>;
}

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
        source: BoxError,
    },
}

/// Connection secrets by id.
#[async_trait]
pub trait Secrets: Send + Sync {
    async fn connection(&self, secret_id: &str) -> Result<ConnectionSecret, SecretsError>;
}

/// Writes connection secrets (the API stores the secret a new source brings).
#[async_trait]
pub trait SecretWriter: Send + Sync {
    /// Creates the secret, or replaces its value.
    async fn put_connection(&self, secret_id: &str, connection: &ConnectionSecret) -> Result<(), SecretsError>;

    /// Deletes the secret at once (no recovery window); absent is fine.
    async fn delete_connection(&self, secret_id: &str) -> Result<(), SecretsError>;
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
    pub source: BoxError,
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

/// Sluice's own events (`sluice.run.completed`, `sluice.backfill.requested`).
#[async_trait]
pub trait Events: Send + Sync {
    async fn run_completed(&self, run: &Run) -> Result<(), BoxError>;

    /// Asks a worker to start on a new job now (the pump would within a minute).
    async fn backfill_requested(&self, job: &Backfill) -> Result<(), BoxError>;
}
