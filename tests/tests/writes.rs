//! A template that tries to write, on every engine the tests run: INSERT, UPDATE,
//! DELETE, DDL, a write inside a CTE, a function that writes. None may change the
//! source's data, and none may end as a run that imported rows.

use sluice_core::{Engine, RunStatus, Trigger};
use sluice_tests::*;

/// The engine's name for the sales table.
fn table(db: &Database) -> String {
    match db.engine {
        Engine::Bigquery => format!("{}.sales", db.name),
        _ => "sales".into(),
    }
}

/// The table as Sluice reads it: its row count and the sum of its amounts, in one row.
async fn census(db: &Database) -> (String, f64) {
    let query = format!(
        "SELECT COUNT(*) AS reference, 'all' AS member_id, 'all' AS member_name, MAX(updated_at) AS date,
                SUM(amount) AS total FROM {} WHERE updated_at >= {{{{ last_update_time }}}}",
        table(db)
    );
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("census"), db, &query);
    store.put_source(&src).await.unwrap();
    let run = service(store.clone(), secrets_for(&src, db))
        .run(&src.id, Trigger::Manual, None)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    let count = store.count_records(&src.id).await.unwrap();
    assert_eq!(count, 1);
    let record = sluice_core::DeliveryLog::undelivered(&*store, &src.id, None, 1)
        .await
        .unwrap()
        .remove(0);
    (record.key, record.fields["total"].as_f64().unwrap())
}

/// Runs the common writes and `extra` on `engine`, after `setup`.
async fn writes_change_nothing(engine: Engine, setup: Option<&str>, extra: &[&str]) {
    let db = Database::new(engine).await;
    db.create_sales(20).await;
    if let Some(setup) = setup {
        db.exec(setup).await;
    }
    let before = census(&db).await;
    assert_eq!(before.0, "20");
    let t = table(&db);
    let mut templates = vec![
        format!(
            "INSERT INTO {t} (id, user_id, user_name, team, amount, date, updated_at)
             SELECT id + 1000, user_id, user_name, team, amount, date, updated_at FROM {t}
             WHERE updated_at >= {{{{ last_update_time }}}}"
        ),
        format!("UPDATE {t} SET amount = 0 WHERE updated_at >= {{{{ last_update_time }}}}"),
        format!("DELETE FROM {t} WHERE updated_at >= {{{{ last_update_time }}}}"),
        format!("DROP TABLE {t}"),
        format!("CREATE TABLE {t}_copy (id INT)"),
    ];
    templates.extend(extra.iter().map(|s| s.to_string()));
    let store = store(StoreKind::Embedded).await;
    for (i, query) in templates.iter().enumerate() {
        let mut src = source(&unique("write"), &db, query);
        src.id = format!("{}_{i}", src.id);
        store.put_source(&src).await.unwrap();
        let run = service(store.clone(), secrets_for(&src, &db))
            .run(&src.id, Trigger::Manual, None)
            .await
            .unwrap();
        assert!(
            run.status == RunStatus::Failed && run.rows_written == 0,
            "{engine}: `{query}` ran: {run:?}"
        );
        assert!(
            run.message.as_deref().is_some_and(|m| m.len() > 20),
            "{engine}: {run:?}"
        );
        assert_eq!(census(&db).await, before, "{engine}: `{query}` changed the data");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_templates_that_write_change_nothing() {
    writes_change_nothing(
        Engine::Postgres,
        Some("CREATE FUNCTION wipe() RETURNS SETOF sales LANGUAGE sql AS $$ DELETE FROM sales RETURNING * $$"),
        &[
            "WITH gone AS (DELETE FROM sales WHERE updated_at >= {{ last_update_time }} RETURNING *)
             SELECT id AS reference, user_id AS member_id, user_name AS member_name, date FROM gone",
            "SELECT id AS reference, user_id AS member_id, user_name AS member_name, date FROM wipe()
             WHERE updated_at >= {{ last_update_time }}",
            // A session that tries to leave read-only mode first.
            "SELECT set_config('transaction_read_only', 'off', true) AS reference, 1 AS member_id,
                    'x' AS member_name, now() AS date FROM sales WHERE updated_at >= {{ last_update_time }}",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_templates_that_write_change_nothing() {
    writes_change_nothing(Engine::Mysql, None, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_templates_that_write_change_nothing() {
    writes_change_nothing(
        Engine::Sqlite,
        None,
        &["WITH s AS (SELECT id FROM sales) DELETE FROM sales WHERE id IN (SELECT id FROM s)"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_server_templates_that_write_change_nothing() {
    writes_change_nothing(
        Engine::Sqlserver,
        None,
        &["WITH s AS (SELECT * FROM sales WHERE updated_at >= {{ last_update_time }}) DELETE FROM s"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_templates_that_write_change_nothing() {
    writes_change_nothing(Engine::Snowflake, None, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_templates_that_write_change_nothing() {
    writes_change_nothing(Engine::Bigquery, None, &[]).await;
}
