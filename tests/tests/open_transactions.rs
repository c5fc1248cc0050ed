//! Long transactions (issue 21, item 9): a transaction held open past the lookback
//! caps the window at its start, so its row, stamped then and committed later, is
//! read once it commits, exactly once. A login that may not see other sessions'
//! transactions reads up to the clock as before, and the run's log, the CLI's
//! summary and the preview say which bound was used and why.
//!
//! MariaDB's transactions are seen server-wide (a session can write to any database),
//! so its scenarios run on the second MariaDB server (the TLS one, :3307, which also
//! takes plain connections), where no other scenario holds a transaction open: on the
//! shared server one would hold back the windows of every test running beside it.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::json;
use sluice_core::{Engine, Run, RunStatus, SourceConfig, Store, SyncService, Trigger};
use sluice_tests::*;

/// The lookback of these sources: the transaction is held well past it.
const LOOKBACK: u32 = 1;

/// The MariaDB server no other scenario holds transactions on.
async fn mariadb() -> Database {
    let port: u16 = std::env::var("SLUICE_TEST_MYSQL_TLS_PORT").map_or(3307, |p| p.parse().unwrap());
    Database::on(
        Engine::Mysql,
        &format!("mysql://sluice:sluice@127.0.0.1:{port}/mysql"),
        port,
    )
    .await
}

/// Three committed sales two days old, a source over them with a one-second
/// lookback, an embedded store and its sync service.
async fn scene(db: &Database, login: Option<(&str, &str)>) -> (SourceConfig, std::sync::Arc<dyn Store>, SyncService) {
    db.create_sales(3).await;
    let store = store(StoreKind::Embedded).await;
    let mut src = source(&unique("xact"), db, SALES_QUERY);
    src.lookback_seconds = LOOKBACK;
    store.put_source(&src).await.unwrap();
    let mut secret = db.secret.clone();
    if let Some((user, password)) = login {
        secret["username"] = json!(user);
        secret["password"] = json!(password);
    }
    let secrets = [(src.secret_id.clone(), secret)].into();
    let svc = service(store.clone(), secrets);
    (src, store, svc)
}

