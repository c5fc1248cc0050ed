//! SQL Server against a real TDS server: Babelfish for PostgreSQL 4.2.0
//! (infra/babelfish.sh), on 127.0.0.1:1433 with TLS and :1434 without. Every listed
//! type and its NULL, the three variables as `@P` binds, stored procedures (and a
//! write one makes, rolled back), TLS and the login errors, the statement timeout,
//! preview, backfill and the management API's test query. The sync of 10,000 rows is in
//! incremental.rs and the Customer.io calls in customerio.rs; where Babelfish differs
//! from SQL Server, the README says so ("What runs against real servers").

use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use futures::StreamExt;
use serde_json::json;
use sluice_core::{
    BackfillRequest, Backfiller, ConnectionSecret, Engine, JobStatus, QueryTemplate, RenderedQuery, RunStatus,
    SourceErrorKind, SourceReader, Trigger, Value,
};
use sluice_sources::SqlReader;
use sluice_tests::sqlserver;
use sluice_tests::*;

fn connection(db: &Database) -> ConnectionSecret {
    serde_json::from_value(db.secret.clone()).unwrap()
}

/// The error opening a session with `secret` gives.
async fn open_error(secret: serde_json::Value) -> sluice_core::SourceError {
    let secret: ConnectionSecret = serde_json::from_value(secret).unwrap();
    match SqlReader.open(&secret, Duration::from_secs(10)).await {
        Ok(_) => panic!("the session opened"),
        Err(e) => e,
    }
}

const TYPED: &str = "CREATE TABLE typed (id int PRIMARY KEY, dt datetime, dt2 datetime2(7), sdt smalldatetime,
      dto datetimeoffset, d date, t time(7), m money, sm smallmoney, dec decimal(38, 10), num numeric(9, 3),
      b bit, ti tinyint, si smallint, i int, bi bigint, r real, f float, u uniqueidentifier, c char(4),
      vc varchar(20), nvm nvarchar(max), nt ntext, vb varbinary(max));
    INSERT INTO typed VALUES (1, '2024-03-01 01:00:00.003', '2024-03-01 12:00:00.1234567', '2024-03-01 01:30:00',
      '2024-03-01 12:00:00 +02:00', '2024-03-01', '09:30:00.5', 123456789.0123, -12.5,
      1234567890123456789012345678.0123456789, 0.005, 1, 200, -300, 70000, 9000000000000000000, 0.25, 1e300,
      '0123abcd-4567-89ab-cdef-0123456789ab', 'ab', 'plain', N'Zoë ✓', N'ntext ✓', 0x00FFFE);
    INSERT INTO typed (id) VALUES (2);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_type_and_its_null_becomes_the_value_the_readme_lists() {
    let db = Database::new(Engine::Sqlserver).await;
    db.exec(TYPED).await;
    let mut session = SqlReader.open(&connection(&db), Duration::from_secs(30)).await.unwrap();
    let query = RenderedQuery {
        sql: "SELECT * FROM typed ORDER BY id".into(),
        binds: vec![],
    };
    let rows: Vec<_> = session.stream(&query).map(Result::unwrap).collect().await;
    assert_eq!(rows.len(), 2);
    let get = |name: &str| rows[0].get(name).unwrap().clone();
    let at = |h, mi, s, nanos| {
        Value::Timestamp(Utc.with_ymd_and_hms(2024, 3, 1, h, mi, s).unwrap() + chrono::Duration::nanoseconds(nanos))
    };
    assert_eq!(get("dt"), at(1, 0, 0, 3_000_000), "datetime, as UTC");
    // Babelfish keeps datetime2 to the microsecond (PostgreSQL's precision); SQL Server
    // to 100 ns, which the unit tests of the conversion cover.
    assert_eq!(get("dt2"), at(12, 0, 0, 123_457_000), "datetime2");
    assert_eq!(get("sdt"), at(1, 30, 0, 0));
    assert_eq!(get("dto"), at(10, 0, 0, 0), "datetimeoffset converted to UTC");
    assert_eq!(get("d"), Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()));
    assert_eq!(
        get("t"),
        Value::Time(NaiveTime::from_hms_milli_opt(9, 30, 0, 500).unwrap())
    );
    assert_eq!(
        get("m"),
        Value::Decimal("123456789.0123".into()),
        "money to its 4 decimals"
    );
    assert_eq!(get("sm"), Value::Decimal("-12.5".into()));
    assert_eq!(
        get("dec"),
        Value::Decimal("1234567890123456789012345678.0123456789".into())
    );
    assert_eq!(get("num"), Value::Decimal("0.005".into()));
    assert_eq!(get("b"), Value::Bool(true));
    assert_eq!(
        ["ti", "si", "i", "bi"].map(get),
        [200, -300, 70_000, 9_000_000_000_000_000_000].map(Value::Int)
    );
    assert_eq!((get("r"), get("f")), (Value::Float(0.25), Value::Float(1e300)));
    assert_eq!(
        get("u"),
        Value::Uuid("0123abcd-4567-89ab-cdef-0123456789ab".parse().unwrap())
    );
    assert_eq!(get("c"), Value::Text("ab  ".into()), "char keeps its padding");
    assert_eq!(get("vc"), Value::Text("plain".into()));
    assert_eq!(get("nvm"), Value::Text("Zoë ✓".into()));
    assert_eq!(get("nt"), Value::Text("ntext ✓".into()));
    assert_eq!(get("vb"), Value::Bytes(vec![0, 0xff, 0xfe]));
    for (name, value) in rows[1].iter().skip(1) {
        assert_eq!(*value, Value::Null, "NULL {name}");
    }

    // Stored as the README's Values table says.
    let store = store(StoreKind::Embedded).await;
    let query = "SELECT id AS reference, 1 AS member_id, 'Ada' AS member_name, dt2 AS date, dto, m, dec, u, vb, t, b
                 FROM typed WHERE id = 1 OR (dt2 >= {{ last_update_time }} AND dt2 < {{ upper_date_limit }})";
    let src = source(&unique("types"), &db, query);
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
    let stored = store.get_record(&src.id, "1").await.unwrap().unwrap().fields;
    assert_eq!(stored["date"], "2024-03-01T12:00:00.123457Z");
    assert_eq!(stored["dto"], "2024-03-01T10:00:00Z");
    assert_eq!((&stored["m"], &stored["b"]), (&json!(123456789.0123), &json!(true)));
    assert_eq!(stored["u"], "0123abcd-4567-89ab-cdef-0123456789ab");
    assert_eq!(
        (&stored["vb"], &stored["t"]),
        (&json!("00fffe"), &json!("09:30:00.500"))
    );
}

