//! The test query: what a source would import, run read-only against PostgreSQL, with
//! nothing written.

use sluice_core::{Engine, PreviewLimits, RunStatus, Trigger};
use sluice_tests::*;
use sqlx::Connection;

/// Sales whose third row has no member id: a row the run would reject.
const QUERY: &str = "SELECT id AS reference, CASE WHEN id = 3 THEN NULL ELSE user_id END AS member_id,
       user_name AS member_name, team AS team_name, date, amount
FROM sales
WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_query_shows_the_records_and_errors_and_writes_nothing() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(30).await;
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("preview"), &db, QUERY);
    let svc = service(store.clone(), secrets_for(&src, &db));

    // Unsaved: the next window is the first run's, from the epoch to the database's clock.
    let p = svc.preview(&src, None).await.unwrap();
    assert_eq!(p.window.last_update_time, chrono::DateTime::UNIX_EPOCH);
    assert!((chrono::Utc::now() - p.window.upper_date_limit).num_seconds().abs() < 60);
    assert!(p.sql.contains("updated_at >= $1 AND updated_at < $2"), "{}", p.sql);
    assert_eq!(p.binds[0], "1970-01-01T00:00:00Z");
    assert_eq!(
        p.columns,
        ["reference", "member_id", "member_name", "team_name", "date", "amount"]
    );
    assert_eq!((p.row_count, p.rows_rejected, p.records.len()), (30, 1, 20));
    assert_eq!(p.records[0].fields["amount"], serde_json::json!(1.25));
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].starts_with("row 3: ") && p.errors[0].contains("member_id"),
        "{:?}",
        p.errors
    );
    // The tests' login is a superuser: the one warning is the login check's.
    assert!(
        p.warnings.len() == 1 && p.warnings[0].starts_with("the login can write"),
        "{:?}",
        p.warnings
    );

    // Nothing was written: no source, no records, no runs.
    assert!(store.get_source(&src.id).await.unwrap().is_none());
    assert_eq!(store.count_records(&src.id).await.unwrap(), 0);
    assert!(store.list_runs(&src.id, 5, None).await.unwrap().is_empty());

    // Saved and synced: the next window starts at the watermark less the lookback.
    store.put_source(&src).await.unwrap();
    let run = svc.run(&src.id, Trigger::Manual, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    let p = svc.preview(&src, None).await.unwrap();
    let expected = run.watermark.unwrap() - chrono::Duration::seconds(src.lookback_seconds.into());
    assert_eq!(p.window.last_update_time, expected);
    assert_eq!(p.row_count, 0);

    // A given window; an empty one still reports the columns.
    let window = sluice_core::window::Window {
        from: chrono::Utc::now() - chrono::Duration::days(3),
        to: chrono::Utc::now(),
    };
    assert_eq!(svc.preview(&src, Some(window)).await.unwrap().row_count, 30);
    let empty = sluice_core::window::Window {
        from: chrono::DateTime::UNIX_EPOCH,
        to: chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(1),
    };
    let p = svc.preview(&src, Some(empty)).await.unwrap();
    assert_eq!((p.row_count, p.columns.len()), (0, 6));

    // A missing required column, a query without an upper bound, an unknown secret.
    let mut bad = src.clone();
    bad.query =
        "SELECT id AS reference, user_id AS member_id, date FROM sales WHERE updated_at >= {{ last_update_time }}"
            .into();
    let p = svc.preview(&bad, None).await.unwrap();
    assert!(p.errors.iter().any(|e| e.contains("member_name")), "{:?}", p.errors);
    assert!(
        p.warnings.iter().any(|w| w.contains("upper_date_limit")),
        "{:?}",
        p.warnings
    );
    bad.secret_id = "nope".into();
    let p = svc.preview(&bad, None).await.unwrap();
    assert!(p.errors.iter().any(|e| e.contains("secret `nope`")), "{:?}", p.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_preview_prints_the_test_query() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(5).await;
    let id = unique("preview");
    let config = local_config(&db, StoreKind::Embedded, &id, QUERY);
    let out = sluice_cmd(&["preview", "--json", "--source", &id], &config, 60)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a row would be rejected: the exit code says so");
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (p["row_count"].as_u64(), p["rows_rejected"].as_u64()),
        (Some(5), Some(1))
    );
    let out = sluice_cmd(&["preview", "--source", &id], &config, 60).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rows: 5 (1 would be rejected)") && text.contains("error: row 3:"),
        "{text}"
    );
    assert_eq!(open_local_store(&config).await.count_records(&id).await.unwrap(), 0);
}

/// The test query of `src` with `limits`, as the API runs it.
async fn capped(src: &sluice_core::SourceConfig, db: &Database, limits: PreviewLimits) -> sluice_core::Preview {
    let secrets = sluice_local::FileSecrets::new(secrets_for(src, db));
    sluice_core::preview::preview(&sluice_sources::SqlReader, &secrets, src, None, None, limits).await
}

/// API Gateway gives up after 29 s: the test query stops at its time limit, with an
/// answer that says so, and the database's backend is gone too, not left sleeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_query_stops_at_its_time_limit_and_the_database_stops_with_it() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(5).await;
    let marker = unique("slow");
    let src = source(
        &unique("preview"),
        &db,
        &format!(
            "SELECT id AS reference, user_id AS member_id, user_name AS member_name, team AS team_name, date, amount
             FROM sales CROSS JOIN pg_sleep(120) AS s
             WHERE '{marker}' <> '' AND updated_at >= {{{{ last_update_time }}}} AND updated_at < {{{{ upper_date_limit }}}}"
        ),
    );
    assert!(
        src.query_timeout_seconds >= 60,
        "the source's own timeout is far longer"
    );
    let p = capped(
        &src,
        &db,
        PreviewLimits {
            time: Some(std::time::Duration::from_secs(2)),
            rows: 100_000,
        },
    )
    .await;
    assert_eq!(p.row_count, 0);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].starts_with("the test query stopped at its time limit of 2 s"),
        "{:?}",
        p.errors
    );

    // The backend that ran the query is gone from pg_stat_activity: the statement was
    // cancelled, not left to sleep out its 120 s.
    let mut admin = sqlx::PgConnection::connect(db.pg_url()).await.unwrap();
    let running = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() AND state = 'active'",
        )
        .bind(marker.clone())
    };
    let mut left = i64::MAX;
    for _ in 0..100 {
        left = running().fetch_one(&mut admin).await.unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the sleeping query still runs on the server");
}

/// The count stops at the row cap and the answer says so; under the cap it is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_query_counts_up_to_its_row_cap_and_says_the_count_stopped() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(30).await;
    let src = source(&unique("preview"), &db, QUERY);
    let limits = |rows| PreviewLimits { time: None, rows };
    let p = capped(&src, &db, limits(10)).await;
    assert_eq!((p.row_count, p.row_count_capped), (10, true));
    assert!(
        p.warnings.iter().any(|w| w.contains("stopped at 10 rows")),
        "{:?}",
        p.warnings
    );
    assert_eq!((p.records.len(), p.rows_rejected), (9, 1));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["row_count_capped"], true);
    let p = capped(&src, &db, limits(30)).await;
    assert_eq!((p.row_count, p.row_count_capped), (30, false));
    assert!(!p.warnings.iter().any(|w| w.contains("stopped at")), "{:?}", p.warnings);
}
