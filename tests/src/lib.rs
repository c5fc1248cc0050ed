//! Shared fixtures of the integration tests: real PostgreSQL, MariaDB and SQLite,
//! and moto's server for DynamoDB, Secrets Manager and EventBridge, all on loopback.
//! Start them with `infra/services.sh`. Every fixture makes uniquely named databases
//! and tables, so tests run in parallel and on a machine earlier runs left dirty.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
// The store ports, so that tests call them on any store.
pub use sluice_core::{BackfillJobs, DeliveryLog, RecordReader, RecordWriter, RunLog, SourceStore};

use sluice_aws::{DynamoStore, TableNames};
use sluice_core::{Engine, Events, SourceConfig, Store, SyncService, SyncSettings, SyncType};
use sluice_local::{EmbeddedStore, FileSecrets, LogEvents};
use sluice_sources::SqlReader;
use sqlx::{Connection, Executor};

pub mod chaos;
pub mod faults;
pub mod gateway;
pub mod receiver;
pub mod servers;
pub mod sqlserver;
pub mod stream;

pub fn pg_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL").unwrap_or_else(|_| "postgres://sluice:sluice@127.0.0.1:5432/postgres".into())
}

pub fn mysql_url() -> String {
    std::env::var("SLUICE_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://sluice:sluice@127.0.0.1:3306/mysql".into())
}

pub fn aws_endpoint() -> String {
    std::env::var("SLUICE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".into())
}

pub fn snowflake_port() -> u16 {
    std::env::var("SLUICE_TEST_SNOWFLAKE_PORT").map_or(8085, |p| p.parse().unwrap())
}

