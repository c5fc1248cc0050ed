//! The fault scenarios (issue 15), one piece for both of their callers: the test command
//! runs each small (tests/faults.rs), `bash bench/faults.sh` runs them large through the
//! `sluice-faults` binary and prints the table. Each scenario injects one kind of failure
//! while late writers commit into the source, then catches up, diffs the source's rows
//! against the stored records, and returns one line of the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use sluice_aws::{DynamoStore, TableNames};
use sluice_core::{
    BackfillRequest, Backfiller, Clock, Engine, Run, RunStatus, SourceConfig, SourceStore as _, Store, SyncService,
    Trigger, UuidIds,
};
use sluice_lambda::{FunctionConfig, backfiller, sync_service};

use crate::faults::{Fault, FaultPlan, FaultProxy, Rule};
use crate::servers::PrivateServer;
use crate::{Database, SALES_QUERY, StoreKind, open_local_store, sdk, secrets_manager_secret, unique};

/// How large the scenarios run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Sales in the source before the faults begin.
    pub rows: usize,
    /// Rounds of changes and runs under the fault.
    pub rounds: usize,
    /// Processes killed in the SIGKILL scenario.
    pub kills: usize,
}

impl Scale {
    /// The test command's size: every scenario, in about a minute each.
    pub const TEST: Scale = Scale {
        rows: 2_000,
        rounds: 4,
        kills: 16,
    };
}

/// The source's rows against the stored records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Rows with no record.
    pub missing: usize,
    /// Records older than their row.
    pub stale: usize,
    /// References stored more than once.
    pub duplicated: usize,
    /// Records of no row.
    pub extra: usize,
}

/// One line of the table.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    pub runs: u32,
    pub faults: u64,
    pub rows: usize,
    pub diff: Diff,
    /// Runs that failed and said why.
    pub failed: u32,
    /// Messages of failed runs that did not name their cause.
    pub unclear: Vec<String>,
    /// The distinct reasons runs failed for, numbers left out.
    pub reasons: BTreeSet<String>,
    /// From the end of the faults until the records match the rows.
    pub catch_up: Duration,
    /// What else the scenario found (where the kills landed).
    pub detail: String,
}

impl Outcome {
    /// Nothing missing, stale, duplicated or extra, and every failed run said why.
    pub fn assert_clean(&self) {
        println!("{}", self.row());
        for reason in &self.reasons {
            println!("  a run failed: {reason}");
        }
        if !self.detail.is_empty() {
            println!("  {}", self.detail);
        }
        assert_eq!(
            self.diff,
            Diff::default(),
            "{}: the records match the rows",
            self.scenario
        );
        assert!(
            self.unclear.is_empty(),
            "{}: failed runs that do not say why: {:?}",
            self.scenario,
            self.unclear
        );
    }

    pub fn row(&self) -> String {
        let d = &self.diff;
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} of {} | {:.1} s |",
            self.scenario,
            self.runs,
            self.faults,
            self.rows,
            d.missing,
            d.stale,
            d.duplicated + d.extra,
            self.failed,
            self.failed + self.unclear.len() as u32,
            self.catch_up.as_secs_f64()
        )
    }
}

/// The table of `outcomes`, in Markdown.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | runs | faults injected | rows | missing | stale | duplicated or extra | runs failed with a clear message | time to catch up |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for o in outcomes {
        out += &o.row();
        out.push('\n');
    }
    out
}

/// Whether a failed run's message is clear: it names the part that failed and says
/// what happens next or what to do, and it is not a dump.
fn is_clear(message: &str) -> bool {
    const CAUSES: [&str; 6] = [
        "source database",
        "store:",
        "secret",
        "schedule",
        "lease",
        "stopped before",
    ];
    const FIXES: [&str; 10] = [
        "next",
        "again",
        "check",
        "raise",
        "add an index",
        "retr",
        "wait",
        "expires",
        "make the query",
        "the run that holds the lease",
    ];
    message.len() < 2_000 && CAUSES.iter().any(|c| message.contains(c)) && FIXES.iter().any(|f| message.contains(f))
}

/// A failure's reason with its numbers left out, so that the same reason counts once.
fn reason(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out.chars().take(400).collect()
}

#[derive(Debug, Default)]
struct Tally {
    runs: u32,
    succeeded: u32,
    failed: u32,
    unclear: Vec<String>,
    reasons: BTreeSet<String>,
}

impl Tally {
    /// Counts one invocation: its run, or the error that kept it from logging one.
    fn count(&mut self, result: &Result<Run, String>) -> Option<RunStatus> {
        self.runs += 1;
        let message = match result {
            Ok(run) if run.status == RunStatus::Failed => run.message.clone().unwrap_or_default(),
            Ok(run) => {
                self.succeeded += u32::from(run.status == RunStatus::Succeeded);
                return Some(run.status);
            }
            Err(e) => e.clone(),
        };
        if is_clear(&message) {
            self.failed += 1;
            self.reasons.insert(reason(&message));
        } else {
            self.unclear.push(message);
        }
        result.as_ref().ok().map(|r| r.status)
    }
}

/// One scheduled invocation of the sync of a source.
#[async_trait]
trait Invoke: Send + Sync {
    async fn invoke(&self) -> Result<Run, String>;
}

/// The sync Lambda function's wiring (`sluice_lambda::sync_service`), built anew for
/// every invocation as a cold start is: its secret is read from Secrets Manager each
/// time, and its run is announced on EventBridge.
struct LambdaSync {
    sdk: aws_config::SdkConfig,
    config: FunctionConfig,
    source_id: String,
    clock: Option<Arc<dyn Clock>>,
}

impl LambdaSync {
    fn service(&self) -> SyncService {
        let service = sync_service(&self.sdk, &self.config);
        match &self.clock {
            Some(clock) => service.with_clock(clock.clone(), Arc::new(UuidIds)),
            None => service,
        }
    }
}

