//! The sync service: one run of one source (DESIGN §3).
//!
//! Lease, then for each window: render, stream, map, write in batches with several
//! writes in flight, upsert members, and only then move the watermark, conditionally on
//! the lease. Any failure leaves the watermark where it was: the next run re-reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use crate::ports::{
    Events, LeaseOutcome, Schedules, Secrets, SecretsError, SourceError, SourceReader, SourceSession, SourceState,
    Store, StoreError, WriteStats,
};
use crate::preview::Preview;
use crate::record::{MappingError, Member, Record, RecordMapper};
use crate::run::{Run, RunStatus, Trigger};
use crate::source::SourceConfig;
use crate::template::{QueryTemplate, RenderedQuery, TemplateError};
use crate::window::{Window, next_start, windows};

/// Tuning of the sync; the defaults suit a Lambda function of 128 MB to 1 GB.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// How long a lease lasts: the function timeout plus a margin.
    pub lease: Duration,
    /// Records per write call (a DynamoDB BatchGetItem of hashes, then 4 BatchWriteItem).
    pub batch_size: usize,
    /// Write calls in flight at once.
    pub max_in_flight: usize,
    /// Where each run's metrics go, as an Embedded Metric Format line on stdout
    /// (CloudWatch Logs extracts them in Lambda); `None` prints none.
    pub metrics_namespace: Option<String>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            lease: Duration::from_secs(16 * 60),
            batch_size: 100,
            max_in_flight: 8,
            metrics_namespace: None,
        }
    }
}

/// Why a run failed. Every message names the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("source `{0}` does not exist; create it first")]
    UnknownSource(String),
    #[error("the query template is invalid: {0}")]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Mapping(#[from] MappingError),
    #[error("source database: {0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Secrets(#[from] SecretsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a write task stopped unexpectedly: {0}")]
    WriteTask(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Stopped(Stop),
    #[error(
        "the window [{from}, {to}) holds more than max_rows_per_run ({limit}) rows even at one minute; raise max_rows_per_run"
    )]
    WindowTooFull {
        limit: u64,
        from: chrono::DateTime<Utc>,
        to: chrono::DateTime<Utc>,
    },
}

/// Windows are not halved below a minute.
const MIN_WINDOW_SECONDS: i64 = 60;

/// Why a chunk stopped before its window was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The function's time budget ran out.
    OutOfTime,
    /// The user interrupted the process (Ctrl-C).
    Interrupted,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::OutOfTime => "stopped before the end of the window: the time budget ran out",
            Stop::Interrupted => "stopped before the end of the window: interrupted",
        })
    }
}

/// When long work must stop: at a deadline (the Lambda function's), or when the
/// process is interrupted. Checked between batches.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub deadline: Option<Instant>,
    pub interrupted: Arc<AtomicBool>,
}

impl Budget {
    pub fn until(deadline: Option<Instant>) -> Self {
        Budget {
            deadline,
            interrupted: Arc::default(),
        }
    }

    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    /// Why work must stop now, keeping `margin` of the time budget in hand.
    pub fn stop(&self, margin: Duration) -> Option<Stop> {
        if self.interrupted.load(Ordering::Relaxed) {
            Some(Stop::Interrupted)
        } else if self.deadline.is_some_and(|d| Instant::now() + margin >= d) {
            Some(Stop::OutOfTime)
        } else {
            None
        }
    }
}

/// How a backfill chunk's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    Done,
    Stopped(Stop),
    Failed(String),
}

enum Outcome {
    /// Done; with a note when the run stopped early on purpose (the row limit).
    Done(Option<String>),
    Skipped(String),
}

/// How a window's read ended.
enum WindowEnd {
    Complete,
    /// `max_rows_per_run` rows were read before the end of the window.
    RowLimit,
}

/// Runs syncs. Built once per process (or Lambda container) and shared.
pub struct SyncService {
    store: Arc<dyn Store>,
    reader: Arc<dyn SourceReader>,
    secrets: Arc<dyn Secrets>,
    events: Arc<dyn Events>,
    /// Where the adaptive frequency is applied; without it (the CLI) it is only kept.
    schedules: Option<Arc<dyn Schedules>>,
    settings: SyncSettings,
}

