//! Crashes and concurrency: a process killed mid-run loses and duplicates nothing, and
//! two runs of one source at once become one run and one `skipped`.

use std::time::{Duration, Instant};

use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

async fn concurrent_runs(kind: StoreKind) {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(2_000).await;
    let store = store(kind).await;
    let src = source(&unique("twice"), &db, SALES_QUERY);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    let (a, b) = tokio::join!(
        svc.run(&src.id, Trigger::Schedule, None),
        svc.run(&src.id, Trigger::Schedule, None)
    );
    let mut statuses = [a.unwrap(), b.unwrap()];
    statuses.sort_by_key(|r| r.status as u8);
    let [ran, skipped] = statuses;
    assert_eq!(
        (ran.status, skipped.status),
        (RunStatus::Succeeded, RunStatus::Skipped),
        "{:?} / {:?}",
        ran.message,
        skipped.message
    );
    assert!(
        skipped
            .message
            .as_deref()
            .unwrap()
            .contains("another run of this source is in progress")
    );
    assert_eq!((skipped.rows_read, skipped.rows_written), (0, 0));
    assert_eq!(ran.rows_written, 2_000);
    assert_eq!(store.count_records(&src.id).await.unwrap(), 2_000);
    // Both are in the import log.
    assert_eq!(store.list_runs(&src.id, 10, None).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_on_dynamodb_run_once() {
    concurrent_runs(StoreKind::Dynamo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_on_the_embedded_store_run_once() {
    concurrent_runs(StoreKind::Embedded).await;
}

const ROWS: usize = 20_000;
/// Long enough that the killed run still holds its lease when the next run starts on a
/// slow machine; the test waits for its real expiry rather than guessing.
const LEASE_SECONDS: u32 = 20;

/// Runs `sluice sync` on a slow query, kills it after some batches are written, then
/// runs it again once the lease has expired.
async fn killed_midway(kind: StoreKind) {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(ROWS).await;
    let id = unique("crash");
    // The query pauses every 1,000 rows, so the kill lands mid-stream.
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE (id % 1000 <> 0 OR pg_sleep(0.15)::text IS NOT NULL) AND",
    );
    let config_path = local_config(&db, kind, &id, &query);
    let sync = || sluice_cmd(&["sync", "--json"], &config_path, LEASE_SECONDS);
    let mut child = sync().spawn().unwrap();

    // Wait until some batches are durable, then kill the process outright.
    let store = open_local_store(&config_path).await;
    let started = Instant::now();
    let written = loop {
        let n = store.count_records(&id).await.unwrap_or(0);
        if n >= 2_000 {
            break n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync finished before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no batch was written within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the process was killed, not finished");
    let killed_at = store.count_records(&id).await.unwrap();
    assert!(
        killed_at >= written && killed_at < ROWS as u64,
        "killed midway: {killed_at} of {ROWS}"
    );
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!(
        state.watermark, None,
        "the watermark only moves when the window is complete"
    );
    let lease = state.lease.expect("the killed run still holds its lease");

    // While the lease holds, a run is skipped; once it expires, the next run completes.
    assert!(
        chrono::Utc::now() < lease.expires_at,
        "the lease expired before the process was killed; raise LEASE_SECONDS"
    );
    let out = sync().output().unwrap();
    let skipped: sluice_core::Run = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(skipped.status, RunStatus::Skipped, "{:?}", skipped.message);
    let until_expiry = (lease.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_expiry + Duration::from_millis(500)).await;
    let out = sync().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let run: sluice_core::Run = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!(run.rows_read, ROWS as u64);
    assert_eq!(run.rows_written + run.rows_unchanged, ROWS as u64);
    assert!(
        run.rows_unchanged >= killed_at.min(1_000),
        "what the killed run wrote is not written again"
    );
    assert_eq!(
        store.count_records(&id).await.unwrap(),
        ROWS as u64,
        "every row exactly once"
    );
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!(state.watermark, run.watermark);
    assert!(state.watermark.is_some() && state.lease.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sync_into_dynamodb_resumes_without_loss_or_duplicates() {
    killed_midway(StoreKind::Dynamo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sync_into_the_embedded_store_resumes_without_loss_or_duplicates() {
    killed_midway(StoreKind::Embedded).await;
}

/// A sync of 600 rows that reads one row every 10 ms (6 s or more), with a 2 s lease.
async fn slow_sync(
    kind: StoreKind,
) -> (
    Database,
    std::sync::Arc<dyn sluice_core::Store>,
    String,
    sluice_core::SyncService,
) {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(600).await;
    let store = store(kind).await;
    let query = SALES_QUERY.replace(
        "FROM sales\nWHERE",
        "FROM sales\nWHERE pg_sleep(0.01)::text IS NOT NULL AND",
    );
    let src = source(&unique("lease"), &db, &query);
    store.put_source(&src).await.unwrap();
    let settings = sluice_core::SyncSettings {
        lease: Duration::from_secs(2),
        batch_size: 25,
        ..Default::default()
    };
    let svc = service_with(
        store.clone(),
        secrets_for(&src, &db),
        std::sync::Arc::new(sluice_local::LogEvents),
        settings,
    );
    (db, store, src.id, svc)
}

/// A run longer than its lease renews it between batches: a run started while it goes
/// on, after the lease would have expired, is skipped, and the first run completes.
async fn a_run_longer_than_its_lease_keeps_it(kind: StoreKind) {
    let (_db, store, id, svc) = slow_sync(kind).await;
    let second = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        svc.run(&id, Trigger::Schedule, None).await.unwrap()
    };
    let (first, second) = tokio::join!(svc.run(&id, Trigger::Manual, None), second);
    let first = first.unwrap();
    assert!(first.duration_ms > 4_000, "the run outlasted its 2 s lease: {first:?}");
    assert_eq!(
        (first.status, first.rows_written),
        (RunStatus::Succeeded, 600),
        "{:?}",
        first.message
    );
    assert_eq!(second.status, RunStatus::Skipped, "{:?}", second.message);
    assert_eq!(store.count_records(&id).await.unwrap(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_its_lease_keeps_it_on_dynamodb() {
    a_run_longer_than_its_lease_keeps_it(StoreKind::Dynamo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_its_lease_keeps_it_on_the_embedded_store() {
    a_run_longer_than_its_lease_keeps_it(StoreKind::Embedded).await;
}

/// A run whose lease is taken by another run (it expired while this one was paused)
/// stops at its next batch: it fails saying why, writes nothing more, and leaves the
/// watermark alone.
async fn a_run_that_lost_its_lease_writes_nothing_more(kind: StoreKind) {
    let (_db, store, id, svc) = slow_sync(kind).await;
    let thief = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Another run takes the lease as if this one's had expired.
        let later = chrono::Utc::now() + chrono::Duration::minutes(1);
        let taken = store
            .acquire_lease(&id, "another-run", later, later + chrono::Duration::minutes(5))
            .await
            .unwrap();
        assert!(matches!(taken, sluice_core::LeaseOutcome::Acquired(_)));
        store.count_records(&id).await.unwrap()
    };
    let (run, at_theft) = tokio::join!(svc.run(&id, Trigger::Manual, None), thief);
    let run = run.unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(
        run.message
            .as_deref()
            .unwrap_or_default()
            .contains("writes nothing more"),
        "{:?}",
        run.message
    );
    let stored = store.count_records(&id).await.unwrap();
    // At most the batches already in flight when the lease was taken land.
    let in_flight = (sluice_core::SyncSettings::default().max_in_flight * 25) as u64;
    assert!(
        stored < 600 && stored <= at_theft + in_flight,
        "{stored} records, {at_theft} when the lease was taken"
    );
    let state = store.get_source(&id).await.unwrap().unwrap();
    assert_eq!(state.watermark, None);
    assert_eq!(state.lease.map(|l| l.token).as_deref(), Some("another-run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_writes_nothing_more_on_dynamodb() {
    a_run_that_lost_its_lease_writes_nothing_more(StoreKind::Dynamo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_writes_nothing_more_on_the_embedded_store() {
    a_run_that_lost_its_lease_writes_nothing_more(StoreKind::Embedded).await;
}
