//! Bad input of every kind (DESIGN §8): the run fails with a message that names the
//! cause and the fix, the watermark stays, and nothing stored is touched. Bad rows are
//! rejected one by one while the others go through.

use std::sync::Arc;

use serde_json::json;
use sluice_core::{Engine, RunStatus, SourceConfig, Store, Trigger};
use sluice_tests::*;

const ROWS: usize = 200;

struct Fixture {
    db: Database,
    store: Arc<dyn Store>,
    src: SourceConfig,
}

impl Fixture {
    /// A source with one good sync behind it.
    async fn new(engine: Engine, kind: StoreKind) -> Self {
        let db = Database::new(engine).await;
        db.create_sales(ROWS).await;
        let store = store(kind).await;
        let src = source(&unique("bad"), &db, SALES_QUERY);
        store.put_source(&src).await.unwrap();
        let run = service(store.clone(), secrets_for(&src, &db))
            .run(&src.id, Trigger::Manual, None)
            .await
            .unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
        Fixture { db, store, src }
    }

    /// Runs the source with `change` applied to its config and `secret` as its secret,
    /// and checks that it failed with `expected` in the message and left everything as it was.
    async fn fails(
        &self,
        what: &str,
        change: impl FnOnce(&mut SourceConfig),
        secret: serde_json::Value,
        expected: &str,
    ) {
        let before = self.store.get_source(&self.src.id).await.unwrap().unwrap();
        let record_before = self.store.get_record(&self.src.id, "1").await.unwrap();
        let mut config = self.src.clone();
        change(&mut config);
        self.store.put_source(&config).await.unwrap();
        let secrets = [(self.src.secret_id.clone(), secret)].into();
        let run = service(self.store.clone(), secrets)
            .run(&config.id, Trigger::Manual, None)
            .await
            .unwrap();
        let message = run.message.clone().unwrap_or_default();
        assert_eq!(run.status, RunStatus::Failed, "{what}: {message}");
        assert!(
            message.contains(expected),
            "{what}: expected {expected:?} in {message:?}"
        );
        assert!(
            !message.contains("sluice-secret-pw"),
            "{what}: the password leaked: {message}"
        );
        let logged = &self.store.list_runs(&config.id, 1, None).await.unwrap()[0];
        assert_eq!(
            (logged.status, logged.message.as_deref()),
            (RunStatus::Failed, Some(message.as_str())),
            "{what}"
        );
        let after = self.store.get_source(&config.id).await.unwrap().unwrap();
        assert_eq!(after.watermark, before.watermark, "{what}: the watermark moved");
        assert!(after.lease.is_none(), "{what}: the lease was not released");
        assert_eq!(
            self.store.count_records(&config.id).await.unwrap(),
            ROWS as u64,
            "{what}"
        );
        assert_eq!(
            self.store.get_record(&config.id, "1").await.unwrap(),
            record_before,
            "{what}"
        );
        self.store.put_source(&self.src).await.unwrap();
    }
}

fn with_secret(db: &Database, patch: serde_json::Value) -> serde_json::Value {
    let mut secret = db.secret.clone();
    for (k, v) in patch.as_object().unwrap() {
        secret[k] = v.clone();
    }
    secret
}

