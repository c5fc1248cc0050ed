//! Every common column type becomes a typed value; an unsupported one is named.

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use futures::StreamExt;
use serde_json::json;
use sluice_core::{ConnectionSecret, Engine, RenderedQuery, RunStatus, SourceReader, Trigger, Value};
use sluice_sources::SqlReader;
use sluice_tests::*;

async fn read_one_row(db: &Database, sql: &str) -> Vec<(String, Value)> {
    let secret: ConnectionSecret = serde_json::from_value(db.secret.clone()).unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();
    let query = RenderedQuery {
        sql: sql.to_string(),
        binds: vec![],
    };
    let rows: Vec<_> = session.stream(&query).collect().await;
    assert_eq!(rows.len(), 1);
    let row = rows.into_iter().next().unwrap().unwrap();
    row.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn ts(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Value {
    Value::Timestamp(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap())
}

const PG_TYPES: &str = r#"SELECT 1 AS reference, 7 AS member_id, 'Ada' AS member_name,
  '2025-01-02 03:04:05+02'::timestamptz AS date,
  2::int2 AS i2, 3::int4 AS i4, 4::int8 AS i8, 1.5::float4 AS f4, 2.25::float8 AS f8,
  12345678901234567890.123456789::numeric AS num, 12.50::numeric(10,2) AS money_like, true AS flag,
  'txt'::text AS t, 'vc'::varchar(9) AS vc, 'c'::char(3) AS ch,
  '2025-01-02'::date AS d, '03:04:05.5'::time AS tm, '2025-01-02 03:04:05'::timestamp AS ts,
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, '{"a":[1,2]}'::json AS j, '{"b":{"c":null}}'::jsonb AS jb,
  '\xdead'::bytea AS b, ARRAY[1,2,NULL]::int4[] AS ai, ARRAY['x','y'] AS at, NULL::int AS nothing,
  interval '1 day' AS gap"#;

#[tokio::test]
async fn postgres_types_become_typed_values() {
    let db = Database::new(Engine::Postgres).await;
    let row = read_one_row(&db, PG_TYPES).await;
    let get = |name: &str| row.iter().find(|(k, _)| k == name).unwrap().1.clone();
    assert_eq!(get("date"), ts(2025, 1, 2, 1, 4, 5), "timestamptz is converted to UTC");
    assert_eq!(get("i2"), Value::Int(2));
    assert_eq!(get("i4"), Value::Int(3));
    assert_eq!(get("i8"), Value::Int(4));
    assert_eq!(get("f4"), Value::Float(1.5));
    assert_eq!(get("f8"), Value::Float(2.25));
    assert_eq!(
        get("num"),
        Value::Decimal("12345678901234567890.123456789".into()),
        "numeric stays exact"
    );
    assert_eq!(
        get("money_like"),
        Value::Decimal("12.5".into()),
        "decimals are canonical: no trailing zeros"
    );
    assert_eq!(get("flag"), Value::Bool(true));
    assert_eq!(get("t"), Value::Text("txt".into()));
    assert_eq!(get("vc"), Value::Text("vc".into()));
    assert_eq!(get("ch"), Value::Text("c  ".into()));
    assert_eq!(get("d"), Value::Date(NaiveDate::from_ymd_opt(2025, 1, 2).unwrap()));
    assert_eq!(
        get("tm"),
        Value::Time(NaiveTime::from_hms_milli_opt(3, 4, 5, 500).unwrap())
    );
    assert_eq!(
        get("ts"),
        ts(2025, 1, 2, 3, 4, 5),
        "a timestamp without zone is taken as UTC"
    );
    assert_eq!(
        get("u"),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap())
    );
    assert_eq!(get("j"), Value::Json(json!({"a": [1, 2]})));
    assert_eq!(get("jb"), Value::Json(json!({"b": {"c": null}})));
    assert_eq!(get("b"), Value::Bytes(vec![0xde, 0xad]));
    assert_eq!(get("ai"), Value::Array(vec![Value::Int(1), Value::Int(2), Value::Null]));
    assert_eq!(
        get("at"),
        Value::Array(vec![Value::Text("x".into()), Value::Text("y".into())])
    );
    assert_eq!(get("nothing"), Value::Null);
    assert_eq!(get("gap"), Value::Unsupported("INTERVAL".into()));
}

#[tokio::test]
async fn postgres_types_are_stored_in_dynamodb_with_their_types() {
    let db = Database::new(Engine::Postgres).await;
    let store = store(StoreKind::Dynamo).await;
    let src = source(
        &unique("types"),
        &db,
        &PG_TYPES.replace(",\n  interval '1 day' AS gap", ""),
    );
    store.put_source(&src).await.unwrap();
    let run = service(store.clone(), secrets_for(&src, &db))
        .run(&src.id, Trigger::Manual, None)
        .await
        .unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 1),
        "{:?}",
        run.message
    );
    let record = store.get_record(&src.id, "1").await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&record.fields).unwrap(),
        json!({
            "reference": 1, "member_id": 7, "member_name": "Ada", "date": "2025-01-02T01:04:05Z",
            "i2": 2, "i4": 3, "i8": 4, "f4": 1.5, "f8": 2.25, "num": 12345678901234567890.123456789_f64,
            "money_like": 12.5, "flag": true, "t": "txt", "vc": "vc", "ch": "c  ", "d": "2025-01-02",
            "tm": "03:04:05.500", "ts": "2025-01-02T03:04:05Z", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "j": {"a": [1, 2]}, "jb": {"b": {"c": null}}, "b": "dead", "ai": [1, 2, null], "at": ["x", "y"],
            "nothing": null
        })
    );
}

