//! A stored procedure (MySQL/MariaDB `CALL`) or a set-returning function (PostgreSQL)
//! in place of a SELECT, with the window bound as parameters.

use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

async fn synced_twice(db: &Database, query: &str, without_member_name: &str) {
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("proc"), db, query);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, db));
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 40),
        "{:?}",
        run.message
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), 40);
    let record = store.get_record(&src.id, "7").await.unwrap().unwrap();
    assert_eq!(record.fields["member_name"], "user 8");
    // New rows arrive through the procedure's window too.
    db.insert_sales(41, 5, "0 seconds").await;
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 5),
        "{:?}",
        run.message
    );

    // A procedure that does not return the standard fields fails naming the missing one.
    let mut broken = src.clone();
    broken.query = without_member_name.into();
    store.put_source(&broken).await.unwrap();
    db.insert_sales(46, 1, "0 seconds").await;
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{:?}", run.message);
    assert!(
        run.message.as_deref().unwrap().contains("member_name"),
        "{:?}",
        run.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_stored_procedure_is_called_with_the_window() {
    let db = Database::new(Engine::Mysql).await;
    db.create_sales(40).await;
    db.exec(
        "CREATE PROCEDURE sales_between(IN since DATETIME(6), IN until DATETIME(6))
         READS SQL DATA
         SELECT id AS reference, user_id AS member_id, user_name AS member_name, date, amount
         FROM sales WHERE updated_at >= since AND updated_at < until;
         CREATE PROCEDURE nameless(IN since DATETIME(6), IN until DATETIME(6))
         READS SQL DATA
         SELECT id AS reference, user_id AS member_id, date FROM sales WHERE updated_at >= since AND updated_at < until",
    )
    .await;
    synced_twice(
        &db,
        "CALL sales_between({{ last_update_time }}, {{ upper_date_limit }})",
        "CALL nameless({{ last_update_time }}, {{ upper_date_limit }})",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_function_is_selected_from_with_the_window() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(40).await;
    db.exec(
        "CREATE FUNCTION sales_between(since timestamptz, until timestamptz)
         RETURNS TABLE (reference bigint, member_id int, member_name text, date timestamptz, amount numeric)
         LANGUAGE sql STABLE AS $$
           SELECT id, user_id, user_name, date, amount FROM sales WHERE updated_at >= since AND updated_at < until
         $$;
         CREATE FUNCTION nameless(since timestamptz, until timestamptz)
         RETURNS TABLE (reference bigint, member_id int, date timestamptz)
         LANGUAGE sql STABLE AS $$
           SELECT id, user_id, date FROM sales WHERE updated_at >= since AND updated_at < until
         $$",
    )
    .await;
    synced_twice(
        &db,
        "SELECT * FROM sales_between({{ last_update_time }}, {{ upper_date_limit }})",
        "SELECT * FROM nameless({{ last_update_time }}, {{ upper_date_limit }})",
    )
    .await;
}
