//! TLS follows the secret: `require` encrypts (checked on the server's side), `disable`
//! does not, and `verify-full`, the default, refuses a certificate no trusted CA signed
//! with a message that names both ways out (bad_input.rs).

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
    let ca_cert =
        std::fs::read_to_string(format!("{}/{ca}", tls_dir())).expect("the test CA (start infra/services.sh)");
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

/// The secret of `engine`'s TLS instance as a user who never heard of `tls` writes it.
fn secret_without_tls(engine: Engine) -> serde_json::Value {
    let mut secret = serde_json::to_value(tls_secret(engine, "localhost", "ca.pem")).unwrap();
    let object = secret.as_object_mut().unwrap();
    object.remove("tls");
    object.remove("ca_cert");
    secret
}

async fn verify_full_is_the_default(engine: Engine) {
    // No tls, no ca_cert: the test CA is nobody's root, so the server is refused, and
    // the message names both ways out.
    let secret: ConnectionSecret = serde_json::from_value(secret_without_tls(engine)).unwrap();
    assert_eq!(secret.tls(), sluice_core::TlsMode::VerifyFull);
    let e = tls_version(&secret).await.unwrap_err();
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Tls, "{e}");
    assert!(
        e.message.contains("ca_cert") && e.message.contains("set the secret's tls to require"),
        "{e}"
    );
    assert!(e.message.contains("not verified"), "require's cost is said: {e}");

    // The private CA in ca_cert: verified, with no tls in the secret.
    let mut with_ca = secret_without_tls(engine);
    with_ca["ca_cert"] = std::fs::read_to_string(format!("{}/ca.pem", tls_dir())).unwrap().into();
    let version = tls_version(&serde_json::from_value(with_ca).unwrap()).await.unwrap();
    assert!(version.starts_with("TLSv1."), "{version}");

    // tls: require, asked for by name: encrypted, certificate not checked.
    let mut require = secret_without_tls(engine);
    require["tls"] = "require".into();
    let version = tls_version(&serde_json::from_value(require).unwrap()).await.unwrap();
    assert!(version.starts_with("TLSv1."), "{version}");

    // A ca_cert that is not a certificate is named before any connection.
    let mut cut = secret_without_tls(engine);
    cut["ca_cert"] = "-----BEGIN CERTIFICATE-----\nMIIB".into();
    let e = tls_version(&serde_json::from_value(cut).unwrap()).await.unwrap_err();
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Config, "{e}");
    assert!(e.message.contains("the secret's ca_cert"), "{e}");
}

#[tokio::test]
async fn postgres_verifies_certificates_when_the_secret_has_no_tls() {
    verify_full_is_the_default(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_verifies_certificates_when_the_secret_has_no_tls() {
    verify_full_is_the_default(Engine::Mysql).await;
}

#[tokio::test]
async fn a_server_without_tls_and_a_secret_without_tls_is_refused_with_the_fix() {
    // The plain MariaDB server (3306) offers no TLS; `disable`, said on purpose, reaches it.
    let db = Database::new(Engine::Mysql).await;
    let mut unset = db.secret.clone();
    unset.as_object_mut().unwrap().remove("tls");
    let secret: ConnectionSecret = serde_json::from_value(unset).unwrap();
    let e = match SqlReader.open(&secret, Duration::from_secs(30)).await {
        Ok(_) => panic!("a server without TLS was used with the default verify-full"),
        Err(e) => e,
    };
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Tls, "{e}");
    assert!(
        e.message.contains("offers no TLS")
            && e.message.contains("the default when the secret has no tls")
            && e.message.contains("set tls to disable"),
        "{e}"
    );
    let plain: ConnectionSecret = serde_json::from_value(db.secret.clone()).unwrap();
    assert!(SqlReader.open(&plain, Duration::from_secs(30)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlserver_verifies_certificates_when_the_secret_has_no_tls() {
    use sluice_tests::sqlserver;
    let db = Database::new(Engine::Sqlserver).await;
    let mut unset = db.secret.clone();
    unset.as_object_mut().unwrap().remove("tls");
    let open = |secret: serde_json::Value| async move {
        let secret: ConnectionSecret = serde_json::from_value(secret).unwrap();
        SqlReader.open(&secret, Duration::from_secs(10)).await.map(drop)
    };

    // Babelfish's certificate is the test CA's: refused by default, with both fixes.
    let e = open(unset.clone()).await.unwrap_err();
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Tls, "{e}");
    assert!(
        e.message.contains("ca_cert") && e.message.contains("set the secret's tls to require"),
        "{e}"
    );
    let mut with_ca = unset.clone();
    with_ca["ca_cert"] = std::fs::read_to_string(format!("{}/ca.pem", tls_dir())).unwrap().into();
    open(with_ca.clone()).await.unwrap();
    // The right CA, but a name the certificate does not carry.
    with_ca["host"] = "127.0.0.1".into();
    let e = open(with_ca).await.unwrap_err();
    assert_eq!(e.kind, sluice_core::SourceErrorKind::Tls, "{e}");
    assert!(e.message.contains("not valid for the host name 127.0.0.1"), "{e}");

    // The server without TLS, and a secret that does not say: refused with the fix.
    sqlserver::create_database(sqlserver::plain_port(), &db.name).await;
    let mut plain = sqlserver::secret(&db.name, sqlserver::plain_port(), "disable");
    plain.as_object_mut().unwrap().remove("tls");
    let e = open(plain).await.unwrap_err();
    assert!(
        e.message.contains("does not offer encryption")
            && e.message.contains("the default when the secret has no tls")
            && e.message.contains("set tls to disable"),
        "{e}"
    );
}
