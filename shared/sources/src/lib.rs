//! `SourceReader` adapters: PostgreSQL, MySQL/MariaDB and SQLite through sqlx, SQL
//! Server through tiberius, Oracle through ODPI-C, Snowflake and BigQuery over HTTPS;
//! the SQL engines directly or through an SSH tunnel.
//!
//! Every session is read-only, set to UTC and has a statement timeout; rows are
//! streamed and each value converted to a typed [`Value`] by the engine's module.
//! Each engine (and the SSH tunnel) is a cargo feature; the default builds have all.

#[cfg(feature = "bigquery")]
mod bigquery;
mod error;
mod login_check;
#[cfg(feature = "mysql")]
mod mysql;
mod open_transactions;
#[cfg(feature = "oracle")]
mod oracle;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "snowflake")]
mod snowflake;
#[cfg(feature = "sql")]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlserver")]
mod sqlserver;
#[cfg(feature = "ssh")]
mod ssh;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlserver"))]
mod tls;
#[cfg(feature = "web")]
mod web;

use std::time::Duration;

use async_trait::async_trait;
use sluice_core::{ConnectionSecret, Engine, SourceError, SourceErrorKind, SourceReader, SourceSession};

/// How long connecting may take before the host counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens sessions on every engine this build has, by the secret's engine.
#[derive(Debug, Default, Clone)]
pub struct SqlReader;

fn config_error(message: impl Into<String>) -> SourceError {
    SourceError::new(SourceErrorKind::Config, message)
}

/// The engine's own fields of `secret` as `T` (a struct that denies unknown fields).
#[cfg(feature = "web")]
pub(crate) fn options<T: serde::de::DeserializeOwned>(secret: &ConnectionSecret) -> Result<T, SourceError> {
    // Never serde's own message: it quotes the value, which may be a key.
    sluice_core::secret_json::from_value(serde_json::Value::Object(secret.options.clone()))
        .map_err(|e| config_error(format!("the secret's {} fields: {e}", secret.engine)))
}

/// The engines without fields of their own take only the common ones.
#[cfg(any(feature = "sql", feature = "sqlserver", feature = "oracle"))]
fn check_common(secret: &ConnectionSecret) -> Result<(), SourceError> {
    match secret.options.keys().next() {
        None => Ok(()),
        Some(field) => Err(config_error(format!(
            "the secret has a field `{field}` that {} does not take; its fields are engine, host, port, database, username, password, tls, ca_cert and ssh_tunnel",
            secret.engine
        ))),
    }
}

/// The feature an engine is built with.
fn feature(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::Mysql => "mysql",
        Engine::Sqlite => "sqlite",
        Engine::Sqlserver => "sqlserver",
        Engine::Oracle => "oracle",
        Engine::Snowflake => "snowflake",
        Engine::Bigquery => "bigquery",
    }
}

fn not_built(what: &str) -> SourceError {
    config_error(format!(
        "this build of Sluice has no {what}: it was compiled without the `{what}` feature; use a default build, or add `--features {what}`"
    ))
}

#[async_trait]
impl SourceReader for SqlReader {
    fn check(&self, secret: &ConnectionSecret) -> Result<(), SourceError> {
        match secret.engine {
            #[cfg(feature = "snowflake")]
            Engine::Snowflake => options::<snowflake::Options>(secret).map(drop),
            #[cfg(feature = "bigquery")]
            Engine::Bigquery => options::<bigquery::Options>(secret).map(drop),
            #[cfg(feature = "postgres")]
            Engine::Postgres => check_common(secret),
            #[cfg(feature = "mysql")]
            Engine::Mysql => check_common(secret),
            #[cfg(feature = "sqlite")]
            Engine::Sqlite => check_common(secret),
            #[cfg(feature = "sqlserver")]
            Engine::Sqlserver => check_common(secret),
            #[cfg(feature = "oracle")]
            Engine::Oracle => check_common(secret),
            #[allow(unreachable_patterns)]
            other => Err(not_built(feature(other))),
        }
    }

    async fn open(
        &self,
        secret: &ConnectionSecret,
        query_timeout: Duration,
    ) -> Result<Box<dyn SourceSession>, SourceError> {
        self.check(secret)?;
        match &secret.ssh_tunnel {
            None => connect(secret, query_timeout).await,
            Some(tunnel) => tunneled(secret, tunnel, query_timeout).await,
        }
    }
}

#[cfg(not(feature = "ssh"))]
async fn tunneled(
    _secret: &ConnectionSecret,
    _tunnel: &sluice_core::SshTunnel,
    _query_timeout: Duration,
) -> Result<Box<dyn SourceSession>, SourceError> {
    Err(not_built("ssh"))
}

