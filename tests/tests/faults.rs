//! Syncs through the failures AWS really has: DynamoDB (moto) behind the fault proxy of
//! tests/src/faults.rs, which throttles, fails, resets, delays past the attempt timeout,
//! loses answers to writes that were done, and leaves batch items unprocessed. After
//! each scenario the stored records are diffed against the source rows: none may be
//! missing, stale or extra, and every failed run must say why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_aws::{DynamoStore, TableNames};
use sluice_core::{Engine, RunStatus, SyncSettings, Trigger};
use sluice_tests::faults::{Fault, FaultPlan, FaultProxy};
use sluice_tests::*;

#[derive(Debug, Default, PartialEq, Eq)]
struct Diff {
    missing: usize,
    stale: usize,
    extra: usize,
}

/// The source's rows (id, amount) against the records stored for `source_id`.
async fn diff(db: &Database, store: &DynamoStore, source_id: &str) -> Diff {
    let pool = sqlx::PgPool::connect(db.pg_url()).await.unwrap();
    let rows: BTreeMap<String, f64> = sqlx::query_as::<_, (i64, f64)>("SELECT id, amount::float8 FROM sales")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, amount)| (id.to_string(), amount))
        .collect();
    let records = store.undelivered(source_id, None, 1_000_000).await.unwrap();
    let stored: BTreeMap<String, Option<f64>> = records
        .iter()
        .map(|r| (r.key.clone(), r.fields["amount"].as_f64()))
        .collect();
    Diff {
        missing: rows.keys().filter(|k| !stored.contains_key(*k)).count(),
        stale: rows
            .iter()
            .filter(|(k, a)| stored.get(*k).is_some_and(|s| *s != Some(**a)))
            .count(),
        extra: stored.keys().filter(|k| !rows.contains_key(*k)).count(),
    }
}

/// Runs the source until a run succeeds; the runs it took, and how many failed (each
/// with its message).
async fn sync_until_done(svc: &sluice_core::SyncService, source_id: &str) -> (u32, u32) {
    let (mut runs, mut failed) = (0, 0);
    loop {
        runs += 1;
        assert!(runs <= 30, "no run succeeded in 30");
        let run = svc.run(source_id, Trigger::Schedule, None).await.unwrap();
        match run.status {
            RunStatus::Succeeded => return (runs, failed),
            RunStatus::Failed => {
                failed += 1;
                let message = run.message.unwrap_or_default();
                assert!(message.contains("failed"), "a failed run says why: {message:?}");
                println!("a run failed: {message}");
            }
            // A lease a failed release left behind: it expires by itself.
            RunStatus::Skipped => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_faults_lose_duplicate_and_leave_stale_nothing() {
    let proxy = FaultProxy::start(
        &aws_endpoint(),
        FaultPlan(vec![
            (5, Fault::Unprocessed, None),
            (7, Fault::Throttling, None),
            (11, Fault::ProvisionedThroughputExceeded, None),
            (13, Fault::InternalError, None),
            (17, Fault::Reset, None),
            (19, Fault::LostResponse, None),
            // Past the 10 s attempt timeout, twice: each costs that long.
            (97, Fault::Delay(Duration::from_secs(11)), Some(2)),
        ]),
    )
    .await;
    let tables = TableNames::with_prefix(&unique("f"));
    let direct = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk().await), tables.clone());
    direct.create_tables().await.unwrap();
    let faulty = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sluice_aws::sdk_config(Some(&proxy.endpoint())).await),
        tables,
    );

    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3_000).await;
    let src = source(&unique("faults"), &db, SALES_QUERY);
    direct.put_source(&src).await.unwrap();
    let settings = SyncSettings {
        lease: Duration::from_secs(3),
        ..SyncSettings::default()
    };
    let svc = service_with(
        Arc::new(faulty),
        secrets_for(&src, &db),
        Arc::new(sluice_local::LogEvents),
        settings,
    );

    let (runs, failed) = sync_until_done(&svc, &src.id).await;
    assert_eq!(
        diff(&db, &direct, &src.id).await,
        Diff::default(),
        "after the first import"
    );
    assert_eq!(direct.count_records(&src.id).await.unwrap(), 3_000);

    // Updates and inserts, through the same faults.
    db.exec("UPDATE sales SET amount = amount + 1, updated_at = now() WHERE id % 10 = 0")
        .await;
    db.insert_sales(3_001, 200, "0 seconds").await;
    let (more_runs, more_failed) = sync_until_done(&svc, &src.id).await;
    assert_eq!(diff(&db, &direct, &src.id).await, Diff::default(), "after the changes");
    assert_eq!(direct.count_records(&src.id).await.unwrap(), 3_200);

    let injected = proxy.injected();
    println!(
        "faults: {} requests, injected {injected:?}; runs {}, failed {} (each with its message); 3,200 rows: 0 missing, 0 stale, 0 extra",
        proxy.requests(),
        runs + more_runs,
        failed + more_failed
    );
    for fault in [Fault::Unprocessed, Fault::Throttling, Fault::Reset, Fault::LostResponse] {
        assert!(
            injected.get(&fault).copied().unwrap_or(0) > 0,
            "{fault:?} was injected: {injected:?}"
        );
    }
}

