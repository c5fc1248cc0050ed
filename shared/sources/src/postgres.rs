//! PostgreSQL: a read-only, UTC session with a statement timeout, set as startup
//! parameters so they hold for every statement of the connection.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use sluice_core::{Bind, ConnectionSecret, SourceError, TlsMode, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgSslMode};
use sqlx::types::BigDecimal;
use sqlx::{Connection, Decode, Postgres, Row as _, TypeInfo, ValueRef};

use crate::CONNECT_TIMEOUT;
use crate::error;
use crate::sql::{Dialect, Session, undecodable};

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Session<Pg>, SourceError> {
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(secret.host.as_deref().unwrap_or("localhost"))
        .port(secret.port.unwrap_or(5432))
        .database(&secret.database)
        .application_name("sluice")
        .ssl_mode(match secret.tls() {
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::Disable => PgSslMode::Disable,
        })
        .options([
            ("default_transaction_read_only", "on".to_string()),
            ("statement_timeout", format!("{}ms", query_timeout.as_millis())),
            ("TimeZone", "UTC".to_string()),
        ]);
    // Long streaming queries are the normal case here, not slow statements to warn about.
    options = sqlx::ConnectOptions::disable_statement_logging(options);
    if let Some(user) = &secret.username {
        options = options.username(user);
    }
    if let Some(password) = &secret.password {
        options = options.password(password);
    }
    if secret.tls() == TlsMode::VerifyFull {
        options = options.ssl_root_cert_from_pem(crate::tls::extra_roots(secret)?);
    }
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| error::timed_out(secret))?
        .map_err(|e| error::classify_connect(e, secret))?;
    Ok(Session { conn })
}

pub(crate) struct Pg;

impl Dialect for Pg {
    type Db = Postgres;
    const NOW: &'static str = "SELECT CURRENT_TIMESTAMP";

    fn now(row: &PgRow) -> Result<DateTime<Utc>, sqlx::Error> {
        row.try_get(0)
    }

    fn open_transactions(
        conn: &mut PgConnection,
    ) -> futures::future::BoxFuture<'_, Result<sluice_core::OpenTransactions, SourceError>> {
        Box::pin(crate::open_transactions::postgres(conn))
    }

    fn bind<'q>(
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
        bind: Bind,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        match bind {
            Bind::Timestamp(t) => query.bind(t),
            Bind::UnixSeconds(s) => query.bind(s),
        }
    }

    fn bind_type(bind: Bind) -> <Postgres as sqlx::Database>::TypeInfo {
        match bind {
            Bind::Timestamp(_) => <DateTime<Utc> as sqlx::Type<Postgres>>::type_info(),
            Bind::UnixSeconds(_) => <i64 as sqlx::Type<Postgres>>::type_info(),
        }
    }

    /// The column's type name.
    type Column = String;

    fn column(column: &sqlx::postgres::PgColumn) -> String {
        sqlx::Column::type_info(column).name().to_string()
    }

    fn value(row: &PgRow, i: usize, type_name: &String) -> Value {
        match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Value::Null,
            Ok(raw) => decode(type_name, raw),
            Err(e) => undecodable(type_name, e),
        }
    }

    fn login_check(session: &mut Session<Self>) -> futures::future::BoxFuture<'_, sluice_core::LoginCheck> {
        Box::pin(crate::login_check::postgres(session))
    }
}

fn get<'r, T: Decode<'r, Postgres>>(
    raw: sqlx::postgres::PgValueRef<'r>,
    type_name: &str,
    f: impl FnOnce(T) -> Value,
) -> Value {
    T::decode(raw).map_or_else(|e| undecodable(type_name, e), f)
}

