//! The sync service: one run of one source (DESIGN §3).
//!
//! Lease, then for each window: render, stream, map, write in batches with several
//! writes in flight, upsert members, and only then move the watermark, conditionally on
//! the lease. Any failure leaves the watermark where it was: the next run re-reads.

mod session;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

pub(crate) use session::OpenSource;

use crate::mapping::{LazyMapper, Mapped, MappingError};
use crate::ports::{
    Clock, Events, IdSource, LeaseOutcome, LoginCheck, NoObserver, RunObserver, Schedules, Secrets, SecretsError,
    SourceError, SourceErrorKind, SourceReader, SourceState, Store, StoreError, SystemClock, UuidIds,
};
use crate::preview::Preview;
use crate::record::{Member, Reject};
use crate::run::{Run, RunStatus, Trigger};
use crate::source::SourceConfig;
use crate::template::TemplateError;
use crate::window::{Window, next_start, windows};
use writer::Writer;

/// Tuning of the sync; the defaults suit a Lambda function of 128 MB to 1 GB.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// How long a lease lasts: the function timeout plus a margin.
    pub lease: Duration,
    /// Records per write call (a DynamoDB BatchGetItem of hashes, then 4 BatchWriteItem).
    pub batch_size: usize,
    /// Write calls in flight at once.
    pub max_in_flight: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            lease: Duration::from_secs(16 * 60),
            batch_size: 100,
            max_in_flight: 8,
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
    #[error(
        "source database: {source}, after {read} rows; what was read is kept and the watermark stays, so the next attempt reads the window again"
    )]
    SourceLost { read: u64, source: SourceError },
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
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error(
        "even the one-minute window [{from}, {to}) is not read within the function's time budget; make the query faster (an index on the date column) or raise the function timeout"
    )]
    WindowTooSlow { from: DateTime<Utc>, to: DateTime<Utc> },
    #[error(
        "the source requires a login that cannot write (require_read_only_login), and {0}; nothing was read (to run with a warning instead, turn require_read_only_login off)"
    )]
    LoginNotReadOnly(LoginCheck),
}

/// How long a login check's result stands for a source and login before a run checks
/// again. The check is a few catalog queries; an hour keeps a per-minute source from
/// paying them on every run, and a grant added later is seen within the hour (the
/// test query always checks afresh).
pub const LOGIN_CHECK_TTL: chrono::Duration = chrono::Duration::hours(1);

/// A login check's result, for the source's login at the time.
struct CheckedLogin {
    digest: u128,
    at: DateTime<Utc>,
    check: LoginCheck,
}

/// Windows are not halved below a minute.
const MIN_WINDOW_SECONDS: i64 = 60;

/// Why reading stopped before the end of a window.
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

    /// The same budget with `margin` less time.
    pub fn less(&self, margin: Duration) -> Budget {
        Budget {
            deadline: self.deadline.map(|d| d - margin),
            interrupted: self.interrupted.clone(),
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
    /// Done; with a note when the run stopped early on purpose (a limit).
    Done(Option<String>),
    Skipped(String),
}

/// How a window's read ended.
enum WindowEnd {
    Complete,
    /// `max_rows_per_run` rows were read before the end of the window.
    RowLimit(u64),
    Stopped(Stop),
}

/// What one run works with, built once: the source, its compiled query and open
/// session, and how far the run may go.
struct RunContext<'a> {
    state: &'a SourceState,
    open: OpenSource,
    budget: &'a Budget,
    /// Most rows the run reads (scheduled runs whose query is bounded from above).
    row_limit: Option<u64>,
    lease: HeldLease<'a>,
}

/// The source's lease as this run holds it: renewed between batches, so a run longer
/// than the lease keeps it, and checked before every write, so a run that lost it
/// (it expired and another run took it) writes nothing more.
struct HeldLease<'a> {
    token: &'a str,
    length: Duration,
    renewed: Instant,
}

impl<'a> HeldLease<'a> {
    fn new(token: &'a str, length: Duration) -> Self {
        HeldLease {
            token,
            length,
            renewed: Instant::now(),
        }
    }

    /// Renews the lease once a quarter of it has passed since the last renewal.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when another run holds it now.
    async fn keep(&mut self, service: &SyncService, source_id: &str) -> Result<(), StoreError> {
        if self.renewed.elapsed() < self.length / 4 {
            return Ok(());
        }
        let renewed = Instant::now();
        let until = service.clock.now() + chrono::Duration::from_std(self.length).expect("lease fits");
        service.store.renew_lease(source_id, self.token, until).await?;
        self.renewed = renewed;
        Ok(())
    }
}

