//! SQL Server for the tests: Babelfish for PostgreSQL (infra/babelfish.sh), which
//! speaks TDS and T-SQL. One server with TLS (:1433), one without (:1434); each test
//! makes databases of its own through the test's own connection, which commits.

use serde_json::json;
use tiberius::{AuthMethod, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub type Client = tiberius::Client<Compat<TcpStream>>;

/// The sysadmin login infra/babelfish.sh creates.
pub const USER: &str = "sluice";
pub const PASSWORD: &str = "Sluice-Test-1";

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var).map_or(default, |p| p.parse().unwrap())
}

/// The server that offers TLS (a certificate of the test CA, for `localhost`).
pub fn tls_port() -> u16 {
    port("SLUICE_TEST_SQLSERVER_PORT", 1433)
}

/// The server that offers no encryption.
pub fn plain_port() -> u16 {
    port("SLUICE_TEST_SQLSERVER_PLAIN_PORT", 1434)
}

/// The PostgreSQL port of the TLS server's cluster, where a test can hold a lock.
pub fn tls_pg_port() -> u16 {
    port("SLUICE_TEST_SQLSERVER_PG_PORT", 5435)
}

/// A connection secret for `database` on the server at `port`.
pub fn secret(database: &str, port: u16, tls: &str) -> serde_json::Value {
    json!({"engine": "sqlserver", "host": "localhost", "port": port, "database": database,
           "username": USER, "password": PASSWORD, "tls": tls})
}

/// The test's own read-write connection to `database`.
pub async fn client(port: u16, database: &str) -> Client {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(port);
    config.database(database);
    config.authentication(AuthMethod::sql_server(USER, PASSWORD));
    if port == plain_port() {
        config.encryption(EncryptionLevel::NotSupported);
    } else {
        config.encryption(EncryptionLevel::Required);
        config.trust_cert();
    }
    let tcp = TcpStream::connect(config.get_addr())
        .await
        .expect("Babelfish on 127.0.0.1 (start it with infra/services.sh)");
    tcp.set_nodelay(true).unwrap();
    Client::connect(config, tcp.compat_write()).await.unwrap()
}

/// Runs a T-SQL batch in `database`, committing it.
pub async fn exec(port: u16, database: &str, sql: &str) {
    let mut c = client(port, database).await;
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Creates `database` on the server at `port`. Babelfish fails a CREATE DATABASE that
/// runs beside another with "tuple concurrently updated" (SQL Server does not); the
/// tests create databases in parallel, so that one is tried again.
pub async fn create_database(port: u16, database: &str) {
    let sql = format!("CREATE DATABASE {database}");
    for attempt in 1.. {
        let mut c = client(port, "master").await;
        let done = match c.simple_query(&sql).await {
            Ok(stream) => stream.into_results().await.map(drop),
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => return,
            Err(e) if attempt < 20 && e.to_string().contains("tuple concurrently updated") => {
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// The rows of a query in `database`, each cell as text (NULL as `None`).
pub async fn query(port: u16, database: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut c = client(port, database).await;
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_first_result()
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<&str, _>(i)
                        .ok()
                        .flatten()
                        .map(str::to_string)
                        .or_else(|| r.try_get::<i32, _>(i).ok().flatten().map(|n| n.to_string()))
                        .or_else(|| r.try_get::<i64, _>(i).ok().flatten().map(|n| n.to_string()))
                })
                .collect()
        })
        .collect()
}

/// Holds an exclusive lock on `database`'s table through the server's PostgreSQL side
/// (Babelfish keeps `db.dbo.t` as `db_dbo.t` in `babelfish_db`), until the connection
/// returned is dropped or committed.
pub async fn lock_table(database: &str, table: &str) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/babelfish_db?sslmode=disable",
        tls_pg_port()
    );
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    c.execute("BEGIN").await.unwrap();
    c.execute(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {database}_dbo.{table} IN ACCESS EXCLUSIVE MODE"
    )))
    .await
    .unwrap();
    c
}
