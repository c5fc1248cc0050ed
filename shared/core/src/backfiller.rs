//! The backfill service: plans jobs, and works through their chunks under the source's
//! lease, one chunk at a time, each as a run (DESIGN §3 "Backfill job").
//!
//! A worker takes the source's lease (shared with scheduled syncs), so one chunk of one
//! source runs at a time whoever started it: the API's event, the pump, the CLI. The job
//! is saved with optimistic concurrency before and after each chunk; a worker that
//! stops anywhere leaves a state the next worker picks up.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Run;
use crate::backfill::{Action, Backfill, BackfillRequest, ChunkStatus};
use crate::ports::{BackfillCreated, LeaseOutcome, SaveOutcome, StoreError};
use crate::source::FieldError;
use crate::sync::{Budget, ChunkOutcome, Stop, SyncService};
use crate::template::QueryTemplate;
use crate::window::Window;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("source `{0}` does not exist")]
    SourceNotFound(String),
    #[error("backfill `{job_id}` of source `{source_id}` does not exist")]
    JobNotFound { source_id: String, job_id: String },
    #[error("{0}")]
    BadRequest(#[from] FieldError),
    #[error("source `{source_id}` already has an active backfill, `{existing}`; wait for it to finish or cancel it")]
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

/// Saves of one chunk's outcome tried before the worker gives up (each after reading
/// the job again).
const SAVE_ATTEMPTS: usize = 3;

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
        let template = QueryTemplate::compile(&state.config.query)
            .map_err(|e| FieldError::new("source", format!("the source's query template is invalid: {e}")))?;
        let now = self.sync.clock().now();
        let bounded = template.uses_upper_limit();
        let job = Backfill::plan(self.sync.ids().sortable_id(now), source_id, request, now, bounded)?;
        if !bounded {
            info!(
                source_id,
                "the query has no {{{{ upper_date_limit }}}}: one chunk, whose end Sluice keeps by each row's time"
            );
        }
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
        let clock = self.sync.clock();
        if !store.request_backfill_cancel(source_id, job_id, clock.now()).await? {
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
            job.finish(clock.now());
            if store.save_backfill(&mut job).await? == SaveOutcome::Saved {
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
        let token = self.sync.ids().token();
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
        let clock = self.sync.clock();
        let chunk_budget = budget.less(self.settings.margin);
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
            let now = clock.now();
            if !recovered {
                // We hold the lease: a chunk marked running is a stopped worker's.
                job.recover_stopped_chunks(now);
                recovered = true;
            }
            let action = job.next_action(now);
            match action {
                Action::Finish => job.finish(now),
                Action::Run(index) => job.start_chunk(index, now),
                Action::WaitUntil(_) => {}
            }
            if store.save_backfill(&mut job).await? == SaveOutcome::Stale {
                continue;
            }
            on_progress(&job);
            let index = match action {
                Action::Finish => {
                    let p = job.progress();
                    info!(source_id, backfill_id = %job.id, status = ?job.status, rows_read = p.rows_read,
                        rows_written = p.rows_written, chunks_failed = p.chunks_failed, "backfill finished");
                    return Ok(Some(job));
                }
                Action::WaitUntil(at) => {
                    let wait = (at - now).to_std().unwrap_or_default();
                    let fits = chunk_budget.deadline.is_none_or(|d| Instant::now() + wait < d);
                    if !fits || self.sleep(wait, budget).await {
                        return Ok(Some(job));
                    }
                    last = Some(job);
                    continue;
                }
                Action::Run(index) => index,
            };
            let window = job.chunks[index].window();
            let (run, outcome) = self
                .sync
                .run_chunk(&state, token, &job.id, window, &chunk_budget)
                .await?;
            let Some(job) = self.record_chunk(job, window, &run, &outcome).await? else {
                return Ok(last);
            };
            on_progress(&job);
            if matches!(outcome, ChunkOutcome::Stopped(_)) {
                info!(source_id, backfill_id = %job.id, ?outcome, "backfill paused; the next worker continues");
                return Ok(Some(job));
            }
            last = Some(job);
        }
    }

    /// Saves the outcome of the chunk over `window` into `job`. When the save's version
    /// check fails, either a cancel request came in or the answer to this very save was
    /// lost and its retry met our own write: the job is read again and the outcome
    /// applied to it, unless the chunk already shows it (only the lease holder changes
    /// chunks). `None` when the job cannot be saved (it changed again and again, or the
    /// chunk is gone): the worker stops and the next one recovers the chunk.
    async fn record_chunk(
        &self,
        mut job: Backfill,
        window: Window,
        run: &Run,
        outcome: &ChunkOutcome,
    ) -> Result<Option<Backfill>, BackfillError> {
        let store = self.sync.store();
        for _ in 0..SAVE_ATTEMPTS {
            let Some(index) = job.chunks.iter().position(|c| c.window() == window) else {
                break;
            };
            if job.chunks[index].status != ChunkStatus::Running {
                return Ok(Some(job));
            }
            let now = self.sync.clock().now();
            match outcome {
                ChunkOutcome::Done => job.chunk_done(index, run),
                ChunkOutcome::Stopped(Stop::OutOfTime) => job.split_chunk(index, now),
                ChunkOutcome::Stopped(Stop::Interrupted) => job.chunk_interrupted(index, now),
                ChunkOutcome::Failed(error) => {
                    let attempt = job.chunks[index].attempts;
                    job.chunk_failed(index, &run.id, error, now, self.backoff(attempt));
                }
            }
            if store.save_backfill(&mut job).await? == SaveOutcome::Saved {
                return Ok(Some(job));
            }
            job = self.get(&run.source_id, &job.id).await?;
        }
        warn!(source_id = %run.source_id, backfill_id = %job.id, "the job keeps changing under this worker; it stops and the next worker goes on");
        Ok(None)
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::Duration as Span;

    use super::*;
    use crate::backfill::{ChunkStatus, JobStatus};
    use crate::ports::{BackfillJobs, RecordReader, RunLog, SourceError, SourceErrorKind, SourceStore};
    use crate::sync::tests::{Fixture, QUERY, base, config};

    fn request(days: i64, chunk: &str) -> BackfillRequest {
        BackfillRequest {
            start: Some((base() - Span::days(days)).to_rfc3339()),
            end: Some(base().to_rfc3339()),
            chunk: Some(chunk.into()),
        }
    }

    fn backfiller(f: &Fixture) -> Backfiller {
        Backfiller::new(
            f.service.clone(),
            BackfillSettings {
                retry_base: Duration::from_secs(30),
                ..BackfillSettings::default()
            },
        )
    }

    /// One sale at noon of each of the `days` days before [`base`].
    fn daily_sales(f: &Fixture, days: i64) {
        for d in 1..=days {
            f.sale(d, base() - Span::days(d) + Span::hours(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_its_chunks_in_order_and_never_moves_the_watermark() {
        let f = Fixture::new(config(QUERY)).await;
        daily_sales(&f, 3);
        let b = backfiller(&f);
        let job = b.create("sales", &request(3, "1d")).await.unwrap();
        assert_eq!(job.chunks.len(), 3);
        let seen = Mutex::new(Vec::new());
        let done = b
            .work("sales", &Budget::default(), &|j| {
                seen.lock().unwrap().push(j.progress().chunks_done)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.status, JobStatus::Done);
        assert_eq!(done.progress().rows_written, 3);
        let froms: Vec<_> = f.db.queried().iter().map(|w| w.from).collect();
        assert_eq!(
            froms,
            [base() - Span::days(3), base() - Span::days(2), base() - Span::days(1)]
        );
        assert_eq!(
            *seen.lock().unwrap().last().unwrap(),
            3,
            "the progress bar sees every chunk"
        );
        let state = f.state().await;
        assert_eq!(
            (state.watermark, state.active_backfill, state.lease),
            (None, None, None)
        );
        // The slot is free again: a second job may be planned.
        b.create("sales", &request(1, "1d")).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_active_job_is_refused_naming_the_first() {
        let f = Fixture::new(config(QUERY)).await;
        let b = backfiller(&f);
        let first = b.create("sales", &request(2, "1d")).await.unwrap();
        match b.create("sales", &request(1, "1d")).await {
            Err(BackfillError::Conflict { existing, .. }) => assert_eq!(existing, first.id),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_without_an_upper_bound_is_one_chunk_whose_end_sluice_keeps() {
        let f = Fixture::new(config("SELECT * FROM sales WHERE updated_at >= {{ last_update_time }}")).await;
        daily_sales(&f, 3);
        f.sale(9, base() - Span::hours(1));
        let b = backfiller(&f);
        let range = BackfillRequest {
            start: Some((base() - Span::days(3)).to_rfc3339()),
            end: Some((base() - Span::days(1)).to_rfc3339()),
            chunk: Some("1d".into()),
        };
        let job = b.create("sales", &range).await.unwrap();
        assert_eq!(job.chunks.len(), 1, "one chunk, whatever was asked");
        let job = b.work("sales", &Budget::default(), &|_| {}).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Done);
        let runs = f.store.list_runs("sales", 10, None).await.unwrap();
        let run = &runs[0];
        assert_eq!(
            (run.rows_read, run.rows_written, run.rows_past_end),
            (4, 2, 2),
            "the query read from the start to now; the two rows from the end on are left out"
        );
        assert_eq!(f.store.count_records("sales").await.unwrap(), 2);
        assert!(f.store.get_record("sales", "s-1").await.unwrap().is_none());
        assert!(f.store.get_record("sales", "s-9").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_chunk_is_retried_with_backoff_then_failed_while_the_others_go_on() {
        let f = Fixture::new(config(QUERY)).await;
        daily_sales(&f, 3);
        f.db.poison(
            base() - Span::days(2) + Span::hours(1),
            SourceError::new(SourceErrorKind::Query, "relation \"sales\" is locked"),
        );
        let b = backfiller(&f);
        b.create("sales", &request(3, "1d")).await.unwrap();
        let started = f.service.clock().now();
        let job = b.work("sales", &Budget::default(), &|_| {}).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        let failed = &job.chunks[1];
        assert_eq!((failed.status, failed.attempts), (ChunkStatus::Failed, 3));
        assert!(failed.error.as_deref().unwrap().contains("is locked"));
        assert_eq!(job.progress().chunks_done, 2);
        // Waited about 30 s, then 60 s (± 20%) between the attempts.
        let waited = (f.service.clock().now() - started).num_seconds();
        assert!((72..=108).contains(&waited), "{waited} s");
        assert_eq!(job.errors().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_that_outlasts_the_budget_is_split_and_the_next_worker_goes_on() {
        let f = Fixture::new(config(QUERY)).await;
        for h in 0..48 {
            f.sale(h, base() - Span::hours(48 - h));
        }
        f.db.answer_slowly(Duration::from_secs(2));
        let b = backfiller(&f);
        b.create("sales", &request(2, "2d")).await.unwrap();
        // 60 s of budget, 30 s of it kept in hand: 48 rows of 2 s do not fit.
        let budget = Budget::until(Some(tokio::time::Instant::now() + Duration::from_secs(60)));
        let job = b.work("sales", &budget, &|_| {}).await.unwrap().unwrap();
        assert_eq!(job.chunks.len(), 2, "the chunk was split in two");
        assert!(job.chunks.iter().all(|c| c.status == ChunkStatus::Pending));
        f.db.answer_slowly(Duration::ZERO);
        let job = b.work("sales", &Budget::default(), &|_| {}).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Done);
        assert_eq!(f.records().await, 48);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_job_starts_no_chunk() {
        let f = Fixture::new(config(QUERY)).await;
        daily_sales(&f, 3);
        let b = backfiller(&f);
        let job = b.create("sales", &request(3, "1d")).await.unwrap();
        let cancelled = b.cancel("sales", &job.id).await.unwrap();
        assert_eq!(
            cancelled.status,
            JobStatus::Cancelled,
            "nothing was running: sealed at once"
        );
        assert!(b.work("sales", &Budget::default(), &|_| {}).await.unwrap().is_none());
        assert!(f.db.queried().is_empty());
        assert_eq!(f.state().await.active_backfill, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_left_running_by_a_dead_worker_runs_again_and_the_attempt_counts() {
        let f = Fixture::new(config(QUERY)).await;
        daily_sales(&f, 2);
        let b = backfiller(&f);
        let mut job = b.create("sales", &request(2, "1d")).await.unwrap();
        job.start_chunk(0, base());
        assert_eq!(f.store.save_backfill(&mut job).await.unwrap(), SaveOutcome::Saved);
        let job = b.work("sales", &Budget::default(), &|_| {}).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Done);
        assert_eq!(job.chunks[0].attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_source_leaves_the_job_for_the_next_worker() {
        let f = Fixture::new(config(QUERY)).await;
        let b = backfiller(&f);
        let job = b.create("sales", &request(2, "1d")).await.unwrap();
        let until = base() + Span::minutes(16);
        f.store
            .acquire_lease("sales", "scheduled-run", base(), until)
            .await
            .unwrap();
        assert!(b.pump(&Budget::default()).await.unwrap().is_empty());
        let stored = b.get("sales", &job.id).await.unwrap();
        assert_eq!((stored.status, stored.version), (JobStatus::Pending, 0));
        f.store.release_lease("sales", "scheduled-run").await.unwrap();
        let jobs = b.pump(&Budget::default()).await.unwrap();
        assert_eq!(jobs[0].status, JobStatus::Done);
    }
}
