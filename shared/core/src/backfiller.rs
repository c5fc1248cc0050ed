//! The backfill service: plans jobs, and works through their chunks under the source's
//! lease, one chunk at a time, each as a run (DESIGN §3 "Backfill job").
//!
//! A worker takes the source's lease (shared with scheduled syncs), so one chunk of one
//! source runs at a time whoever started it: the API's event, the pump, the CLI. The job
//! is saved with optimistic concurrency before and after each chunk; a worker that
//! stops anywhere leaves a state the next worker picks up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use rand::Rng;
use tracing::{info, warn};

use crate::backfill::{Backfill, BackfillRequest, NextStep, RequestError};
use crate::ports::{BackfillCreated, LeaseOutcome, StoreError};
use crate::sync::{Budget, ChunkOutcome, Stop, SyncService};
use crate::template::QueryTemplate;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("source `{0}` does not exist")]
    SourceNotFound(String),
    #[error("backfill `{job_id}` of source `{source_id}` does not exist")]
    JobNotFound { source_id: String, job_id: String },
    #[error("{0}")]
    BadRequest(#[from] RequestError),
    #[error(
        "source `{source_id}` already has an active backfill, `{existing}`; wait for it to finish or cancel it (DELETE /sources/{source_id}/backfills/{existing})"
    )]
    Conflict { source_id: String, existing: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct BackfillSettings {
    /// The first retry of a failed chunk waits about this long; each next one twice as long.
    pub retry_base: Duration,
    /// Time kept in hand at the end of a budget to save the job and log the run.
    pub margin: Duration,
    /// Jobs of different sources the pump works on at once.
    pub concurrency: usize,
}

impl Default for BackfillSettings {
    fn default() -> Self {
        BackfillSettings {
            retry_base: Duration::from_secs(30),
            margin: Duration::from_secs(30),
            concurrency: 4,
        }
    }
}

/// Called with the job after every change a worker makes (the CLI's progress bar).
pub type OnProgress<'a> = &'a (dyn Fn(&Backfill) + Send + Sync);

pub struct Backfiller {
    sync: Arc<SyncService>,
    settings: BackfillSettings,
}

impl Backfiller {
    pub fn new(sync: Arc<SyncService>, settings: BackfillSettings) -> Self {
        Backfiller { sync, settings }
    }

    /// Validates and plans a job, stores it as the source's active job, and asks for a
    /// worker.
    ///
    /// # Errors
    /// [`BackfillError::BadRequest`] naming the field, `SourceNotFound`, or `Conflict`
    /// naming the source's active job.
    pub async fn create(&self, source_id: &str, request: &BackfillRequest) -> Result<Backfill, BackfillError> {
        let store = self.sync.store();
        let state = store
            .get_source(source_id)
            .await?
            .ok_or_else(|| BackfillError::SourceNotFound(source_id.into()))?;
        match QueryTemplate::compile(&state.config.query) {
            Ok(t) if t.uses_upper_limit() => {}
            Ok(_) => {
                return Err(RequestError::new(
                    "source",
                    "the source's query has no {{ upper_date_limit }}, so a chunk cannot be bounded; add `AND <date column> < {{ upper_date_limit }}` to it",
                )
                .into());
            }
            Err(e) => {
                return Err(RequestError::new("source", format!("the source's query template is invalid: {e}")).into());
            }
        }
        let job = Backfill::plan(source_id, request, Utc::now())?;
        match store.create_backfill(&job).await? {
            BackfillCreated::Created => {}
            BackfillCreated::SourceNotFound => return Err(BackfillError::SourceNotFound(source_id.into())),
            BackfillCreated::Conflict { existing } => {
                return Err(BackfillError::Conflict {
                    source_id: source_id.into(),
                    existing,
                });
            }
        }
        info!(source_id, backfill_id = %job.id, chunks = job.chunks.len(), start = %job.start, end = %job.end, "backfill planned");
        if let Err(e) = self.sync.events().backfill_requested(&job).await {
            warn!(error = %e, backfill_id = %job.id, "could not publish sluice.backfill.requested; the pump starts the job within a minute");
        }
        Ok(job)
    }

    pub async fn get(&self, source_id: &str, job_id: &str) -> Result<Backfill, BackfillError> {
        self.sync
            .store()
            .get_backfill(source_id, job_id)
            .await?
            .ok_or_else(|| BackfillError::JobNotFound {
                source_id: source_id.into(),
                job_id: job_id.into(),
            })
    }

    pub async fn list(&self, source_id: &str, limit: usize) -> Result<Vec<Backfill>, BackfillError> {
        let store = self.sync.store();
        if store.get_source(source_id).await?.is_none() {
            return Err(BackfillError::SourceNotFound(source_id.into()));
        }
        Ok(store.list_backfills(source_id, limit).await?)
    }

    /// Cancels a job: no chunk starts after this, a running chunk finishes. A job with
    /// no running chunk is sealed at once; otherwise its worker seals it.
    pub async fn cancel(&self, source_id: &str, job_id: &str) -> Result<Backfill, BackfillError> {
        let store = self.sync.store();
        if !store.request_backfill_cancel(source_id, job_id, Utc::now()).await? {
            return Err(BackfillError::JobNotFound {
                source_id: source_id.into(),
                job_id: job_id.into(),
            });
        }
        loop {
            let mut job = self.get(source_id, job_id).await?;
            if !job.is_active() || job.progress().chunks_running > 0 {
                return Ok(job);
            }
            job.finish(Utc::now());
            if store.save_backfill(&mut job).await? {
                info!(source_id, backfill_id = job_id, "backfill cancelled");
                return Ok(job);
            }
        }
    }

    /// Works on every active job, a few sources at a time, until each is finished or
    /// the budget is used. Jobs whose source is busy are left for the next pump.
    pub async fn pump(&self, budget: &Budget) -> Result<Vec<Backfill>, BackfillError> {
        let active = self.sync.store().active_backfills().await?;
        info!(jobs = active.len(), "pump");
        let results: Vec<_> = futures::stream::iter(active)
            .map(|(source_id, _)| async move { self.work(&source_id, budget, &|_| {}).await })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut jobs = Vec::new();
        for r in results {
            jobs.extend(r?);
        }
        Ok(jobs)
    }

    /// Works through the active job of `source_id` until it is finished, cancelled, or
    /// the budget is used. `None` when there is no active job or another run holds the
    /// source's lease (that worker goes on; the pump checks again).
    pub async fn work(
        &self,
        source_id: &str,
        budget: &Budget,
        on_progress: OnProgress<'_>,
    ) -> Result<Option<Backfill>, BackfillError> {
        let token = uuid::Uuid::new_v4().to_string();
        let result = self.work_leased(source_id, &token, budget, on_progress).await;
        if let Err(e) = self.sync.store().release_lease(source_id, &token).await {
            warn!(error = %e, source_id, "could not release the lease; it expires by itself");
        }
        result
    }

    async fn work_leased(
        &self,
        source_id: &str,
        token: &str,
        budget: &Budget,
        on_progress: OnProgress<'_>,
    ) -> Result<Option<Backfill>, BackfillError> {
        let store = self.sync.store().clone();
        let chunk_budget = Budget {
            deadline: budget.deadline.map(|d| d - self.settings.margin),
            interrupted: budget.interrupted.clone(),
        };
        let mut recovered = false;
        let mut last: Option<Backfill> = None;
        loop {
            if budget.stop(self.settings.margin).is_some() {
                return Ok(last);
            }
            // Taken, or extended before each chunk: a long job keeps it.
            let state = match self.sync.lease(source_id, token).await? {
                LeaseOutcome::Acquired(state) => state,
                LeaseOutcome::Held { expires_at } => {
                    info!(source_id, %expires_at, "another run holds the source's lease; the backfill waits for the next pump");
                    return Ok(last);
                }
                LeaseOutcome::NotFound => return Err(BackfillError::SourceNotFound(source_id.into())),
            };
            let Some(job_id) = state.active_backfill.clone() else {
                return Ok(last);
            };
            let mut job = self.get(source_id, &job_id).await?;
            let now = Utc::now();
            if !recovered {
                // We hold the lease: a chunk marked running is a stopped worker's.
                job.recover_stopped_chunks(now);
                recovered = true;
            }
            if job.cancel_requested_at.is_some() {
                job.finish(now);
                if store.save_backfill(&mut job).await? {
                    info!(source_id, backfill_id = %job.id, "backfill cancelled");
                    on_progress(&job);
                    return Ok(Some(job));
                }
                continue;
            }
            let index = match job.next_step(now) {
                NextStep::Run(index) => index,
                NextStep::Finished => {
                    job.finish(now);
                    if store.save_backfill(&mut job).await? {
                        let p = job.progress();
                        info!(source_id, backfill_id = %job.id, status = ?job.status, rows_read = p.rows_read,
                            rows_written = p.rows_written, chunks_failed = p.chunks_failed, "backfill finished");
                        on_progress(&job);
                        return Ok(Some(job));
                    }
                    continue;
                }
                NextStep::WaitUntil(at) => {
                    let wait = (at - now).to_std().unwrap_or_default();
                    let fits = chunk_budget.deadline.is_none_or(|d| Instant::now() + wait < d);
                    if !store.save_backfill(&mut job).await? || !fits {
                        return Ok(Some(job));
                    }
                    if self.sleep(wait, budget).await {
                        return Ok(Some(job));
                    }
                    last = Some(job);
                    continue;
                }
            };
            job.start_chunk(index, now);
            if !store.save_backfill(&mut job).await? {
                continue;
            }
            on_progress(&job);
            let window = job.chunks[index].window();
            let (run, outcome) = self.sync.run_chunk(&state, &job.id, window, &chunk_budget).await?;
            let now = Utc::now();
            match &outcome {
                ChunkOutcome::Done => job.chunk_done(index, &run),
                ChunkOutcome::Stopped(Stop::OutOfTime) => job.split_chunk(index, now),
                ChunkOutcome::Stopped(Stop::Interrupted) => job.chunk_interrupted(index, now),
                ChunkOutcome::Failed(error) => {
                    let attempt = job.chunks[index].attempts;
                    job.chunk_failed(index, &run.id, error, now, self.backoff(attempt));
                }
            }
            if !store.save_backfill(&mut job).await? {
                warn!(source_id, backfill_id = %job.id, "the job changed under this worker; it stops");
                return Ok(Some(job));
            }
            on_progress(&job);
            if matches!(outcome, ChunkOutcome::Stopped(_)) {
                info!(source_id, backfill_id = %job.id, ?outcome, "backfill paused; the next worker continues");
                return Ok(Some(job));
            }
            last = Some(job);
        }
    }

    /// Exponential backoff with a little jitter: base × 2^attempts ± 20%.
    fn backoff(&self, previous_attempts: u32) -> chrono::Duration {
        let base = self.settings.retry_base.as_secs_f64() * f64::from(1u32 << previous_attempts.min(10));
        let jittered = base * rand::rng().random_range(0.8..=1.2);
        chrono::Duration::milliseconds((jittered * 1000.0) as i64)
    }

    /// Sleeps `wait`, waking early when interrupted; `true` if interrupted.
    async fn sleep(&self, wait: Duration, budget: &Budget) -> bool {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if budget.stop(Duration::ZERO) == Some(Stop::Interrupted) {
                return true;
            }
            tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(250))).await;
        }
        false
    }
}
