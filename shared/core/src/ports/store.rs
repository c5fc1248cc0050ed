//! The stores, one port per aggregate: sources (with their lease and watermark),
//! record writes, the run log, backfill jobs, and a read side for records and members.
//! The DynamoDB store, the embedded store and `testing::MemoryStore` implement them
//! all; one contract suite (tests/tests/store_contract.rs) runs against each.
//!
//! What every store must do alike is decided here, in core, not in each store: a
//! [`RecordBatch`] has one record per key, the reserved field names are refused by the
//! mappers, and runs, jobs and configs are encoded by [`crate::stored`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::BackendError;
use crate::backfill::Backfill;
use crate::cadence::Cadence;
use crate::connection::Connection;
use crate::delivery::{DeliveryState, DeliveryStatus};
use crate::record::{Member, RecordBatch, Reject};
use crate::run::Run;
use crate::source::SourceConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the lease on source `{source_id}` is no longer ours (it expired and another run took it); this run stops, writes nothing more and leaves the watermark to the run that holds the lease"
    )]
    LeaseLost { source_id: String },
    #[error("{operation} failed: {source}")]
    Backend {
        operation: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("stored data for `{what}` cannot be read: {reason}")]
    Corrupt { what: String, reason: String },
}

impl StoreError {
    pub fn backend(operation: &'static str, source: BackendError) -> Self {
        StoreError::Backend { operation, source }
    }
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
    /// While a window held more than a run can read: how long the windows of the next
    /// runs are, until they catch up.
    pub narrowed_window_seconds: Option<i64>,
    /// The SSH bastion's host key as first seen (trust on first use), as an OpenSSH
    /// public key line.
    pub ssh_host_key: Option<String>,
}

impl SourceState {
    /// Whether `config` (a preview's, saved or not) reaches the stored source's
    /// database: the recorded bastion key binds, and is recorded by, only those.
    pub fn same_connection(&self, config: &SourceConfig) -> bool {
        self.config.secret_id == config.secret_id
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LeaseOutcome {
    Acquired(Box<SourceState>),
    /// Another run holds the lease until then.
    Held {
        expires_at: DateTime<Utc>,
    },
    NotFound,
}

/// Sources: their config, lease, watermark and schedule state.
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Creates the source or replaces its config, keeping its watermark and lease.
    async fn put_source(&self, config: &SourceConfig) -> Result<(), StoreError>;

    /// Creates the source only when no source has its id (a conditional write), so two
    /// creates of one id at once cannot both succeed. `false`: the id is taken and
    /// nothing was written.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store fails.
    async fn create_source(&self, config: &SourceConfig) -> Result<bool, StoreError>;

    /// Claims the member namespace `namespace` for `source_id` (a conditional write):
    /// a source writes members only in a namespace it holds, unless the namespace is
    /// shared on purpose (`shared:`, which is never claimed). Claiming one's own again
    /// changes nothing. `Some(holder)`: another source holds it and nothing was written.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store fails.
    async fn claim_member_namespace(&self, namespace: &str, source_id: &str) -> Result<Option<String>, StoreError>;

    /// Frees the claim on `namespace` if `source_id` holds it; otherwise does nothing.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store fails.
    async fn release_member_namespace(&self, namespace: &str, source_id: &str) -> Result<(), StoreError>;

    async fn get_source(&self, id: &str) -> Result<Option<SourceState>, StoreError>;

    /// Every source, sorted by id.
    async fn list_sources(&self) -> Result<Vec<SourceState>, StoreError>;

    /// Deletes the source; with `purge_records`, its records too (returns how many).
    /// Its runs expire by themselves.
    async fn delete_source(&self, id: &str, purge_records: bool) -> Result<u64, StoreError>;

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

    /// Extends the lease to `expires_at` only while `token` holds it: unlike
    /// [`SourceStore::acquire_lease`], never takes a lease that was lost, even when it
    /// is free again, since another run may have written newer versions meanwhile.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the lease is not `token`'s any more.
    async fn renew_lease(&self, id: &str, token: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Moves the watermark to `watermark` while `token` holds the lease. A watermark
    /// already later is left as it is (never backwards).
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the lease is not `token`'s any more.
    async fn advance_watermark(&self, id: &str, token: &str, watermark: DateTime<Utc>) -> Result<(), StoreError>;

    /// Sets (or clears) the narrowed window length of the source.
    async fn set_narrowed_window(&self, id: &str, seconds: Option<i64>) -> Result<(), StoreError>;

    /// Records the SSH host key the source's bastion showed on a tunnel that opened:
    /// the key later tunnels must meet when the secret pins none.
    async fn record_ssh_host_key(&self, id: &str, key: &str) -> Result<(), StoreError>;

    /// Saves where the source's adaptive schedule stands.
    async fn set_cadence(&self, id: &str, cadence: Cadence) -> Result<(), StoreError>;
}

/// What one write call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub written: u64,
    /// Records whose stored hash was already the same: not written.
    pub unchanged: u64,
    /// Records the store refused, with its reason (a limit mapping did not foresee):
    /// not written, and rejected like a bad row.
    pub rejects: Vec<Reject>,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.written += o.written;
        self.unchanged += o.unchanged;
        self.rejects.extend(o.rejects);
    }
}

