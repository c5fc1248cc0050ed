//! BigQuery through its REST API, against bqemulator (infra/services.sh): BigQuery SQL
//! run on DuckDB, answered in BigQuery's JSON pages.

use std::time::Duration;

use futures::TryStreamExt;
use sluice_core::{
    ConnectionSecret, Engine, QueryTemplate, RenderedQuery, RunStatus, SourceErrorKind, SourceReader, Trigger, Value,
};
use sluice_sources::SqlReader;
use sluice_tests::*;

/// More than one page of results (10,000 rows a page).
const ROWS: usize = 10_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_pages_reach_dynamodb_once_and_new_rows_follow() {
    let db = Database::new(Engine::Bigquery).await;
    db.create_sales(ROWS).await;
    let store = store(StoreKind::Dynamo).await;
    // bqemulator ignores the secret's default dataset (`schema`): the table is qualified.
    let src = source(
        &unique("bq"),
        &db,
        &SALES_QUERY.replace("FROM sales", &format!("FROM {}.sales", db.name)),
    );
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));

    let r1 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r1.status, RunStatus::Succeeded, "{:?}", r1.message);
    assert_eq!(
        (r1.rows_read, r1.rows_written, r1.rows_rejected),
        (ROWS as u64, ROWS as u64, 0)
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), ROWS as u64);
    let record = store.get_record(&src.id, "10007").await.unwrap().unwrap();
    assert_eq!(record.fields["member_name"], "user 8");
    assert_eq!(record.fields["amount"], serde_json::json!(12508.75));

    db.insert_sales(ROWS + 1, 20, "0 seconds").await;
    let r2 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r2.status, RunStatus::Succeeded, "{:?}", r2.message);
    assert_eq!((r2.rows_read, r2.rows_written), (20, 20));
    let r3 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!((r3.rows_read, r3.rows_written, r3.rows_unchanged), (20, 0, 20));
    assert_eq!(store.count_records(&src.id).await.unwrap(), ROWS as u64 + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_types_become_typed_values_and_only_selects_run() {
    let db = Database::new(Engine::Bigquery).await;
    db.exec(&format!(
        "CREATE TABLE {d}.typed (id INT64, name STRING, amount NUMERIC, ts TIMESTAMP, dt DATETIME, d DATE, tm TIME,
           b BOOL, f FLOAT64, j JSON, bin BYTES, arr ARRAY<INT64>, nothing STRING);
         INSERT INTO {d}.typed VALUES (1, 'Zoë', NUMERIC '12.50', TIMESTAMP '2024-03-01 10:00:00.5 UTC',
           DATETIME '2024-03-01 10:00:00', DATE '2024-03-01', TIME '01:00:00.5', true, 0.25, JSON '{{\"a\":[1]}}',
           FROM_HEX('00ff'), [1, 2], NULL),
           (2, 'outside', NUMERIC '0', TIMESTAMP '2024-05-01 00:00:00 UTC', NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, [], NULL)",
        d = db.name
    ))
    .await;
    let secret: ConnectionSecret = serde_json::from_value(db.secret.clone()).unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();
    let now = session.now().await.unwrap();
    assert!((chrono::Utc::now() - now).num_seconds().abs() < 60, "{now}");

    let query = QueryTemplate::compile(&format!(
        "SELECT * FROM {}.typed WHERE ts >= {{{{ last_update_time }}}} AND ts < {{{{ upper_date_limit }}}}
           AND UNIX_SECONDS(ts) >= {{{{ last_sync_time }}}} ORDER BY id",
        db.name
    ))
    .unwrap()
    .render(
        Engine::Bigquery.placeholder_style(),
        "2024-03-01T00:00:00Z".parse().unwrap(),
        "2024-04-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(
        session.columns(&query).await.unwrap(),
        [
            "id", "name", "amount", "ts", "dt", "d", "tm", "b", "f", "j", "bin", "arr", "nothing"
        ]
    );
    let rows: Vec<_> = session.stream(&query).try_collect().await.unwrap();
    assert_eq!(rows.len(), 1, "the window's bounds were bound as timestamps");
    let at = |s: &str| Value::Timestamp(s.parse().unwrap());
    assert_eq!(
        rows[0].values,
        [
            Value::Int(1),
            Value::Text("Zoë".into()),
            Value::Decimal("12.5".into()),
            at("2024-03-01T10:00:00.5Z"),
            at("2024-03-01T10:00:00Z"),
            Value::Date("2024-03-01".parse().unwrap()),
            Value::Time("01:00:00.5".parse().unwrap()),
            Value::Bool(true),
            Value::Float(0.25),
            Value::Json(serde_json::json!({"a": [1]})),
            Value::Bytes(vec![0, 255]),
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Null,
        ]
    );

    // A statement that writes is refused before it runs, and the data stays.
    let delete = RenderedQuery {
        sql: format!("DELETE FROM {}.typed WHERE TRUE", db.name),
        binds: vec![],
    };
    let e = session.stream(&delete).try_collect::<Vec<_>>().await.unwrap_err();
    assert!(e.message.contains("Sluice reads only"), "{e}");
    let count = bigquery_exec(&db.name, &format!("SELECT COUNT(*) FROM {}.typed", db.name)).await;
    assert_eq!(count["rows"][0]["f"][0]["v"], "2");

    let missing = RenderedQuery {
        sql: "SELECT * FROM no_such_table".into(),
        binds: vec![],
    };
    let e = session.stream(&missing).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Query, "{e}");
    assert!(e.message.contains("no_such_table"), "{e}");
}