/// Runs one statement on fakesnow (infra/services.sh) in a session of the test's own,
/// which commits: Sluice's own sessions never do.
pub async fn snowflake_exec(database: Option<&str>, sql: &str) -> serde_json::Value {
    let base = format!("http://127.0.0.1:{}", snowflake_port());
    let http = reqwest::Client::new();
    let mut login = http.post(format!("{base}/session/v1/login-request"));
    if let Some(database) = database {
        login = login.query(&[("databaseName", database), ("schemaName", "public")]);
    }
    let login: serde_json::Value = login
        .json(
            &json!({"data": {"LOGIN_NAME": "sluice", "PASSWORD": "sluice", "ACCOUNT_NAME": "SLUICETEST",
                               "SESSION_PARAMETERS": {"AUTOCOMMIT": true}}}),
        )
        .send()
        .await
        .expect("fakesnow on 127.0.0.1 (start it with infra/services.sh)")
        .json()
        .await
        .unwrap();
    let token = login["data"]["token"].as_str().expect("a fakesnow session").to_string();
    let answer: serde_json::Value = http
        .post(format!("{base}/queries/v1/query-request"))
        .header("Authorization", format!("Snowflake Token=\"{token}\""))
        .json(&json!({"sqlText": sql, "asyncExec": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["success"], true, "{sql}: {answer}");
    answer
}

/// The project the BigQuery tests run their jobs in, on bqemulator.
pub const BIGQUERY_PROJECT: &str = "sluice-test";

pub fn bigquery_port() -> u16 {
    std::env::var("SLUICE_TEST_BIGQUERY_PORT").map_or(9050, |p| p.parse().unwrap())
}

fn bigquery_base() -> String {
    format!(
        "http://127.0.0.1:{}/bigquery/v2/projects/{BIGQUERY_PROJECT}",
        bigquery_port()
    )
}

/// Runs one statement on bqemulator (infra/services.sh) with `dataset` as the default.
pub async fn bigquery_exec(dataset: &str, sql: &str) -> serde_json::Value {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/queries", bigquery_base()))
        .json(&json!({"query": sql, "useLegacySql": false,
                      "defaultDataset": {"projectId": BIGQUERY_PROJECT, "datasetId": dataset}}))
        .send()
        .await
        .expect("bqemulator on 127.0.0.1 (start it with infra/services.sh)")
        .json()
        .await
        .unwrap();
    assert!(
        answer["errors"].is_null() && answer["error"].is_null(),
        "{sql}: {answer}"
    );
    answer
}

/// The test CA and server certificates of infra/tls.sh.
pub fn tls_dir() -> String {
    std::env::var("SLUICE_TEST_TLS_DIR").unwrap_or_else(|_| "/var/lib/sluice-tests/tls".into())
}

/// A short random suffix for database and table names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

const SERVICES: &str = "the database server on 127.0.0.1 (start it with infra/services.sh)";

fn no_test_server(engine: Engine) -> ! {
    panic!("the shared scenarios have no {engine} server; its tests are in their own files")
}

/// A fresh database on a real server, and the connection secret that reaches it.
#[derive(Clone)]
pub struct Database {
    pub engine: Engine,
    pub name: String,
    pub secret: serde_json::Value,
    url: String,
}

impl Database {
    pub async fn new(engine: Engine) -> Self {
        let name = unique("sluice_t");
        match engine {
            Engine::Postgres => Self::on(engine, &pg_url(), 5432).await,
            Engine::Mysql => Self::on(engine, &mysql_url(), 3306).await,
            Engine::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.sqlite"));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let secret = json!({"engine": "sqlite", "database": path.display().to_string()});
                Database {
                    engine,
                    name,
                    secret,
                    url,
                }
            }
            Engine::Snowflake => {
                snowflake_exec(None, &format!("CREATE DATABASE {name}")).await;
                snowflake_exec(None, &format!("CREATE SCHEMA {name}.public")).await;
                let secret = json!({"engine": "snowflake", "account": "sluicetest", "host": "127.0.0.1",
                                    "port": snowflake_port(), "tls": "disable", "database": name,
                                    "schema": "public", "username": "sluice", "password": "sluice"});
                Database {
                    engine,
                    url: name.clone(),
                    name,
                    secret,
                }
            }
            Engine::Bigquery => {
                let dataset = json!({"datasetReference": {"projectId": BIGQUERY_PROJECT, "datasetId": name}});
                let created = reqwest::Client::new()
                    .post(format!("{}/datasets", bigquery_base()))
                    .json(&dataset)
                    .send()
                    .await
                    .expect("bqemulator on 127.0.0.1 (start it with infra/services.sh)");
                assert!(created.status().is_success(), "{:?}", created.text().await);
                let secret = json!({"engine": "bigquery", "host": "127.0.0.1", "port": bigquery_port(),
                                    "tls": "disable", "database": BIGQUERY_PROJECT, "schema": name});
                Database {
                    engine,
                    url: name.clone(),
                    name,
                    secret,
                }
            }
            Engine::Sqlserver => {
                sqlserver::create_database(sqlserver::tls_port(), &name).await;
                let secret = sqlserver::secret(&name, sqlserver::tls_port(), "require");
                Database {
                    engine,
                    url: name.clone(),
                    name,
                    secret,
                }
            }
            other => no_test_server(other),
        }
    }

    /// A fresh PostgreSQL or MariaDB database on the server of `admin_url` at `port`.
    pub async fn on(engine: Engine, admin_url: &str, port: u16) -> Self {
        let name = unique("sluice_t");
        let admin = Database {
            engine,
            name: String::new(),
            secret: json!(null),
            url: admin_url.to_string(),
        };
        admin.exec(&format!("CREATE DATABASE {name}")).await;
        let url = admin_url.rsplit_once('/').unwrap().0.to_string() + "/" + &name;
        let secret = json!({"engine": engine.to_string(), "host": "127.0.0.1", "port": port, "database": name,
                            "username": "sluice", "password": "sluice", "tls": "disable"});
        Database {
            engine,
            name,
            secret,
            url,
        }
    }

    /// Runs statements with a read-write connection of the test's own.
    pub async fn exec(&self, sql: &str) {
        match self.engine {
            Engine::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.expect(SERVICES);
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Engine::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.expect(SERVICES);
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Engine::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
            Engine::Snowflake => {
                for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
                    snowflake_exec(Some(&self.url), statement).await;
                }
            }
            Engine::Bigquery => {
                for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
                    bigquery_exec(&self.url, statement).await;
                }
            }
            Engine::Sqlserver => sqlserver::exec(sqlserver::tls_port(), &self.name, sql).await,
            other => no_test_server(other),
        }
    }

    pub fn pg_url(&self) -> &str {
        &self.url
    }

    /// The `sales` table of the scenarios, with `rows` rows dated in the past.
    pub async fn create_sales(&self, rows: usize) {
        let ddl = match self.engine {
            Engine::Postgres => {
                "CREATE TABLE sales (id bigint PRIMARY KEY, user_id int NOT NULL, user_name text,
                 team text, amount numeric(12,2) NOT NULL, date timestamptz, updated_at timestamptz NOT NULL);
                 CREATE INDEX ON sales (updated_at);"
            }
            Engine::Mysql => {
                "CREATE TABLE sales (id bigint PRIMARY KEY, user_id int NOT NULL, user_name varchar(100),
                 team varchar(50), amount decimal(12,2) NOT NULL, date datetime(6), updated_at datetime(6) NOT NULL,
                 INDEX (updated_at));"
            }
            Engine::Sqlite => {
                "CREATE TABLE sales (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, user_name TEXT,
                 team TEXT, amount REAL NOT NULL, date TEXT, updated_at TEXT NOT NULL);"
            }
            Engine::Snowflake => {
                "CREATE TABLE sales (id bigint PRIMARY KEY, user_id int NOT NULL, user_name varchar(100),
                 team varchar(50), amount number(12,2) NOT NULL, date timestamp_ntz, updated_at timestamp_ntz NOT NULL)"
            }
            Engine::Sqlserver => {
                "CREATE TABLE sales (id bigint PRIMARY KEY, user_id int NOT NULL, user_name nvarchar(100),
                 team nvarchar(50), amount decimal(12,2) NOT NULL, date datetime2(6), updated_at datetime2(6) NOT NULL);
                 CREATE INDEX sales_updated_at ON sales (updated_at);"
            }
            // bqemulator ignores a default dataset: names are qualified.
            Engine::Bigquery => &format!(
                "CREATE TABLE {}.sales (id INT64, user_id INT64, user_name STRING, team STRING, amount NUMERIC,
                 date TIMESTAMP, updated_at TIMESTAMP)",
                self.name
            ),
            other => no_test_server(other),
        };
        self.exec(ddl).await;
        self.insert_sales(1, rows, "-2 days").await;
    }

    /// Inserts sales `first..first+count` with `updated_at` = now + `offset` ("-2 days", "0 seconds").
    pub async fn insert_sales(&self, first: usize, count: usize, offset: &str) {
        if self.engine == Engine::Bigquery {
            let (amount, unit) = offset.split_once(' ').unwrap();
            let unit = unit.trim_end_matches('s').to_uppercase();
            let now = format!("TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {amount} {unit})");
            return self
                .exec(&format!(
                    "INSERT INTO {}.sales (id, user_id, user_name, team, amount, date, updated_at)
                     SELECT id, 1 + MOD(id, 50), CONCAT('user ', CAST(1 + MOD(id, 50) AS STRING)),
                            CONCAT('team ', CAST(MOD(id, 5) AS STRING)), id * NUMERIC '1.25', {now}, {now}
                     FROM UNNEST(GENERATE_ARRAY({first}, {})) AS id",
                    self.name,
                    first + count - 1
                ))
                .await;
        }
        let (series, now) = match self.engine {
            Engine::Postgres => (
                format!("SELECT g AS id FROM generate_series({first}, {}) g", first + count - 1),
                format!("(now() + interval '{offset}')"),
            ),
            Engine::Mysql => (
                format!(
                    "WITH RECURSIVE g(id) AS (SELECT {first} UNION ALL SELECT id + 1 FROM g WHERE id < {}) SELECT id FROM g",
                    first + count - 1
                ),
                format!(
                    "(UTC_TIMESTAMP(6) + INTERVAL {})",
                    offset
                        .replace("days", "DAY")
                        .replace("seconds", "SECOND")
                        .replace('\'', "")
                ),
            ),
            Engine::Sqlite => (
                format!(
                    "WITH RECURSIVE g(id) AS (SELECT {first} UNION ALL SELECT id + 1 FROM g WHERE id < {}) SELECT id FROM g",
                    first + count - 1
                ),
                format!("strftime('%Y-%m-%d %H:%M:%f', 'now', '{offset}')"),
            ),
            Engine::Snowflake => {
                let (amount, unit) = offset.split_once(' ').unwrap();
                let ids: Vec<String> = (first..first + count).map(|id| format!("({id})")).collect();
                (
                    format!("SELECT column1 AS id FROM VALUES {}", ids.join(",")),
                    format!(
                        "DATEADD({}, {amount}, CURRENT_TIMESTAMP())::timestamp_ntz",
                        unit.trim_end_matches('s')
                    ),
                )
            }
            Engine::Sqlserver => {
                let (amount, unit) = offset.split_once(' ').unwrap();
                (
                    format!(
                        "SELECT TOP ({count}) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) + {} AS id
                         FROM sys.all_objects a CROSS JOIN sys.all_objects b",
                        first - 1
                    ),
                    format!("DATEADD({}, {amount}, SYSUTCDATETIME())", unit.trim_end_matches('s')),
                )
            }
            other => no_test_server(other),
        };
        let sql = format!(
            "INSERT INTO sales (id, user_id, user_name, team, amount, date, updated_at)
             SELECT id, 1 + id % 50, CONCAT('user ', 1 + id % 50), CONCAT('team ', id % 5), id * 1.25, {now}, {now} FROM ({series}) s",
        );
        let sql = match self.engine {
            Engine::Sqlite => sql
                .replace("CONCAT('user ', 1 + id % 50)", "'user ' || (1 + id % 50)")
                .replace("CONCAT('team ', id % 5)", "'team ' || (id % 5)"),
            Engine::Mysql => format!("SET SESSION max_recursive_iterations = 100000000; {sql}"),
            Engine::Postgres | Engine::Snowflake | Engine::Sqlserver => sql,
            other => no_test_server(other),
        };
        self.exec(&sql).await;
    }

    /// PostgreSQL only: `rows` sales spread evenly over the `days` days before today
    /// (UTC midnight).
    pub async fn spread_sales(&self, rows: usize, days: u32) {
        self.create_sales(0).await;
        self.exec(&format!(
            "INSERT INTO sales (id, user_id, user_name, team, amount, date, updated_at)
             SELECT g, 1 + g % 50, 'user ' || (1 + g % 50), 'team ' || (g % 5), g * 1.25, t, t
             FROM generate_series(1, {rows}) g,
                  LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                  - interval '{days} days' + (g - 1) * (interval '{days} days' / {rows}) AS t) x"
        ))
        .await;
    }

    /// The SQL expression of "now" on this engine, as the scenarios write it.
    pub fn now_sql(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "now()",
            Engine::Mysql => "UTC_TIMESTAMP(6)",
            Engine::Sqlite => "strftime('%Y-%m-%d %H:%M:%f', 'now')",
            Engine::Snowflake => "CURRENT_TIMESTAMP()::timestamp_ntz",
            Engine::Bigquery => "CURRENT_TIMESTAMP()",
            Engine::Sqlserver => "SYSUTCDATETIME()",
            other => no_test_server(other),
        }
    }
}

