//! Catch-up (DESIGN §3): a gap longer than `max_window_seconds` is read in consecutive
//! windows, the watermark moving after each; a window the time budget cannot finish is
//! narrowed; a template without `upper_date_limit` cannot be narrowed and reads up to
//! the source clock at once.

use tokio::time::Instant;

use chrono::{Duration, SubsecRound, Utc};
use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

const ROWS: usize = 2_400;

async fn ten_days_of_sales() -> Database {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(0).await;
    db.exec(&format!(
        "INSERT INTO sales (id, user_id, user_name, team, amount, date, updated_at)
         SELECT g, 1 + g % 20, 'user ' || (1 + g % 20), 'team ' || g % 3, g, now() - (g % 240) * interval '1 hour' - interval '1 minute',
                now() - (g % 240) * interval '1 hour' - interval '1 minute'
         FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gap_is_caught_up_window_by_window() {
    let db = ten_days_of_sales().await;
    let store = store(StoreKind::Embedded).await;
    let mut src = source(&unique("catchup"), &db, SALES_QUERY);
    let start = (Utc::now() - Duration::days(11)).trunc_subsecs(0);
    src.initial_watermark = Some(start);
    src.max_window_seconds = Some(86_400);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));

    // A budget already spent: the first window stops at once, the watermark stays,
    // and the next runs read in half-day windows.
    let first = svc.run(&src.id, Trigger::Schedule, Some(Instant::now())).await.unwrap();
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.message);
    assert!(
        first
            .message
            .as_deref()
            .unwrap()
            .starts_with("the time budget ran out before the end of the window"),
        "{first:?}"
    );
    assert_eq!((first.window_start, first.watermark), (Some(start), None));
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(state.narrowed_window_seconds, Some(43_200));

    // With time to spare, the next run goes through every window, then windows are
    // whole again.
    let second = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.message);
    assert_eq!(second.window_start, Some(start));
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(state.narrowed_window_seconds, None);
    assert_eq!(second.rows_read, ROWS as u64);
    let watermark = store.get_source(&src.id).await.unwrap().unwrap().watermark.unwrap();
    assert!(
        watermark > Utc::now() - Duration::minutes(1),
        "caught up to the source clock: {watermark}"
    );
    assert_eq!(second.watermark, Some(watermark));
    assert_eq!(store.count_records(&src.id).await.unwrap(), ROWS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upper_bound_the_window_is_not_narrowed() {
    let db = ten_days_of_sales().await;
    let store = store(StoreKind::Embedded).await;
    let mut src = source(
        &unique("noupper"),
        &db,
        "SELECT id AS reference, user_id AS member_id, user_name AS member_name, date FROM sales
         WHERE updated_at >= {{ last_update_time }}",
    );
    src.initial_watermark = Some(Utc::now() - Duration::days(11));
    src.max_window_seconds = Some(86_400);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    // Out of time, such a window cannot be narrowed: the run says how to fix it.
    let run = svc.run(&src.id, Trigger::Schedule, Some(Instant::now())).await.unwrap();
    assert!(
        run.message.as_deref().unwrap().contains("{{ upper_date_limit }}"),
        "{run:?}"
    );
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!((state.watermark, state.narrowed_window_seconds), (None, None));
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!(run.rows_read, ROWS as u64, "one window, up to the source clock");
    assert!(run.watermark.unwrap() > Utc::now() - Duration::minutes(1));
}