async fn sync(svc: &SyncService, src: &SourceConfig) -> Run {
    let run = svc.run(&src.id, Trigger::Schedule, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    run
}

/// The id of the session holding `late`, and when the server says its transaction
/// began, in UTC (MariaDB: the second InnoDB shows, in the server's system zone).
async fn holder(db: &Database, late: &mut OpenTransaction) -> (i64, DateTime<Utc>) {
    match late {
        OpenTransaction::Postgres(c) => {
            let (pid, started): (i32, DateTime<Utc>) =
                sqlx::query_as("SELECT pid, xact_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
                    .fetch_one(&mut *c)
                    .await
                    .unwrap();
            (pid.into(), started)
        }
        OpenTransaction::Mysql(c) => {
            let (id, started): (i64, NaiveDateTime) = sqlx::query_as(
                "SELECT CAST(trx_mysql_thread_id AS SIGNED), CONVERT_TZ(trx_started, 'SYSTEM', '+00:00')
                 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = CONNECTION_ID()",
            )
            .fetch_one(&mut *c)
            .await
            .unwrap();
            (id, started.and_utc())
        }
        OpenTransaction::Sqlserver(_) => unreachable!("{:?} has no such view", db.engine),
    }
}

/// The late sale's time, as stored once it arrived (its `date`, stamped with its
/// `updated_at`).
async fn stamp(store: &dyn Store, src: &SourceConfig) -> DateTime<Utc> {
    let record = store
        .get_record(&src.id, "1001")
        .await
        .unwrap()
        .expect("the late row arrived");
    record.fields["date"].as_str().unwrap().parse().unwrap()
}

async fn a_transaction_held_past_the_lookback_is_read_once_it_commits(db: Database) {
    let (src, store, svc) = scene(&db, None).await;
    let mut late = db.begin_late_insert(1001).await;
    let (session, began) = holder(&db, &mut late).await;
    // Held past the lookback before and while the sync runs.
    tokio::time::sleep(Duration::from_millis(1_500 + 1_000 * u64::from(LOOKBACK))).await;

    let first = sync(&svc, &src).await;
    let bound = first.window_bound.clone().unwrap();
    let watermark = first.watermark.unwrap();
    let (kind, margin) = match db.engine {
        // now() in a transaction is its start: the bound is that very instant.
        Engine::Postgres => ("pid", chrono::Duration::zero()),
        // InnoDB shows the second it began; a second less covers the statement that
        // began it.
        _ => ("connection", chrono::Duration::seconds(1)),
    };
    assert_eq!(watermark, began - margin, "{bound}");
    assert!(
        bound.starts_with(&format!(
            "capped at the oldest open transaction, started {} by {kind} {session} (user sluice",
            watermark.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )),
        "{bound}"
    );
    assert_eq!((first.rows_read, first.rows_written), (3, 3));

    // Still open: the next run waits at the same bound.
    let second = sync(&svc, &src).await;
    assert_eq!((second.rows_written, second.watermark), (0, Some(watermark)));

    late.commit().await;
    // InnoDB's view of its transactions is a cache refreshed at most every 0.1 s: the
    // second run's read may still show the committed transaction (which only holds
    // the bound back, never loses a row).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = sync(&svc, &src).await;
    assert_eq!(
        third.window_bound.as_deref(),
        Some("database clock: no other transaction open")
    );
    assert_eq!(third.rows_written, 1, "the late row arrives");
    let stamped = stamp(&*store, &src).await;
    assert!(
        stamped >= watermark && stamped < Utc::now() - chrono::Duration::seconds(LOOKBACK.into()),
        "the row is stamped at the transaction's start ({stamped}), which the lookback alone would have passed"
    );
    let fourth = sync(&svc, &src).await;
    assert_eq!(fourth.rows_written, 0, "and only once");
    let written: u64 = [first, second, third, fourth].iter().map(|r| r.rows_written).sum();
    assert_eq!((written, store.count_records(&src.id).await.unwrap()), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_caps_the_window_at_a_transaction_held_open() {
    a_transaction_held_past_the_lookback_is_read_once_it_commits(Database::new(Engine::Postgres).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_caps_the_window_at_a_transaction_held_open() {
    a_transaction_held_past_the_lookback_is_read_once_it_commits(mariadb().await).await;
}

/// A PostgreSQL login without `pg_read_all_stats`: the bound is the clock and every
/// answer says why; once granted, the same login caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_pg_read_all_stats_falls_back_and_says_so() {
    let db = Database::new(Engine::Postgres).await;
    let user = unique("reader");
    db.exec(&format!(
        "CREATE ROLE {user} LOGIN PASSWORD 'Reader-pw-1'; GRANT CONNECT ON DATABASE {db} TO {user};
         GRANT USAGE ON SCHEMA public TO {user}; ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {user};",
        db = db.name
    ))
    .await;
    let (src, _store, svc) = scene(&db, Some((&user, "Reader-pw-1"))).await;
    let mut late = db.begin_late_insert(1001).await;
    let (_, began) = holder(&db, &mut late).await;

    let before = Utc::now();
    let run = sync(&svc, &src).await;
    let bound = run.window_bound.clone().unwrap();
    assert_eq!(
        bound,
        "database clock: the login cannot see other sessions' transactions (GRANT pg_read_all_stats TO the login)"
    );
    assert!(
        run.watermark.unwrap() >= before - chrono::Duration::seconds(5),
        "the clock, as before"
    );
    assert_eq!(run.rows_read, 3);
    says_so_in_the_preview(&svc, &src, &bound).await;

    db.exec(&format!("GRANT pg_read_all_stats TO {user}")).await;
    let preview = svc.preview(&src, None).await.unwrap();
    assert!(
        preview
            .window
            .bound
            .as_deref()
            .unwrap()
            .starts_with("capped at the oldest open transaction"),
        "{preview:?}"
    );
    assert_eq!(preview.window.upper_date_limit, began, "{preview:?}");
    late.commit().await;
}

/// The test query's answer carries the bound and its reason.
async fn says_so_in_the_preview(svc: &SyncService, src: &SourceConfig, bound: &str) {
    let preview = svc.preview(src, None).await.unwrap();
    assert!(preview.errors.is_empty(), "{preview:?}");
    let answer = serde_json::to_value(&preview).unwrap();
    assert_eq!(answer["window"]["bound"], json!(bound), "{answer}");
}

/// A MariaDB login without PROCESS (a new one: it reaches only information_schema,
/// and the test's login cannot grant it more) reads up to the clock and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_without_process_falls_back_and_says_so() {
    let db = mariadb().await;
    let user = unique("reader");
    db.exec(&format!("CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'Reader-pw-1'"))
        .await;
    let store = store(StoreKind::Embedded).await;
    let mut src = source(
        &unique("xact"),
        &db,
        "SELECT TABLE_NAME AS reference, 1 AS member_id, 'm' AS member_name, CREATE_TIME AS date
         FROM information_schema.TABLES
         WHERE CREATE_TIME >= {{ last_update_time }} AND CREATE_TIME < {{ upper_date_limit }} AND TABLE_SCHEMA = 'none'",
    );
    src.lookback_seconds = LOOKBACK;
    store.put_source(&src).await.unwrap();
    let mut secret = db.secret.clone();
    secret["username"] = json!(user);
    secret["password"] = json!("Reader-pw-1");
    secret["database"] = json!("information_schema");
    let svc = service(store, [(src.secret_id.clone(), secret)].into());

    let before = Utc::now();
    let run = sync(&svc, &src).await;
    let bound = run.window_bound.clone().unwrap();
    assert_eq!(
        bound,
        "database clock: the login cannot see InnoDB's open transactions (GRANT PROCESS ON *.* TO the login)"
    );
    assert!(
        run.watermark.unwrap() >= before - chrono::Duration::seconds(5),
        "the clock, as before"
    );
    says_so_in_the_preview(&svc, &src, &bound).await;
}

/// Babelfish has none of SQL Server's transaction views: the bound is the clock and
/// the run says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn babelfish_has_no_transaction_views_and_says_so() {
    let db = Database::new(Engine::Sqlserver).await;
    let (src, _store, svc) = scene(&db, None).await;
    let run = sync(&svc, &src).await;
    assert_eq!(run.rows_read, 3);
    let bound = run.window_bound.unwrap();
    assert!(
        bound.starts_with("database clock: the server has no sys.dm_tran_database_transactions"),
        "{bound}"
    );
}

/// The CLI's summary of a run and its preview name the bound and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_which_bound_it_used() {
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(3).await;
    let mut late = db.begin_late_insert(1001).await;
    let (pid, began) = holder(&db, &mut late).await;
    let capped = format!(
        "window bound: capped at the oldest open transaction, started {} by pid {pid} (user sluice",
        began.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    let config = local_config(&db, StoreKind::Embedded, "sales", SALES_QUERY);
    for args in [["sync", "--source", "sales"], ["preview", "--source", "sales"]] {
        let out = sluice_cmd(&args, &config, 60).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&capped), "{args:?}: {stdout}");
    }
    late.commit().await;
    let out = sluice_cmd(&["sync", "--source", "sales"], &config, 60)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("read 1, written 1")
            && stdout.contains("window bound: database clock: no other transaction open"),
        "{stdout}"
    );
}