/// The registration query of the scenarios.
pub const SALES_QUERY: &str = "SELECT id AS reference, user_id AS member_id, user_name AS member_name,
       team AS team_name, date, amount
FROM sales
WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}";

/// A registration source over `db` with `query`.
pub fn source(id: &str, db: &Database, query: &str) -> SourceConfig {
    SourceConfig {
        id: id.to_string(),
        name: format!("test source {id}"),
        description: None,
        engine: db.engine,
        secret_id: format!("{id}-secret"),
        query: query.to_string(),
        sync_type: SyncType::Registration,
        frequency_minutes: 5,
        start_at: None,
        enabled: true,
        member_id_source: None,
        lookback_seconds: 300,
        max_window_seconds: None,
        max_rows_per_run: None,
        initial_watermark: None,
        query_timeout_seconds: 60,
        destination: None,
        require_read_only_login: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Dynamo,
}

pub async fn sdk() -> aws_config::SdkConfig {
    // SAFETY: every test sets the same values; the SDK reads them while loading.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT_URL", aws_endpoint());
    }
    // The functions' own configuration, so the tests run what production runs.
    sluice_lambda::sdk_config().await
}

/// The API functions' config as template.yaml gives it, over new tables and a new
/// schedule group on moto, and the tables' store.
pub async fn api_config(dead_letter_arn: Option<String>) -> (sluice_lambda::ApiConfig, DynamoStore) {
    let store = dynamo_store().await;
    let group = unique("api");
    aws_sdk_scheduler::Client::new(&sdk().await)
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .unwrap();
    let config = sluice_lambda::ApiConfig {
        function: sluice_lambda::FunctionConfig {
            tables: store.tables().clone(),
            event_bus: "default".into(),
            lease: std::time::Duration::from_secs(960),
            backfill_retry: std::time::Duration::from_secs(30),
            schedule_group: Some(group.clone()),
            metrics_namespace: "Sluice/test".into(),
            // The tests' receivers listen on loopback.
            destinations: sluice_destinations::AddressPolicy { allow_loopback: true },
        },
        schedules: sluice_aws::ScheduleTarget {
            group,
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:sluice-sync".into(),
            role_arn: "arn:aws:iam::123456789012:role/sluice-scheduler".into(),
            dead_letter_arn,
        },
        secrets_prefix: format!("{}/", unique("api")),
        test_query: sluice_core::PreviewLimits {
            time: Some(std::time::Duration::from_secs(25)),
            rows: 100_000,
        },
    };
    (config, store)
}

