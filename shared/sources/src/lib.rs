//! `SourceReader` adapters: PostgreSQL, MySQL/MariaDB and SQLite through sqlx, SQL
//! Server through tiberius, Oracle through ODPI-C, Snowflake and BigQuery over HTTPS;
//! the SQL engines directly or through an SSH tunnel.
//!
//! Every session is read-only, set to UTC and has a statement timeout; rows are
//! streamed and each value converted to a typed [`Value`] by the engine's module.

mod bigquery;
mod error;
mod mysql;
mod oracle;
mod postgres;
mod snowflake;
mod sqlite;
mod sqlserver;
mod ssh;
mod web;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use sluice_core::{
    Bind, ConnectionSecret, Engine, RenderedQuery, Row, SourceError, SourceReader, SourceSession, Value,
};
use sqlx::{Column, Database, Executor, IntoArguments};

/// How long connecting may take before the host counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens sessions on every engine, by the secret's engine.
#[derive(Debug, Default, Clone)]
pub struct SqlReader;

#[async_trait]
impl SourceReader for SqlReader {
    async fn open(
        &self,
        secret: &ConnectionSecret,
        query_timeout: Duration,
    ) -> Result<Box<dyn SourceSession>, SourceError> {
        let Some(tunnel) = &secret.ssh_tunnel else {
            return connect(secret, query_timeout).await;
        };
        let config_error = |m: &str| SourceError::new(sluice_core::SourceErrorKind::Config, m);
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
        if secret.tls == sluice_core::TlsMode::VerifyFull {
            return Err(config_error(
                "tls verify-full cannot be used through ssh_tunnel: the certificate's name cannot match the tunnel's local end; use require (the tunnel itself authenticates the bastion by its host key)",
            ));
        }
        let tunnel = ssh::open(tunnel, host, port).await?;
        let mut direct = secret.clone();
        direct.host = Some(tunnel.local.ip().to_string());
        direct.port = Some(tunnel.local.port());
        direct.ssh_tunnel = None;
        let via = format!("through the SSH tunnel to {host}:{port}");
        let session = connect(&direct, query_timeout)
            .await
            .map_err(|e| SourceError::new(e.kind, format!("{} ({via})", e.message)))?;
        Ok(Box::new(Tunneled {
            session,
            _tunnel: tunnel,
        }))
    }
}

async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Box<dyn SourceSession>, SourceError> {
    Ok(match secret.engine {
        Engine::Postgres => Box::new(postgres::connect(secret, query_timeout).await?),
        Engine::Mysql => Box::new(mysql::connect(secret, query_timeout).await?),
        Engine::Sqlite => Box::new(sqlite::connect(secret).await?),
        Engine::Sqlserver => Box::new(sqlserver::connect(secret, query_timeout).await?),
        Engine::Snowflake => Box::new(snowflake::connect(secret, query_timeout).await?),
        Engine::Bigquery => Box::new(bigquery::connect(secret, query_timeout).await?),
        Engine::Oracle => Box::new(oracle::connect(secret, query_timeout).await?),
    })
}

/// A session whose connection runs through an SSH tunnel, which it keeps open.
struct Tunneled {
    session: Box<dyn SourceSession>,
    _tunnel: ssh::Tunnel,
}

#[async_trait]
impl SourceSession for Tunneled {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        self.session.now().await
    }

    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        self.session.columns(query).await
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        self.session.stream(query)
    }
}

