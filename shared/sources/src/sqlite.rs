//! SQLite: the file opened read-only. Values take the type they are stored with;
//! a column declared BOOLEAN gives booleans, DATE/DATETIME text stays text and the
//! record mapping reads it as UTC.

use chrono::{DateTime, NaiveDateTime, Utc};
use sluice_core::{Bind, ConnectionSecret, SourceError, SourceErrorKind, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Column, Connection, Row as _, Sqlite, TypeInfo, ValueRef};

use crate::error;
use crate::sql::{Dialect, Session, undecodable};

pub(crate) async fn connect(secret: &ConnectionSecret) -> Result<Session<Lite>, SourceError> {
    if !std::path::Path::new(&secret.database).exists() {
        return Err(SourceError::new(
            SourceErrorKind::Connect,
            format!(
                "the SQLite file {} does not exist; set `database` in the secret to the file's path",
                secret.database
            ),
        ));
    }
    let options = sqlx::ConnectOptions::disable_statement_logging(
        SqliteConnectOptions::new().filename(&secret.database).read_only(true),
    );
    let conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| error::classify_connect(e, secret))?;
    Ok(Session { conn })
}

/// SQLite keeps timestamps as text; binds take the form of its own clock functions
/// (`CURRENT_TIMESTAMP`, `strftime('%Y-%m-%d %H:%M:%f')`: "YYYY-MM-DD HH:MM:SS[.mmm]",
/// UTC), with milliseconds only when there are some, so text comparison orders them
/// like the instants they name. Sub-millisecond parts are dropped: the lookback re-reads.
pub fn sqlite_timestamp(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_nanos() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

pub(crate) struct Lite;

impl Dialect for Lite {
    type Db = Sqlite;
    const NOW: &'static str = "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')";

    fn now(row: &SqliteRow) -> Result<DateTime<Utc>, sqlx::Error> {
        let text: String = row.try_get(0)?;
        NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
            .map(|t| t.and_utc())
            .map_err(|e| sqlx::Error::Decode(format!("SQLite returned the clock as {text:?}: {e}").into()))
    }

    fn bind<'q>(
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
        bind: Bind,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        match bind {
            Bind::Timestamp(t) => query.bind(sqlite_timestamp(t)),
            Bind::UnixSeconds(s) => query.bind(s),
        }
    }

    fn bind_type(bind: Bind) -> <Sqlite as sqlx::Database>::TypeInfo {
        match bind {
            Bind::Timestamp(_) => <String as sqlx::Type<Sqlite>>::type_info(),
            Bind::UnixSeconds(_) => <i64 as sqlx::Type<Sqlite>>::type_info(),
        }
    }

    /// Whether the column is declared BOOLEAN.
    type Column = bool;

    fn column(column: &sqlx::sqlite::SqliteColumn) -> bool {
        column.type_info().name().eq_ignore_ascii_case("BOOLEAN")
    }

    fn value(row: &SqliteRow, i: usize, boolean: &bool) -> Value {
        let raw = match row.try_get_raw(i) {
            Ok(raw) => raw,
            Err(e) => return undecodable("?", e),
        };
        if raw.is_null() {
            return Value::Null;
        }
        let stored = raw.type_info().name().to_string();
        let result = match stored.as_str() {
            "INTEGER" if *boolean => row.try_get::<bool, _>(i).map(Value::Bool),
            "INTEGER" => row.try_get::<i64, _>(i).map(Value::Int),
            "REAL" => row.try_get::<f64, _>(i).map(Value::Float),
            "TEXT" => row.try_get::<String, _>(i).map(Value::Text),
            "BLOB" => row.try_get::<Vec<u8>, _>(i).map(Value::Bytes),
            other => return Value::Unsupported(other.to_string()),
        };
        result.unwrap_or_else(|e| undecodable(&stored, e))
    }

    fn login_check(_session: &mut Session<Self>) -> futures::future::BoxFuture<'_, sluice_core::LoginCheck> {
        Box::pin(futures::future::ready(crate::login_check::sqlite()))
    }
}
