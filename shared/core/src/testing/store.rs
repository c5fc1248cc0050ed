//! Every store port in memory, with the semantics of the real stores (the contract
//! suite checks it), and a switch that makes record writes fail, for crash tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::backfill::Backfill;
use crate::cadence::Cadence;
use crate::connection::Connection;
use crate::delivery::{DeliveryState, DeliveryStatus};
use crate::ports::{
    BackendError, BackfillCreated, BackfillJobs, ConnectionStore, DeliveryLog, Lease, LeaseOutcome, RecordReader,
    RecordWriter, RunLog, SaveOutcome, SourceState, SourceStore, StoreError, StoredRecord, WriteStats,
};
use crate::record::{Member, RecordBatch};
use crate::run::Run;
use crate::source::SourceConfig;

#[derive(Debug, Default)]
struct Inner {
    sources: BTreeMap<String, SourceState>,
    /// `(source, key)` → (hash, fields as plain JSON).
    records: BTreeMap<(String, String), StoredRecord>,
    runs: BTreeMap<(String, String), Run>,
    members: BTreeMap<(String, String), Member>,
    teams: BTreeMap<String, Vec<String>>,
    jobs: BTreeMap<(String, String), Backfill>,
    deliveries: BTreeMap<(String, String), DeliveryState>,
    connections: BTreeMap<String, Connection>,
    /// Member namespace → the source that claimed it.
    claims: BTreeMap<String, String>,
    /// While set, record writes fail with this message.
    failing_writes: Option<String>,
    /// While set, moving a watermark fails with this message.
    failing_watermarks: Option<String>,
    /// Record writes that reached the store.
    write_calls: u64,
}

/// The store ports in memory.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().expect("not poisoned")
    }

    /// Makes every record write fail with `message` (a store outage) until cleared with
    /// `None`.
    pub fn fail_writes(&self, message: Option<&str>) {
        self.lock().failing_writes = message.map(str::to_string);
    }

    /// Makes every watermark move fail with `message` (the run dies between its last
    /// write and the watermark) until cleared with `None`.
    pub fn fail_watermarks(&self, message: Option<&str>) {
        self.lock().failing_watermarks = message.map(str::to_string);
    }

    /// How many record writes reached the store.
    pub fn write_calls(&self) -> u64 {
        self.lock().write_calls
    }

    /// Every run logged for `source_id`, oldest first.
    pub fn runs(&self, source_id: &str) -> Vec<Run> {
        let inner = self.lock();
        inner
            .runs
            .iter()
            .filter(|((s, _), _)| s == source_id)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// A source as first stored: its config, nothing else yet.
fn new_state(config: &SourceConfig) -> SourceState {
    SourceState {
        config: config.clone(),
        watermark: None,
        lease: None,
        active_backfill: None,
        cadence: Cadence::default(),
        narrowed_window_seconds: None,
        ssh_host_key: None,
    }
}

#[async_trait]
impl SourceStore for MemoryStore {
    async fn put_source(&self, config: &SourceConfig) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.sources.get_mut(&config.id) {
            Some(state) => state.config = config.clone(),
            None => {
                inner.sources.insert(config.id.clone(), new_state(config));
            }
        }
        Ok(())
    }

    async fn create_source(&self, config: &SourceConfig) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.sources.contains_key(&config.id) {
            return Ok(false);
        }
        inner.sources.insert(config.id.clone(), new_state(config));
        Ok(true)
    }

    async fn claim_member_namespace(&self, namespace: &str, source_id: &str) -> Result<Option<String>, StoreError> {
        let mut inner = self.lock();
        let holder = inner
            .claims
            .entry(namespace.to_string())
            .or_insert_with(|| source_id.to_string());
        Ok((holder != source_id).then(|| holder.clone()))
    }

    async fn release_member_namespace(&self, namespace: &str, source_id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.claims.get(namespace).is_some_and(|h| h == source_id) {
            inner.claims.remove(namespace);
        }
        Ok(())
    }

    async fn get_source(&self, id: &str) -> Result<Option<SourceState>, StoreError> {
        Ok(self.lock().sources.get(id).cloned())
    }

    async fn list_sources(&self) -> Result<Vec<SourceState>, StoreError> {
        Ok(self.lock().sources.values().cloned().collect())
    }

    async fn delete_source(&self, id: &str, purge_records: bool) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        inner.sources.remove(id);
        if !purge_records {
            return Ok(0);
        }
        let before = inner.records.len();
        inner.records.retain(|(s, _), _| s != id);
        Ok((before - inner.records.len()) as u64)
    }

    async fn acquire_lease(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError> {
        let mut inner = self.lock();
        let Some(state) = inner.sources.get_mut(id) else {
            return Ok(LeaseOutcome::NotFound);
        };
        match &state.lease {
            Some(l) if l.token != token && l.expires_at > now => Ok(LeaseOutcome::Held {
                expires_at: l.expires_at,
            }),
            _ => {
                state.lease = Some(Lease {
                    token: token.into(),
                    expires_at,
                });
                Ok(LeaseOutcome::Acquired(Box::new(state.clone())))
            }
        }
    }

    async fn release_lease(&self, id: &str, token: &str) -> Result<(), StoreError> {
        if let Some(state) = self.lock().sources.get_mut(id)
            && state.lease.as_ref().is_some_and(|l| l.token == token)
        {
            state.lease = None;
        }
        Ok(())
    }

    async fn renew_lease(&self, id: &str, token: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.sources.get_mut(id).and_then(|s| s.lease.as_mut()) {
            Some(lease) if lease.token == token => {
                lease.expires_at = expires_at;
                Ok(())
            }
            _ => Err(StoreError::LeaseLost { source_id: id.into() }),
        }
    }

    async fn advance_watermark(&self, id: &str, token: &str, watermark: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(message) = &inner.failing_watermarks {
            return Err(StoreError::backend(
                "moving the watermark",
                BackendError::new(Some("Unavailable".into()), message.clone()),
            ));
        }
        let lost = || StoreError::LeaseLost { source_id: id.into() };
        let state = inner.sources.get_mut(id).ok_or_else(lost)?;
        if state.lease.as_ref().is_none_or(|l| l.token != token) {
            return Err(lost());
        }
        state.watermark = Some(state.watermark.map_or(watermark, |w| w.max(watermark)));
        Ok(())
    }

    async fn set_narrowed_window(&self, id: &str, seconds: Option<i64>) -> Result<(), StoreError> {
        if let Some(state) = self.lock().sources.get_mut(id) {
            state.narrowed_window_seconds = seconds;
        }
        Ok(())
    }

    async fn record_ssh_host_key(&self, id: &str, key: &str) -> Result<(), StoreError> {
        if let Some(state) = self.lock().sources.get_mut(id) {
            state.ssh_host_key = Some(key.to_string());
        }
        Ok(())
    }

    async fn set_cadence(&self, id: &str, cadence: Cadence) -> Result<(), StoreError> {
        if let Some(state) = self.lock().sources.get_mut(id) {
            state.cadence = cadence;
        }
        Ok(())
    }
}

