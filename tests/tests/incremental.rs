//! The main job end to end: thousands of rows from PostgreSQL, MariaDB and SQL Server
//! (Babelfish) into DynamoDB (moto) and the embedded store, then inserts, updates and a
//! late commit; and the settings users set on a source beside its query.

use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

async fn incremental(engine: Engine, kind: StoreKind, rows: usize) {
    let db = Database::new(engine).await;
    db.create_sales(rows).await;
    let store = store(kind).await;
    let src = source(&unique("sales"), &db, SALES_QUERY);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));

    // First sync: everything, from the epoch.
    let r1 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r1.status, RunStatus::Succeeded, "{:?}", r1.message);
    assert_eq!(
        (r1.rows_read, r1.rows_written, r1.rows_unchanged, r1.rows_rejected),
        (rows as u64, rows as u64, 0, 0)
    );
    assert_eq!(r1.window_start, Some(chrono::DateTime::UNIX_EPOCH));
    assert_eq!(store.count_records(&src.id).await.unwrap(), rows as u64);
    let wm1 = store
        .get_source(&src.id)
        .await
        .unwrap()
        .unwrap()
        .watermark
        .expect("watermark set");
    assert_eq!(r1.watermark, Some(wm1));

    // 100 new rows, 50 updated rows, and a row whose transaction is still open.
    db.insert_sales(rows + 1, 100, "0 seconds").await;
    db.exec(&format!(
        "UPDATE sales SET amount = amount + 1000, updated_at = {} WHERE id <= 50",
        db.now_sql()
    ))
    .await;
    if engine == Engine::Mysql {
        // The window stops at the late transaction's start, which InnoDB shows to the
        // second and Sluice takes a second off: the rows before it must be older.
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    }
    let late = db.begin_late_insert(rows + 6_001).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let r2 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r2.status, RunStatus::Succeeded, "{:?}", r2.message);
    assert_eq!((r2.rows_read, r2.rows_written, r2.rows_unchanged), (150, 150, 0));
    assert_eq!(
        r2.window_start,
        Some(wm1 - chrono::Duration::seconds(300)),
        "the lookback re-reads"
    );
    let wm2 = r2.watermark.unwrap();
    assert!(wm2 > wm1);

    // The late row commits after the run that should have seen it: the lookback catches it.
    late.commit().await;
    if engine == Engine::Mysql {
        // InnoDB's view of its transactions is a cache refreshed at most every 0.1 s.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let r3 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r3.status, RunStatus::Succeeded, "{:?}", r3.message);
    assert_eq!(
        (r3.rows_read, r3.rows_written, r3.rows_unchanged),
        (151, 1, 150),
        "only the late row is written"
    );

    // Once more: nothing changed, nothing written.
    let r4 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!((r4.rows_read, r4.rows_written, r4.rows_unchanged), (151, 0, 151));

    // Every row exactly once, with its latest values.
    assert_eq!(store.count_records(&src.id).await.unwrap(), rows as u64 + 101);
    let updated = store.get_record(&src.id, "7").await.unwrap().unwrap();
    assert_eq!(updated.fields["amount"], serde_json::json!(7.0 * 1.25 + 1000.0));
    assert_eq!(updated.fields["member_name"], serde_json::json!("user 8"));
    let untouched = store.get_record(&src.id, "60").await.unwrap().unwrap();
    assert_eq!(untouched.fields["amount"], serde_json::json!(75));
    let late_row = store
        .get_record(&src.id, &(rows + 6_001).to_string())
        .await
        .unwrap()
        .expect("the late row arrived");
    assert_eq!(late_row.fields["team_name"], serde_json::json!("team late"));
    assert!(
        late_row.fields["date"].as_str().unwrap().ends_with('Z'),
        "dates are ISO-8601 UTC"
    );

    // Members and teams were upserted, and every run is in the log, newest first.
    let (members, teams) = store.list_members(&src.id).await.unwrap();
    assert_eq!(members.len(), 50);
    assert_eq!(teams, ["team 0", "team 1", "team 2", "team 3", "team 4", "team late"]);
    assert_eq!(
        members.iter().find(|m| m.member_id == "7").unwrap().team.as_deref(),
        Some("team late")
    );
    let runs = store.list_runs(&src.id, 10, None).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [r4.id, r3.id, r2.id, r1.id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_into_dynamodb() {
    incremental(Engine::Postgres, StoreKind::Dynamo, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_into_embedded_store() {
    incremental(Engine::Postgres, StoreKind::Embedded, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_into_dynamodb() {
    incremental(Engine::Mysql, StoreKind::Dynamo, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_into_embedded_store() {
    incremental(Engine::Mysql, StoreKind::Embedded, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlserver_into_dynamodb() {
    incremental(Engine::Sqlserver, StoreKind::Dynamo, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlserver_into_embedded_store() {
    incremental(Engine::Sqlserver, StoreKind::Embedded, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_sharing_a_secret_keep_their_own_watermarks_members_and_start() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(40).await;
    let store = store(StoreKind::Dynamo).await;
    let secret_id = unique("shared-secret");
    let mut sales = source(&unique("sales"), &db, SALES_QUERY);
    sales.secret_id = secret_id.clone();
    sales.member_id_source = Some(unique("crm"));
    let mut big = source(
        &unique("big"),
        &db,
        &SALES_QUERY.replace("WHERE", "WHERE amount >= 25 AND"),
    );
    big.secret_id = secret_id.clone();
    let mut later = source(&unique("later"), &db, SALES_QUERY);
    later.secret_id = secret_id.clone();
    later.start_at = Some(chrono::Utc::now() + chrono::Duration::days(1));
    for s in [&sales, &big, &later] {
        store.put_source(s).await.unwrap();
    }
    let svc = service(store.clone(), [(secret_id, db.secret.clone())].into());

    let a = svc.run(&sales.id, Trigger::Schedule, None).await.unwrap();
    let b = svc.run(&big.id, Trigger::Schedule, None).await.unwrap();
    let c = svc.run(&later.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (a.status, a.rows_written),
        (RunStatus::Succeeded, 40),
        "{:?}",
        a.message
    );
    assert_eq!(
        (b.status, b.rows_written),
        (RunStatus::Succeeded, 21),
        "{:?}",
        b.message
    );
    assert_eq!(c.status, RunStatus::Skipped);
    assert!(c.message.as_deref().unwrap().contains("the source starts at"), "{c:?}");
    assert_eq!(store.count_records(&later.id).await.unwrap(), 0);
    let watermark = |id: String| {
        let store = store.clone();
        async move { store.get_source(&id).await.unwrap().unwrap().watermark }
    };
    assert!(watermark(sales.id.clone()).await.is_some() && watermark(big.id.clone()).await.is_some());
    assert_eq!(watermark(later.id.clone()).await, None, "a skipped run moves nothing");

    // Members go to the namespace the source names, not to the source id's.
    let (members, _) = store
        .list_members(sales.member_id_source.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(members.len(), 40, "one member per user id");
    assert!(store.list_members(&sales.id).await.unwrap().0.is_empty());
    let (default_namespace, _) = store.list_members(&big.id).await.unwrap();
    assert!(
        !default_namespace.is_empty(),
        "without member_id_source the source id is the namespace"
    );
}