/// DynamoDB tables on moto with a unique prefix.
pub async fn dynamo_store() -> DynamoStore {
    let sdk = sdk().await;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        TableNames::with_prefix(&unique("t")),
    );
    store
        .create_tables()
        .await
        .expect("moto on 127.0.0.1:5055 (start it with infra/services.sh)");
    store
}

pub async fn store(kind: StoreKind) -> Arc<dyn Store> {
    match kind {
        StoreKind::Embedded => {
            let path = std::env::temp_dir().join(format!("{}.db", unique("sluice_store")));
            Arc::new(EmbeddedStore::open(&path).await.unwrap())
        }
        StoreKind::Dynamo => Arc::new(dynamo_store().await),
    }
}

/// A sync service over `store` whose secrets are `secrets` (id → connection JSON).
pub fn service(store: Arc<dyn Store>, secrets: BTreeMap<String, serde_json::Value>) -> SyncService {
    service_with(store, secrets, Arc::new(LogEvents), SyncSettings::default())
}

pub fn service_with(
    store: Arc<dyn Store>,
    secrets: BTreeMap<String, serde_json::Value>,
    events: Arc<dyn Events>,
    settings: SyncSettings,
) -> SyncService {
    SyncService::new(
        store,
        Arc::new(SqlReader),
        Arc::new(FileSecrets::new(secrets)),
        events,
        settings,
    )
}

