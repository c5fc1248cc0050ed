//! Oracle through the `oracle` crate (ODPI-C), which loads Oracle's client library
//! (Instant Client) at run time: on Lambda it comes from a layer (README, "Oracle").
//!
//! The session is UTC (`TIME_ZONE`) and reads in a `READ ONLY` transaction, with the
//! query timeout as the client's call timeout. The driver blocks, so it runs on the
//! blocking pool and hands rows over a bounded channel: the database is read only as
//! fast as Sluice writes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use oracle::sql_type::{OracleType, ToSql};
use sluice_core::{
    Bind, ConnectionSecret, RenderedQuery, Row, SourceError, SourceErrorKind, SourceSession, TlsMode, Value,
};

use crate::{CONNECT_TIMEOUT, error};

pub(crate) struct Oracle {
    conn: Arc<oracle::Connection>,
}

/// Rows handed over at a time, and batches in flight.
const BATCH_ROWS: usize = 500;
const BATCHES_IN_FLIGHT: usize = 4;

/// Easy Connect: `//host:port/service`, or `tcps://` when the secret asks for TLS.
pub(crate) fn connect_string(secret: &ConnectionSecret) -> Result<String, SourceError> {
    let config = |m: &str| SourceError::new(SourceErrorKind::Config, m);
    let host = secret.host.as_deref().ok_or_else(|| config("the secret has no host"))?;
    if secret.ca_cert.is_some() {
        return Err(config(
            "ca_cert is not used for Oracle: the Instant Client verifies TCPS against its wallet; put the CA in a wallet (README, \"Oracle\") and remove ca_cert",
        ));
    }
    let port = secret.port.unwrap_or(1521);
    let service = &secret.database;
    Ok(match secret.tls() {
        TlsMode::Disable => format!("//{host}:{port}/{service}"),
        TlsMode::Require => format!("tcps://{host}:{port}/{service}?ssl_server_dn_match=false"),
        TlsMode::VerifyFull => format!("tcps://{host}:{port}/{service}?ssl_server_dn_match=true"),
    })
}

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Oracle, SourceError> {
    let connect_string = connect_string(secret)?;
    let (user, password) = (
        secret.username.clone().unwrap_or_default(),
        secret.password.clone().unwrap_or_default(),
    );
    let opened = tokio::task::spawn_blocking(move || {
        let mut connector = oracle::Connector::new(user, password, connect_string);
        connector.driver_name("sluice");
        let conn = connector.connect()?;
        conn.set_call_timeout(Some(query_timeout))?;
        conn.execute("ALTER SESSION SET TIME_ZONE = 'UTC'", &[])?;
        conn.execute("SET TRANSACTION READ ONLY", &[])?;
        Ok::<_, oracle::Error>(conn)
    });
    let conn = tokio::time::timeout(CONNECT_TIMEOUT + query_timeout, opened)
        .await
        .map_err(|_| error::timed_out(secret))?
        .map_err(|e| SourceError::new(SourceErrorKind::Connect, format!("the Oracle connect task failed: {e}")))?
        .map_err(|e| classify_connect(&e, secret))?;
    Ok(Oracle { conn: Arc::new(conn) })
}

/// The client library is missing (DPI-1047), the login is refused, or the listener
/// does not know the service.
pub(crate) fn classify_connect(e: &oracle::Error, secret: &ConnectionSecret) -> SourceError {
    let text = secret.redact(&e.to_string());
    let target = error::target(secret);
    if text.contains("DPI-1047") {
        return SourceError::new(
            SourceErrorKind::Config,
            format!(
                "the Oracle client library (Instant Client) is not installed where Sluice runs: on Lambda, add the Instant Client layer to the function (README, \"Oracle\"); elsewhere install Instant Client and put its directory in LD_LIBRARY_PATH ({text})"
            ),
        );
    }
    let code = e.db_error().map(oracle::DbError::code);
    let (kind, hint) = match code {
        Some(1017 | 28000 | 28001 | 1045) => (
            SourceErrorKind::Auth,
            "; check username and password in the secret, and that the account is open",
        ),
        Some(12514 | 12505) => (
            SourceErrorKind::Connect,
            "; the listener does not know the service: the secret's database is the service name",
        ),
        Some(12541 | 12543 | 12545 | 12170) => (
            SourceErrorKind::Connect,
            "; check host and port, and that the database accepts connections from Sluice (firewall, security group)",
        ),
        Some(29024 | 29003 | 28759 | 28860) => (
            SourceErrorKind::Tls,
            "; check the secret's `tls` setting and the wallet that holds the server's CA",
        ),
        _ => (SourceErrorKind::Connect, ""),
    };
    SourceError::new(kind, format!("oracle at {target} refused the session: {text}{hint}"))
}