async fn every_bad_input(kind: StoreKind) {
    let f = Fixture::new(Engine::Postgres, kind).await;
    let ok = f.db.secret.clone();
    let query = |q: &'static str| move |c: &mut SourceConfig| c.query = q.to_string();

    f.fails(
        "template syntax",
        query("SELECT *\nFROM sales\nWHERE updated_at >= {{ last_update_time"),
        ok.clone(),
        "template syntax error on line 3",
    )
    .await;
    f.fails("unknown variable", query("SELECT * FROM sales WHERE updated_at >= {{ last_updated }}"), ok.clone(),
        "unknown template variable `last_updated` on line 1; the known variables are last_update_time, upper_date_limit and last_sync_time").await;
    f.fails(
        "quoted variable",
        query("SELECT *\nFROM sales\nWHERE updated_at >= '{{ last_update_time }}'"),
        ok.clone(),
        "inside a quoted string on line 3",
    )
    .await;
    f.fails(
        "missing column",
        query(
            "SELECT id AS reference, user_id AS member_id, date FROM sales WHERE updated_at >= {{ last_update_time }}",
        ),
        ok.clone(),
        "no `member_name` column, which registration rows require",
    )
    .await;
    f.fails(
        "SQL error",
        query("SELECT * FROM no_such_table WHERE updated_at >= {{ last_update_time }}"),
        ok.clone(),
        "relation \"no_such_table\" does not exist",
    )
    .await;
    f.fails(
        "a write",
        query(
            "DELETE FROM sales WHERE updated_at >= {{ last_update_time }}
                  RETURNING id AS reference, user_id AS member_id, user_name AS member_name, date",
        ),
        ok.clone(),
        "Sluice runs queries read-only",
    )
    .await;
    f.fails(
        "statement timeout",
        |c| {
            c.query = "SELECT pg_sleep(5)::text AS reference, user_id AS member_id, user_name AS member_name, date
                   FROM sales WHERE (SELECT pg_sleep(5)::text) IS NOT NULL AND updated_at >= {{ last_update_time }}"
                .into();
            c.query_timeout_seconds = 1;
        },
        ok.clone(),
        "statement timeout",
    )
    .await;
    f.fails(
        "unknown user",
        |_| {},
        with_secret(
            &f.db,
            json!({"username": "nobody_here", "password": "sluice-secret-pw"}),
        ),
        "refused the login",
    )
    .await;
    f.fails(
        "unreachable host",
        |_| {},
        with_secret(&f.db, json!({"port": 1})),
        "cannot reach postgres at 127.0.0.1:1",
    )
    .await;
    f.fails(
        "TLS verification",
        |_| {},
        with_secret(&f.db, json!({"tls": "verify-full"})),
        "TLS",
    )
    .await;
    f.fails(
        "incomplete ssh tunnel",
        |_| {},
        with_secret(&f.db, json!({"ssh_tunnel": {"host": "bastion"}})),
        "missing field `username`",
    )
    .await;
    f.fails(
        "malformed secret",
        |_| {},
        json!({"engine": "postgres", "hostname": "x"}),
        "is not a valid connection secret",
    )
    .await;
    f.fails(
        "missing secret",
        |c| c.secret_id = "no-such-secret".into(),
        ok.clone(),
        "secret `no-such-secret` does not exist",
    )
    .await;

    // The refused write changed nothing in the source either.
    let db = sqlx::PgPool::connect(f.db.pg_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sales")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(n, ROWS as i64);
}

#[tokio::test]
async fn bad_input_fails_cleanly_with_dynamodb() {
    every_bad_input(StoreKind::Dynamo).await;
}

#[tokio::test]
async fn bad_input_fails_cleanly_with_the_embedded_store() {
    every_bad_input(StoreKind::Embedded).await;
}

#[tokio::test]
async fn mariadb_wrong_password_unknown_database_and_write_are_refused() {
    let f = Fixture::new(Engine::Mysql, StoreKind::Embedded).await;
    f.fails(
        "wrong password",
        |_| {},
        with_secret(&f.db, json!({"password": "sluice-secret-pw"})),
        "refused the login",
    )
    .await;
    // MariaDB's error 1049 (SQLSTATE 42000) was once called a refused session.
    f.fails(
        "unknown database",
        |_| {},
        with_secret(&f.db, json!({"database": "no_such_database"})),
        "refused the login: Unknown database 'no_such_database' (code 1049); check username, password and database",
    )
    .await;
    f.fails(
        "a write",
        |c| c.query = "DELETE FROM sales WHERE updated_at >= {{ last_update_time }}".into(),
        f.db.secret.clone(),
        "Sluice runs queries read-only",
    )
    .await;
}

async fn bad_rows_are_rejected_one_by_one(kind: StoreKind) {
    let f = Fixture::new(Engine::Postgres, kind).await;
    let mut config = f.src.clone();
    config.query = "SELECT id AS reference,
              CASE WHEN id = 3 THEN NULL ELSE user_id END AS member_id,
              user_name AS member_name,
              CASE WHEN id = 4 THEN 'not a date' ELSE to_char(date, 'YYYY-MM-DD HH24:MI:SS') END AS date,
              CASE WHEN id = 5 THEN interval '1 day' END AS gap,
              amount + 1 AS amount
       FROM sales WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}"
        .into();
    config.initial_watermark = None;
    f.store.put_source(&config).await.unwrap();
    // A fresh source id starts from the epoch again.
    config.id = unique("rows");
    f.store.put_source(&config).await.unwrap();
    let secrets = [(config.secret_id.clone(), f.db.secret.clone())].into();
    let run = service(f.store.clone(), secrets)
        .run(&config.id, Trigger::Manual, None)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    assert_eq!(
        (run.rows_read, run.rows_written, run.rows_rejected),
        (ROWS as u64, ROWS as u64 - 3, 3)
    );
    let reasons: Vec<(Option<&str>, &str)> = run
        .rejects
        .iter()
        .map(|r| (r.reference.as_deref(), r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (Some("3"), "member_id is null; it is required"),
            (Some("4"), "date is malformed: a text value that cannot be used as date"),
            (
                Some("5"),
                "column gap has the unsupported type INTERVAL; cast it in the query (e.g. `gap::text`)"
            ),
        ]
    );
    assert_eq!(f.store.count_records(&config.id).await.unwrap(), ROWS as u64 - 3);
    assert!(f.store.get_record(&config.id, "4").await.unwrap().is_none());
    assert!(f.store.get_record(&config.id, "6").await.unwrap().is_some());
    assert!(run.watermark.is_some(), "rejected rows do not hold the watermark back");
}

#[tokio::test]
async fn bad_rows_are_rejected_with_dynamodb() {
    bad_rows_are_rejected_one_by_one(StoreKind::Dynamo).await;
}

#[tokio::test]
async fn bad_rows_are_rejected_with_the_embedded_store() {
    bad_rows_are_rejected_one_by_one(StoreKind::Embedded).await;
}