/// After this many records written with none unchanged, a window stops checking hashes:
/// the check costs a read per record and would save nothing.
const HASH_CHECK_PROBE: u64 = 1_000;

impl SyncService {
    pub fn new(
        store: Arc<dyn Store>,
        reader: Arc<dyn SourceReader>,
        secrets: Arc<dyn Secrets>,
        events: Arc<dyn Events>,
        settings: SyncSettings,
    ) -> Self {
        SyncService {
            store,
            reader,
            secrets,
            events,
            schedules: None,
            settings,
        }
    }

    /// Applies the adaptive frequency (DESIGN §7) to the sources' schedules.
    pub fn with_schedules(mut self, schedules: Arc<dyn Schedules>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn events(&self) -> &Arc<dyn Events> {
        &self.events
    }

    /// The test query of `config`, saved or not: see [`crate::preview`]. Writes nothing.
    ///
    /// # Errors
    /// Only when the source's stored state cannot be read.
    pub async fn preview(&self, config: &SourceConfig, window: Option<Window>) -> Result<Preview, StoreError> {
        let state = self.store.get_source(&config.id).await?;
        Ok(crate::preview::preview(&*self.reader, &*self.secrets, config, state.as_ref(), window).await)
    }

    /// Runs one sync of `source_id`, logs it as a run and announces it. A failed or
    /// skipped run is still `Ok`: the error is in the run's message.
    ///
    /// # Errors
    /// Only when the run log itself cannot be written.
    pub async fn run(&self, source_id: &str, trigger: Trigger, deadline: Option<Instant>) -> Result<Run, StoreError> {
        let mut run = Run::start(source_id, trigger);
        let span = info_span!("sync", source_id, run_id = %run.id, trigger = ?trigger);
        let outcome = self.execute(&mut run, deadline).instrument(span.clone()).await;
        let run = self.log(run, outcome, span.clone()).await?;
        if run.trigger == Trigger::Schedule && run.status == RunStatus::Succeeded {
            self.adapt_schedule(&run).instrument(span).await;
        }
        Ok(run)
    }

    /// Moves the source's effective frequency after a scheduled run (DESIGN §7). Best
    /// effort: a failure here never fails the run that was already logged.
    async fn adapt_schedule(&self, run: &Run) {
        let state = match self.store.get_source(&run.source_id).await {
            Ok(Some(state)) => state,
            Ok(None) => return,
            Err(e) => return warn!(error = %e, "could not read the source to adapt its schedule"),
        };
        let configured = state.config.frequency_minutes;
        let next = state
            .cadence
            .after_run(configured, Duration::from_millis(run.duration_ms));
        if next == state.cadence {
            return;
        }
        let (before, after) = (state.cadence.minutes(configured), next.minutes(configured));
        if before != after {
            info!(
                from_minutes = before,
                to_minutes = after,
                configured_minutes = configured,
                duration_ms = run.duration_ms,
                "schedule frequency adapted to the import time"
            );
            // The rate first: if it cannot change, the cadence is not saved either, so the
            // next run decides again.
            if let Some(schedules) = &self.schedules
                && let Err(e) = schedules.set_rate(&run.source_id, after).await
            {
                return warn!(error = %e, "could not change the schedule's rate; the next run tries again");
            }
        }
        if let Err(e) = self.store.set_cadence(&run.source_id, next).await {
            warn!(error = %e, "could not save the schedule's cadence");
        }
    }

    /// Runs one backfill chunk, `window` of a source whose lease the caller holds, as a
    /// run with trigger `backfill`. It never moves the watermark, and stops between
    /// batches when `budget` says so (what it wrote stays: writes are idempotent).
    ///
    /// # Errors
    /// Only when the run log itself cannot be written.
    pub async fn run_chunk(
        &self,
        state: &SourceState,
        backfill_id: &str,
        window: Window,
        budget: &Budget,
    ) -> Result<(Run, ChunkOutcome), StoreError> {
        let mut run = Run::start(&state.config.id, Trigger::Backfill);
        run.backfill_id = Some(backfill_id.to_string());
        let span = info_span!("backfill_chunk", source_id = %state.config.id, run_id = %run.id, backfill_id);
        let result = self
            .read_chunk(&mut run, state, window, budget)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(()) => ChunkOutcome::Done,
            Err(SyncError::Stopped(stop)) => ChunkOutcome::Stopped(*stop),
            Err(e) => ChunkOutcome::Failed(e.to_string()),
        };
        let run = self.log(run, result.map(|()| Outcome::Done(None)), span).await?;
        Ok((run, outcome))
    }

