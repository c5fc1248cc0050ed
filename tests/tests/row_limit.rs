//! `max_rows_per_run` (DESIGN §7): a run that reaches it keeps what it wrote and leaves
//! the watermark; the next runs read the window in halves until each part fits.

use chrono::{Duration, Utc};
use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_over_the_row_limit_is_read_in_halves_until_each_part_fits() {
    let db = Database::new(Engine::Postgres).await;
    db.spread_sales(3_000, 3).await;
    let store = store(StoreKind::Embedded).await;
    let mut src = source(&unique("limit"), &db, SALES_QUERY);
    src.max_rows_per_run = Some(1_000);
    src.initial_watermark = Some(Utc::now() - Duration::days(4));
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));

    let first = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!((first.status, first.rows_read), (RunStatus::Succeeded, 1_000));
    let note = first.message.as_deref().unwrap();
    assert!(
        note.contains("max_rows_per_run (1000)") && note.contains("windows of"),
        "{note}"
    );
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(state.watermark, None, "the watermark waits for the whole window");
    assert!(state.narrowed_window_seconds.is_some());

    let mut runs = vec![first];
    loop {
        let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
        assert!(
            run.rows_read <= 1_000,
            "no run reads more than the limit: {}",
            run.rows_read
        );
        let done = run.message.is_none() && run.rows_read < 1_000;
        runs.push(run);
        if done {
            break;
        }
        assert!(runs.len() < 40, "the halves never caught up");
    }
    assert!(runs.len() > 3, "{} runs", runs.len());
    assert_eq!(store.count_records(&src.id).await.unwrap(), 3_000, "every row, once");
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(
        state.narrowed_window_seconds, None,
        "caught up: windows are whole again"
    );
    assert!(state.watermark.unwrap() > Utc::now() - Duration::minutes(5));
    // The watermark moved part by part.
    let watermarks: Vec<_> = runs.iter().filter_map(|r| r.watermark).collect();
    assert!(watermarks.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_over_the_limit_fails_and_a_query_without_upper_bound_is_not_limited() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(50).await; // all 50 rows share one instant
    let store = store(StoreKind::Embedded).await;
    let mut src = source(&unique("dense"), &db, SALES_QUERY);
    src.max_rows_per_run = Some(10);
    src.initial_watermark = Some(Utc::now() - Duration::days(3));
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    let failed = loop {
        let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
        if run.status == RunStatus::Failed {
            break run;
        }
        assert!(run.rows_read <= 10);
        assert!(
            store
                .get_source(&src.id)
                .await
                .unwrap()
                .unwrap()
                .narrowed_window_seconds
                .is_some()
        );
    };
    let message = failed.message.unwrap();
    assert!(
        message.contains("more than max_rows_per_run (10) rows even at one minute; raise max_rows_per_run"),
        "{message}"
    );
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    let rows_at = Utc::now() - Duration::days(2);
    assert!(
        state.watermark.is_none_or(|w| w < rows_at),
        "the watermark never passed the unread rows"
    );

    // Raised, it goes through.
    src.max_rows_per_run = Some(100);
    store.put_source(&src).await.unwrap();
    let mut run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    while run.message.is_some() {
        run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    }
    assert_eq!(store.count_records(&src.id).await.unwrap(), 50);

    // Without {{ upper_date_limit }}, windows cannot be narrowed: no limit applies.
    let mut open = source(
        &unique("open"),
        &db,
        "SELECT id AS reference, user_id AS member_id, user_name AS member_name, date FROM sales WHERE updated_at >= {{ last_update_time }}",
    );
    open.max_rows_per_run = Some(10);
    store.put_source(&open).await.unwrap();
    let svc = service(store.clone(), secrets_for(&open, &db));
    let run = svc.run(&open.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_read, run.message),
        (RunStatus::Succeeded, 50, None)
    );
}