fn classify_query(e: &oracle::Error) -> SourceError {
    let code = e.db_error().map(oracle::DbError::code);
    let (kind, hint) = match code {
        // DPI-1067: the call timeout passed.
        _ if e.to_string().contains("DPI-1067") => (
            SourceErrorKind::Timeout,
            "; the query ran past query_timeout_seconds: add an index on the date column, narrow the window (max_window_seconds) or raise it",
        ),
        Some(1456) => (
            SourceErrorKind::Query,
            "; Sluice reads only: the template must be a SELECT",
        ),
        _ => (SourceErrorKind::Query, ""),
    };
    SourceError::new(kind, format!("the query failed: {e}{hint}"))
}

/// The window's values as Oracle binds: timestamps as TIMESTAMP (UTC), seconds as NUMBER.
enum OracleBind {
    Timestamp(NaiveDateTime),
    Number(i64),
}

impl OracleBind {
    fn of(bind: Bind) -> Self {
        match bind {
            Bind::Timestamp(t) => OracleBind::Timestamp(t.naive_utc()),
            Bind::UnixSeconds(s) => OracleBind::Number(s),
        }
    }

    fn as_sql(&self) -> &dyn ToSql {
        match self {
            OracleBind::Timestamp(t) => t,
            OracleBind::Number(n) => n,
        }
    }
}

#[async_trait]
impl SourceSession for Oracle {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            conn.query_row_as::<NaiveDateTime>("SELECT SYS_EXTRACT_UTC(SYSTIMESTAMP) FROM DUAL", &[])
        })
        .await
        .map_err(|e| SourceError::new(SourceErrorKind::Query, e.to_string()))?
        .map(|t| t.and_utc())
        .map_err(|e| classify_query(&e))
    }

    async fn login_check(&mut self) -> sluice_core::LoginCheck {
        crate::login_check::oracle()
    }

    /// Oracle describes a query only by running it; the rows tell.
    async fn columns(&mut self, _query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<Row>, SourceError>>(BATCHES_IN_FLIGHT);
        let conn = self.conn.clone();
        let (sql, binds) = (query.sql.clone(), query.binds.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_rows(&conn, &sql, &binds, &sender) {
                let _ = sender.blocking_send(Err(classify_query(&e)));
            }
        });
        tokio_stream_of(receiver)
            .map_ok(|batch| futures::stream::iter(batch.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }
}

/// Runs `sql` and sends its rows in batches until they end or the reader goes away.
fn read_rows(
    conn: &oracle::Connection,
    sql: &str,
    binds: &[Bind],
    sender: &tokio::sync::mpsc::Sender<Result<Vec<Row>, SourceError>>,
) -> Result<(), oracle::Error> {
    let binds: Vec<OracleBind> = binds.iter().copied().map(OracleBind::of).collect();
    let params: Vec<&dyn ToSql> = binds.iter().map(OracleBind::as_sql).collect();
    let mut statement = conn.statement(sql).fetch_array_size(BATCH_ROWS as u32).build()?;
    let rows = statement.query(&params)?;
    let names: Arc<[String]> = rows
        .column_info()
        .iter()
        .map(|c| crate::column_name(c.name()))
        .collect();
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    for row in rows {
        batch.push(Row {
            columns: names.clone(),
            values: row?.sql_values().iter().map(value).collect(),
        });
        if batch.len() == BATCH_ROWS && sender.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
            return Ok(()); // The reader stopped: stop fetching.
        }
    }
    let _ = sender.blocking_send(Ok(batch));
    Ok(())
}

fn tokio_stream_of<T: Send + 'static>(mut receiver: tokio::sync::mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
}