#[tokio::test]
async fn mariadb_types_become_typed_values() {
    let db = Database::new(Engine::Mysql).await;
    db.exec(
        "CREATE TABLE typed (flag tinyint(1), si smallint, i int, bi bigint, ubi bigint unsigned, f float, d double,
           num decimal(30,10), vc varchar(20), t text, ch char(3), dt date, tm time(3), dtm datetime(6),
           tsz timestamp(6) NULL, j json, bl blob, vb varbinary(8), e enum('a','b'), y year, nothing int);
         SET time_zone = '+02:00';
         INSERT INTO typed VALUES (1, 2, 3, 4, 18446744073709551615, 1.5, 2.25, 12345678901234567890.1234567891,
           'vc', 'txt', 'c', '2025-01-02', '03:04:05.5', '2025-01-02 03:04:05.25', '2025-01-02 03:04:05',
           '{\"a\": [1, 2]}', x'dead', x'beef', 'b', 2025, NULL);",
    )
    .await;
    let row = read_one_row(&db, "SELECT * FROM typed").await;
    let get = |name: &str| row.iter().find(|(k, _)| k == name).unwrap().1.clone();
    assert_eq!(get("flag"), Value::Bool(true));
    assert_eq!(get("si"), Value::Int(2));
    assert_eq!(get("i"), Value::Int(3));
    assert_eq!(get("bi"), Value::Int(4));
    assert_eq!(
        get("ubi"),
        Value::Decimal("18446744073709551615".into()),
        "beyond i64, kept exact"
    );
    assert_eq!(get("f"), Value::Float(1.5));
    assert_eq!(get("d"), Value::Float(2.25));
    assert_eq!(get("num"), Value::Decimal("12345678901234567890.1234567891".into()));
    assert_eq!(get("vc"), Value::Text("vc".into()));
    assert_eq!(get("t"), Value::Text("txt".into()));
    assert_eq!(get("ch"), Value::Text("c".into()));
    assert_eq!(get("dt"), Value::Date(NaiveDate::from_ymd_opt(2025, 1, 2).unwrap()));
    assert_eq!(
        get("tm"),
        Value::Time(NaiveTime::from_hms_milli_opt(3, 4, 5, 500).unwrap())
    );
    assert_eq!(
        get("dtm"),
        Value::Timestamp(Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(250)),
        "DATETIME is taken as UTC"
    );
    assert_eq!(
        get("tsz"),
        ts(2025, 1, 2, 1, 4, 5),
        "TIMESTAMP written at +02:00 reads back in UTC"
    );
    // MariaDB's JSON is LONGTEXT (binary collation) on the wire: it arrives as text.
    assert_eq!(get("j"), Value::Text("{\"a\": [1, 2]}".into()));
    assert_eq!(get("bl"), Value::Bytes(vec![0xde, 0xad]));
    assert_eq!(get("vb"), Value::Bytes(vec![0xbe, 0xef]));
    assert_eq!(get("e"), Value::Text("b".into()));
    assert_eq!(get("y"), Value::Int(2025));
    assert_eq!(get("nothing"), Value::Null);
}

#[tokio::test]
async fn sqlite_values_take_their_stored_types() {
    let db = Database::new(Engine::Sqlite).await;
    db.exec(
        "CREATE TABLE typed (i INTEGER, r REAL, t TEXT, b BLOB, flag BOOLEAN, n INTEGER);
         INSERT INTO typed VALUES (42, 2.5, '2025-01-02 03:04:05', x'dead', 1, NULL);",
    )
    .await;
    let row = read_one_row(&db, "SELECT * FROM typed").await;
    let values: Vec<Value> = row.into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        values,
        vec![
            Value::Int(42),
            Value::Float(2.5),
            Value::Text("2025-01-02 03:04:05".into()),
            Value::Bytes(vec![0xde, 0xad]),
            Value::Bool(true),
            Value::Null
        ]
    );
}