#[async_trait]
impl RecordWriter for MemoryStore {
    async fn write_records(
        &self,
        source_id: &str,
        batch: RecordBatch,
        _check_unchanged: bool,
    ) -> Result<WriteStats, StoreError> {
        let mut inner = self.lock();
        inner.write_calls += 1;
        if let Some(message) = &inner.failing_writes {
            return Err(StoreError::backend(
                "writing records",
                BackendError::new(Some("Unavailable".into()), message.clone()),
            ));
        }
        let mut stats = WriteStats::default();
        for r in batch.into_records() {
            let hash = r.hash_hex();
            let key = (source_id.to_string(), r.key.clone());
            if inner.records.get(&key).is_some_and(|s| s.hash == hash) {
                stats.unchanged += 1;
                continue;
            }
            let fields = r
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_plain_json()))
                .collect();
            inner.records.insert(
                key,
                StoredRecord {
                    key: r.key,
                    hash,
                    fields,
                },
            );
            stats.written += 1;
        }
        Ok(stats)
    }

    async fn upsert_members(&self, member_id_source: &str, members: Vec<Member>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for m in members {
            if let Some(team) = &m.team {
                let teams = inner.teams.entry(member_id_source.into()).or_default();
                if !teams.contains(team) {
                    teams.push(team.clone());
                    teams.sort();
                }
            }
            inner.members.insert((member_id_source.into(), m.member_id.clone()), m);
        }
        Ok(())
    }
}

#[async_trait]
impl RunLog for MemoryStore {
    async fn put_run(&self, run: &Run) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.runs.insert((run.source_id.clone(), run.id.clone()), run.clone());
        Ok(())
    }

    async fn list_runs(&self, source_id: &str, limit: usize, before: Option<&str>) -> Result<Vec<Run>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .runs
            .iter()
            .rev()
            .filter(|((s, id), _)| s == source_id && before.is_none_or(|b| id.as_str() < b))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn get_run(&self, source_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        Ok(self.lock().runs.get(&(source_id.into(), run_id.into())).cloned())
    }
}