fn decode(type_name: &str, raw: sqlx::postgres::PgValueRef<'_>) -> Value {
    match type_name {
        "BOOL" => get(raw, type_name, Value::Bool),
        "INT2" => get(raw, type_name, |v: i16| Value::Int(v.into())),
        "INT4" => get(raw, type_name, |v: i32| Value::Int(v.into())),
        "INT8" => get(raw, type_name, Value::Int),
        "OID" => get(raw, type_name, |v: sqlx::postgres::types::Oid| Value::Int(v.0.into())),
        "FLOAT4" => get(raw, type_name, |v: f32| Value::Float(v.into())),
        "FLOAT8" => get(raw, type_name, Value::Float),
        "NUMERIC" => match raw.as_bytes().map(numeric_text) {
            Ok(Some(text)) => Value::decimal(text),
            Ok(None) => Value::Unsupported("NUMERIC NaN or Infinity".into()),
            Err(e) => undecodable(type_name, e),
        },
        "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" | "\"CHAR\"" | "UNKNOWN" => {
            get(raw, type_name, Value::Text)
        }
        "DATE" => get(raw, type_name, Value::Date),
        "TIME" => get(raw, type_name, Value::Time),
        "TIMESTAMP" => get(raw, type_name, |v: NaiveDateTime| Value::Timestamp(v.and_utc())),
        "TIMESTAMPTZ" => get(raw, type_name, Value::Timestamp),
        "UUID" => get(raw, type_name, Value::Uuid),
        "JSON" | "JSONB" => get(raw, type_name, Value::Json),
        "BYTEA" => get(raw, type_name, Value::Bytes),
        "BOOL[]" => array::<bool>(raw, type_name, Value::Bool),
        "INT2[]" => array::<i16>(raw, type_name, |v| Value::Int(v.into())),
        "INT4[]" => array::<i32>(raw, type_name, |v| Value::Int(v.into())),
        "INT8[]" => array::<i64>(raw, type_name, Value::Int),
        "FLOAT4[]" => array::<f32>(raw, type_name, |v| Value::Float(v.into())),
        "FLOAT8[]" => array::<f64>(raw, type_name, Value::Float),
        "NUMERIC[]" => array::<BigDecimal>(raw, type_name, |v| Value::decimal(v.to_plain_string())),
        "TEXT[]" | "VARCHAR[]" | "CHAR[]" | "BPCHAR[]" | "NAME[]" => array::<String>(raw, type_name, Value::Text),
        "DATE[]" => array::<NaiveDate>(raw, type_name, Value::Date),
        "TIME[]" => array::<NaiveTime>(raw, type_name, Value::Time),
        "TIMESTAMP[]" => array::<NaiveDateTime>(raw, type_name, |v| Value::Timestamp(v.and_utc())),
        "TIMESTAMPTZ[]" => array::<DateTime<Utc>>(raw, type_name, Value::Timestamp),
        "UUID[]" => array::<uuid::Uuid>(raw, type_name, Value::Uuid),
        "JSON[]" | "JSONB[]" => array::<serde_json::Value>(raw, type_name, Value::Json),
        other => Value::Unsupported(other.to_string()),
    }
}

fn array<'r, T>(raw: sqlx::postgres::PgValueRef<'r>, type_name: &str, f: impl Fn(T) -> Value) -> Value
where
    Vec<Option<T>>: Decode<'r, Postgres>,
{
    get(raw, type_name, |items: Vec<Option<T>>| {
        Value::Array(items.into_iter().map(|v| v.map_or(Value::Null, &f)).collect())
    })
}

/// PostgreSQL's binary NUMERIC (base-10000 digits, weight, sign, display scale) as exact
/// decimal text, without going through a big-number type. `None` for NaN and infinities.
fn numeric_text(bytes: &[u8]) -> Option<String> {
    use std::fmt::Write;
    let word = |i: usize| bytes.get(2 * i..2 * i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)? as i16 as i32, word(2)?, word(3)? as usize);
    if sign != 0x0000 && sign != 0x4000 {
        return None;
    }
    let digit = |k: i32| {
        if k >= 0 && (k as usize) < ndigits {
            word(4 + k as usize).unwrap_or(0)
        } else {
            0
        }
    };
    let mut text = String::with_capacity(8 + 4 * ndigits);
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for k in 0..=weight {
            let _ = if k == 0 {
                write!(text, "{}", digit(k))
            } else {
                write!(text, "{:04}", digit(k))
            };
        }
    }
    if dscale > 0 {
        text.push('.');
        let start = text.len();
        let mut k = weight + 1;
        while text.len() - start < dscale {
            let _ = write!(text, "{:04}", digit(k));
            k += 1;
        }
        text.truncate(start + dscale);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b
    }

    #[test]
    fn binary_numeric_becomes_exact_text() {
        assert_eq!(numeric_text(&numeric(2, 0, 0, 2, &[12, 5000])).unwrap(), "12.50");
        assert_eq!(numeric_text(&numeric(2, 1, 0x4000, 0, &[1, 2])).unwrap(), "-10002");
        assert_eq!(numeric_text(&numeric(1, -2, 0, 8, &[12])).unwrap(), "0.00000012");
        assert_eq!(numeric_text(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric_text(&numeric(1, 2, 0, 0, &[7])).unwrap(), "700000000");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])), None);
    }
}