/// Writing records and the members they name.
#[async_trait]
pub trait RecordWriter: Send + Sync {
    /// Upserts the batch (one record per key). With `check_unchanged`, records whose
    /// stored hash is the same are not written. Durable when it returns.
    async fn write_records(
        &self,
        source_id: &str,
        batch: RecordBatch,
        check_unchanged: bool,
    ) -> Result<WriteStats, StoreError>;

    /// Upserts members and their teams, creating those that are absent.
    async fn upsert_members(&self, member_id_source: &str, members: Vec<Member>) -> Result<(), StoreError>;
}

/// The import log.
#[async_trait]
pub trait RunLog: Send + Sync {
    async fn put_run(&self, run: &Run) -> Result<(), StoreError>;

    /// The newest `limit` runs of a source older than the run `before` (a page cursor:
    /// the last run id of the previous page), newest first.
    async fn list_runs(&self, source_id: &str, limit: usize, before: Option<&str>) -> Result<Vec<Run>, StoreError>;

    async fn get_run(&self, source_id: &str, run_id: &str) -> Result<Option<Run>, StoreError>;
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

/// What saving a backfill job did.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved,
    /// Another writer saved the job first: reload it and decide again.
    Stale,
}

/// Backfill jobs, one active per source.
#[async_trait]
pub trait BackfillJobs: Send + Sync {
    /// Stores a new job and makes it its source's active job, atomically, unless the
    /// source has one already.
    async fn create_backfill(&self, job: &Backfill) -> Result<BackfillCreated, StoreError>;

    async fn get_backfill(&self, source_id: &str, job_id: &str) -> Result<Option<Backfill>, StoreError>;

    /// The newest `limit` jobs of a source, newest first.
    async fn list_backfills(&self, source_id: &str, limit: usize) -> Result<Vec<Backfill>, StoreError>;

    /// Saves `job` if the stored copy is still at `job.version`, then bumps the version;
    /// a job that is no longer active frees its source's slot in the same write. Never
    /// overwrites `cancel_requested_at`.
    async fn save_backfill(&self, job: &mut Backfill) -> Result<SaveOutcome, StoreError>;

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

/// A record as read back from a store, in a plain JSON view (see [`crate::Value::to_plain_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub key: String,
    pub hash: String,
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// The read side: records and members, for the demo, the CLI and tests.
#[async_trait]
pub trait RecordReader: Send + Sync {
    async fn get_record(&self, source_id: &str, key: &str) -> Result<Option<StoredRecord>, StoreError>;

    async fn count_records(&self, source_id: &str) -> Result<u64, StoreError>;

    /// Members of a namespace, with the teams known there, sorted by member id.
    async fn list_members(&self, member_id_source: &str) -> Result<(Vec<Member>, Vec<String>), StoreError>;
}

/// Where each call's delivery stands (Customer.io-style sources with a destination).
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Saves these states, replacing the records' earlier ones.
    async fn put_deliveries(&self, source_id: &str, states: &[DeliveryState]) -> Result<(), StoreError>;

    /// The source's delivery states by record key, from after `after` (a page cursor:
    /// the last key of the previous page), only those of `status` when given.
    async fn list_deliveries(
        &self,
        source_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DeliveryState>, StoreError>;

    /// Up to `limit` records after the key `after` whose current hash has no delivery
    /// state or a `waiting` one, in key order: the calls a delivery from the store (the
    /// CLI's) sends next. Failed ones are not among them: a replay sends them again.
    async fn undelivered(
        &self,
        source_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError>;

    /// Up to `limit` of the source's `waiting` states whose next attempt is at or
    /// before `due_by`, the earliest first: the parked calls to send again. Read
    /// cheaply (without reading the source's other states), as it runs every minute.
    async fn parked(
        &self,
        source_id: &str,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DeliveryState>, StoreError>;
}

/// Connections: a database's secret shared by several sources. The store keeps what a
/// connection is (never its secret, which Secrets Manager holds).
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Stores a new connection only when none has its id (a conditional write).
    /// `false`: the id is taken and nothing was written.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store fails.
    async fn create_connection(&self, connection: &Connection) -> Result<bool, StoreError>;

    /// Replaces a stored connection. `false`: there is none (deleted meanwhile), and
    /// nothing was written.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store fails.
    async fn update_connection(&self, connection: &Connection) -> Result<bool, StoreError>;

    /// # Errors
    /// [`StoreError::Backend`] when the store fails; [`StoreError::Corrupt`] when the
    /// stored connection cannot be read.
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;

    /// Every connection, sorted by id.
    ///
    /// # Errors
    /// As [`ConnectionStore::get_connection`].
    async fn list_connections(&self) -> Result<Vec<Connection>, StoreError>;

    /// Deletes the connection; absent is fine.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store fails.
    async fn delete_connection(&self, id: &str) -> Result<(), StoreError>;
}

/// Every port of a store, for wiring.
pub trait Store:
    SourceStore + RecordWriter + RunLog + BackfillJobs + RecordReader + DeliveryLog + ConnectionStore
{
}

impl<T: SourceStore + RecordWriter + RunLog + BackfillJobs + RecordReader + DeliveryLog + ConnectionStore> Store for T {}
