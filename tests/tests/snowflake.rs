//! Snowflake through its connectors' REST protocol, against fakesnow's server
//! (infra/services.sh): Snowflake SQL run on DuckDB, answered in Arrow as Snowflake does.

use std::time::Duration;

use futures::TryStreamExt;
use sluice_core::{ConnectionSecret, Engine, RenderedQuery, RunStatus, SourceErrorKind, SourceReader, Trigger, Value};
use sluice_sources::SqlReader;
use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_rows_reach_dynamodb_once_and_new_rows_follow() {
    let db = Database::new(Engine::Snowflake).await;
    db.create_sales(300).await;
    let store = store(StoreKind::Dynamo).await;
    let src = source(&unique("snow"), &db, SALES_QUERY);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));

    let r1 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r1.status, RunStatus::Succeeded, "{:?}", r1.message);
    assert_eq!((r1.rows_read, r1.rows_written, r1.rows_rejected), (300, 300, 0));
    let record = store.get_record(&src.id, "7").await.unwrap().unwrap();
    assert_eq!(record.fields["member_name"], "user 8");
    assert_eq!(record.fields["amount"], serde_json::json!(8.75));
    assert!(record.fields["date"].as_str().unwrap().ends_with('Z'), "{record:?}");

    db.insert_sales(301, 20, "0 seconds").await;
    db.exec(&format!(
        "UPDATE sales SET amount = 1, updated_at = {} WHERE id = 7",
        db.now_sql()
    ))
    .await;
    let r2 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(r2.status, RunStatus::Succeeded, "{:?}", r2.message);
    assert_eq!((r2.rows_read, r2.rows_written), (21, 21));
    let r3 = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (r3.rows_read, r3.rows_written, r3.rows_unchanged),
        (21, 0, 21),
        "the lookback re-reads, nothing is rewritten"
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), 320);
    assert_eq!(
        store.get_record(&src.id, "7").await.unwrap().unwrap().fields["amount"],
        serde_json::json!(1)
    );
    assert!(r2.watermark.unwrap() > r1.watermark.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_types_become_typed_values_and_binds_are_typed() {
    let db = Database::new(Engine::Snowflake).await;
    db.exec(
        "CREATE TABLE typed (id int, name varchar, amount number(12,2), big number(38,0), d date,
           ts timestamp_ntz, tz timestamp_tz, v variant, b boolean, f float, bin binary, tm time, nothing varchar);
         INSERT INTO typed SELECT 1, 'Zoë', 12.50, 1234567890123456789, '2024-03-01',
           '2024-03-01 10:00:00.5', '2024-03-01 10:00:00'::timestamp_tz, parse_json('{\"a\":[1]}'), true, 0.25,
           to_binary('00ff', 'HEX'), '01:00:00.5', NULL;
         INSERT INTO typed SELECT 2, 'outside', 0, 0, '2024-05-01', '2024-05-01 00:00:00',
           '2024-05-01 00:00:00'::timestamp_tz, parse_json('1'), false, 0, to_binary('00', 'HEX'), '00:00:00', NULL",
    )
    .await;
    // Key-pair authentication: fakesnow takes any credentials, so this shows the login
    // request Sluice builds with a private key is one Snowflake's protocol accepts.
    let mut secret: ConnectionSecret = serde_json::from_value(db.secret.clone()).unwrap();
    secret.password = None;
    let key = std::fs::read_to_string("../shared/sources/testdata/rsa_pkcs8.pem").unwrap();
    secret.options.insert("private_key".into(), key.into());
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();

    let now = session.now().await.unwrap();
    assert!(
        (chrono::Utc::now() - now).num_seconds().abs() < 60,
        "the clock is UTC: {now}"
    );

    let query = sluice_core::QueryTemplate::compile(
        "SELECT * FROM typed WHERE ts >= {{ last_update_time }} AND ts < {{ upper_date_limit }}
           AND DATE_PART(epoch_second, ts) >= {{ last_sync_time }} ORDER BY id",
    )
    .unwrap()
    .render(
        Engine::Snowflake.placeholder_style(),
        "2024-03-01T00:00:00Z".parse().unwrap(),
        "2024-04-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(
        session.columns(&query).await.unwrap(),
        [
            "id", "name", "amount", "big", "d", "ts", "tz", "v", "b", "f", "bin", "tm", "nothing"
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
            Value::Int(1_234_567_890_123_456_789),
            Value::Date("2024-03-01".parse().unwrap()),
            at("2024-03-01T10:00:00.5Z"),
            at("2024-03-01T10:00:00Z"),
            Value::Json(serde_json::json!({"a": [1]})),
            Value::Bool(true),
            Value::Float(0.25),
            Value::Bytes(vec![0, 255]),
            Value::Time("01:00:00.5".parse().unwrap()),
            Value::Null,
        ]
    );

    let broken = RenderedQuery {
        sql: "SELECT * FROM no_such_table".into(),
        binds: vec![],
    };
    let e = session.stream(&broken).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Query, "{e}");
    assert!(
        e.message.contains("no_such_table") || e.message.contains("NO_SUCH_TABLE"),
        "{e}"
    );
}

#[tokio::test]
async fn snowflake_secrets_that_cannot_work_say_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = open_with(serde_json::json!({"port": closed})).await;
    assert_eq!(e.kind, SourceErrorKind::Connect, "{e}");
    assert!(e.message.contains("cannot reach snowflake"), "{e}");

    let e = open_with(serde_json::json!({"port": snowflake_port(), "account": null})).await;
    assert_eq!(e.kind, SourceErrorKind::Config, "{e}");
    assert!(e.message.contains("account"), "{e}");

    let e = open_with(serde_json::json!({"port": snowflake_port(), "password": null})).await;
    assert!(e.message.contains("neither password nor private_key"), "{e}");

    let e = open_with(serde_json::json!({"port": snowflake_port(), "password": null, "private_key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----"})).await;
    assert!(e.message.contains("is encrypted"), "{e}");
}

/// Opening a Snowflake session with a secret changed by `changes` fails; the error.
async fn open_with(changes: serde_json::Value) -> sluice_core::SourceError {
    let mut secret = serde_json::json!({"engine": "snowflake", "account": "acme", "host": "127.0.0.1",
                                        "tls": "disable", "database": "d", "username": "u", "password": "p"});
    secret
        .as_object_mut()
        .unwrap()
        .extend(changes.as_object().unwrap().clone());
    let secret: ConnectionSecret = serde_json::from_value(secret).unwrap();
    SqlReader.open(&secret, Duration::from_secs(30)).await.err().unwrap()
}