/// A session through an SSH tunnel to the database, which it keeps open.
#[cfg(feature = "ssh")]
async fn tunneled(
    secret: &ConnectionSecret,
    tunnel: &sluice_core::SshTunnel,
    query_timeout: Duration,
) -> Result<Box<dyn SourceSession>, SourceError> {
    let host = match (secret.engine, secret.host.as_deref()) {
        (Engine::Sqlite, _) => return Err(config_error("ssh_tunnel does not apply to SQLite (a local file)")),
        (Engine::Snowflake | Engine::Bigquery, _) => {
            return Err(config_error(
                "ssh_tunnel does not apply to Snowflake or BigQuery, which Sluice reaches over HTTPS",
            ));
        }
        (_, None) => {
            return Err(config_error(
                "the secret has no host; with ssh_tunnel, host is the database as the bastion reaches it",
            ));
        }
        (_, Some(h)) => h,
    };
    let port = secret.port.or(secret.engine.default_port()).unwrap_or_default();
    if secret.tls() == sluice_core::TlsMode::VerifyFull {
        return Err(config_error(
            "tls verify-full cannot be used through ssh_tunnel: the certificate's name cannot match the tunnel's local end; use require, or leave tls out (the tunnel itself authenticates the bastion by its host key)",
        ));
    }
    let tunnel = ssh::open(tunnel, host, port).await?;
    let mut direct = secret.clone();
    direct.host = Some(tunnel.local.ip().to_string());
    direct.port = Some(tunnel.local.port());
    // The tunnel's mode, kept now that the session no longer knows it is tunnelled.
    direct.tls = Some(secret.tls());
    direct.ssh_tunnel = None;
    let via = format!("through the SSH tunnel to {host}:{port}");
    let session = connect(&direct, query_timeout)
        .await
        .map_err(|e| SourceError::new(e.kind, format!("{} ({via})", e.message)))?;
    Ok(Box::new(ssh::Tunneled::new(session, tunnel)))
}

// A build without any engine (the deliver function's) reaches only the last arm.
#[cfg_attr(
    not(any(feature = "sql", feature = "sqlserver", feature = "oracle", feature = "web")),
    allow(unreachable_code)
)]
async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Box<dyn SourceSession>, SourceError> {
    let _ = query_timeout;
    Ok(match secret.engine {
        #[cfg(feature = "postgres")]
        Engine::Postgres => Box::new(postgres::connect(secret, query_timeout).await?),
        #[cfg(feature = "mysql")]
        Engine::Mysql => Box::new(mysql::connect(secret, query_timeout).await?),
        #[cfg(feature = "sqlite")]
        Engine::Sqlite => Box::new(sqlite::connect(secret).await?),
        #[cfg(feature = "sqlserver")]
        Engine::Sqlserver => Box::new(sqlserver::connect(secret, query_timeout).await?),
        #[cfg(feature = "snowflake")]
        Engine::Snowflake => Box::new(snowflake::connect(secret, query_timeout).await?),
        #[cfg(feature = "bigquery")]
        Engine::Bigquery => Box::new(bigquery::connect(secret, query_timeout).await?),
        #[cfg(feature = "oracle")]
        Engine::Oracle => Box::new(oracle::connect(secret, query_timeout).await?),
        #[allow(unreachable_patterns)]
        other => return Err(not_built(feature(other))),
    })
}

/// An unscaled integer and its scale as exact decimal text: (12345, 2) is "123.45".
#[cfg(any(feature = "snowflake", feature = "sqlserver"))]
pub(crate) fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// A result column's name as the query wrote it: Snowflake and Oracle upper-case
/// unquoted identifiers, so `user_id AS member_id` comes back as `MEMBER_ID`. A name
/// with no lower-case letter is taken as unquoted and lower-cased; a quoted `"userId"`
/// keeps its case.
#[cfg(any(feature = "snowflake", feature = "oracle"))]
pub(crate) fn column_name(name: &str) -> String {
    if name.chars().any(char::is_lowercase) {
        name.to_string()
    } else {
        name.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(any(feature = "snowflake", feature = "oracle"))]
    fn unquoted_upper_case_names_are_lower_cased_and_quoted_names_kept() {
        use super::column_name;
        assert_eq!(column_name("MEMBER_ID"), "member_id");
        assert_eq!(column_name("userId"), "userId");
        assert_eq!(column_name("A1"), "a1");
    }

    #[test]
    #[cfg(any(feature = "snowflake", feature = "sqlserver"))]
    fn decimals_keep_every_digit() {
        use super::decimal_text;
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 4), "-0.0005");
        assert_eq!(decimal_text(0, 0), "0");
        assert_eq!(decimal_text(i128::from(i64::MAX), 0), "9223372036854775807");
    }
}