/// How an engine binds window values, reads its clock and converts result values.
trait Dialect: Send + 'static {
    type Db: Database;
    /// A one-row, one-column query of the database's clock, in UTC.
    const NOW: &'static str;
    fn now(row: &<Self::Db as Database>::Row) -> Result<DateTime<Utc>, sqlx::Error>;
    fn bind<'q>(
        query: sqlx::query::Query<'q, Self::Db, <Self::Db as Database>::Arguments>,
        bind: Bind,
    ) -> sqlx::query::Query<'q, Self::Db, <Self::Db as Database>::Arguments>;
    /// The type [`Dialect::bind`] sends `bind` as. Describing a query declares them, so
    /// the statement the driver caches expects what the run binds (left to infer,
    /// PostgreSQL would take `extract(epoch ...) >= $3` as numeric).
    fn bind_type(bind: Bind) -> <Self::Db as Database>::TypeInfo;
    /// What a column's values need to be decoded, worked out once per result set.
    type Column: Send + 'static;
    fn column(column: &<Self::Db as Database>::Column) -> Self::Column;
    fn value(row: &<Self::Db as Database>::Row, index: usize, column: &Self::Column) -> Value;
}

/// One read-only connection of the engine `D`.
struct Session<D: Dialect> {
    conn: <D::Db as Database>::Connection,
}

#[async_trait]
impl<D: Dialect> SourceSession for Session<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
{
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        let row = sqlx::query(D::NOW)
            .fetch_one(&mut self.conn)
            .await
            .map_err(error::classify_query)?;
        D::now(&row).map_err(error::classify_query)
    }

    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        let types: Vec<_> = query.binds.iter().map(|b| D::bind_type(*b)).collect();
        describe_columns(&mut self.conn, &query.sql, &types).await
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        stream_rows::<D, _>(&mut self.conn, query)
    }
}

/// Streams `query`'s rows from `conn`, converting each with the dialect `D`.
fn stream_rows<'a, D, C>(conn: &'a mut C, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>>
where
    D: Dialect,
    for<'c> &'c mut C: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    C: Send,
{
    let mut q = sqlx::query(sqlx::AssertSqlSafe(query.sql.as_str()));
    for bind in &query.binds {
        q = D::bind(q, *bind);
    }
    let mut plan: Option<(Arc<[String]>, Vec<D::Column>)> = None;
    q.fetch(conn)
        .map(move |row| {
            let row = row.map_err(error::classify_query)?;
            let (names, columns) = plan.get_or_insert_with(|| {
                let columns = sqlx::Row::columns(&row);
                (
                    columns.iter().map(|c| c.name().to_string()).collect(),
                    columns.iter().map(D::column).collect(),
                )
            });
            let values = columns.iter().enumerate().map(|(i, c)| D::value(&row, i, c)).collect();
            Ok(Row {
                columns: names.clone(),
                values,
            })
        })
        .boxed()
}

/// The columns `sql` returns, from preparing it (the driver caches the statement,
/// so the query that follows reuses it).
async fn describe_columns<DB, C>(conn: &mut C, sql: &str, types: &[DB::TypeInfo]) -> Result<Vec<String>, SourceError>
where
    DB: Database,
    for<'c> &'c mut C: Executor<'c, Database = DB>,
{
    let statement = conn
        .prepare_with(
            sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(sql.to_string())),
            types,
        )
        .await
        .map_err(error::classify_query)?;
    Ok(sqlx::Statement::columns(&statement)
        .iter()
        .map(|c| c.name().to_string())
        .collect())
}

/// A value the driver could not decode: the row is rejected with the type's name.
fn undecodable(type_name: &str, e: impl std::fmt::Display) -> Value {
    Value::Unsupported(format!("{type_name} ({e})"))
}

/// An unscaled integer and its scale as exact decimal text: (12345, 2) is "123.45".
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
pub(crate) fn column_name(name: &str) -> String {
    if name.chars().any(char::is_lowercase) {
        name.to_string()
    } else {
        name.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::{column_name, decimal_text};

    #[test]
    fn unquoted_upper_case_names_are_lower_cased_and_quoted_names_kept() {
        assert_eq!(column_name("MEMBER_ID"), "member_id");
        assert_eq!(column_name("userId"), "userId");
        assert_eq!(column_name("A1"), "a1");
    }

    #[test]
    fn decimals_keep_every_digit() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 4), "-0.0005");
        assert_eq!(decimal_text(0, 0), "0");
        assert_eq!(decimal_text(i128::from(i64::MAX), 0), "9223372036854775807");
    }
}