/// Stores `connection` as a new Secrets Manager secret; returns its id.
pub async fn secrets_manager_secret(connection: &serde_json::Value) -> String {
    let id = unique("sluice/db");
    aws_sdk_secretsmanager::Client::new(&sdk().await)
        .create_secret()
        .name(&id)
        .secret_string(connection.to_string())
        .send()
        .await
        .unwrap();
    id
}

/// A new event bus whose events of `detail_type` from Sluice land in a new SQS queue,
/// so tests read what EventBridge delivered. Returns the queue's client and URL.
pub async fn event_queue(sdk: &aws_config::SdkConfig, bus: &str, detail_type: &str) -> (aws_sdk_sqs::Client, String) {
    let events = aws_sdk_eventbridge::Client::new(sdk);
    events.create_event_bus().name(bus).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("q"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn_attribute = aws_sdk_sqs::types::QueueAttributeName::QueueArn;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(arn_attribute.clone())
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&arn_attribute]
        .clone();
    let pattern = serde_json::json!({ "source": ["sluice"], "detail-type": [detail_type] });
    events
        .put_rule()
        .name("to-queue")
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("q")
        .arn(&queue_arn)
        .build()
        .unwrap();
    events
        .put_targets()
        .rule("to-queue")
        .event_bus_name(bus)
        .targets(target)
        .send()
        .await
        .unwrap();
    (sqs, queue_url)
}

