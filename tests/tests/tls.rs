//! TLS follows the secret: `require` encrypts (checked on the server's side), `disable`
//! does not, and `verify-full` refuses a certificate no trusted CA signed (bad_input.rs).

use std::time::Duration;

use futures::StreamExt;
use sluice_core::{ConnectionSecret, Engine, RenderedQuery, SourceReader, Value};
use sluice_sources::SqlReader;
use sluice_tests::*;

async fn session_is_encrypted(db: &Database, tls: &str) -> bool {
    let mut secret = db.secret.clone();
    secret["tls"] = tls.into();
    let secret: ConnectionSecret = serde_json::from_value(secret).unwrap();
    let mut session = SqlReader.open(&secret, Duration::from_secs(30)).await.unwrap();
    let query = RenderedQuery {
        sql: "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()".into(),
        binds: vec![],
    };
    let rows: Vec<_> = session.stream(&query).collect().await;
    match &rows[0].as_ref().unwrap().values[0] {
        Value::Bool(b) => *b,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn postgres_sessions_follow_the_secrets_tls_setting() {
    let db = Database::new(Engine::Postgres).await;
    assert!(session_is_encrypted(&db, "require").await, "tls: require encrypts");
    assert!(!session_is_encrypted(&db, "disable").await, "tls: disable does not");
}

/// A connection to the TLS instance of `engine` (infra/tls.sh) as `host`, trusting `ca`.
fn tls_secret(engine: Engine, host: &str, ca: &str) -> ConnectionSecret {
    let dir = std::env::var("SLUICE_TEST_TLS_DIR").unwrap_or_else(|_| "/var/lib/sluice-tests/tls".into());
    let ca_cert = std::fs::read_to_string(format!("{dir}/{ca}")).expect("the test CA (start infra/services.sh)");
    let (port, database) = match engine {
        Engine::Postgres => (
            std::env::var("SLUICE_TEST_PG_TLS_PORT").unwrap_or_else(|_| "5433".into()),
            "postgres",
        ),
        _ => (
            std::env::var("SLUICE_TEST_MYSQL_TLS_PORT").unwrap_or_else(|_| "3307".into()),
            "mysql",
        ),
    };
    serde_json::from_value(serde_json::json!({
        "engine": engine, "host": host, "port": port.parse::<u16>().unwrap(), "database": database,
        "username": "sluice", "password": "sluice", "tls": "verify-full", "ca_cert": ca_cert,
    }))
    .unwrap()
}

/// The TLS version the server reports for the session.
async fn tls_version(secret: &ConnectionSecret) -> Result<String, sluice_core::SourceError> {
    let mut session = SqlReader.open(secret, Duration::from_secs(30)).await?;
    let sql = match secret.engine {
        Engine::Postgres => "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        _ => "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'",
    };
    let query = RenderedQuery {
        sql: sql.into(),
        binds: vec![],
    };
    let rows: Vec<_> = session.stream(&query).collect().await;
    match &rows[0].as_ref().unwrap().values[0] {
        Value::Text(v) => Ok(v.clone()),
        other => panic!("unexpected {other:?}"),
    }
}

async fn verify_full(engine: Engine) {
    // The CA that signed the server's certificate, and the name on it: verified.
    let version = tls_version(&tls_secret(engine, "localhost", "ca.pem")).await.unwrap();
    assert!(version.starts_with("TLSv1."), "{version}");

    // Another CA: refused, and the message says what to fix.
    let e = tls_version(&tls_secret(engine, "localhost", "other-ca.pem"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Tls, "{e}");
    assert!(
        e.message.contains("not signed by a CA Sluice trusts") && e.message.contains("ca_cert"),
        "{e}"
    );

    // The right CA but another name than the certificate's: refused, naming the host.
    let e = tls_version(&tls_secret(engine, "127.0.0.1", "ca.pem"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Tls, "{e}");
    assert!(e.message.contains("not valid for the host name 127.0.0.1"), "{e}");
}

#[tokio::test]
async fn postgres_verify_full_checks_the_ca_and_the_host_name() {
    verify_full(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_verify_full_checks_the_ca_and_the_host_name() {
    verify_full(Engine::Mysql).await;
}