/// An Oracle value as a typed [`Value`]. NUMBER is read as text so no digit is lost.
fn value(v: &oracle::SqlValue) -> Value {
    if v.is_null().unwrap_or(false) {
        return Value::Null;
    }
    let Ok(kind) = v.oracle_type() else {
        return Value::Unsupported("unknown Oracle type".into());
    };
    let failed = |e: oracle::Error| Value::Unsupported(format!("{kind} ({e})"));
    match kind {
        OracleType::Number(..) | OracleType::Float(_) | OracleType::Int64 | OracleType::UInt64 => {
            v.get::<String>().map_or_else(failed, |text| number_value(&text))
        }
        OracleType::BinaryFloat | OracleType::BinaryDouble => v.get::<f64>().map_or_else(failed, Value::Float),
        OracleType::Varchar2(_)
        | OracleType::NVarchar2(_)
        | OracleType::Char(_)
        | OracleType::NChar(_)
        | OracleType::CLOB
        | OracleType::NCLOB
        | OracleType::Long
        | OracleType::Rowid
        | OracleType::Xml
        | OracleType::IntervalDS(..)
        | OracleType::IntervalYM(_) => v.get::<String>().map_or_else(failed, Value::Text),
        OracleType::Raw(_) | OracleType::BLOB | OracleType::LongRaw => {
            v.get::<Vec<u8>>().map_or_else(failed, Value::Bytes)
        }
        OracleType::Date | OracleType::Timestamp(_) => v
            .get::<NaiveDateTime>()
            .map_or_else(failed, |t| Value::Timestamp(t.and_utc())),
        OracleType::TimestampTZ(_) | OracleType::TimestampLTZ(_) => v
            .get::<DateTime<FixedOffset>>()
            .map_or_else(failed, |t| Value::Timestamp(t.to_utc())),
        OracleType::Boolean => v.get::<bool>().map_or_else(failed, Value::Bool),
        OracleType::Json => v.get::<String>().map_or_else(failed, |text| {
            serde_json::from_str(&text).map_or(Value::Text(text), Value::Json)
        }),
        other => Value::Unsupported(other.to_string()),
    }
}

/// NUMBER text as an integer when it is one and fits, else an exact decimal.
fn number_value(text: &str) -> Value {
    // Oracle writes fractions below one as ".5" and "-.5".
    let text = match text.strip_prefix('-') {
        Some(rest) if rest.starts_with('.') => format!("-0{rest}"),
        _ if text.starts_with('.') => format!("0{text}"),
        _ => text.to_string(),
    };
    match text.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::decimal(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(tls: &str) -> ConnectionSecret {
        serde_json::from_value(serde_json::json!({
            "engine": "oracle", "host": "db.internal", "database": "ORCLPDB1", "username": "u", "password": "p", "tls": tls
        }))
        .unwrap()
    }

    #[test]
    fn easy_connect_strings_follow_the_tls_setting() {
        assert_eq!(
            connect_string(&secret("disable")).unwrap(),
            "//db.internal:1521/ORCLPDB1"
        );
        assert_eq!(
            connect_string(&secret("require")).unwrap(),
            "tcps://db.internal:1521/ORCLPDB1?ssl_server_dn_match=false"
        );
        assert_eq!(
            connect_string(&secret("verify-full")).unwrap(),
            "tcps://db.internal:1521/ORCLPDB1?ssl_server_dn_match=true"
        );
        let mut with_ca = secret("verify-full");
        with_ca.ca_cert = Some("-----BEGIN CERTIFICATE-----".into());
        assert!(connect_string(&with_ca).unwrap_err().message.contains("wallet"));
    }

    #[test]
    fn numbers_keep_every_digit() {
        assert_eq!(number_value("42"), Value::Int(42));
        assert_eq!(number_value("-7"), Value::Int(-7));
        assert_eq!(number_value("12.50"), Value::Decimal("12.5".into()));
        assert_eq!(number_value(".5"), Value::Decimal("0.5".into()));
        assert_eq!(number_value("-.25"), Value::Decimal("-0.25".into()));
        assert_eq!(
            number_value("123456789012345678901234567890"),
            Value::Decimal("123456789012345678901234567890".into())
        );
    }

    #[test]
    fn window_values_bind_as_oracle_types() {
        let t: DateTime<Utc> = "2024-03-01T10:00:00.5Z".parse().unwrap();
        assert!(matches!(OracleBind::of(Bind::Timestamp(t)), OracleBind::Timestamp(n) if n == t.naive_utc()));
        assert!(matches!(OracleBind::of(Bind::UnixSeconds(9)), OracleBind::Number(9)));
    }
}