/// The secrets map for one source.
pub fn secrets_for(source: &SourceConfig, db: &Database) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([(source.secret_id.clone(), db.secret.clone())])
}

/// A transaction left open on its own connection: a row whose commit comes late.
pub enum OpenTransaction {
    Postgres(sqlx::PgConnection),
    Mysql(sqlx::MySqlConnection),
    Sqlserver(Box<sqlserver::Client>),
}

impl Database {
    /// Begins a transaction that inserts sale `id` stamped with the current time, and
    /// leaves it uncommitted.
    pub async fn begin_late_insert(&self, id: usize) -> OpenTransaction {
        self.begin_late(&self.late_insert(id)).await.expect(SERVICES)
    }

    /// The statement of `begin_late_insert`.
    pub fn late_insert(&self, id: usize) -> String {
        format!(
            "INSERT INTO sales (id, user_id, user_name, team, amount, date, updated_at)
             VALUES ({id}, 7, 'late user', 'team late', 9.99, {now}, {now})",
            now = self.now_sql()
        )
    }

    /// A statement that changes sale `id`'s amount, stamped with the current time.
    pub fn late_update(&self, id: usize) -> String {
        format!(
            "UPDATE sales SET amount = amount + 1, updated_at = {} WHERE id = {id}",
            self.now_sql()
        )
    }

    /// Begins a transaction that runs `statement`, and leaves it uncommitted. An error
    /// when the server cannot be reached (the fault scenarios' writers go on).
    pub async fn begin_late(&self, statement: &str) -> Result<OpenTransaction, String> {
        let statement = sqlx::AssertSqlSafe(statement.to_string());
        let text = |e: sqlx::Error| e.to_string();
        Ok(match self.engine {
            Engine::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.map_err(text)?;
                c.execute("BEGIN").await.map_err(text)?;
                c.execute(statement).await.map_err(text)?;
                OpenTransaction::Postgres(c)
            }
            Engine::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.map_err(text)?;
                c.execute("START TRANSACTION").await.map_err(text)?;
                c.execute(statement).await.map_err(text)?;
                OpenTransaction::Mysql(c)
            }
            Engine::Sqlserver => {
                let mut c = sqlserver::client(sqlserver::tls_port(), &self.name).await;
                c.simple_query(format!("BEGIN TRANSACTION; {}", statement.0))
                    .await
                    .unwrap()
                    .into_results()
                    .await
                    .unwrap();
                OpenTransaction::Sqlserver(Box::new(c))
            }
            Engine::Sqlite => panic!("the late-commit scenario runs on server databases"),
            other => no_test_server(other),
        })
    }
}

impl OpenTransaction {
    pub async fn commit(self) {
        self.try_commit().await.unwrap();
    }