/// Kills the session reading `db`'s sales once, while it streams, from the server side.
async fn kill_the_reader_once(db: &Database) -> tokio::task::JoinHandle<bool> {
    let (engine, url) = (db.engine, db.pg_url().to_string());
    tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let killed = match engine {
                Engine::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let pids: Vec<i32> = sqlx::query_scalar(
                        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%FROM sales%' AND query NOT LIKE '%pg_stat_activity%' AND pid <> pg_backend_pid()",
                    )
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    for pid in &pids {
                        sqlx::query("SELECT pg_terminate_backend($1)")
                            .bind(pid)
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    !pids.is_empty()
                }
                _ => {
                    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "SELECT id FROM information_schema.processlist WHERE info LIKE '%FROM sales%' AND info NOT LIKE '%processlist%'",
                    )
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    for id in &ids {
                        sqlx::query(sqlx::AssertSqlSafe(format!("KILL {id}")))
                            .execute(&pool)
                            .await
                            .unwrap();
                    }
                    !ids.is_empty()
                }
            };
            if killed {
                return true;
            }
        }
        false
    })
}

async fn a_session_killed_mid_stream(engine: Engine) {
    const ROWS: usize = 2_000;
    let db = Database::new(engine).await;
    db.create_sales(ROWS).await;
    // Every 50th row sleeps a little, so the query lives long enough to be killed.
    let sleep = match engine {
        Engine::Postgres => "pg_sleep(0.02)::text IS NOT NULL",
        _ => "SLEEP(0.02) = 0",
    };
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        &format!("FROM sales\nWHERE (id % 50 <> 0 OR {sleep}) AND"),
    );
    let store = store(StoreKind::Dynamo).await;
    let src = source(&unique("killed"), &db, &query);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    let killer = kill_the_reader_once(&db).await;
    let first = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert!(killer.await.unwrap(), "{engine}: the session was killed");
    assert_eq!(first.status, RunStatus::Failed, "{engine}: {first:?}");
    let message = first.message.clone().unwrap();
    println!("{engine}: killed mid-stream after {} rows: {message}", first.rows_read);
    assert!(
        message.contains("the next attempt reads the window again"),
        "{engine}: {message}"
    );
    assert_eq!(
        store.get_source(&src.id).await.unwrap().unwrap().watermark,
        None,
        "{engine}: the watermark stays"
    );
    let second = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(second.status, RunStatus::Succeeded, "{engine}: {:?}", second.message);
    assert_eq!(
        store.count_records(&src.id).await.unwrap(),
        ROWS as u64,
        "{engine}: every row, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_session_killed_mid_stream_loses_nothing() {
    a_session_killed_mid_stream(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_session_killed_mid_stream_loses_nothing() {
    a_session_killed_mid_stream(Engine::Mysql).await;
}