/// Runs syncs. Built once per process (or Lambda container) and shared.
pub struct SyncService {
    store: Arc<dyn Store>,
    reader: Arc<dyn SourceReader>,
    secrets: Arc<dyn Secrets>,
    events: Arc<dyn Events>,
    /// Where the adaptive frequency is applied; without it (the CLI) it is only kept.
    schedules: Option<Arc<dyn Schedules>>,
    observer: Arc<dyn RunObserver>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    settings: SyncSettings,
    /// The last login check of each source (one entry per source, so bounded).
    logins: Mutex<HashMap<String, CheckedLogin>>,
}

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
            observer: Arc::new(NoObserver),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidIds),
            settings,
            logins: Mutex::default(),
        }
    }

    /// Applies the adaptive frequency (DESIGN §7) to the sources' schedules.
    pub fn with_schedules(mut self, schedules: Arc<dyn Schedules>) -> Self {
        self.schedules = Some(schedules);
        self
    }

    /// Shows every finished run to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Reads time and makes ids through these instead of the system's.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>, ids: Arc<dyn IdSource>) -> Self {
        self.clock = clock;
        self.ids = ids;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn events(&self) -> &Arc<dyn Events> {
        &self.events
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub fn ids(&self) -> &dyn IdSource {
        &*self.ids
    }

    /// The test query of `config`, saved or not: see [`crate::preview`]. Writes nothing.
    ///
    /// # Errors
    /// Only when the source's stored state cannot be read.
    pub async fn preview(&self, config: &SourceConfig, window: Option<Window>) -> Result<Preview, StoreError> {
        let state = self.store.get_source(&config.id).await?;
        let preview = crate::preview::preview(
            &*self.reader,
            &*self.secrets,
            config,
            state.as_ref(),
            window,
            crate::preview::PreviewLimits::default(),
        )
        .await;
        if let Some(state) = state.filter(|s| s.same_connection(config)) {
            self.remember_host_key(&state, preview.ssh_host_key.as_deref()).await?;
        }
        Ok(preview)
    }

    /// Runs one sync of `source_id`, logs it as a run and announces it. A failed or
    /// skipped run is still `Ok`: the error is in the run's message. Reading stops
    /// between batches at `deadline`.
    ///
    /// # Errors
    /// Only when the run log itself cannot be written.
    pub async fn run(&self, source_id: &str, trigger: Trigger, deadline: Option<Instant>) -> Result<Run, StoreError> {
        let now = self.clock.now();
        let mut run = Run::start(self.ids.sortable_id(now), source_id, trigger, now);
        let span = info_span!("sync", source_id, run_id = %run.id, trigger = ?trigger);
        let budget = Budget::until(deadline);
        let outcome = self.execute(&mut run, &budget).instrument(span.clone()).await;
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
        token: &str,
        backfill_id: &str,
        window: Window,
        budget: &Budget,
    ) -> Result<(Run, ChunkOutcome), StoreError> {
        let now = self.clock.now();
        let mut run = Run::start(self.ids.sortable_id(now), &state.config.id, Trigger::Backfill, now);
        run.backfill_id = Some(backfill_id.to_string());
        let span = info_span!("backfill_chunk", source_id = %state.config.id, run_id = %run.id, backfill_id);
        let result = self
            .read_chunk(&mut run, state, token, window, budget)
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

    /// Seals the run, logs it, stores it, shows it to the observer and announces it.
    async fn log(&self, run: Run, outcome: Result<Outcome, SyncError>, span: tracing::Span) -> Result<Run, StoreError> {
        let now = self.clock.now();
        let run = match outcome {
            Ok(Outcome::Done(note)) => run.finish(RunStatus::Succeeded, note, now),
            Ok(Outcome::Skipped(why)) => run.finish(RunStatus::Skipped, Some(why), now),
            Err(e) => run.finish(RunStatus::Failed, Some(e.to_string()), now),
        };
        let _guard = span.enter();
        info!(
            status = ?run.status, rows_read = run.rows_read, rows_written = run.rows_written,
            rows_unchanged = run.rows_unchanged, rows_rejected = run.rows_rejected,
            rows_past_end = run.rows_past_end, duration_ms = run.duration_ms, watermark = ?run.watermark, message = run.message.as_deref(),
            "run finished"
        );
        self.store.put_run(&run).await?;
        self.observer.run_finished(&run, now);
        if let Err(e) = self.events.run_completed(&run).await {
            warn!(error = %e, "could not publish sluice.run.completed");
        }
        Ok(run)
    }

    /// Takes the lease of `source_id` for `token`, or extends it when `token` holds it.
    pub async fn lease(&self, source_id: &str, token: &str) -> Result<LeaseOutcome, StoreError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.settings.lease).expect("lease fits");
        self.store.acquire_lease(source_id, token, now, until).await
    }

    /// Opens `state`'s source, its tunnel pinned to the bastion key recorded first.
    async fn open(&self, state: &SourceState) -> Result<OpenSource, SyncError> {
        let recorded = state.ssh_host_key.as_deref();
        let open = OpenSource::open(&state.config, &*self.reader, &*self.secrets, recorded).await?;
        self.remember_host_key(state, open.session.ssh_host_key()).await?;
        Ok(open)
    }

    /// Says in `run` (and the log) what the source's login may do, from the check of
    /// this source and login made within [`LOGIN_CHECK_TTL`], else from a new one.
    ///
    /// # Errors
    /// [`SyncError::LoginNotReadOnly`] when the source requires a read-only login and
    /// the check does not prove it, before anything is read.
    async fn check_login(&self, run: &mut Run, config: &SourceConfig, open: &mut OpenSource) -> Result<(), SyncError> {
        let digest = open.login_digest();
        let now = self.clock.now();
        let cached = self
            .logins
            .lock()
            .expect("login cache lock")
            .get(&config.id)
            .filter(|c| c.digest == digest && now - c.at < LOGIN_CHECK_TTL)
            .map(|c| c.check.clone());
        let check = match cached {
            Some(check) => check,
            None => {
                let check = open.check_login().await;
                // A failed check is tried again by the next run, not remembered.
                if !matches!(check, LoginCheck::CouldNotCheck { .. }) {
                    self.logins.lock().expect("login cache lock").insert(
                        config.id.clone(),
                        CheckedLogin {
                            digest,
                            at: now,
                            check: check.clone(),
                        },
                    );
                }
                check
            }
        };
        if check.is_read_only() {
            info!(login = %check, "login check");
        } else {
            warn!(login = %check, "login check");
        }
        run.login = Some(check.to_string());
        if config.require_read_only_login && !check.is_read_only() {
            return Err(SyncError::LoginNotReadOnly(check));
        }
        Ok(())
    }

    /// Records the host key an opened tunnel's bastion showed, when it is not the one
    /// recorded: on first contact (trust on first use), or after the secret pinned a
    /// new one.
    async fn remember_host_key(&self, state: &SourceState, shown: Option<&str>) -> Result<(), StoreError> {
        let Some(shown) = shown.filter(|k| Some(*k) != state.ssh_host_key.as_deref()) else {
            return Ok(());
        };
        match &state.ssh_host_key {
            None => {
                info!(source_id = %state.config.id, host_key = shown, "SSH bastion's host key trusted on first contact and recorded")
            }
            Some(old) => {
                info!(source_id = %state.config.id, host_key = shown, previous = %old, "SSH bastion's host key changed as the secret pins; recorded")
            }
        }
        self.store.record_ssh_host_key(&state.config.id, shown).await
    }

    async fn read_chunk(
        &self,
        run: &mut Run,
        state: &SourceState,
        token: &str,
        window: Window,
        budget: &Budget,
    ) -> Result<(), SyncError> {
        let mut open = self.open(state).await?;
        self.check_login(run, &state.config, &mut open).await?;
        run.window_start = Some(window.from);
        run.window_end = Some(window.to);
        run.watermark = state.watermark;
        let mut ctx = RunContext {
            state,
            open,
            budget,
            row_limit: None,
            lease: HeldLease::new(token, self.settings.lease),
        };
        match self.sync_window(run, &mut ctx, window).await? {
            WindowEnd::Stopped(stop) => Err(SyncError::Stopped(stop)),
            WindowEnd::Complete | WindowEnd::RowLimit(_) => Ok(()),
        }
    }

    async fn execute(&self, run: &mut Run, budget: &Budget) -> Result<Outcome, SyncError> {
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
        if let Some(start_at) = state.config.start_at.filter(|s| *s > run.started_at) {
            return Ok(Outcome::Skipped(format!("the source starts at {start_at}")));
        }
        let token = self.ids.token();
        let state = match self.lease(&id, &token).await? {
            LeaseOutcome::Acquired(state) => state,
            LeaseOutcome::Held { expires_at } => {
                return Ok(Outcome::Skipped(format!(
                    "another run of this source is in progress (lease held until {expires_at}); the next run catches up"
                )));
            }
            LeaseOutcome::NotFound => return Err(SyncError::UnknownSource(id)),
        };
        let result = async {
            let mut open = self.open(&state).await?;
            self.check_login(run, &state.config, &mut open).await?;
            let mut ctx = RunContext {
                state: &state,
                open,
                budget,
                row_limit: None,
                lease: HeldLease::new(&token, self.settings.lease),
            };
            self.sync_windows(run, &mut ctx).await
        }
        .await;
        if let Err(e) = self.store.release_lease(&id, &token).await {
            warn!(error = %e, "could not release the lease; it expires by itself");
        }
        result.map(Outcome::Done)
    }

    /// Reads the windows from the watermark up to the database's clock, while the time
    /// budget and the row limit last. A note says why it stopped early, if it did.
    async fn sync_windows(&self, run: &mut Run, ctx: &mut RunContext<'_>) -> Result<Option<String>, SyncError> {
        let state = ctx.state;
        let config = &state.config;
        let bound = ctx.open.upper_bound().await?;
        run.window_bound = Some(bound.reason);
        let upper = bound.at;
        let start = next_start(state.watermark, config.initial_watermark, config.lookback_seconds);
        // Windows can only be narrowed, and a run cut at a row limit, when the template
        // bounds them from above.
        let bounded = ctx.open.template.uses_upper_limit();
        ctx.row_limit = bounded.then(|| config.row_limit());
        let narrowed = state.narrowed_window_seconds.filter(|_| bounded);
        let max = config
            .max_window_seconds
            .filter(|_| bounded)
            .map(i64::from)
            .into_iter()
            .chain(narrowed)
            .min()
            .map(chrono::Duration::seconds);
        let mut slowest = Duration::ZERO;
        for window in windows(start, upper, max) {
            // Catch-up goes on only while the budget clearly covers another window.
            if run.window_start.is_some() && ctx.budget.stop(slowest * 2).is_some() {
                info!(remaining_from = %window.from, "time budget used; the next run continues");
                return Ok(None);
            }
            if ctx.row_limit.is_some_and(|l| run.rows_read >= l) {
                info!(remaining_from = %window.from, "max_rows_per_run read; the next run continues");
                return Ok(None);
            }
            let began = Instant::now();
            run.window_start.get_or_insert(window.from);
            match self.sync_window(run, ctx, window).await? {
                WindowEnd::Complete => {}
                WindowEnd::RowLimit(limit) => return self.narrow(run, window, Some(limit)).await.map(Some),
                WindowEnd::Stopped(Stop::OutOfTime) if bounded => {
                    return self.narrow(run, window, None).await.map(Some);
                }
                WindowEnd::Stopped(Stop::OutOfTime) => {
                    return Ok(Some(format!(
                        "the time budget ran out before the end of the window [{}, {}); what was read is kept and the next run reads the window again; add `AND <date column> < {{{{ upper_date_limit }}}}` so that windows can be narrowed",
                        window.from, window.to
                    )));
                }
                WindowEnd::Stopped(stop) => return Err(SyncError::Stopped(stop)),
            }
            self.store
                .advance_watermark(&config.id, ctx.lease.token, window.to)
                .await?;
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

    /// A window held more than a run could read, `limit` rows or what the time budget
    /// allowed: what was read is kept, the watermark stays, and the next runs read it
    /// in halves.
    async fn narrow(&self, run: &Run, window: Window, limit: Option<u64>) -> Result<String, SyncError> {
        let seconds = (window.to - window.from).num_seconds();
        let (from, to) = (window.from, window.to);
        if seconds <= MIN_WINDOW_SECONDS {
            return Err(match limit {
                Some(limit) => SyncError::WindowTooFull { limit, from, to },
                None => SyncError::WindowTooSlow { from, to },
            });
        }
        let half = (seconds / 2).max(MIN_WINDOW_SECONDS);
        self.store.set_narrowed_window(&run.source_id, Some(half)).await?;
        let why = match limit {
            Some(limit) => format!("read max_rows_per_run ({limit}) rows"),
            None => "the time budget ran out".to_string(),
        };
        Ok(format!(
            "{why} before the end of the window [{from}, {to}); what was read is kept, the watermark stays, and the next runs read it in windows of {half} s"
        ))
    }

    async fn sync_window(
        &self,
        run: &mut Run,
        ctx: &mut RunContext<'_>,
        window: Window,
    ) -> Result<WindowEnd, SyncError> {
        info!(from = %window.from, to = %window.to, "window started");
        let config = &ctx.state.config;
        let query = ctx
            .open
            .template
            .render(config.engine.placeholder_style(), window.from, window.to)?;
        let columns = ctx.open.session.columns(&query).await?;
        let mut mapper = LazyMapper::new(config.sync_type, &columns)?;
        // A backfill chunk of a query that does not bound itself from above reads on
        // past the chunk; its end is kept here, by each row's own time.
        let end_kept_here =
            (run.trigger == Trigger::Backfill && !ctx.open.template.uses_upper_limit()).then_some(window.to);
        let mut rows = ctx.open.session.stream(&query);
        let mut members: HashMap<String, Member> = HashMap::new();
        let mut writer = Writer::new(self.store.clone(), &config.id, self.settings.max_in_flight);
        let batch_size = self.settings.batch_size;
        let mut batch = Vec::with_capacity(batch_size);
        let (budget, row_limit) = (ctx.budget, ctx.row_limit);
        // A budget spent before the window began stops it at once, whatever the race
        // between the first rows and the deadline's timer.
        let mut end = match budget.stop(Duration::ZERO) {
            Some(stop) => WindowEnd::Stopped(stop),
            None => WindowEnd::Complete,
        };
        while matches!(end, WindowEnd::Complete) {
            // A query that is slow to answer is stopped at the deadline too.
            let next = match budget.deadline {
                Some(d) => match tokio::time::timeout_at(d, rows.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        end = WindowEnd::Stopped(Stop::OutOfTime);
                        break;
                    }
                },
                None => rows.next().await,
            };
            let Some(row) = next else { break };
            // A connection lost mid-read, not a query the database refused.
            let row = row.map_err(|source| match (run.rows_read, source.kind) {
                (0, kind) if kind != SourceErrorKind::Connect => SyncError::Source(source),
                (read, _) => SyncError::SourceLost { read, source },
            })?;
            run.rows_read += 1;
            match mapper.map(row)?.and_then(|mapped| within(mapped, end_kept_here)) {
                Ok(None) => run.rows_past_end += 1,
                Ok(Some(mapped)) => {
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
            if batch.len() >= batch_size {
                ctx.lease.keep(self, &config.id).await?;
                writer
                    .submit(std::mem::replace(&mut batch, Vec::with_capacity(batch_size)))
                    .await?;
                if let Some(stop) = budget.stop(Duration::ZERO) {
                    end = WindowEnd::Stopped(stop);
                    break;
                }
            }
            if let Some(limit) = row_limit.filter(|l| run.rows_read >= *l) {
                // The row that reached the limit may have been the window's last: only a
                // further row proves the window is longer.
                if rows.next().await.is_some() {
                    end = WindowEnd::RowLimit(limit);
                }
                break;
            }
        }
        drop(rows);
        ctx.open.session.finish().await?;
        ctx.lease.keep(self, &config.id).await?;
        if !batch.is_empty() {
            writer.submit(batch).await?;
        }
        let stats = writer.finish().await?;
        run.rows_written += stats.written;
        run.rows_unchanged += stats.unchanged;
        for reject in stats.rejects {
            run.reject(reject);
        }
        if !members.is_empty() {
            ctx.lease.keep(self, &config.id).await?;
            self.store
                .upsert_members(config.member_id_source(), members.into_values().collect())
                .await?;
        }
        Ok(end)
    }
}

/// `mapped`, unless it happened at or after `end`; with an end, a row must say when
/// it happened.
fn within(mapped: Mapped, end: Option<DateTime<Utc>>) -> Result<Option<Mapped>, Reject> {
    let Some(end) = end else { return Ok(Some(mapped)) };
    match mapped.occurred_at {
        Some(at) if at >= end => Ok(None),
        Some(_) => Ok(Some(mapped)),
        None => Err(Reject {
            reference: Some(mapped.record.key),
            reason: "the row has no timestamp, and a backfill of a query without {{ upper_date_limit }} keeps to its end by each row's timestamp; select a `timestamp` column or add `AND <date column> < {{ upper_date_limit }}` to the query".into(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests;