#[async_trait]
impl Invoke for LambdaSync {
    async fn invoke(&self) -> Result<Run, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        self.service()
            .run(&self.source_id, Trigger::Schedule, Some(deadline))
            .await
            .map_err(|e| format!("store: the run could not be logged: {e}"))
    }
}

/// `sluice sync --json` of a local config: the CLI, as a cron job runs it.
struct CliSync {
    config: PathBuf,
    lease_seconds: u32,
}

impl CliSync {
    fn command(&self) -> std::process::Command {
        crate::sluice_cmd(&["sync", "--json"], &self.config, self.lease_seconds)
    }
}

#[async_trait]
impl Invoke for CliSync {
    async fn invoke(&self) -> Result<Run, String> {
        let out = self.command().output().map_err(|e| e.to_string())?;
        serde_json::from_slice(&out.stdout).map_err(|_| {
            format!(
                "store: sluice sync printed no run: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    }
}

/// A small deterministic generator (splitmix64): the scenarios are random but
/// repeatable from their seed.
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        Random(uuid::Uuid::new_v4().as_u64_pair().0)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writers that keep transactions open for up to `hold` before they commit, inserting
/// new sales and updating old ones: rows whose commit comes after a run has read past
/// their timestamp. They go on through server crashes (a transaction that dies was
/// never committed).
struct LateWriters {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl LateWriters {
    fn start(db: &Database, rows: usize, next_id: Arc<AtomicUsize>, hold: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let tasks = (0..2)
            .map(|_| {
                let (db, stop, commits, next_id) = (db.clone(), stop.clone(), commits.clone(), next_id.clone());
                tokio::spawn(async move {
                    let mut random = Random::seeded();
                    while !stop.load(Ordering::SeqCst) {
                        let statement = if random.below(2) == 0 {
                            db.late_insert(next_id.fetch_add(1, Ordering::SeqCst))
                        } else {
                            db.late_update(1 + random.below(rows as u64) as usize)
                        };
                        match db.begin_late(&statement).await {
                            Ok(open) => {
                                let held = random.below(hold.as_millis() as u64);
                                tokio::time::sleep(Duration::from_millis(held)).await;
                                if open.try_commit().await.is_ok() {
                                    commits.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        LateWriters { stop, tasks, commits }
    }

    /// Stops them once their open transactions have committed; how many committed.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        join_all(self.tasks).await;
        self.commits.load(Ordering::SeqCst)
    }
}

/// A PostgreSQL or MariaDB source with `rows` sales, its records' store, and the late
/// writers that run through the scenario.
struct Scene {
    db: Database,
    store: Arc<dyn Store>,
    source: SourceConfig,
    next_id: Arc<AtomicUsize>,
    writers: Option<LateWriters>,
    tally: Arc<Mutex<Tally>>,
}

const LEASE_SECONDS: u32 = 4;

impl Scene {
    async fn new(db: Database, store: Arc<dyn Store>, rows: usize, query: &str) -> Self {
        db.create_sales(rows).await;
        let mut source = crate::source(&unique("chaos"), &db, query);
        source.query_timeout_seconds = 3;
        store.put_source(&source).await.unwrap();
        let next_id = Arc::new(AtomicUsize::new(rows + 1));
        let writers = Some(LateWriters::start(&db, rows, next_id.clone(), Duration::from_secs(2)));
        Scene {
            db,
            store,
            source,
            next_id,
            writers,
            tally: Arc::default(),
        }
    }

    /// A scene whose store is a new set of DynamoDB tables on moto, and the Lambda
    /// function's wiring over `aws` (moto, or the fault proxy in front of it).
    async fn lambda(db: Database, rows: usize, query: &str, aws: &str) -> (Self, LambdaSync) {
        let tables = TableNames::with_prefix(&unique("x"));
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk().await), tables.clone());
        store.create_tables().await.unwrap();
        let mut scene = Scene::new(db, Arc::new(store), rows, query).await;
        // The connection lives in Secrets Manager, read through `aws` on every cold start.
        scene.source.secret_id = secrets_manager_secret(&scene.db.secret).await;
        scene.store.put_source(&scene.source).await.unwrap();
        let config = FunctionConfig {
            tables,
            event_bus: "default".into(),
            lease: Duration::from_secs(LEASE_SECONDS.into()),
            backfill_retry: Duration::from_secs(1),
            schedule_group: None,
            metrics_namespace: "Sluice".into(),
            destinations: Default::default(),
        };
        let sync = LambdaSync {
            sdk: sluice_aws::sdk_config(Some(aws)).await,
            config,
            source_id: scene.source.id.clone(),
            clock: None,
        };
        (scene, sync)
    }

    fn count(&self, result: &Result<Run, String>) -> Option<RunStatus> {
        self.tally.lock().unwrap().count(result)
    }

    /// Changes one row in `every` (round `round` of them) at once, as a batch job would.
    async fn bulk_update(&self, round: usize, every: usize) {
        self.db
            .exec(&format!(
                "UPDATE sales SET amount = amount + 1, updated_at = {} WHERE id % {every} = {}",
                self.db.now_sql(),
                round % every
            ))
            .await;
    }

    /// A bulk update, then a wait until the next run's windows cover it: they end at the
    /// oldest transaction still open, and the late writers always hold one, begun up to
    /// 2 s ago (on MariaDB a second earlier, from InnoDB's cache to the second). Rows
    /// committed since come a run later, never lost; the scenarios that stop a run
    /// mid-stream want the next run to read this update.
    async fn bulk_update_read_next(&self, round: usize, every: usize) {
        self.bulk_update(round, every).await;
        // 2 s of the late writers' hold, InnoDB's second and the margin's, and room for
        // a loaded machine.
        tokio::time::sleep(Duration::from_millis(5_000)).await;
    }

    /// Runs until one succeeds, waiting out a lease a killed or failed run left; how
    /// long the run that succeeded took.
    async fn run_until_success(&self, sync: &dyn Invoke) -> Duration {
        for _ in 0..40 {
            let started = Instant::now();
            if self.count(&sync.invoke().await) == Some(RunStatus::Succeeded) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{}: no run succeeded in 40", self.source.id);
    }

    /// Stops the writers, then runs until the records match the rows: how long that took.
    async fn catch_up(&mut self, sync: &dyn Invoke) -> Duration {
        if let Some(writers) = self.writers.take() {
            writers.stop().await;
        }
        let started = Instant::now();
        self.run_until_success(sync).await;
        started.elapsed()
    }

    async fn finish(mut self, scenario: &str, sync: &dyn Invoke, faults: u64, detail: String) -> Outcome {
        let catch_up = self.catch_up(sync).await;
        let (diff, rows) = diff(&self.db, &*self.store, &self.source.id).await;
        let tally = std::mem::take(&mut *self.tally.lock().unwrap());
        Outcome {
            scenario: scenario.to_string(),
            runs: tally.runs,
            faults,
            rows,
            diff,
            failed: tally.failed,
            unclear: tally.unclear,
            reasons: tally.reasons,
            catch_up,
            detail,
        }
    }
}

/// The source's rows (id, amount) against the records stored for `source_id`; and the
/// number of rows.
pub async fn diff(db: &Database, store: &dyn Store, source_id: &str) -> (Diff, usize) {
    let rows: BTreeMap<String, f64> = match db.engine {
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(db.pg_url()).await.unwrap();
            sqlx::query_as::<_, (i64, f64)>("SELECT id, amount::float8 FROM sales")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        _ => {
            let pool = sqlx::MySqlPool::connect(db.pg_url()).await.unwrap();
            sqlx::query_as::<_, (i64, f64)>("SELECT id, CAST(amount AS DOUBLE) FROM sales")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    }
    .into_iter()
    .map(|(id, amount)| (id.to_string(), amount))
    .collect();
    let records = store.undelivered(source_id, None, 100_000_000).await.unwrap();
    let mut stored: BTreeMap<String, Option<f64>> = BTreeMap::new();
    let mut duplicated = 0;
    for r in &records {
        if stored.insert(r.key.clone(), r.fields["amount"].as_f64()).is_some() {
            duplicated += 1;
        }
    }
    let diff = Diff {
        missing: rows.keys().filter(|k| !stored.contains_key(*k)).count(),
        stale: rows
            .iter()
            .filter(|(k, a)| stored.get(*k).is_some_and(|s| *s != Some(**a)))
            .count(),
        duplicated,
        extra: stored.keys().filter(|k| !rows.contains_key(*k)).count(),
    };
    (diff, rows.len())
}

/// The faults of AWS at the rates the proxy injects them in every scenario behind it.
pub fn aws_faults() -> FaultPlan {
    FaultPlan(vec![
        Rule::every(5, Fault::Unprocessed),
        Rule::every(7, Fault::Throttling),
        Rule::every(11, Fault::ProvisionedThroughputExceeded),
        Rule::every(13, Fault::InternalError),
        Rule::every(17, Fault::Reset),
        Rule::every(19, Fault::LostResponse),
        // Past the 10 s attempt timeout, twice: each costs that long.
        Rule::every(97, Fault::Delay(Duration::from_secs(11))).at_most(2),
    ])
}

fn injected(proxy: &FaultProxy) -> u64 {
    proxy.injected().values().sum()
}

/// DynamoDB, Secrets Manager and EventBridge behind the fault proxy: rounds of bulk
/// updates, each synced by a cold-started Lambda wiring.
pub async fn aws(scale: Scale) -> Outcome {
    let proxy = FaultProxy::start(&crate::aws_endpoint(), aws_faults()).await;
    let db = Database::new(Engine::Postgres).await;
    let (scene, sync) = Scene::lambda(db, scale.rows, SALES_QUERY, &proxy.endpoint()).await;
    scene.run_until_success(&sync).await;
    for round in 0..scale.rounds {
        scene.bulk_update(round, 10).await;
        scene.count(&sync.invoke().await);
    }
    let detail = format!("{} requests, injected {:?}", proxy.requests(), proxy.injected());
    let faults = injected(&proxy);
    scene
        .finish(
            "DynamoDB, Secrets Manager, EventBridge: throttling, 500, reset, late and lost answers, unprocessed items",
            &sync,
            faults,
            detail,
        )
        .await
}

/// The query of the database scenarios: it pauses at 40 rows of the window, so that a
/// run lives long enough for a session to be killed or the server crashed mid-stream.
fn slow_query(engine: Engine, rows: usize) -> String {
    let sleep = match engine {
        Engine::Postgres => "pg_sleep(0.02)::text IS NOT NULL",
        _ => "SLEEP(0.02) = 0",
    };
    SALES_QUERY.replace(
        "FROM sales\nWHERE",
        &format!("FROM sales\nWHERE (id % {} <> 0 OR {sleep}) AND", (rows / 40).max(1)),
    )
}

/// Waits until the sync's query runs on `db` (not on the other tests' databases of the
/// same server); its session ids.
async fn readers(db: &Database) -> Vec<i64> {
    for _ in 0..300 {
        let ids: Vec<i64> = match db.engine {
            Engine::Postgres => {
                let pool = sqlx::PgPool::connect(db.pg_url()).await.unwrap();
                sqlx::query_scalar(
                    "SELECT pid::int8 FROM pg_stat_activity WHERE query LIKE '%FROM sales%' AND query LIKE '%pg_sleep%'
                     AND query NOT LIKE '%pg_stat_activity%' AND pid <> pg_backend_pid() AND datname = current_database()",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
            }
            _ => {
                let pool = sqlx::MySqlPool::connect(db.pg_url()).await.unwrap();
                sqlx::query_scalar(
                    "SELECT id FROM information_schema.processlist WHERE info LIKE '%FROM sales%' AND info LIKE '%SLEEP%'
                     AND info NOT LIKE '%processlist%' AND db = DATABASE()",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        if !ids.is_empty() {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the sync's query never ran on {}", db.name)
}

/// Kills the sessions `ids` from the server side.
async fn kill_sessions(db: &Database, ids: &[i64]) {
    for id in ids {
        match db.engine {
            Engine::Postgres => db.exec(&format!("SELECT pg_terminate_backend({id})")).await,
            _ => db.exec(&format!("KILL {id}")).await,
        }
    }
}

/// In every round: bulk updates, then the reading session killed mid-stream, then runs
/// until one succeeds.
pub async fn session_killed(engine: Engine, scale: Scale) -> Outcome {
    let db = Database::new(engine).await;
    let query = slow_query(engine, scale.rows);
    let (scene, sync) = Scene::lambda(db, scale.rows, &query, &crate::aws_endpoint()).await;
    let mut kills = 0;
    for round in 0..scale.rounds {
        scene.bulk_update_read_next(round, 4).await;
        let kill = async {
            let ids = readers(&scene.db).await;
            kill_sessions(&scene.db, &ids).await;
            ids.len() as u64
        };
        let (result, killed) = tokio::join!(sync.invoke(), kill);
        kills += killed;
        scene.count(&result);
        scene.run_until_success(&sync).await;
    }
    let name = format!("{engine}: the reading session killed mid-stream");
    scene.finish(&name, &sync, kills, String::new()).await
}

/// In every round: bulk updates, then the server crashed mid-stream, a run while it is
/// down, and the server started again.
pub async fn server_restarted(engine: Engine, scale: Scale) -> Outcome {
    let mut server = PrivateServer::start(engine).await;
    let db = Database::on(engine, &server.admin_url(), server.port).await;
    let query = slow_query(engine, scale.rows);
    let (scene, sync) = Scene::lambda(db, scale.rows, &query, &crate::aws_endpoint()).await;
    scene.run_until_success(&sync).await;
    for round in 0..scale.rounds {
        scene.bulk_update_read_next(round, 4).await;
        let crash = async {
            readers(&scene.db).await;
            server.crash();
        };
        let (during, ()) = tokio::join!(sync.invoke(), crash);
        scene.count(&during);
        scene.count(&sync.invoke().await);
        server.start_again().await;
        scene.run_until_success(&sync).await;
    }
    let name = format!("{engine}: the server crashed and restarted mid-stream");
    let outcome = scene.finish(&name, &sync, scale.rounds as u64, String::new()).await;
    drop(server);
    outcome
}

/// In every round: a lock on the sales table held past the source's statement timeout
/// (3 s), then released.
pub async fn lock_held(engine: Engine, scale: Scale) -> Outcome {
    let db = Database::new(engine).await;
    let (scene, sync) = Scene::lambda(db, scale.rows, SALES_QUERY, &crate::aws_endpoint()).await;
    scene.run_until_success(&sync).await;
    let (lock, unlock) = match engine {
        Engine::Postgres => ("BEGIN; LOCK TABLE sales IN ACCESS EXCLUSIVE MODE", "ROLLBACK"),
        _ => ("LOCK TABLES sales WRITE", "UNLOCK TABLES"),
    };
    for round in 0..scale.rounds {
        scene.bulk_update(round, 4).await;
        let holder = scene.db.begin_late(lock).await.unwrap();
        scene.count(&sync.invoke().await);
        match holder {
            crate::OpenTransaction::Postgres(mut c) => {
                sqlx::Executor::execute(&mut c, unlock).await.unwrap();
            }
            crate::OpenTransaction::Mysql(mut c) => {
                sqlx::Executor::execute(&mut c, unlock).await.unwrap();
            }
            crate::OpenTransaction::Sqlserver(_) => unreachable!(),
        }
        scene.run_until_success(&sync).await;
    }
    let name = format!("{engine}: a lock on the table held past the statement timeout");
    scene.finish(&name, &sync, scale.rounds as u64, String::new()).await
}

/// Where a killed `sluice sync` stopped, told from what it left in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillPoint {
    BeforeTheLease,
    DuringWrites,
    AfterTheWritesBeforeTheWatermark,
    AfterTheWatermark,
}

/// `sluice sync` (the CLI, into DynamoDB on moto) killed with SIGKILL at a random
/// moment of its run, `scale.kills` times, each followed by normal runs until one
/// succeeds.
pub async fn sigkill(scale: Scale) -> Outcome {
    let db = Database::new(Engine::Postgres).await;
    let id = unique("killed");
    let config = crate::local_config(&db, StoreKind::Dynamo, &id, SALES_QUERY);
    // A short lease: most kills leave it held, and every normal run after one waits it out.
    let sync = CliSync {
        config,
        lease_seconds: 2,
    };
    // The CLI creates its tables and the source from the config on its first run.
    db.create_sales(0).await;
    let first = sync.invoke().await;
    let store = open_local_store(&sync.config).await;
    let mut scene = Scene {
        next_id: Arc::new(AtomicUsize::new(scale.rows + 1)),
        writers: None,
        tally: Arc::default(),
        source: store.get_source(&id).await.unwrap().unwrap().config,
        store,
        db,
    };
    scene.count(&first);
    // Stamped now: after the first run's watermark, so that the next run reads them.
    scene.db.insert_sales(1, scale.rows, "0 seconds").await;
    scene.writers = Some(LateWriters::start(
        &scene.db,
        scale.rows,
        scene.next_id.clone(),
        Duration::from_secs(2),
    ));
    scene.run_until_success(&sync).await;

    let mut random = Random::seeded();
    let mut points: BTreeMap<KillPoint, u32> = BTreeMap::new();
    // How long a whole run takes, process start to exit: the kill lands anywhere in it.
    let mut run_time = scene.run_until_success(&sync).await;
    for round in 0..scale.kills {
        scene.bulk_update(round, 20).await;
        let before = scene.store.get_source(&id).await.unwrap().unwrap();
        let mut child = sync.command().spawn().unwrap();
        let delay = Duration::from_millis(random.below(run_time.as_millis() as u64));
        tokio::time::sleep(delay).await;
        let killed = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        child.wait().unwrap();
        if killed {
            let after = scene.store.get_source(&id).await.unwrap().unwrap();
            let point = if after.watermark != before.watermark {
                KillPoint::AfterTheWatermark
            } else if after.lease.is_none() {
                KillPoint::BeforeTheLease
            } else if diff(&scene.db, &*scene.store, &id).await.0 == Diff::default() {
                KillPoint::AfterTheWritesBeforeTheWatermark
            } else {
                KillPoint::DuringWrites
            };
            *points.entry(point).or_default() += 1;
        }
        run_time = scene.run_until_success(&sync).await;
    }
    let kills: u32 = points.values().sum();
    let detail = format!("killed {kills} processes (the others had finished): {points:?}");
    scene
        .finish("sluice sync SIGKILLed at random points", &sync, kills.into(), detail)
        .await
}

/// `n` invocations of the same source at once in every round (EventBridge Scheduler
/// delivers at least once), behind the fault proxy.
pub async fn overlapping(n: usize, scale: Scale) -> Outcome {
    let proxy = FaultProxy::start(&crate::aws_endpoint(), aws_faults()).await;
    let db = Database::new(Engine::Postgres).await;
    let (scene, sync) = Scene::lambda(db, scale.rows, SALES_QUERY, &proxy.endpoint()).await;
    let mut ran_at_once = 0;
    for round in 0..=scale.rounds {
        scene.bulk_update(round, 10).await;
        let results = join_all((0..n).map(|_| sync.invoke())).await;
        let statuses: Vec<_> = results.iter().map(|r| scene.count(r)).collect();
        let succeeded = statuses.iter().filter(|s| **s == Some(RunStatus::Succeeded)).count();
        ran_at_once = ran_at_once.max(succeeded);
    }
    let detail = format!(
        "{} requests, injected {:?}; at most {ran_at_once} of {n} at once succeeded",
        proxy.requests(),
        proxy.injected()
    );
    let faults = injected(&proxy);
    let name = format!("{n} overlapping invocations, behind the fault proxy");
    scene.finish(&name, &sync, faults, detail).await
}

/// A backfill of the last three days in one-day chunks, worked by the backfill
/// function's wiring while scheduled runs go on, both behind the fault proxy.
pub async fn backfill_race(scale: Scale) -> Outcome {
    let proxy = FaultProxy::start(&crate::aws_endpoint(), aws_faults()).await;
    let db = Database::new(Engine::Postgres).await;
    let (scene, sync) = Scene::lambda(db, scale.rows, SALES_QUERY, &proxy.endpoint()).await;
    scene.run_until_success(&sync).await;
    let worker: Backfiller = backfiller(&sync.sdk, &sync.config);
    let now: DateTime<Utc> = Utc::now();
    let request = BackfillRequest {
        start: Some((now - chrono::Duration::days(3)).to_rfc3339()),
        end: Some(now.to_rfc3339()),
        chunk: Some("1d".into()),
    };
    let mut job = loop {
        // Creating the job writes through the proxy too: a failure is answered, not lost.
        match worker.create(&scene.source.id, &request).await {
            Ok(job) => break job,
            Err(e) => println!("creating the backfill failed, again: {e}"),
        }
    };
    let done = AtomicBool::new(false);
    let backfilling = async {
        let budget = sluice_core::Budget::until(None);
        while job.is_active() {
            match worker.work(&scene.source.id, &budget, &|_| {}).await {
                Ok(Some(j)) => job = j,
                Ok(None) => {}
                Err(e) => println!("a backfill worker failed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(2_500)).await;
        }
        done.store(true, Ordering::SeqCst);
    };
    let scheduled = async {
        let mut round = 0;
        while !done.load(Ordering::SeqCst) {
            scene.bulk_update(round, 10).await;
            scene.count(&sync.invoke().await);
            round += 1;
        }
    };
    tokio::join!(backfilling, scheduled);
    let detail = format!(
        "the backfill ended {:?}, {} requests, injected {:?}",
        job.status,
        proxy.requests(),
        proxy.injected()
    );
    let faults = injected(&proxy);
    scene
        .finish(
            "a backfill racing scheduled runs, behind the fault proxy",
            &sync,
            faults,
            detail,
        )
        .await
}

/// One source of the management API scenario: what its last answered request left.
struct ManagedSource {
    id: String,
    deleted: bool,
}

/// Sends one request to the management API as a client does: again after a 5xx, until
/// it is answered. Counts every answer in `tally` and returns how long it took.
async fn until_answered(
    http: &reqwest::Client,
    tally: &mut Tally,
    method: reqwest::Method,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Duration {
    let started = Instant::now();
    for _ in 0..20 {
        let mut request = http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = request.send().await.expect("the local gateway answers");
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        tally.runs += 1;
        if status.is_success() {
            return started.elapsed();
        }
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|j| j["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        if status.is_server_error() && is_clear(&message) {
            tally.failed += 1;
            tally.reasons.insert(reason(&message));
        } else {
            // A 4xx to a request that was right, or a 5xx that does not say why.
            tally.unclear.push(format!("{method} {url}: {status} {message}"));
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{method} {url}: no answer but 5xx in 20 attempts")
}

/// The management API (its handlers, served as API Gateway serves them) with DynamoDB,
/// Secrets Manager and EventBridge Scheduler behind the fault proxy (`plan`): `count`
/// sources created with a connection, changed (a new frequency and password), every
/// third deleted, each request sent again after a 5xx as a client would. Then, read
/// past the proxy: every source has its config, its schedule at the new rate and its
/// secret with the new password (else missing or stale), and a deleted one left none
/// of them behind (else extra). Its rows are the sources; its catch-up, the longest a
/// client waited for one request.
pub async fn management_api(count: usize, plan: FaultPlan) -> Outcome {
    let proxy = FaultProxy::start(&crate::aws_endpoint(), plan).await;
    let direct = sdk().await;
    let through_proxy = sluice_aws::sdk_config(Some(&proxy.endpoint())).await;
    let (gateway, config) = crate::gateway::LocalGateway::functions_over(&through_proxy).await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&direct), config.function.tables.clone());
    let (scheduler, group) = (aws_sdk_scheduler::Client::new(&direct), &config.schedules.group);
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(10).await;

    let (http, mut tally) = (reqwest::Client::new(), Tally::default());
    let mut sources = Vec::new();
    let mut longest = Duration::ZERO;
    for i in 0..count {
        let id = unique("managed");
        let url = format!("{}/sources/{id}", gateway.url());
        let mut connection = db.secret.clone();
        let body = serde_json::json!({"id": id, "name": "Sales", "engine": "postgres",
            "sync_type": "registration", "query": SALES_QUERY, "frequency_minutes": 5,
            "connection": connection});
        let sources_url = format!("{}/sources", gateway.url());
        longest =
            longest.max(until_answered(&http, &mut tally, reqwest::Method::POST, &sources_url, Some(&body)).await);
        connection["password"] = format!("{}-changed", db.secret["password"].as_str().unwrap_or("")).into();
        let change = serde_json::json!({"frequency_minutes": 15, "connection": connection});
        longest = longest.max(until_answered(&http, &mut tally, reqwest::Method::PATCH, &url, Some(&change)).await);
        let deleted = i % 3 == 0;
        if deleted {
            longest = longest.max(until_answered(&http, &mut tally, reqwest::Method::DELETE, &url, None).await);
        }
        sources.push(ManagedSource { id, deleted });
    }

    // What is there, read past the proxy.
    let secrets = aws_sdk_secretsmanager::Client::new(&direct);
    let mut diff = Diff::default();
    for source in &sources {
        let stored = store.get_source(&source.id).await.unwrap();
        let schedule = scheduler
            .get_schedule()
            .name(&source.id)
            .group_name(group)
            .send()
            .await
            .ok();
        let secret_id = format!("{}{}", config.secrets_prefix, source.id);
        let secret: Option<serde_json::Value> = secrets
            .get_secret_value()
            .secret_id(&secret_id)
            .send()
            .await
            .ok()
            .and_then(|s| serde_json::from_str(s.secret_string()?).ok());
        if source.deleted {
            diff.extra += usize::from(stored.is_some() || schedule.is_some() || secret.is_some());
        } else if stored.is_none() || schedule.is_none() || secret.is_none() {
            diff.missing += 1;
        } else {
            let rate = schedule.and_then(|s| s.schedule_expression().map(str::to_string));
            let password = secret.and_then(|s| s["password"].as_str().map(str::to_string));
            let changed = stored.is_some_and(|s| s.config.frequency_minutes == 15 && s.config.secret_id == secret_id)
                && rate.as_deref() == Some("rate(15 minutes)")
                && password.is_some_and(|p| p.ends_with("-changed"));
            diff.stale += usize::from(!changed);
        }
    }
    Outcome {
        scenario: "management API: Scheduler, Secrets Manager, DynamoDB faults (rows are sources)".into(),
        runs: tally.runs,
        faults: injected(&proxy),
        rows: sources.len(),
        diff,
        failed: tally.failed,
        unclear: tally.unclear,
        reasons: tally.reasons,
        catch_up: longest,
        detail: format!(
            "{} created, {} deleted; {} requests to AWS, injected {:?}, answers lost of {:?}",
            sources.len(),
            sources.iter().filter(|s| s.deleted).count(),
            proxy.requests(),
            proxy.injected(),
            proxy.lost()
        ),
    }
}

/// The Lambda's clock `skew` off the database's.
struct SkewedClock(chrono::Duration);

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

/// Rounds of bulk updates synced by a Lambda whose clock is `minutes` off the
/// database's.
pub async fn clock_skew(minutes: i64, scale: Scale) -> Outcome {
    let db = Database::new(Engine::Postgres).await;
    let (scene, mut sync) = Scene::lambda(db, scale.rows, SALES_QUERY, &crate::aws_endpoint()).await;
    sync.clock = Some(Arc::new(SkewedClock(chrono::Duration::minutes(minutes))));
    for round in 0..scale.rounds {
        scene.bulk_update(round, 10).await;
        scene.run_until_success(&sync).await;
    }
    let name = format!("the Lambda's clock {minutes:+} minutes off the database's");
    scene.finish(&name, &sync, scale.rounds as u64, String::new()).await
}

/// The rows of the poison scenario, one of each kind DynamoDB refuses: what the row
/// holds (SQL for the `poison` table's reference, member_id, team_name, amount, props,
/// score and note), and what its reject's reason must say.
const POISON: [(&str, &str, &str); 12] = [
    ("reference", "repeat('r', 1500)", "reference is 1500 bytes"),
    ("member_id", "repeat('m', 1100)", "member_id is 1100 bytes"),
    ("team_name", "repeat('t', 1025)", "team_name is 1025 bytes"),
    ("score", "1e300::float8", "score holds 1e300, too large"),
    ("score", "1e-200::float8", "score holds 1e-200, too small"),
    ("score", "'NaN'::float8", "column score holds NaN"),
    (
        "amount",
        "1.33333333333333333333333333333333333333::numeric",
        "more than 38 significant digits",
    ),
    ("props", "'{\"x\": 1e300}'::jsonb", "props.x holds 1e300, too large"),
    (
        "props",
        "(repeat('{\"a\":', 32) || '1' || repeat('}', 32))::jsonb",
        "32 levels",
    ),
    ("props", "'{\"ok\": {\"\": 1}}'::jsonb", "props.ok has an empty key"),
    ("note", "repeat('x', 410000)", "over its 400 KB item limit"),
    // Under DynamoDB's 409,600 bytes, so mapping lets it through, over moto's
    // 405,000: the store splits the batch moto refuses down to this row.
    ("note", "repeat('x', 406000)", "DynamoDB refused the record"),
];

/// Registrations of the sales and of the `poison` table, in one order, the poison rows
/// spread among the sales.
const POISON_QUERY: &str =
    "SELECT reference, member_id, member_name, team_name, date, amount, props, score, note FROM (
  SELECT id::text AS reference, user_id::text AS member_id, user_name AS member_name, team AS team_name,
         date, amount, NULL::jsonb AS props, NULL::float8 AS score, NULL::text AS note, id::float8 AS pos
  FROM sales WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}
  UNION ALL
  SELECT reference, member_id, 'poison', team_name, date, amount, props, score, note, pos
  FROM poison WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}
) r ORDER BY pos";

/// Each kind of row DynamoDB refuses (issue 21), mixed into the sales and synced by the
/// Lambda wiring into DynamoDB while late writers commit: every sale arrives, each bad
/// row is rejected with its reason (a run or a reason that falls short is counted as
/// unclear), the watermark moves, and later runs go on.
pub async fn poison_rows(scale: Scale) -> Outcome {
    let db = Database::new(Engine::Postgres).await;
    let (scene, sync) = Scene::lambda(db, scale.rows, POISON_QUERY, &crate::aws_endpoint()).await;
    scene
        .db
        .exec(
            "CREATE TABLE poison (reference text, member_id text, team_name text, date timestamptz, amount numeric,
             props jsonb, score float8, note text, pos float8, updated_at timestamptz)",
        )
        .await;
    for (i, (column, value, _)) in POISON.iter().enumerate() {
        let mut row = BTreeMap::from([
            ("reference", format!("'poison-{i}'")),
            ("member_id", "'1'".to_string()),
            ("team_name", "'North'".into()),
            ("amount", "1".into()),
        ]);
        row.insert(*column, value.to_string());
        let pos = (i + 1) as f64 * scale.rows as f64 / (POISON.len() + 1) as f64 + 0.5;
        let (columns, values): (Vec<&str>, Vec<String>) = row.into_iter().unzip();
        scene
            .db
            .exec(&format!(
                "INSERT INTO poison ({}, date, pos, updated_at) VALUES ({}, now(), {pos}, now() - interval '2 days')",
                columns.join(", "),
                values.join(", ")
            ))
            .await;
    }
    let mut first = None;
    for _ in 0..10 {
        let result = sync.invoke().await;
        if scene.count(&result) == Some(RunStatus::Succeeded) {
            first = result.ok();
            break;
        }
    }
    let first = first.expect("a run over the poison rows succeeded");
    let mut unclear: Vec<String> = POISON
        .iter()
        .enumerate()
        .filter(|(i, (_, _, reason))| {
            !first.rejects.iter().any(|r| {
                r.reason.contains(reason)
                    && r.reference
                        .as_deref()
                        .is_some_and(|k| *i == 0 || k == format!("poison-{i}"))
            })
        })
        .map(|(i, (column, _, reason))| {
            format!(
                "poison row {i} ({column}) was not rejected for {reason:?}: {:?}",
                first.rejects
            )
        })
        .collect();
    let state = scene.store.get_source(&scene.source.id).await.unwrap().unwrap();
    if state.watermark.is_none() || state.watermark != first.watermark {
        unclear.push(format!(
            "the watermark did not move past the poison rows: {:?}",
            state.watermark
        ));
    }
    for round in 0..scale.rounds {
        scene.bulk_update(round, 10).await;
        scene.count(&sync.invoke().await);
    }
    let name = format!(
        "poison rows: {} kinds DynamoDB refuses among the sales, {} rejected with their reason",
        POISON.len(),
        first.rows_rejected
    );
    let detail = format!("first run: {} read, {} written", first.rows_read, first.rows_written);
    let mut outcome = scene.finish(&name, &sync, POISON.len() as u64, detail).await;
    outcome.unclear.extend(unclear);
    outcome
}

/// One source of the delivery scenario: its rows' table filter and its destination.
struct Delivered {
    id: String,
    receiver: crate::receiver::Receiver,
}

/// Calls the receiver of `source` lacks, has out of order, or holds twice, against the
/// rows of `src`: missing (a row whose current version never arrived), stale (a row
/// whose last call is not its current version), duplicated (a `messageId` taken more
/// than once) and extra (a call of no row).
async fn delivery_diff(db: &Database, src: &str, receiver: &crate::receiver::Receiver) -> Diff {
    let pool = sqlx::PgPool::connect(db.pg_url()).await.expect("postgres");
    let rows: BTreeMap<String, String> =
        sqlx::query_as::<_, (String, String)>("SELECT user_id, plan FROM people WHERE src = $1")
            .bind(src)
            .fetch_all(&pool)
            .await
            .expect("the rows")
            .into_iter()
            .collect();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), ()> = BTreeMap::new();
    for call in receiver.calls() {
        let user = call["userId"].as_str().unwrap_or_default().to_string();
        let plan = call["traits"]["plan"].as_str().unwrap_or_default().to_string();
        seen.insert((user.clone(), plan.clone()), ());
        last.insert(user, plan);
    }
    let counts = receiver.by_message_id();
    Diff {
        missing: rows
            .iter()
            .filter(|(u, p)| !seen.contains_key(&((*u).clone(), (*p).clone())))
            .count(),
        stale: rows
            .iter()
            .filter(|(u, p)| last.get(*u).is_some_and(|l| l != *p))
            .count(),
        duplicated: counts.values().filter(|n| **n > 1).count(),
        extra: last.keys().filter(|u| !rows.contains_key(*u)).count(),
    }
}

/// Two sources on one Records stream, the destination of one down (503s, dropped
/// connections) for `scale.rounds` rounds of changes, then back. The other's calls
/// must arrive in the invocation that carries them; the down one's are parked and
/// arrive after it is back; none twice.
pub async fn one_destination_down(scale: Scale) -> Outcome {
    use sluice_core::delivery::DeliverySettings;
    use sluice_deliver::{Delivery, Event, StreamEvent};

    let db = Database::new(Engine::Postgres).await;
    let per_source = scale.rows / 2;
    db.exec(&format!(
        "CREATE TABLE people (id int, src text, user_id text, plan text, updated_at timestamptz DEFAULT now());
         INSERT INTO people (id, src, user_id, plan)
         SELECT g, s, s || '-u' || g, 'free' FROM generate_series(1, {per_source}) g, (VALUES ('a'), ('b')) v(s)"
    ))
    .await;
    let store = Arc::new(crate::dynamo_store().await);
    let sdk = sdk().await;
    let mut stream = crate::stream::RecordsStream::open(&sdk, &store.tables().records).await;
    let db_secret = unique("db");
    let mut sources = Vec::new();
    for src in ["a", "b"] {
        let key = unique("wk");
        let receiver = crate::receiver::Receiver::start(&key).await;
        let key_secret = secrets_manager_secret(&serde_json::json!({ "write_key": key })).await;
        let mut config = crate::source(
            &unique(&format!("down_{src}")),
            &db,
            &format!(
                "SELECT user_id, plan FROM people WHERE src = '{src}'
                 AND updated_at >= {{{{ last_update_time }}}} AND updated_at < {{{{ upper_date_limit }}}}"
            ),
        );
        config.secret_id = db_secret.clone();
        config.sync_type = sluice_core::SyncType::Identify;
        config.destination = Some(
            serde_json::from_value(
                serde_json::json!({"kind": "http", "base_url": receiver.base_url(), "secret_id": key_secret}),
            )
            .expect("a destination"),
        );
        config.validate().expect("a valid source");
        store.put_source(&config).await.expect("moto");
        sources.push(Delivered {
            id: config.id,
            receiver,
        });
    }
    let sync = crate::service(store.clone(), BTreeMap::from([(db_secret, db.secret.clone())]));
    let delivery = Delivery {
        store: store.clone(),
        deliverer: sluice_core::Deliverer {
            sender: Arc::new(
                sluice_destinations::HttpSender::new(sluice_destinations::AddressPolicy { allow_loopback: true })
                    .expect("a client"),
            ),
            secrets: Arc::new(sluice_aws::SecretsManagerSecrets::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
                Duration::from_secs(300),
            )),
            store: store.clone(),
            clock: Arc::new(sluice_core::SystemClock),
            // The retry of parked calls is invoked once a round, as its schedule would.
            settings: DeliverySettings {
                backoff: Duration::from_millis(20),
                park_wait: Duration::ZERO,
                ..DeliverySettings::default()
            },
        },
        dead_letters: None,
        metrics_namespace: None,
    };
    let (a, b) = (&sources[0], &sources[1]);
    let mut runs = 0;
    // Every stream event until the stream is drained.
    let deliver = async |stream: &mut crate::stream::RecordsStream| loop {
        let event = stream.next_event().await;
        if event["Records"].as_array().is_none_or(|r| r.is_empty()) {
            return;
        }
        let event: StreamEvent = serde_json::from_value(event).expect("a stream event");
        let answer = sluice_deliver::handle(&delivery, crate::lambda_event(event))
            .await
            .expect("delivered");
        assert!(answer.batch_item_failures.is_empty(), "the stream moves on: {answer:?}");
    };
    let retry = async || {
        let event: Event = serde_json::from_value(serde_json::json!({ "retry_parked": true })).expect("an event");
        sluice_deliver::dispatch(&delivery, crate::lambda_event(event))
            .await
            .expect("retried");
    };
    let mut late = Vec::new();
    for round in 0..=scale.rounds {
        // Round 0 carries the initial rows; then a tenth of each source's rows changes.
        if round > 0 {
            db.exec(&format!(
                "UPDATE people SET plan = 'plan-{round}', updated_at = now() WHERE id % 10 = {}",
                round % 10
            ))
            .await;
        }
        b.receiver.down(Some(if round % 2 == 0 {
            crate::receiver::Fault::Status(503, None)
        } else {
            crate::receiver::Fault::Drop
        }));
        for s in &sources {
            let run = sync.run(&s.id, Trigger::Schedule, None).await.expect("a run");
            assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
            runs += 1;
        }
        deliver(&mut stream).await;
        retry().await;
        // The other source is on time: everything it has is delivered now.
        let missing = delivery_diff(&db, "a", &a.receiver).await.missing;
        if missing > 0 {
            late.push(format!("{missing} in round {round}"));
        }
    }
    let faults = b.receiver.requests();
    let back = Instant::now();
    b.receiver.down(None);
    retry().await;
    let catch_up = back.elapsed();
    let mut diff = Diff::default();
    for (src, s) in [("a", a), ("b", b)] {
        let d = delivery_diff(&db, src, &s.receiver).await;
        diff.missing += d.missing;
        diff.stale += d.stale;
        diff.duplicated += d.duplicated;
        diff.extra += d.extra;
    }
    Outcome {
        scenario: "two sources on one stream, one destination down (503, dropped connections)".into(),
        runs,
        faults,
        rows: 2 * per_source,
        diff,
        failed: 0,
        unclear: Vec::new(),
        reasons: BTreeSet::new(),
        catch_up,
        detail: format!(
            "calls of the source whose destination was up delivered late: {}; calls received: {} and {}",
            if late.is_empty() {
                "0".to_string()
            } else {
                late.join(", ")
            },
            a.receiver.calls().len(),
            b.receiver.calls().len()
        ),
    }
}

/// Every scenario, in the order of the table.
pub async fn all(scale: Scale) -> Vec<Outcome> {
    let mut outcomes = vec![aws(scale).await];
    for engine in [Engine::Postgres, Engine::Mysql] {
        outcomes.push(session_killed(engine, scale).await);
        outcomes.push(server_restarted(engine, scale).await);
        outcomes.push(lock_held(engine, scale).await);
    }
    outcomes.push(sigkill(scale).await);
    outcomes.push(overlapping(2, scale).await);
    outcomes.push(overlapping(3, scale).await);
    outcomes.push(backfill_race(scale).await);
    outcomes.push(clock_skew(10, scale).await);
    outcomes.push(clock_skew(-10, scale).await);
    outcomes.push(management_api(scale.rounds * 3, aws_faults()).await);
    outcomes.push(poison_rows(scale).await);
    outcomes.push(one_destination_down(scale).await);
    outcomes
}