#[tokio::test]
async fn bigquery_secrets_that_cannot_work_say_why() {
    let secret: ConnectionSecret =
        serde_json::from_value(serde_json::json!({"engine": "bigquery", "database": "my-project"})).unwrap();
    let e = SqlReader.open(&secret, Duration::from_secs(30)).await.err().unwrap();
    assert_eq!(e.kind, SourceErrorKind::Config, "{e}");
    assert!(e.message.contains("service_account"), "{e}");

    let secret: ConnectionSecret = serde_json::from_value(serde_json::json!({
        "engine": "bigquery", "database": "my-project",
        "service_account": {"client_email": "s@p.iam.gserviceaccount.com", "private_key": "not a key"}
    }))
    .unwrap();
    let e = SqlReader.open(&secret, Duration::from_secs(30)).await.err().unwrap();
    assert!(e.message.contains("service_account.private_key is not PEM"), "{e}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret: ConnectionSecret = serde_json::from_value(serde_json::json!({
        "engine": "bigquery", "database": "my-project", "host": "127.0.0.1", "port": closed, "tls": "disable"
    }))
    .unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();
    let e = session.now().await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Connect, "{e}");
    assert!(e.message.contains("cannot reach bigquery"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bigquery_procedure_is_called_and_its_result_set_synced_and_a_script_around_it_refused() {
    let db = Database::new(Engine::Bigquery).await;
    db.create_sales(300).await;
    // bqemulator runs CALL but does not bind query parameters into its arguments, so this
    // procedure takes none; the window's binds are the SELECT path's, tested above.
    // One request: the procedure's body has its own `;`.
    bigquery_exec(
        &db.name,
        &format!(
            "CREATE PROCEDURE {d}.all_sales() BEGIN
               SELECT id AS reference, user_id AS member_id, user_name AS member_name, date, amount FROM {d}.sales;
             END",
            d = db.name
        ),
    )
    .await;
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("bqcall"), &db, &format!("CALL {}.all_sales()", db.name));
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    let run = svc.run(&src.id, Trigger::Manual, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 300),
        "{:?}",
        run.message
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), 300);

    // A script that calls and then writes is refused before it runs; the table stays.
    let secret: ConnectionSecret = serde_json::from_value(db.secret.clone()).unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();
    let script = RenderedQuery {
        sql: format!("CALL {d}.all_sales(); DELETE FROM {d}.sales WHERE TRUE", d = db.name),
        binds: vec![],
    };
    let e = session.stream(&script).try_collect::<Vec<_>>().await.unwrap_err();
    assert!(e.message.contains("more than one statement"), "{e}");
    let count = bigquery_exec(&db.name, &format!("SELECT COUNT(*) FROM {}.sales", db.name)).await;
    assert_eq!(count["rows"][0]["f"][0]["v"], "300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_runs_only_what_its_dry_run_calls_a_select_and_refuses_scripts_before_any_dry_run() {
    let db = Database::new(Engine::Bigquery).await;
    db.create_sales(5).await;
    let secret: ConnectionSecret = serde_json::from_value(db.secret.clone()).unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();
    let count_sql = format!("SELECT COUNT(*) FROM {}.sales", db.name);
    let count = || bigquery_exec(&db.name, &count_sql);
    let query = |sql: String| RenderedQuery { sql, binds: vec![] };

    // A script is refused before anything is sent: bqemulator's dry run of a script it
    // cannot classify runs it, so a dry run first would have deleted the rows.
    let script = query(format!(
        "SELECT id FROM {d}.sales; DELETE FROM {d}.sales WHERE TRUE",
        d = db.name
    ));
    for e in [
        session.columns(&script).await.unwrap_err(),
        session.stream(&script).try_collect::<Vec<_>>().await.unwrap_err(),
    ] {
        assert!(e.message.contains("more than one statement"), "{e}");
    }
    assert_eq!(count().await["rows"][0]["f"][0]["v"], "5");

    // A dry run that does not say the statement is a SELECT is refused. bqemulator
    // classifies a UNION as nothing at all (BigQuery calls it a SELECT): it stands here
    // for an answer without statistics.query.statementType.
    let union = query(format!(
        "SELECT id FROM {d}.sales UNION ALL SELECT id FROM {d}.sales",
        d = db.name
    ));
    for e in [
        session.columns(&union).await.unwrap_err(),
        session.stream(&union).try_collect::<Vec<_>>().await.unwrap_err(),
    ] {
        assert_eq!(e.kind, SourceErrorKind::Query, "{e}");
        assert!(e.message.contains("did not say what statement it is"), "{e}");
    }
    // What it calls a SELECT runs, its columns from the same dry run.
    let select = query(format!("WITH s AS (SELECT id FROM {}.sales) SELECT id FROM s", db.name));
    assert_eq!(session.columns(&select).await.unwrap(), ["id"]);
    let rows: Vec<_> = session.stream(&select).try_collect().await.unwrap();
    assert_eq!(rows.len(), 5);
}
