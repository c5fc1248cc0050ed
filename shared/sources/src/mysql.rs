//! MySQL and MariaDB: a read-only, UTC session with a statement timeout.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sluice_core::{Bind, ConnectionSecret, SourceError, TlsMode, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow, MySqlSslMode, MySqlValueRef};
use sqlx::{Connection, Decode, MySql, Row as _, TypeInfo, ValueRef};

use crate::CONNECT_TIMEOUT;
use crate::error;
use crate::sql::{Dialect, Session, undecodable};

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Session<My>, SourceError> {
    let mut options = MySqlConnectOptions::new()
        .host(secret.host.as_deref().unwrap_or("localhost"))
        .port(secret.port.unwrap_or(3306))
        .database(&secret.database)
        .timezone(Some("+00:00".to_string()))
        .ssl_mode(match secret.tls() {
            TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
            TlsMode::Require => MySqlSslMode::Required,
            TlsMode::Disable => MySqlSslMode::Disabled,
        });
    // Long streaming queries are the normal case here, not slow statements to warn about.
    options = sqlx::ConnectOptions::disable_statement_logging(options);
    if let Some(user) = &secret.username {
        options = options.username(user);
    }
    if let Some(password) = &secret.password {
        options = options.password(password);
    }
    if secret.tls() == TlsMode::VerifyFull {
        options = options.ssl_ca_from_pem(crate::tls::extra_roots(secret)?);
    }
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect_with(&options))
        .await
        .map_err(|_| error::timed_out(secret))?
        .map_err(|e| error::classify_connect(e, secret))?;
    sqlx::query("SET SESSION TRANSACTION READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(|e| error::classify_connect(e, secret))?;
    // MariaDB names the statement timeout max_statement_time (seconds), MySQL
    // max_execution_time (milliseconds, SELECT only).
    let mariadb = format!("SET SESSION max_statement_time = {}", query_timeout.as_secs_f64());
    if sqlx::query(sqlx::AssertSqlSafe(mariadb))
        .execute(&mut conn)
        .await
        .is_err()
    {
        let mysql = format!("SET SESSION max_execution_time = {}", query_timeout.as_millis());
        sqlx::query(sqlx::AssertSqlSafe(mysql))
            .execute(&mut conn)
            .await
            .map_err(|e| error::classify_connect(e, secret))?;
    }
    Ok(Session { conn })
}

pub(crate) struct My;

impl Dialect for My {
    type Db = MySql;
    const NOW: &'static str = "SELECT UTC_TIMESTAMP(6)";

    fn now(row: &MySqlRow) -> Result<DateTime<Utc>, sqlx::Error> {
        row.try_get::<NaiveDateTime, _>(0).map(|t| t.and_utc())
    }

    fn open_transactions(
        conn: &mut MySqlConnection,
    ) -> futures::future::BoxFuture<'_, Result<sluice_core::OpenTransactions, SourceError>> {
        Box::pin(crate::open_transactions::mysql(conn))
    }

    fn bind<'q>(
        query: sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>,
        bind: Bind,
    ) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
        match bind {
            // The session is UTC, so a naive UTC datetime compares right with DATETIME and TIMESTAMP.
            Bind::Timestamp(t) => query.bind(t.naive_utc()),
            Bind::UnixSeconds(s) => query.bind(s),
        }
    }

    fn bind_type(bind: Bind) -> <MySql as sqlx::Database>::TypeInfo {
        match bind {
            Bind::Timestamp(_) => <chrono::NaiveDateTime as sqlx::Type<MySql>>::type_info(),
            Bind::UnixSeconds(_) => <i64 as sqlx::Type<MySql>>::type_info(),
        }
    }

    /// The column's type info: it carries the collation, which the value's does not.
    type Column = sqlx::mysql::MySqlTypeInfo;

    fn column(column: &sqlx::mysql::MySqlColumn) -> Self::Column {
        sqlx::Column::type_info(column).clone()
    }

    fn value(row: &MySqlRow, i: usize, info: &Self::Column) -> Value {
        match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Value::Null,
            Ok(raw) => decode(info, raw),
            Err(e) => undecodable(info.name(), e),
        }
    }

    fn login_check(session: &mut Session<Self>) -> futures::future::BoxFuture<'_, sluice_core::LoginCheck> {
        Box::pin(crate::login_check::mysql(session))
    }
}

fn get<'r, T: Decode<'r, MySql>>(raw: MySqlValueRef<'r>, type_name: &str, f: impl FnOnce(T) -> Value) -> Value {
    T::decode(raw).map_or_else(|e| undecodable(type_name, e), f)
}

fn decode(info: &sqlx::mysql::MySqlTypeInfo, raw: MySqlValueRef<'_>) -> Value {
    let type_name = info.name();
    match type_name {
        "BOOLEAN" => get(raw, type_name, Value::Bool),
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" => get(raw, type_name, Value::Int),
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED" | "BIGINT UNSIGNED" => {
            get(raw, type_name, |v: u64| {
                i64::try_from(v).map_or_else(|_| Value::Decimal(v.to_string()), Value::Int)
            })
        }
        "YEAR" => get(raw, type_name, |v: u16| Value::Int(v.into())),
        "BIT" => get(raw, type_name, |v: u64| Value::Int(v as i64)),
        "FLOAT" => get(raw, type_name, |v: f32| Value::Float(v.into())),
        "DOUBLE" => get(raw, type_name, Value::Float),
        // The binary protocol sends DECIMAL as its exact text.
        "DECIMAL" => get(raw, type_name, |v: &str| Value::decimal(v.to_string())),
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            get(raw, type_name, Value::Text)
        }
        // A text column with a binary collation (MariaDB's JSON among them) is flagged
        // BINARY on the wire; only the `binary` character set means bytes.
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            if <String as sqlx::Type<MySql>>::compatible(info) {
                get(raw, type_name, Value::Text)
            } else {
                get(raw, type_name, Value::Bytes)
            }
        }
        "DATE" => get(raw, type_name, Value::Date),
        "TIME" => get(raw, type_name, Value::Time),
        "DATETIME" => get(raw, type_name, |v: NaiveDateTime| Value::Timestamp(v.and_utc())),
        "TIMESTAMP" => get(raw, type_name, Value::Timestamp),
        "JSON" => get(raw, type_name, Value::Json),
        "NULL" => Value::Null,
        other => Value::Unsupported(other.to_string()),
    }
}