#[async_trait]
impl BackfillJobs for MemoryStore {
    async fn create_backfill(&self, job: &Backfill) -> Result<BackfillCreated, StoreError> {
        let mut inner = self.lock();
        let Some(state) = inner.sources.get_mut(&job.source_id) else {
            return Ok(BackfillCreated::SourceNotFound);
        };
        if let Some(existing) = &state.active_backfill {
            return Ok(BackfillCreated::Conflict {
                existing: existing.clone(),
            });
        }
        state.active_backfill = Some(job.id.clone());
        inner.jobs.insert((job.source_id.clone(), job.id.clone()), job.clone());
        Ok(BackfillCreated::Created)
    }

    async fn get_backfill(&self, source_id: &str, job_id: &str) -> Result<Option<Backfill>, StoreError> {
        Ok(self.lock().jobs.get(&(source_id.into(), job_id.into())).cloned())
    }

    async fn list_backfills(&self, source_id: &str, limit: usize) -> Result<Vec<Backfill>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .jobs
            .iter()
            .rev()
            .filter(|((s, _), _)| s == source_id)
            .take(limit)
            .map(|(_, j)| j.clone())
            .collect())
    }

    async fn save_backfill(&self, job: &mut Backfill) -> Result<SaveOutcome, StoreError> {
        let mut inner = self.lock();
        let key = (job.source_id.clone(), job.id.clone());
        let Some(stored) = inner.jobs.get(&key) else {
            return Ok(SaveOutcome::Stale);
        };
        if stored.version != job.version {
            return Ok(SaveOutcome::Stale);
        }
        let cancel = stored.cancel_requested_at;
        job.version += 1;
        let mut saved = job.clone();
        saved.cancel_requested_at = cancel;
        inner.jobs.insert(key, saved);
        if !job.is_active()
            && let Some(state) = inner.sources.get_mut(&job.source_id)
            && state.active_backfill.as_deref() == Some(job.id.as_str())
        {
            state.active_backfill = None;
        }
        Ok(SaveOutcome::Saved)
    }

    async fn request_backfill_cancel(
        &self,
        source_id: &str,
        job_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.jobs.get_mut(&(source_id.into(), job_id.into())) {
            Some(job) => {
                job.cancel_requested_at.get_or_insert(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn active_backfills(&self) -> Result<Vec<(String, String)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .sources
            .iter()
            .filter_map(|(id, s)| s.active_backfill.clone().map(|j| (id.clone(), j)))
            .collect())
    }
}

#[async_trait]
impl RecordReader for MemoryStore {
    async fn get_record(&self, source_id: &str, key: &str) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.lock().records.get(&(source_id.into(), key.into())).cloned())
    }

    async fn count_records(&self, source_id: &str) -> Result<u64, StoreError> {
        Ok(self.lock().records.keys().filter(|(s, _)| s == source_id).count() as u64)
    }

    async fn list_members(&self, member_id_source: &str) -> Result<(Vec<Member>, Vec<String>), StoreError> {
        let inner = self.lock();
        let members = inner
            .members
            .iter()
            .filter(|((ns, _), _)| ns == member_id_source)
            .map(|(_, m)| m.clone())
            .collect();
        let teams = inner.teams.get(member_id_source).cloned().unwrap_or_default();
        Ok((members, teams))
    }
}

#[async_trait]
impl DeliveryLog for MemoryStore {
    async fn put_deliveries(&self, source_id: &str, states: &[DeliveryState]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for state in states {
            inner
                .deliveries
                .insert((source_id.into(), state.record_key.clone()), state.clone());
        }
        Ok(())
    }

    async fn list_deliveries(
        &self,
        source_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DeliveryState>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .deliveries
            .iter()
            .filter(|((s, key), d)| {
                s == source_id && after.is_none_or(|a| key.as_str() > a) && status.is_none_or(|st| d.status == st)
            })
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn undelivered(
        &self,
        source_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .records
            .iter()
            .filter(|((s, key), r)| {
                s == source_id
                    && after.is_none_or(|a| key.as_str() > a)
                    && inner
                        .deliveries
                        .get(&(s.clone(), key.clone()))
                        .is_none_or(|d| d.hash != r.hash || d.status == DeliveryStatus::Waiting)
            })
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn parked(
        &self,
        source_id: &str,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DeliveryState>, StoreError> {
        let inner = self.lock();
        Ok(crate::delivery::due(
            inner
                .deliveries
                .iter()
                .filter(|((s, _), _)| s == source_id)
                .map(|(_, d)| d.clone()),
            due_by,
            limit,
        ))
    }
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn create_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.connections.contains_key(&connection.id) {
            return Ok(false);
        }
        inner.connections.insert(connection.id.clone(), connection.clone());
        Ok(true)
    }

    async fn update_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.connections.get_mut(&connection.id) {
            Some(stored) => {
                *stored = connection.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        Ok(self.lock().connections.get(id).cloned())
    }

    async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        Ok(self.lock().connections.values().cloned().collect())
    }

    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        self.lock().connections.remove(id);
        Ok(())
    }
}