    /// Commits; an error when the server went away meanwhile.
    pub async fn try_commit(self) -> Result<(), String> {
        match self {
            OpenTransaction::Postgres(mut c) => c.execute("COMMIT").await.map(drop).map_err(|e| e.to_string()),
            OpenTransaction::Mysql(mut c) => c.execute("COMMIT").await.map(drop).map_err(|e| e.to_string()),
            OpenTransaction::Sqlserver(mut c) => {
                drop(c.simple_query("COMMIT").await.unwrap().into_results().await.unwrap());
                Ok(())
            }
        }
    }
}

/// The `sluice` binary, built once per test process (with the workspace's features, as
/// the tests are, so nothing is compiled twice; infra/test.sh has built it already).
pub fn sluice_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "--workspace", "--bins"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the sluice binary failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("debug/sluice")
        })
        .clone()
}

/// A local config file (in a new directory) with one registration source `source_id`
/// over `db`, and a new store of `kind` (DynamoDB tables on moto with a unique prefix).
pub fn local_config(db: &Database, kind: StoreKind, source_id: &str, query: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let store_yaml = match kind {
        StoreKind::Embedded => format!("kind: embedded\n  path: {}", dir.join("store.db").display()),
        StoreKind::Dynamo => format!(
            "kind: dynamodb\n  table_prefix: {}\n  endpoint_url: {}\n  create_tables: true",
            unique("k"),
            aws_endpoint()
        ),
    };
    let config = format!(
        "store:\n  {store_yaml}\nsecrets:\n  db: {secret}\nsources:\n  - id: {source_id}\n    name: test source\n    engine: {engine}\n    secret_id: db\n    sync_type: registration\n    query: {query}\n",
        secret = db.secret,
        engine = serde_json::to_value(db.engine).unwrap().as_str().unwrap(),
        query = serde_json::to_string(query).unwrap(),
    );
    let path = dir.join("sluice.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The store a local config names, as the CLI opens it.
pub async fn open_local_store(config: &std::path::Path) -> Arc<dyn Store> {
    match sluice_local::LocalConfig::load(config).unwrap().store {
        sluice_local::StoreConfig::Embedded { path } => Arc::new(EmbeddedStore::open(&path).await.unwrap()),
        sluice_local::StoreConfig::Dynamodb { table_prefix, .. } => {
            let store = DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&sdk().await),
                TableNames::with_prefix(&table_prefix),
            );
            store.create_tables().await.unwrap();
            Arc::new(store)
        }
    }
}

/// `sluice <args> --config <config>` with moto's credentials and a lease of
/// `lease_seconds`, its output piped.
pub fn sluice_cmd(args: &[&str], config: &std::path::Path, lease_seconds: u32) -> std::process::Command {
    let mut cmd = std::process::Command::new(sluice_bin());
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("SLUICE_LEASE_SECONDS", lease_seconds.to_string())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// A Lambda event fixture from `tests/fixtures/`.
pub fn read_fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An API Gateway request from `fixture`, with these path parameters, query
/// parameters (replacing the fixture's) and body.
pub fn api_request(
    fixture: &str,
    params: &[(&str, &str)],
    query: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut event = read_fixture(fixture);
    for (name, value) in params {
        event["pathParameters"][*name] = (*value).into();
    }
    if !query.is_empty() {
        let single: serde_json::Map<_, _> = query.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let multi: serde_json::Map<_, _> = query
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!([v])))
            .collect();
        event["queryStringParameters"] = single.into();
        event["multiValueQueryStringParameters"] = multi.into();
    }
    if let Some(body) = body {
        event["body"] = body.to_string().into();
    }
    event
}

/// A Lambda event with `payload` and 15 minutes left.
pub fn lambda_event<T>(payload: T) -> lambda_runtime::LambdaEvent<T> {
    let mut context = lambda_runtime::Context::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    context.deadline = (now + std::time::Duration::from_secs(900)).as_millis() as u64;
    lambda_runtime::LambdaEvent::new(payload, context)
}