    /// Seals the run, logs it, stores it and announces it.
    async fn log(&self, run: Run, outcome: Result<Outcome, SyncError>, span: tracing::Span) -> Result<Run, StoreError> {
        let run = match outcome {
            Ok(Outcome::Done(note)) => run.finish(RunStatus::Succeeded, note),
            Ok(Outcome::Skipped(why)) => run.finish(RunStatus::Skipped, Some(why)),
            Err(e) => run.finish(RunStatus::Failed, Some(e.to_string())),
        };
        let _guard = span.enter();
        info!(
            status = ?run.status, rows_read = run.rows_read, rows_written = run.rows_written,
            rows_unchanged = run.rows_unchanged, rows_rejected = run.rows_rejected,
            duration_ms = run.duration_ms, watermark = ?run.watermark, message = run.message.as_deref(),
            "run finished"
        );
        self.store.put_run(&run).await?;
        if let Some(namespace) = &self.settings.metrics_namespace {
            println!("{}", crate::metrics::emf(&run, namespace, Utc::now()));
        }
        if let Err(e) = self.events.run_completed(&run).await {
            warn!(error = %e, "could not publish sluice.run.completed");
        }
        Ok(run)
    }

    /// Takes the lease of `source_id` for `token`, or extends it when `token` holds it.
    pub async fn lease(&self, source_id: &str, token: &str) -> Result<LeaseOutcome, StoreError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(self.settings.lease).expect("lease fits");
        self.store.acquire_lease(source_id, token, now, until).await
    }

    async fn read_chunk(
        &self,
        run: &mut Run,
        state: &SourceState,
        window: Window,
        budget: &Budget,
    ) -> Result<(), SyncError> {
        let config = &state.config;
        let template = QueryTemplate::compile(&config.query)?;
        let secret = self.secrets.connection(&config.secret_id).await?;
        let timeout = Duration::from_secs(config.query_timeout_seconds.into());
        let mut session = self.reader.open(&secret, timeout).await?;
        run.window_start = Some(window.from);
        run.window_end = Some(window.to);
        run.watermark = state.watermark;
        let query = template.render(config.engine.placeholder_style(), window.from, window.to)?;
        self.sync_window(run, session.as_mut(), &query, state, window, Some(budget), None)
            .await
            .map(drop)
    }

    async fn execute(&self, run: &mut Run, deadline: Option<Instant>) -> Result<Outcome, SyncError> {
        let id = run.source_id.clone();
        let state = self
            .store
            .get_source(&id)
            .await?
            .ok_or_else(|| SyncError::UnknownSource(id.clone()))?;
        // Known from here, so that a run failing before it reads still reports the lag.
        run.watermark = state.watermark;
        if !state.config.enabled {
            return Ok(Outcome::Skipped("the source is disabled".into()));
        }
        if let Some(start_at) = state.config.start_at.filter(|s| *s > Utc::now()) {
            return Ok(Outcome::Skipped(format!("the source starts at {start_at}")));
        }
        let template = QueryTemplate::compile(&state.config.query)?;
        let token = uuid::Uuid::new_v4().to_string();
        let state = match self.lease(&id, &token).await? {
            LeaseOutcome::Acquired(state) => state,
            LeaseOutcome::Held { expires_at } => {
                return Ok(Outcome::Skipped(format!(
                    "another run of this source is in progress (lease held until {expires_at}); the next run catches up"
                )));
            }
            LeaseOutcome::NotFound => return Err(SyncError::UnknownSource(id)),
        };
        let result = self.sync_windows(run, &state, &template, &token, deadline).await;
        if let Err(e) = self.store.release_lease(&id, &token).await {
            warn!(error = %e, "could not release the lease; it expires by itself");
        }
        result.map(Outcome::Done)
    }

    /// Reads the windows from the watermark up to the database's clock, while the time
    /// budget and the row limit last. A note says why it stopped early, if it did.
    async fn sync_windows(
        &self,
        run: &mut Run,
        state: &SourceState,
        template: &QueryTemplate,
        token: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<String>, SyncError> {
        let config = &state.config;
        let secret = self.secrets.connection(&config.secret_id).await?;
        let timeout = Duration::from_secs(config.query_timeout_seconds.into());
        let mut session = self.reader.open(&secret, timeout).await?;
        let upper = session.now().await?;
        let start = next_start(state.watermark, config.initial_watermark, config.lookback_seconds);
        // Windows can only be narrowed, and a run cut at a row limit, when the template
        // bounds them from above.
        let bounded = template.uses_upper_limit();
        let row_limit = bounded.then(|| config.row_limit());
        let narrowed = state.narrowed_window_seconds.filter(|_| bounded);
        let max = config
            .max_window_seconds
            .filter(|_| bounded)
            .map(i64::from)
            .into_iter()
            .chain(narrowed)
            .min()
            .map(chrono::Duration::seconds);
        run.watermark = state.watermark;
        let style = config.engine.placeholder_style();
        let mut slowest = Duration::ZERO;
        for window in windows(start, upper, max) {
            if let Some(deadline) = deadline {
                // Catch-up goes on only while the budget clearly covers another window.
                if run.window_start.is_some() && Instant::now() + slowest * 2 >= deadline {
                    info!(remaining_from = %window.from, "time budget used; the next run continues");
                    return Ok(None);
                }
            }
            if row_limit.is_some_and(|l| run.rows_read >= l) {
                info!(remaining_from = %window.from, "max_rows_per_run read; the next run continues");
                return Ok(None);
            }
            let began = Instant::now();
            run.window_start.get_or_insert(window.from);
            let query = template.render(style, window.from, window.to)?;
            let end = self
                .sync_window(run, session.as_mut(), &query, state, window, None, row_limit)
                .await?;
            if let WindowEnd::RowLimit = end {
                return self.narrow(run, window, row_limit.unwrap_or_default()).await.map(Some);
            }
            self.store.advance_watermark(&config.id, token, window.to).await?;
            run.window_end = Some(window.to);
            run.watermark = Some(run.watermark.map_or(window.to, |w| w.max(window.to)));
            slowest = slowest.max(began.elapsed());
        }
        if narrowed.is_some() {
            // Caught up: windows are whole again.
            self.store.set_narrowed_window(&config.id, None).await?;
        }
        Ok(None)
    }

    /// A window held more rows than a run may read: what was read is kept, the
    /// watermark stays, and the next runs read it in halves.
    async fn narrow(&self, run: &Run, window: Window, limit: u64) -> Result<String, SyncError> {
        let seconds = (window.to - window.from).num_seconds();
        if seconds <= MIN_WINDOW_SECONDS {
            return Err(SyncError::WindowTooFull {
                limit,
                from: window.from,
                to: window.to,
            });
        }
        let half = (seconds / 2).max(MIN_WINDOW_SECONDS);
        self.store.set_narrowed_window(&run.source_id, Some(half)).await?;
        Ok(format!(
            "read max_rows_per_run ({limit}) rows before the end of the window [{}, {}); what was read is kept, the watermark stays, and the next runs read it in windows of {half} s",
            window.from, window.to
        ))
    }

    async fn sync_window(
        &self,
        run: &mut Run,
        session: &mut dyn SourceSession,
        query: &RenderedQuery,
        state: &SourceState,
        window: Window,
        budget: Option<&Budget>,
        row_limit: Option<u64>,
    ) -> Result<WindowEnd, SyncError> {
        info!(from = %window.from, to = %window.to, "window started");
        let config = &state.config;
        let columns = session.columns(query).await?;
        let mut mapper = match columns.is_empty() {
            true => None,
            false => Some(RecordMapper::new(config.sync_type, &columns, run.started_at)?),
        };
        let mut rows = session.stream(query);
        let mut members: HashMap<String, Member> = HashMap::new();
        let mut writer = Writer::new(self.store.clone(), &config.id, &self.settings);
        let mut batch = Vec::with_capacity(self.settings.batch_size);
        let deadline = budget.and_then(|b| b.deadline);
        loop {
            // A query that is slow to answer is stopped at the deadline too.
            let next = match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), rows.next())
                    .await
                    .map_err(|_| SyncError::Stopped(Stop::OutOfTime))?,
                None => rows.next().await,
            };
            let Some(row) = next else { break };
            let row = row?;
            run.rows_read += 1;
            let at_limit = row_limit.is_some_and(|l| run.rows_read >= l);
            let mapper = match &mapper {
                Some(m) => m,
                None => mapper.insert(RecordMapper::new(config.sync_type, &row.columns, run.started_at)?),
            };
            match mapper.map(row) {
                Ok(mapped) => {
                    if let Some(warning) = mapped.warning {
                        run.warn(warning);
                    }
                    if let Some(m) = mapped.member
                        && members.get(&m.member_id) != Some(&m)
                    {
                        members.insert(m.member_id.clone(), m);
                    }
                    batch.push(mapped.record);
                }
                Err(reject) => run.reject(reject),
            }
            if batch.len() >= self.settings.batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(self.settings.batch_size));
                writer.submit(full).await?;
                if let Some(stop) = budget.and_then(|b| b.stop(Duration::ZERO)) {
                    writer.finish().await?;
                    return Err(SyncError::Stopped(stop));
                }
            }
            if at_limit {
                break;
            }
        }
        let end = match row_limit.is_some_and(|l| run.rows_read >= l) {
            // The row that reached the limit may have been the window's last: only a
            // further row proves the window is longer.
            true if rows.next().await.is_some() => WindowEnd::RowLimit,
            _ => WindowEnd::Complete,
        };
        drop(rows);
        if !batch.is_empty() {
            writer.submit(batch).await?;
        }
        let stats = writer.finish().await?;
        run.rows_written += stats.written;
        run.rows_unchanged += stats.unchanged;
        if !members.is_empty() {
            self.store
                .upsert_members(config.member_id_source(), members.into_values().collect())
                .await?;
        }
        Ok(end)
    }
}