const SALES_THREE_VARIABLES: &str =
    "SELECT id AS reference, user_id AS member_id, user_name AS member_name, date, amount
FROM sales
WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}
  AND DATEDIFF_BIG(second, '1970-01-01', updated_at) >= {{ last_sync_time }}
  AND updated_at >= {{ last_update_time }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_variables_bind_as_at_p_and_the_preview_shows_them() {
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(30).await;
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("binds"), &db, SALES_THREE_VARIABLES);
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    let preview = svc.preview(&src, None).await.unwrap();
    assert!(preview.errors.is_empty(), "{:?}", preview.errors);
    assert!(
        preview.sql.contains("updated_at >= @P1 AND updated_at < @P2")
            && preview.sql.contains(">= @P3")
            && preview.sql.ends_with("AND updated_at >= @P1"),
        "a variable used twice binds once: {}",
        preview.sql
    );
    assert_eq!(preview.binds.len(), 3);
    assert_eq!(preview.binds[2], 0, "last_sync_time is 0 on the first run");
    assert_eq!(preview.row_count, 30);
    assert_eq!(preview.records[0].fields["member_name"], "user 2");
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 30),
        "{:?}",
        run.message
    );
    // The next run binds the watermark less the lookback, as Unix seconds too.
    db.insert_sales(31, 5, "0 seconds").await;
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!((run.rows_read, run.rows_written), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_procedure_takes_the_window_and_what_one_writes_is_rolled_back() {
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(40).await;
    // CREATE PROCEDURE must begin a batch, as on SQL Server.
    db.exec("CREATE TABLE audit (id int IDENTITY PRIMARY KEY, read_from datetime2)")
        .await;
    db.exec(
        "CREATE PROCEDURE dbo.sales_between @from datetime2, @to datetime2 AS
         BEGIN
           SELECT id AS reference, user_id AS member_id, user_name AS member_name, date, amount
           FROM sales WHERE updated_at >= @from AND updated_at < @to
         END",
    )
    .await;
    db.exec(
        "CREATE PROCEDURE dbo.sales_and_audit @from datetime2, @to datetime2 AS
         BEGIN
           INSERT INTO audit (read_from) VALUES (@from);
           SELECT id AS reference, user_id AS member_id, user_name AS member_name, date, amount
           FROM sales WHERE updated_at >= @from AND updated_at < @to
         END",
    )
    .await;
    let store = store(StoreKind::Embedded).await;
    for (procedure, rows) in [("sales_between", 40), ("sales_and_audit", 40)] {
        let query =
            format!("EXEC dbo.{procedure} @from = {{{{ last_update_time }}}}, @to = {{{{ upper_date_limit }}}}");
        let src = source(&unique("proc"), &db, &query);
        store.put_source(&src).await.unwrap();
        let run = service(store.clone(), secrets_for(&src, &db))
            .run(&src.id, Trigger::Schedule, None)
            .await
            .unwrap();
        assert_eq!(
            (run.status, run.rows_written),
            (RunStatus::Succeeded, rows),
            "{procedure}: {:?}",
            run.message
        );
    }
    let audit = sqlserver::query(sqlserver::tls_port(), &db.name, "SELECT COUNT(*) FROM audit").await;
    assert_eq!(
        audit[0][0].as_deref(),
        Some("0"),
        "the procedure's write was rolled back"
    );

    // A template that writes itself fails with the database's message.
    let src = source(
        &unique("write"),
        &db,
        "UPDATE sales SET amount = 0 WHERE updated_at >= {{ last_update_time }}",
    );
    store.put_source(&src).await.unwrap();
    let run = service(store.clone(), secrets_for(&src, &db))
        .run(&src.id, Trigger::Schedule, None)
        .await
        .unwrap();
    let zeroed = sqlserver::query(
        sqlserver::tls_port(),
        &db.name,
        "SELECT COUNT(*) FROM sales WHERE amount = 0",
    )
    .await;
    assert_eq!(zeroed[0][0].as_deref(), Some("0"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_verified_and_a_server_without_it_is_refused_with_the_fix() {
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(3).await;
    let ca = std::fs::read_to_string(format!("{}/ca.pem", tls_dir())).unwrap();
    let other_ca = std::fs::read_to_string(format!("{}/other-ca.pem", tls_dir())).unwrap();

    let mut verified = db.secret.clone();
    verified["tls"] = "verify-full".into();
    verified["ca_cert"] = ca.into();
    let secret: ConnectionSecret = serde_json::from_value(verified.clone()).unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(10)).await.unwrap();
    assert!(
        (Utc::now() - session.now().await.unwrap()).num_seconds().abs() < 60,
        "the clock is UTC"
    );

    verified["ca_cert"] = other_ca.into();
    let e = open_error(verified).await;
    assert_eq!(e.kind, SourceErrorKind::Tls, "{e}");
    assert!(e.message.contains("TLS with localhost:"), "{e}");

    // The server without TLS: refused when encryption is asked for, used when not.
    sqlserver::create_database(sqlserver::plain_port(), &db.name).await;
    let e = open_error(sqlserver::secret(&db.name, sqlserver::plain_port(), "require")).await;
    assert_eq!(e.kind, SourceErrorKind::Tls, "{e}");
    assert!(
        e.message.contains("does not offer encryption") && e.message.contains("set tls to disable"),
        "{e}"
    );
    let plain: ConnectionSecret =
        serde_json::from_value(sqlserver::secret(&db.name, sqlserver::plain_port(), "disable")).unwrap();
    SqlReader.open(&plain, Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_database_name_the_fix_without_the_password() {
    let db = Database::new(Engine::Sqlserver).await;
    let mut wrong = db.secret.clone();
    wrong["password"] = "not-the-Password-77".into();
    let e = open_error(wrong).await;
    assert_eq!(e.kind, SourceErrorKind::Auth, "{e}");
    assert!(
        e.message.contains("refused the login") && e.message.contains("check username, password"),
        "{e}"
    );
    assert!(!e.message.contains("not-the-Password-77"), "{e}");

    let mut unknown = db.secret.clone();
    unknown["database"] = "no_such_db_8d1".into();
    let e = open_error(unknown).await;
    assert_eq!(e.kind, SourceErrorKind::Auth, "{e}");
    assert!(e.message.contains("no_such_db_8d1"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_held_past_the_statement_timeout_fails_the_run_and_keeps_the_watermark() {
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(10).await;
    let store = store(StoreKind::Embedded).await;
    let mut src = source(&unique("timeout"), &db, SALES_QUERY);
    src.query_timeout_seconds = 2;
    store.put_source(&src).await.unwrap();
    let svc = service(store.clone(), secrets_for(&src, &db));
    let lock = sqlserver::lock_table(&db.name, "sales").await;
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    drop(lock);
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.message.as_deref().unwrap().contains("query_timeout_seconds"),
        "{:?}",
        run.message
    );
    assert!(run.duration_ms < 30_000, "{run:?}");
    assert_eq!(store.get_source(&src.id).await.unwrap().unwrap().watermark, None);
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 10),
        "{:?}",
        run.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_declares_read_only_intent_and_reads_in_a_transaction_never_committed() {
    let db = Database::new(Engine::Sqlserver).await;
    db.exec("CREATE TABLE notes (id int PRIMARY KEY, body nvarchar(20))")
        .await;
    db.exec(
        "CREATE PROCEDURE dbo.note_and_count AS
         BEGIN
           INSERT INTO notes VALUES (1, 'x');
           SELECT @@TRANCOUNT AS open_transactions;
         END",
    )
    .await;
    let mut session = SqlReader.open(&connection(&db), Duration::from_secs(10)).await.unwrap();
    // The session's own transaction is open: what a procedure writes in it is never
    // committed.
    let write = RenderedQuery {
        sql: "EXEC dbo.note_and_count".into(),
        binds: vec![],
    };
    let rows: Vec<_> = session.stream(&write).collect().await;
    let open = rows.last().unwrap().as_ref().unwrap().get("open_transactions").cloned();
    assert_eq!(open, Some(Value::Int(1)), "{rows:?}");
    session.finish().await.unwrap();
    drop(session);
    let notes = sqlserver::query(sqlserver::tls_port(), &db.name, "SELECT COUNT(*) FROM notes").await;
    assert_eq!(notes[0][0].as_deref(), Some("0"));
}

/// The rows left in `victim`.
async fn victims(db: &Database) -> Option<String> {
    sqlserver::query(sqlserver::tls_port(), &db.name, "SELECT COUNT(*) FROM victim").await[0][0].clone()
}

async fn create_victim(db: &Database) {
    db.exec("CREATE TABLE victim (id int PRIMARY KEY, user_id int, updated_at datetime2)")
        .await;
    db.exec(
        "INSERT INTO victim SELECT n, n, SYSUTCDATETIME() FROM
           (SELECT TOP (10) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS n FROM sys.all_objects) s",
    )
    .await;
}

const VICTIM_ROWS: &str = "SELECT id AS reference, user_id AS member_id, CONCAT('user ', user_id) AS member_name,\n  updated_at AS date FROM victim WHERE updated_at >= {{ last_update_time }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_would_write_or_end_the_transaction_is_refused_before_it_runs_and_the_rows_stay() {
    let db = Database::new(Engine::Sqlserver).await;
    create_victim(&db).await;
    let store = store(StoreKind::Embedded).await;
    let attacks = [
        // The issue's own: commit Sluice's transaction, delete for good, open another.
        (
            format!("COMMIT; DELETE FROM dbo.victim; BEGIN TRAN; {VICTIM_ROWS}"),
            "holds COMMIT",
        ),
        (format!("SET IMPLICIT_TRANSACTIONS OFF; {VICTIM_ROWS}"), "holds SET"),
        (format!("SAVE TRAN s; {VICTIM_ROWS}"), "holds SAVE"),
        (format!("{VICTIM_ROWS}; DELETE FROM victim"), "holds DELETE"),
        (
            format!("{VICTIM_ROWS}; SELECT 1 AS reference"),
            "more than one statement",
        ),
        (
            VICTIM_ROWS.replace(" FROM victim", " INTO dbo.stolen FROM victim"),
            "SELECT ... INTO",
        ),
        (
            VICTIM_ROWS.replace("FROM victim", "FROM victim WITH (TABLOCKX)"),
            "table hint TABLOCKX",
        ),
        // What a reader of lines, or of `;`, would miss.
        (
            format!("{VICTIM_ROWS} -- a comment\nDELETE FROM victim"),
            "holds DELETE",
        ),
        (
            format!("{VICTIM_ROWS} /* ; */ COMMIT DELETE FROM victim"),
            "holds COMMIT",
        ),
        (format!("{VICTIM_ROWS}\nGO\nDELETE FROM victim"), "holds DELETE"),
        (format!("/* /* */ {VICTIM_ROWS} */ DELETE FROM victim"), "holds DELETE"),
        (
            "EXEC sp_executesql N'DELETE FROM victim'".to_string(),
            "system procedure",
        ),
    ];
    for (i, (query, cause)) in attacks.iter().enumerate() {
        let src = source(&unique(&format!("attack{i}")), &db, query);
        store.put_source(&src).await.unwrap();
        let svc = service(store.clone(), secrets_for(&src, &db));
        let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
        let message = run.message.clone().unwrap_or_default();
        assert_eq!(run.status, RunStatus::Failed, "{query}: {message}");
        assert!(
            message.contains("refused before it ran") && message.contains(cause),
            "{query}: {message}"
        );
        assert_eq!(victims(&db).await.as_deref(), Some("10"), "{query}");
        // The test query refuses it too, before it runs.
        let said = match svc.preview(&src, None).await {
            Ok(preview) => preview.errors.join("; "),
            Err(e) => e.to_string(),
        };
        assert!(said.contains("refused before it ran"), "{query}: {said}");
        assert_eq!(victims(&db).await.as_deref(), Some("10"), "{query}");
    }
    let stolen = sqlserver::query(
        sqlserver::tls_port(),
        &db.name,
        "SELECT COUNT(*) FROM sys.tables WHERE name = 'stolen'",
    )
    .await;
    assert_eq!(stolen[0][0].as_deref(), Some("0"), "SELECT INTO made no table");
    // The same template without its attack syncs.
    let src = source(&unique("honest"), &db, VICTIM_ROWS);
    store.put_source(&src).await.unwrap();
    let run = service(store.clone(), secrets_for(&src, &db))
        .run(&src.id, Trigger::Schedule, None)
        .await
        .unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 10),
        "{:?}",
        run.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_procedure_that_ends_sluices_transaction_fails_the_run_and_says_why() {
    let db = Database::new(Engine::Sqlserver).await;
    create_victim(&db).await;
    // Babelfish lets a procedure commit the caller's transaction, and opening another
    // leaves @@TRANCOUNT and XACT_STATE() as they were: Sluice's savepoint is what is gone.
    db.exec(
        "CREATE PROCEDURE dbo.commits AS
         BEGIN
           COMMIT;
           DELETE FROM victim WHERE id > 8;
           BEGIN TRANSACTION;
           SELECT id AS reference, user_id AS member_id, 'user' AS member_name, updated_at AS date FROM victim;
         END",
    )
    .await;
    db.exec(
        "CREATE PROCEDURE dbo.rolls_back AS
         BEGIN
           SELECT id AS reference, user_id AS member_id, 'user' AS member_name, updated_at AS date FROM victim;
           ROLLBACK;
         END",
    )
    .await;
    let store = store(StoreKind::Embedded).await;
    for procedure in ["commits", "rolls_back"] {
        let src = source(&unique(procedure), &db, &format!("EXEC dbo.{procedure}"));
        store.put_source(&src).await.unwrap();
        let run = service(store.clone(), secrets_for(&src, &db))
            .run(&src.id, Trigger::Schedule, None)
            .await
            .unwrap();
        let message = run.message.clone().unwrap_or_default();
        assert_eq!(run.status, RunStatus::Failed, "{procedure}: {message}");
        assert!(
            message.contains("ended Sluice's transaction") && message.contains("remove COMMIT, ROLLBACK"),
            "{procedure}: {message}"
        );
        assert_eq!(store.get_source(&src.id).await.unwrap().unwrap().watermark, None);
    }
    // What the procedure committed is committed: the run can only say so.
    assert_eq!(victims(&db).await.as_deref(), Some("8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_early_cancels_the_query_and_still_checks_the_transaction() {
    let db = Database::new(Engine::Sqlserver).await;
    create_victim(&db).await;
    db.exec(
        "CREATE PROCEDURE dbo.reads_then_commits AS
         BEGIN
           SELECT id FROM victim;
           COMMIT;
         END",
    )
    .await;
    let mut session = SqlReader.open(&connection(&db), Duration::from_secs(10)).await.unwrap();
    let select = RenderedQuery {
        sql: "SELECT id FROM victim ORDER BY id".into(),
        binds: vec![],
    };
    let first = session.stream(&select).next().await.unwrap().unwrap();
    assert_eq!(first.get("id"), Some(&Value::Int(1)));
    session.finish().await.unwrap();
    // The session is clean: the next query reads from the start.
    let rows: Vec<_> = session.stream(&select).map(Result::unwrap).collect().await;
    assert_eq!(rows.len(), 10);
    session.finish().await.unwrap();

    let commits = RenderedQuery {
        sql: "EXEC dbo.reads_then_commits".into(),
        binds: vec![],
    };
    session.stream(&commits).next().await.unwrap().unwrap();
    let e = session.finish().await.unwrap_err();
    assert!(e.message.contains("ended Sluice's transaction"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_runs_in_chunks_and_the_api_test_query_reads_the_source() {
    let db = Database::new(Engine::Sqlserver).await;
    db.create_sales(0).await;
    db.exec(
        "INSERT INTO sales (id, user_id, user_name, team, amount, date, updated_at)
         SELECT id, 1 + id % 7, CONCAT('user ', 1 + id % 7), 'team', id, t, t FROM (
           SELECT id, DATEADD(hour, -id, DATEADD(day, DATEDIFF(day, 0, SYSUTCDATETIME()), 0)) AS t
           FROM (SELECT TOP (72) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS id FROM sys.all_objects) n) s",
    )
    .await;
    let store = store(StoreKind::Embedded).await;
    let src = source(&unique("bf"), &db, SALES_QUERY);
    store.put_source(&src).await.unwrap();
    let backfiller = Backfiller::new(
        std::sync::Arc::new(service(store.clone(), secrets_for(&src, &db))),
        Default::default(),
    );
    let today = Utc::now().date_naive();
    let request = BackfillRequest {
        start: Some((today - chrono::Duration::days(3)).to_string()),
        end: Some(today.to_string()),
        chunk: Some("1d".into()),
    };
    let job = backfiller.create(&src.id, &request).await.unwrap();
    assert_eq!(job.chunks.len(), 3);
    let job = backfiller
        .work(&src.id, &Default::default(), &|_| {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status, JobStatus::Done, "{:?}", job.errors());
    assert_eq!(job.progress().rows_written, 72);
    assert_eq!(store.get_source(&src.id).await.unwrap().unwrap().watermark, None);

    // The management API's test query of an unsaved source with its connection.
    let template = QueryTemplate::compile(&src.query).unwrap();
    assert!(template.uses_upper_limit());
    let admin = sluice_core::SourceAdmin::new(
        store.clone(),
        std::sync::Arc::new(SqlReader),
        std::sync::Arc::new(sluice_local::FileSecrets::new(Default::default())),
        std::sync::Arc::new(sluice_core::testing::MemorySecrets::default()),
        std::sync::Arc::new(sluice_core::testing::MemorySchedules::default()),
        "sluice/",
    );
    let mut unsaved = src.clone();
    unsaved.id = unique("unsaved");
    unsaved.secret_id = admin.owned_secret(&unsaved.id);
    let unsaved_id = unsaved.id.clone();
    let preview = admin
        .test_query(
            &unsaved_id,
            sluice_core::TestQuery {
                source: Some(sluice_core::SourceInput {
                    config: unsaved,
                    connection: Some(connection(&db)),
                    write_key: None,
                }),
                window: None,
            },
        )
        .await
        .unwrap();
    assert!(preview.errors.is_empty(), "{:?}", preview.errors);
    assert_eq!(preview.row_count, 72);
    assert_eq!(
        preview.columns,
        ["reference", "member_id", "member_name", "team_name", "date", "amount"]
    );
}
