//! Backfills through the backfill function's real handler, fed API Gateway, EventBridge
//! and pump event fixtures, against moto (DynamoDB, Secrets Manager, EventBridge, SQS to
//! catch the events) and PostgreSQL; and the CLI's backfill, interrupted and resumed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value as Json, json};
use sluice_aws::DynamoStore;
use sluice_backfill::handle;
use sluice_core::{Backfiller, Engine, RunStatus, SourceConfig, Trigger};
use sluice_lambda::{FunctionConfig, backfiller, sync_service};
use sluice_tests::faults::{Fault, FaultPlan, FaultProxy, Rule};
use sluice_tests::*;

/// A deployment in moto: tables, the connection secret, an event bus whose
/// `sluice.backfill.requested` events land in a queue, and the function's services.
struct Deployment {
    store: DynamoStore,
    config: FunctionConfig,
    backfiller: Backfiller,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Deployment {
    async fn new() -> Self {
        let sdk = sdk().await;
        let store = dynamo_store().await;
        let bus = unique("bus");
        let (sqs, queue_url) = event_queue(&sdk, &bus, "sluice.backfill.requested").await;
        let config = FunctionConfig {
            tables: store.tables().clone(),
            event_bus: bus,
            lease: Duration::from_secs(960),
            backfill_retry: Duration::from_secs(1),
            schedule_group: None,
            metrics_namespace: "Sluice/test".into(),
            destinations: Default::default(),
        };
        let backfiller = backfiller(&sdk, &config);
        Deployment {
            store,
            config,
            backfiller,
            sqs,
            queue_url,
        }
    }

    /// A source over `db`, its secret in Secrets Manager.
    async fn source(&self, db: &Database, query: &str) -> SourceConfig {
        let mut src = source(&unique("bf"), db, query);
        src.secret_id = secrets_manager_secret(&db.secret).await;
        self.store.put_source(&src).await.unwrap();
        src
    }

    /// Calls the API as API Gateway would, from a fixture; returns status and body.
    async fn api(&self, fixture: &str, source_id: &str, job_id: Option<&str>, body: Option<Json>) -> (i64, Json) {
        let mut params = vec![("id", source_id)];
        params.extend(job_id.map(|j| ("job", j)));
        let event = api_request(fixture, &params, &[], body);
        let out = handle(&self.backfiller, lambda_event(event)).await.unwrap();
        let body: Json = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
        assert_eq!(out["headers"]["content-type"], "application/json");
        (out["statusCode"].as_i64().unwrap(), body)
    }

    async fn create(&self, source_id: &str, start: &str, end: &str, chunk: &str) -> (i64, Json) {
        let body = json!({ "start": start, "end": end, "chunk": chunk });
        self.api("backfill-create.json", source_id, None, Some(body)).await
    }

    async fn job(&self, source_id: &str, job_id: &str) -> Json {
        let (status, body) = self.api("backfill-get.json", source_id, Some(job_id), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The next `sluice.backfill.requested` event EventBridge delivered.
    async fn requested_event(&self) -> Json {
        let started = Instant::now();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(1)
                .send()
                .await
                .unwrap();
            if let Some(m) = out.messages().first() {
                return serde_json::from_str(m.body().unwrap()).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no sluice.backfill.requested event arrived"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A worker invocation, with the event EventBridge delivers.
    async fn work(&self, event: Json) -> Json {
        handle(&self.backfiller, lambda_event(event)).await.unwrap()
    }
}

fn today() -> chrono::DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::days(1)).unwrap()
}

fn date(days_ago: i64) -> String {
    (today() - TimeDelta::days(days_ago)).format("%Y-%m-%d").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_days_in_daily_chunks_through_the_api_and_eventbridge() {
    const ROWS: usize = 9_000;
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(ROWS, 90).await;
    let src = d.source(&db, SALES_QUERY).await;

    // POST answers 202 with the job and its planned chunks.
    let (status, job) = d.create(&src.id, &date(90), &date(0), "1d").await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["status"], "pending");
    assert_eq!(job["chunks"].as_array().unwrap().len(), 90);
    assert_eq!(job["chunks"][0]["from"], json!(format!("{}T00:00:00Z", date(90))));
    assert_eq!(job["progress"]["chunks_pending"], 90);

    // EventBridge delivers sluice.backfill.requested; the function works the job through.
    let event = d.requested_event().await;
    assert_eq!(event["detail-type"], "sluice.backfill.requested");
    assert_eq!(event["detail"], json!({ "source_id": src.id, "backfill_id": job_id }));
    let out = d.work(event).await;
    assert_eq!(out["worked_on"]["status"], "done", "{out}");

    let job = d.job(&src.id, &job_id).await;
    assert_eq!(job["status"], "done");
    let p = &job["progress"];
    assert_eq!(p["chunks_done"], 90);
    assert_eq!(
        (p["rows_read"].as_u64(), p["rows_written"].as_u64()),
        (Some(ROWS as u64), Some(ROWS as u64))
    );
    assert_eq!(p["percent_done"], 100.0);
    assert_eq!(job["errors"], json!([]));
    let (status, list) = d.api("backfill-list.json", &src.id, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["backfills"][0]["id"], json!(job_id));
    assert!(
        list["backfills"][0].get("chunks").is_none(),
        "lists leave the chunks out"
    );

    // Every row exactly once, one run per chunk, and the scheduled watermark untouched.
    assert_eq!(d.store.count_records(&src.id).await.unwrap(), ROWS as u64);
    let runs = d.store.list_runs(&src.id, 200, None).await.unwrap();
    assert_eq!(runs.len(), 90);
    assert!(runs.iter().all(|r| r.trigger == Trigger::Backfill
        && r.status == RunStatus::Succeeded
        && r.backfill_id.as_deref() == Some(job_id.as_str())));
    let state = d.store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(
        (state.watermark, state.lease, state.active_backfill),
        (None, None, None)
    );

    // The pump finds nothing left to do.
    let out = d.work(read_fixture("backfill-pump.json")).await;
    assert!(
        !out["worked_on"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["source_id"] == json!(src.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_connection_is_killed_is_retried_and_the_job_completes() {
    const ROWS: usize = 3_000;
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(ROWS, 3).await;
    // Every 100th row sleeps a little, so a chunk's query is alive long enough to be killed.
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE (id % 100 <> 0 OR pg_sleep(0.05)::text IS NOT NULL) AND",
    );
    let src = d.source(&db, &query).await;
    let (status, job) = d.create(&src.id, &date(3), &date(0), "1d").await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();

    // Kill the first chunk's session from the server side, once, mid-query.
    let admin = sqlx::PgPool::connect(db.pg_url()).await.unwrap();
    let killer = tokio::spawn({
        let name = db.name.clone();
        async move {
            loop {
                let killed: Option<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = $1 AND query LIKE '%pg_sleep%' AND state = 'active' AND pid <> pg_backend_pid()
                     LIMIT 1",
                )
                .bind(&name)
                .fetch_optional(&admin)
                .await
                .unwrap();
                if killed == Some(true) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let out = d.work(d.requested_event().await).await;
    killer.await.unwrap();
    assert_eq!(out["worked_on"]["status"], "done", "{out}");

    let job = d.job(&src.id, &job_id).await;
    let chunks = job["chunks"].as_array().unwrap();
    assert!(chunks.iter().all(|c| c["status"] == "done"), "{job}");
    let retried: Vec<&Json> = chunks.iter().filter(|c| c["attempts"] == 1).collect();
    assert_eq!(retried.len(), 1, "exactly the killed chunk ran twice: {job}");
    assert!(
        retried[0]["error"].is_null(),
        "a chunk that succeeded on retry carries no error"
    );
    assert_eq!(d.store.count_records(&src.id).await.unwrap(), ROWS as u64);
    // The failed attempt is in the import log with its cause.
    let runs = d.store.list_runs(&src.id, 20, None).await.unwrap();
    let failed: Vec<_> = runs.iter().filter(|r| r.status == RunStatus::Failed).collect();
    assert_eq!(failed.len(), 1);
    let message = failed[0].message.as_deref().unwrap();
    assert!(
        message.contains("terminat") || message.contains("connection"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_new_chunks_and_a_scheduled_sync_waits_for_the_lease() {
    const ROWS: usize = 2_000;
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(ROWS, 10).await;
    // About half a second a chunk.
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE (id % 40 <> 0 OR pg_sleep(0.1)::text IS NOT NULL) AND",
    );
    let src = d.source(&db, &query).await;
    let (status, job) = d.create(&src.id, &date(10), &date(0), "1d").await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let event = d.requested_event().await;
    let worker = {
        let backfiller = backfiller(&sdk().await, &d.config);
        tokio::spawn(async move { handle(&backfiller, lambda_event(event)).await.unwrap() })
    };

    // Wait for the second chunk to run.
    let started = Instant::now();
    while d.job(&src.id, &job_id).await["progress"]["chunks_done"] != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the backfill did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A scheduled sync meanwhile is skipped: one run per source at a time.
    let sync = sync_service(&sdk().await, &d.config);
    let run = sync.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Skipped, "{:?}", run.message);

    // Cancel: answered at once; the running chunk finishes, no other starts.
    let asked = Instant::now();
    let (status, body) = d.api("backfill-cancel.json", &src.id, Some(&job_id), None).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["cancel_requested_at"].is_string());
    let out = worker.await.unwrap();
    let stopped_after = asked.elapsed();
    assert_eq!(out["worked_on"]["status"], "cancelled", "{out}");
    eprintln!(
        "cancelled job stopped {} ms after the DELETE",
        stopped_after.as_millis()
    );
    let job = d.job(&src.id, &job_id).await;
    assert_eq!(job["status"], "cancelled");
    let p = &job["progress"];
    assert_eq!(p["chunks_running"], 0);
    assert!(
        p["chunks_done"].as_u64().unwrap() >= 2,
        "the running chunk finished: {p}"
    );
    assert!(
        p["chunks_pending"].as_u64().unwrap() >= 1,
        "later chunks never started: {p}"
    );
    assert_eq!(
        d.store.count_records(&src.id).await.unwrap(),
        p["rows_written"].as_u64().unwrap(),
        "what the finished chunks wrote is kept"
    );

    // The watermark never moved; the slot and the lease are free: a sync and a new job run.
    let state = d.store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(
        (state.watermark, state.lease, state.active_backfill),
        (None, None, None)
    );
    let run = sync.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!((run.status, run.rows_read), (RunStatus::Succeeded, ROWS as u64));
    let (status, _) = d.create(&src.id, &date(2), &date(1), "6h").await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_field_and_the_reason() {
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(10, 2).await;
    let src = d.source(&db, SALES_QUERY).await;
    let future = (Utc::now() + TimeDelta::days(2)).format("%Y-%m-%d").to_string();

    let cases = [
        (json!({ "start": date(1), "end": date(3) }), "end", "is not after start"),
        (json!({ "start": date(1), "end": future }), "end", "in the future"),
        (
            json!({ "start": date(3), "end": date(1), "chunk": "1w" }),
            "chunk",
            "15m, 6h, 1d or 7d",
        ),
        (
            json!({ "start": date(3), "end": date(1), "chunk": "1.5d" }),
            "chunk",
            "15m, 6h, 1d or 7d",
        ),
        (
            json!({ "start": "2000-01-01", "end": date(1), "chunk": "1h" }),
            "chunk",
            "more than the limit",
        ),
        (json!({ "start": "last tuesday", "end": date(1) }), "start", "ISO-8601"),
        (json!({ "end": date(1) }), "start", "is required"),
        (
            json!({ "start": date(3), "end": date(1), "chunks": "1d" }),
            "body",
            "unknown field `chunks`",
        ),
    ];
    for (body, field, reason) in cases {
        let (status, answer) = d.api("backfill-create.json", &src.id, None, Some(body.clone())).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{body} -> {message}");
    }
    let mut event = read_fixture("backfill-create.json");
    event["pathParameters"]["id"] = json!(src.id);
    event["body"] = json!("{not json");
    let out = handle(&d.backfiller, lambda_event(event)).await.unwrap();
    assert_eq!(out["statusCode"], 400);

    // Unknown source and job: 404.
    let (status, body) = d.create("no-such-source", &date(3), &date(1), "1d").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no-such-source"));
    let (status, _) = d.api("backfill-get.json", &src.id, Some("no-such-job"), None).await;
    assert_eq!(status, 404);
    let (status, _) = d.api("backfill-cancel.json", &src.id, Some("no-such-job"), None).await;
    assert_eq!(status, 404);
    let (status, _) = d.api("backfill-list.json", "no-such-source", None, None).await;
    assert_eq!(status, 404);

    // A second active job for the source: 409 naming the first.
    let (status, first) = d.create(&src.id, &date(3), &date(1), "1d").await;
    assert_eq!(status, 202);
    let (status, body) = d.create(&src.id, &date(2), &date(1), "1d").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["existing_backfill_id"], first["id"]);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );

    // A source whose template does not compile cannot be backfilled.
    let broken = d.source(&db, SALES_QUERY).await;
    let mut config = broken.clone();
    config.query = "SELECT * FROM sales WHERE date >= {{ last_update_tme }}".into();
    d.store.put_source(&config).await.unwrap();
    let (status, body) = d.create(&broken.id, &date(3), &date(1), "1d").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("source")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("last_update_tme"),
        "{body}"
    );

    // Nothing was stored for the refused requests.
    assert_eq!(d.store.list_backfills(&src.id, 10).await.unwrap().len(), 1);
    assert!(d.store.list_backfills(&broken.id, 10).await.unwrap().is_empty());
}

fn backfill_cmd(config: &std::path::Path, source_id: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = sluice_cmd(&["backfill", "--json", "--source", source_id], config, 5);
    cmd.args(args);
    cmd
}

/// Starts a CLI backfill of 8 slow daily chunks and stops it (`signal`) after two are done.
async fn interrupted_cli_backfill(kind: StoreKind, signal: &str) -> (Database, std::path::PathBuf, String) {
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(1_600, 8).await;
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE (id % 20 <> 0 OR pg_sleep(0.05)::text IS NOT NULL) AND",
    );
    let id = unique("bfcli");
    let config = local_config(&db, kind, &id, &query);
    let mut child = backfill_cmd(&config, &id, &["--from", &date(8), "--to", &date(0), "--chunk", "1d"])
        .spawn()
        .unwrap();
    let store = open_local_store(&config).await;
    let started = Instant::now();
    loop {
        let done = match store.get_source(&id).await.unwrap().and_then(|s| s.active_backfill) {
            Some(job) => {
                store
                    .get_backfill(&id, &job)
                    .await
                    .unwrap()
                    .unwrap()
                    .progress()
                    .chunks_done
            }
            None => 0,
        };
        if done >= 2 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill finished before it could be stopped"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backfill made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "stopped, not finished");
    let state = store.get_source(&id).await.unwrap().unwrap();
    let job = store
        .get_backfill(&id, state.active_backfill.as_deref().expect("the job is still active"))
        .await
        .unwrap()
        .unwrap();
    assert!(job.progress().chunks_done < job.chunks.len(), "stopped midway");
    (db, config, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_cli_backfill_resumes_where_it_stopped() {
    let (_db, config, id) = interrupted_cli_backfill(StoreKind::Embedded, "-INT").await;
    // Ctrl-C released the lease: running the same command again continues at once.
    let out = backfill_cmd(&config, &id, &["--from", &date(8), "--to", &date(0)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming backfill"));
    let job: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "done");
    assert_eq!(job["progress"]["chunks_done"], 8);
    let store = open_local_store(&config).await;
    assert_eq!(store.count_records(&id).await.unwrap(), 1_600);
    // The interrupted chunk ran again from its start; nothing failed.
    assert!(
        job["chunks"].as_array().unwrap().iter().all(|c| c["error"].is_null()),
        "{job}"
    );

    // With no active job, another range is a new job.
    let out = backfill_cmd(&config, &id, &["--from", &date(2), "--to", &date(1)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("planned: 1 chunks"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backfill_is_resumed_by_the_pump() {
    let (db, config, id) = interrupted_cli_backfill(StoreKind::Dynamo, "-KILL").await;
    let local = sluice_local::LocalConfig::load(&config).unwrap();
    let sluice_local::StoreConfig::Dynamodb { table_prefix, .. } = &local.store else {
        unreachable!()
    };
    let config = FunctionConfig {
        tables: sluice_aws::TableNames::with_prefix(table_prefix),
        event_bus: "default".into(),
        lease: Duration::from_secs(960),
        backfill_retry: Duration::from_secs(1),
        schedule_group: None,
        metrics_namespace: "Sluice/test".into(),
        destinations: Default::default(),
    };
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk().await), config.tables.clone());
    // The killed process's secret lives in its config file; the function reads Secrets Manager.
    let mut source = store.get_source(&id).await.unwrap().unwrap().config;
    source.secret_id = secrets_manager_secret(&db.secret).await;
    store.put_source(&source).await.unwrap();
    let backfiller = backfiller(&sdk().await, &config);

    // While the killed run's lease lasts, the pump leaves the job; after it, it finishes it.
    let lease = store
        .get_source(&id)
        .await
        .unwrap()
        .unwrap()
        .lease
        .expect("the killed run holds the lease");
    let pump = || handle(&backfiller, lambda_event(read_fixture("backfill-pump.json")));
    if Utc::now() < lease.expires_at - TimeDelta::seconds(1) {
        let out = pump().await.unwrap();
        assert!(
            !out["worked_on"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["source_id"] == json!(id)),
            "{out}"
        );
    }
    let wait = (lease.expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let out = pump().await.unwrap();
    let job = out["worked_on"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["source_id"] == json!(id))
        .cloned()
        .unwrap_or_else(|| panic!("the pump worked on the job: {out}"));
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["progress"]["chunks_done"], 8);
    // The chunk the killed process was running counts one lost attempt, then succeeded.
    let recovered = job["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["attempts"] == 1)
        .count();
    assert!(recovered <= 1, "{job}");
    assert_eq!(store.count_records(&id).await.unwrap(), 1_600);
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!((state.watermark, state.active_backfill), (None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_outlasts_the_time_budget_is_split_and_finished_later() {
    const ROWS: usize = 600;
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(ROWS, 1).await;
    // About three seconds for the day's rows.
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE (id % 20 <> 0 OR pg_sleep(0.1)::text IS NOT NULL) AND",
    );
    let src = d.source(&db, &query).await;
    let (status, job) = d.create(&src.id, &date(1), &date(0), "1d").await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();

    // An invocation with about a second and a half of budget left for chunks: of
    // 39.375 s, the handler keeps a fifth (7.875 s) and the worker 30 s in hand.
    let mut event = lambda_event(d.requested_event().await);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    event.context.deadline = (now + Duration::from_millis(39_375)).as_millis() as u64;
    let out = handle(&d.backfiller, event).await.unwrap();
    assert_eq!(out["worked_on"]["status"], "running", "{out}");
    let job = d.job(&src.id, &job_id).await;
    let chunks = job["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2, "the day became two halves: {job}");
    assert_eq!(chunks[0]["to"], chunks[1]["from"]);
    assert!(chunks.iter().all(|c| c["status"] == "pending"));
    let state = d.store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(state.lease, None, "the stopped worker released the lease");

    // The next invocation (the pump) finishes the halves: every row once.
    let out = d.work(read_fixture("backfill-pump.json")).await;
    let worked = out["worked_on"].as_array().unwrap();
    let job = worked.iter().find(|j| j["id"] == json!(job_id)).unwrap();
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(d.store.count_records(&src.id).await.unwrap(), ROWS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plecto_query_with_only_last_update_time_is_imported_up_to_the_end_sluice_keeps() {
    const ROWS: usize = 3_000;
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(ROWS, 30).await;
    // As Plecto's examples have it: a lower bound and nothing more.
    let query = "SELECT t.id AS reference, t.user_id AS member_id, t.user_name AS member_name,
                        t.team AS team_name, t.date, t.amount
                 FROM sales t WHERE t.date >= {{ last_update_time }}";
    let src = d.source(&db, query).await;
    let (status, job) = d.create(&src.id, &date(20), &date(10), "1d").await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        job["chunks"].as_array().unwrap().len(),
        1,
        "one chunk over the range: {job}"
    );
    let out = d.work(d.requested_event().await).await;
    assert_eq!(out["worked_on"]["status"], "done", "{out}");

    // The query read the twenty days from the start on; the ten from the end on stayed out.
    let runs = d.store.list_runs(&src.id, 10, None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].rows_read, runs[0].rows_written, runs[0].rows_past_end),
        (2_000, 1_000, 1_000),
        "{:?}",
        runs[0]
    );
    assert_eq!(d.store.count_records(&src.id).await.unwrap(), 1_000);
}

/// A backfill of 6 daily chunks worked by the backfill function's wiring behind the
/// fault proxy, which loses the answer to the first save whose body holds `chunk_text`
/// (after DynamoDB did it). The job still ends with every chunk done and every row once.
async fn a_lost_answer_to_a_chunk_save_leaves_no_hole(chunk_text: &'static str) {
    const ROWS: usize = 600;
    let d = Deployment::new().await;
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(ROWS, 6).await;
    let src = d.source(&db, SALES_QUERY).await;
    let proxy = FaultProxy::start(
        &aws_endpoint(),
        FaultPlan(vec![
            Rule::every(1, Fault::LostResponse)
                .only("UpdateItem")
                .containing(chunk_text)
                .at_most(1),
        ]),
    )
    .await;
    let behind_proxy = sluice_aws::sdk_config(Some(&proxy.endpoint())).await;
    let worker = backfiller(&behind_proxy, &d.config);
    let (status, job) = d.create(&src.id, &date(6), &date(0), "1d").await;
    assert_eq!(status, 202, "{job}");

    let job = worker
        .work(&src.id, &sluice_core::Budget::until(None), &|_| {})
        .await
        .unwrap()
        .expect("the worker worked on the job");
    assert_eq!(proxy.lost().get("UpdateItem"), Some(&1), "the fault was injected");
    assert_eq!(job.status, sluice_core::JobStatus::Done, "{job:?}");
    assert!(
        job.chunks.iter().all(|c| c.status == sluice_core::ChunkStatus::Done),
        "{:?}",
        job.chunks
    );
    let stored = d.job(&src.id, &job.id).await;
    assert_eq!(
        (stored["status"].as_str(), stored["progress"]["chunks_done"].as_u64()),
        (Some("done"), Some(6))
    );
    assert_eq!(d.store.count_records(&src.id).await.unwrap(), ROWS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_the_save_that_starts_a_chunk_leaves_no_hole() {
    // A chunk's JSON (escaped in the request) as it is saved when it starts.
    a_lost_answer_to_a_chunk_save_leaves_no_hole(r#"Z\",\"status\":\"running"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_the_save_that_ends_a_chunk_leaves_no_hole() {
    a_lost_answer_to_a_chunk_save_leaves_no_hole(r#"Z\",\"status\":\"done"#).await;
}