/// Writes batches as tasks, several in flight, so reading and writing overlap.
struct Writer {
    store: Arc<dyn Store>,
    source_id: Arc<str>,
    max_in_flight: usize,
    tasks: JoinSet<Result<WriteStats, StoreError>>,
    stats: WriteStats,
    check_unchanged: bool,
}

impl Writer {
    fn new(store: Arc<dyn Store>, source_id: &str, settings: &SyncSettings) -> Self {
        Writer {
            store,
            source_id: source_id.into(),
            max_in_flight: settings.max_in_flight.max(1),
            tasks: JoinSet::new(),
            stats: WriteStats::default(),
            check_unchanged: true,
        }
    }

    async fn submit(&mut self, batch: Vec<Record>) -> Result<(), SyncError> {
        while self.tasks.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let (store, source_id, check) = (self.store.clone(), self.source_id.clone(), self.check_unchanged);
        self.tasks
            .spawn(async move { store.write_records(&source_id, batch, check).await }.in_current_span());
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), SyncError> {
        if let Some(done) = self.tasks.join_next().await {
            self.stats += done??;
            if self.stats.unchanged == 0 && self.stats.written >= HASH_CHECK_PROBE {
                self.check_unchanged = false;
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<WriteStats, SyncError> {
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        Ok(self.stats)
    }
}
