//! SQL Server 2008 and later, and Azure SQL, through tiberius (TDS 7.3/7.4).
//!
//! SQL Server has no read-only session, so the session reads inside a transaction that
//! is never committed: whatever the query (or a procedure it EXECs) writes is rolled
//! back when the connection closes. The connection also declares read-only intent, so
//! an availability group with read-only routing sends it to a readable secondary.
//! Date and time types carry no zone and are read as UTC; `datetimeoffset` is
//! converted to UTC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SubsecRound, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryFutureExt, future};
use sluice_core::{
    Bind, ConnectionSecret, RenderedQuery, Row, SourceError, SourceErrorKind, SourceSession, TlsMode, Value,
};
use tiberius::{AuthMethod, Client, ColumnData, ColumnType, Config, EncryptionLevel, FromSql, QueryItem};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::{CONNECT_TIMEOUT, decimal_text, error};

type Connection = Client<Compat<TcpStream>>;

pub(crate) struct SqlServer {
    client: Connection,
    /// The column names of the result set being streamed, shared by its rows.
    names: Option<(usize, Arc<[String]>)>,
}

/// The tiberius configuration a secret describes.
pub(crate) fn config(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Config, SourceError> {
    let host = secret.host.as_deref().ok_or_else(|| {
        SourceError::new(
            SourceErrorKind::Config,
            "the secret has no host; give the server's host name (for Azure SQL, NAME.database.windows.net)",
        )
    })?;
    let mut config = Config::new();
    config.host(host);
    config.port(secret.port.unwrap_or(1433));
    config.database(&secret.database);
    config.application_name("sluice");
    config.readonly(true);
    // A stalled server is a timed-out query; a slow reader (Sluice writing) never is.
    config.command_timeout(Some(query_timeout));
    config.handshake_timeout(Some(CONNECT_TIMEOUT));
    // Azure SQL takes `user@server` as the login name as is.
    config.authentication(AuthMethod::sql_server(
        secret.username.as_deref().unwrap_or_default(),
        secret.password.as_deref().unwrap_or_default(),
    ));
    match secret.tls() {
        TlsMode::VerifyFull => {
            config.encryption(EncryptionLevel::Required);
            config.trust_cert_ca_bundle(crate::tls::extra_roots(secret)?);
        }
        TlsMode::Require => {
            config.encryption(EncryptionLevel::Required);
            config.trust_cert();
        }
        TlsMode::Disable => config.encryption(EncryptionLevel::NotSupported),
    }
    Ok(config)
}

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<SqlServer, SourceError> {
    let mut config = config(secret, query_timeout)?;
    let mut client = match login(&config, secret).await {
        // Azure SQL's gateway may send the client on to the node that holds the database.
        Err(tiberius::error::Error::Routing { host, port }) => {
            config.host(&host);
            config.port(port);
            login(&config, secret).await
        }
        other => other,
    }
    .map_err(|e| classify_connect(e, secret))?;
    let setup = format!(
        "SET NOCOUNT ON; SET XACT_ABORT ON; SET ARITHABORT ON; SET LOCK_TIMEOUT {}; \
         SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN TRANSACTION",
        query_timeout.as_millis()
    );
    client
        .simple_query(setup)
        .and_then(|s| s.into_results())
        .await
        .map_err(|e| classify_connect(e, secret))?;
    Ok(SqlServer { client, names: None })
}

async fn login(config: &Config, secret: &ConnectionSecret) -> tiberius::Result<Connection> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(config.get_addr()))
        .await
        .map_err(|_| tiberius::error::Error::Io {
            kind: std::io::ErrorKind::TimedOut,
            message: error::timed_out(secret).message,
        })??;
    tcp.set_nodelay(true)?;
    Client::connect(config.clone(), tcp.compat_write()).await
}

/// Login and session errors: the server's number says which fix applies.
fn classify_connect(e: tiberius::error::Error, secret: &ConnectionSecret) -> SourceError {
    use std::io::ErrorKind::{ConnectionRefused, HostUnreachable, NetworkUnreachable, NotFound};
    use tiberius::error::Error;
    let target = error::target(secret);
    match &e {
        Error::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut => error::timed_out(secret),
        Error::Io {
            kind: ConnectionRefused | HostUnreachable | NetworkUnreachable | NotFound,
            message,
        } => error::unreachable(secret, message),
        Error::Io { message, .. } => SourceError::new(
            SourceErrorKind::Connect,
            format!(
                "sqlserver at {target} closed the connection during login ({message}); check that the port is SQL Server's and that the server accepts Sluice (its TLS setting, firewall)"
            ),
        ),
        Error::Protocol(text) if text.contains("encryption level") => SourceError::new(
            SourceErrorKind::Tls,
            format!(
                "sqlserver at {target} does not offer encryption, and the secret's tls is {}: give the server a certificate and enable encryption, or set tls to disable on a private network",
                error::tls_mode(secret)
            ),
        ),
        Error::Tls(text) => SourceError::new(
            SourceErrorKind::Tls,
            format!("TLS with {target} failed: {text}; {}", error::tls_hint(secret, text)),
        ),
        Error::Server(token) if matches!(token.code(), 18456 | 4060 | 911 | 18452 | 40615 | 40532) => SourceError::new(
            SourceErrorKind::Auth,
            secret.redact(&format!(
                "sqlserver at {target} refused the login: {} (error {}); check username, password and database in the secret (Azure SQL: the username may need @SERVER, and the server's firewall must allow Sluice)",
                token.message(),
                token.code()
            )),
        ),
        other => SourceError::new(
            SourceErrorKind::Connect,
            secret.redact(&format!("connecting to sqlserver at {target} failed: {other}")),
        ),
    }
}

fn classify_query(e: tiberius::error::Error) -> SourceError {
    use tiberius::error::Error;
    match &e {
        Error::Io { kind, .. } if *kind == std::io::ErrorKind::TimedOut => SourceError::new(
            SourceErrorKind::Timeout,
            "the server sent nothing for query_timeout_seconds; add an index on the date column, narrow the window (max_window_seconds) or raise query_timeout_seconds",
        ),
        Error::Io { message, .. } => SourceError::new(
            SourceErrorKind::Connect,
            format!("the connection was lost while reading rows: {message}"),
        ),
        Error::Server(token) => {
            let hint = match token.code() {
                1222 => {
                    "; a lock held longer than query_timeout_seconds: the rows are being written; the next run reads them"
                }
                3906 | 3908 | 229 | 230 => "; Sluice reads only: the query (or the procedure it runs) must not write",
                _ => "",
            };
            let kind = if token.code() == 1222 {
                SourceErrorKind::Timeout
            } else {
                SourceErrorKind::Query
            };
            SourceError::new(
                kind,
                format!("the query failed: {} (error {}){hint}", token.message(), token.code()),
            )
        }
        other => SourceError::new(SourceErrorKind::Query, format!("the query failed: {other}")),
    }
}

fn query(rendered: &RenderedQuery) -> tiberius::Query<'_> {
    let mut query = tiberius::Query::new(rendered.sql.as_str());
    for bind in &rendered.binds {
        match *bind {
            // datetime2: compared with a datetime or datetime2 column, an index still seeks.
            Bind::Timestamp(t) => query.bind(t.naive_utc()),
            Bind::UnixSeconds(s) => query.bind(s),
        }
    }
    query
}

/// The parameter declarations of `binds`, for `sp_describe_first_result_set`.
fn parameter_declarations(binds: &[Bind]) -> String {
    let types = binds.iter().enumerate().map(|(i, b)| match b {
        Bind::Timestamp(_) => format!("@P{} datetime2", i + 1),
        Bind::UnixSeconds(_) => format!("@P{} bigint", i + 1),
    });
    types.collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl SourceSession for SqlServer {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        let row = self
            .client
            .simple_query("SELECT SYSUTCDATETIME()")
            .and_then(|s| s.into_row())
            .await
            .map_err(classify_query)?;
        let now = row.and_then(|r| r.try_get::<NaiveDateTime, _>(0).transpose());
        match now {
            Some(Ok(now)) => Ok(now.and_utc()),
            Some(Err(e)) => Err(classify_query(e)),
            None => Err(SourceError::new(
                SourceErrorKind::Query,
                "SYSUTCDATETIME() returned no row",
            )),
        }
    }

    /// From `sp_describe_first_result_set`; empty when the server cannot tell before
    /// running (a procedure that builds its result in a temporary table, say).
    async fn columns(&mut self, rendered: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        let mut describe = tiberius::Query::new("EXEC sp_describe_first_result_set @tsql = @P1, @params = @P2");
        describe.bind(rendered.sql.as_str());
        describe.bind(parameter_declarations(&rendered.binds));
        let rows = match describe
            .query(&mut self.client)
            .and_then(|s| s.into_first_result())
            .await
        {
            Ok(rows) => rows,
            Err(tiberius::error::Error::Server(_)) => return Ok(Vec::new()),
            Err(e) => return Err(classify_query(e)),
        };
        Ok(rows
            .iter()
            .filter(|r| !r.get::<bool, _>("is_hidden").unwrap_or(false))
            .filter_map(|r| r.get::<&str, _>("name").map(str::to_string))
            .collect())
    }

    fn stream<'a>(&'a mut self, rendered: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        let SqlServer { client, names } = self;
        // A statement that returns no result set at all (an INSERT, a DROP) wrote, or
        // tried to: its work is rolled back, and the run must not pass for an empty read.
        let read_a_result = Arc::new(AtomicBool::new(false));
        let at_end = read_a_result.clone();
        let no_result = stream::once(future::lazy(move |_| {
            (!at_end.load(Ordering::Relaxed)).then(|| {
                Err(SourceError::new(
                    SourceErrorKind::Query,
                    "the query returned no result set, so it is not a SELECT (what it wrote was rolled back); Sluice reads only: the template must be a SELECT, or an EXEC of a procedure that returns rows",
                ))
            })
        }))
        .filter_map(future::ready);
        query(rendered)
            .query(client)
            .try_flatten_stream()
            .filter_map(move |item| {
                future::ready(match item {
                    Ok(QueryItem::Metadata(_)) => {
                        read_a_result.store(true, Ordering::Relaxed);
                        None
                    }
                    Ok(QueryItem::Row(row)) => Some(Ok(row)),
                    Err(e) => Some(Err(e)),
                })
            })
            .map(move |row| {
                let row = row.map_err(classify_query)?;
                // A procedure may return several result sets; each has its own columns.
                let index = row.result_index();
                let columns = match names {
                    Some((i, names)) if *i == index => names.clone(),
                    _ => {
                        let fresh: Arc<[String]> = row.columns().iter().map(|c| c.name().to_string()).collect();
                        *names = Some((index, fresh.clone()));
                        fresh
                    }
                };
                let values = row
                    .cells()
                    .map(|(column, data)| value(column.column_type(), data))
                    .collect();
                Ok(Row { columns, values })
            })
            .chain(no_result)
            .boxed()
    }
}

/// A TDS value as a typed [`Value`]. `money` arrives from the driver as a float of
/// ten-thousandths and is turned back into its exact four-decimal text.
pub(crate) fn value(column_type: ColumnType, data: &ColumnData<'static>) -> Value {
    fn convert<'a, T: FromSql<'a>>(data: &'a ColumnData<'static>, f: impl FnOnce(T) -> Value) -> Value {
        match T::from_sql(data) {
            Ok(Some(v)) => f(v),
            Ok(None) => Value::Null,
            Err(e) => Value::Unsupported(format!("{data:?} ({e})")),
        }
    }
    match data {
        ColumnData::U8(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I16(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I32(v) => v.map_or(Value::Null, |v| Value::Int(v.into())),
        ColumnData::I64(v) => v.map_or(Value::Null, Value::Int),
        ColumnData::F32(v) => v.map_or(Value::Null, |v| Value::Float(v.into())),
        ColumnData::F64(Some(v)) if matches!(column_type, ColumnType::Money | ColumnType::Money4) => {
            Value::decimal(format!("{v:.4}"))
        }
        ColumnData::F64(v) => v.map_or(Value::Null, Value::Float),
        ColumnData::Bit(v) => v.map_or(Value::Null, Value::Bool),
        ColumnData::String(v) => v.as_ref().map_or(Value::Null, |s| Value::Text(s.to_string())),
        ColumnData::Guid(v) => v.map_or(Value::Null, Value::Uuid),
        ColumnData::Binary(v) => v.as_ref().map_or(Value::Null, |b| Value::Bytes(b.to_vec())),
        ColumnData::Numeric(v) => v.map_or(Value::Null, |n| {
            Value::decimal(decimal_text(n.value(), n.scale().into()))
        }),
        ColumnData::Xml(v) => v.as_ref().map_or(Value::Null, |x| Value::Text(x.to_string())),
        // `datetime` counts 1/300 s; SQL Server shows (and compares) it to the
        // millisecond, .003 not .003333333.
        ColumnData::DateTime(_) => convert(data, |v: NaiveDateTime| Value::Timestamp(v.and_utc().round_subsecs(3))),
        ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            convert(data, |v: NaiveDateTime| Value::Timestamp(v.and_utc()))
        }
        ColumnData::Date(_) => convert(data, |v: NaiveDate| Value::Date(v)),
        ColumnData::Time(_) => convert(data, |v: NaiveTime| Value::Time(v)),
        ColumnData::DateTimeOffset(_) => convert(data, |v: DateTime<FixedOffset>| Value::Timestamp(v.to_utc())),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use tiberius::numeric::Numeric;
    use tiberius::time::{Date, DateTime2, DateTimeOffset, SmallDateTime, Time};

    fn timestamp(s: &str) -> Value {
        Value::Timestamp(DateTime::parse_from_rfc3339(s).unwrap().to_utc())
    }

    #[test]
    fn every_listed_type_becomes_a_typed_value() {
        // 2024-03-01 is day 738,945 since 0001-01-01 and day 45,350 since 1900-01-01.
        let date = Date::new(738_945);
        let noon = Time::new(12 * 3600 * 10_000_000 + 1_234_567, 7); // 12:00:00.1234567
        let cases: Vec<(ColumnType, ColumnData<'static>, Value)> = vec![
            (
                ColumnType::Datetime,
                ColumnData::DateTime(Some(tiberius::time::DateTime::new(45_350, 300 * 3600))),
                timestamp("2024-03-01T01:00:00Z"),
            ),
            (
                ColumnType::Datetime2,
                ColumnData::DateTime2(Some(DateTime2::new(date, noon))),
                timestamp("2024-03-01T12:00:00.1234567Z"),
            ),
            (
                ColumnType::Datetime4,
                ColumnData::SmallDateTime(Some(SmallDateTime::new(45_350, 90))),
                timestamp("2024-03-01T01:30:00Z"),
            ),
            (
                ColumnType::DatetimeOffsetn,
                // Wall clock 12:00 at +02:00 is 10:00 UTC; TDS carries the UTC time.
                ColumnData::DateTimeOffset(Some(DateTimeOffset::new(
                    DateTime2::new(date, Time::new(10 * 3600, 0)),
                    120,
                ))),
                timestamp("2024-03-01T10:00:00Z"),
            ),
            (
                ColumnType::Daten,
                ColumnData::Date(Some(date)),
                Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()),
            ),
            (
                ColumnType::Timen,
                ColumnData::Time(Some(Time::new(9 * 3600 + 30 * 60, 0))),
                Value::Time(NaiveTime::from_hms_opt(9, 30, 0).unwrap()),
            ),
            (
                ColumnType::Money,
                ColumnData::F64(Some(123_456_789.012_3)),
                Value::Decimal("123456789.0123".into()),
            ),
            (
                ColumnType::Money4,
                ColumnData::F64(Some(-12.5)),
                Value::Decimal("-12.5".into()),
            ),
            (
                ColumnType::Decimaln,
                ColumnData::Numeric(Some(Numeric::new_with_scale(-1_234_567_890_123_456_789_012_345, 6))),
                Value::Decimal("-1234567890123456789.012345".into()),
            ),
            (
                ColumnType::Numericn,
                ColumnData::Numeric(Some(Numeric::new_with_scale(5, 3))),
                Value::Decimal("0.005".into()),
            ),
            (
                ColumnType::Guid,
                ColumnData::Guid(Some(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))),
                Value::Uuid(uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
            ),
            (
                ColumnType::NVarchar,
                ColumnData::String(Some(Cow::Owned("Zoë ✓ ".repeat(2000)))),
                Value::Text("Zoë ✓ ".repeat(2000)),
            ),
            (
                ColumnType::BigVarBin,
                ColumnData::Binary(Some(Cow::Owned(vec![0, 1, 254, 255]))),
                Value::Bytes(vec![0, 1, 254, 255]),
            ),
            (ColumnType::Intn, ColumnData::I64(Some(-9)), Value::Int(-9)),
            (ColumnType::Int1, ColumnData::U8(Some(200)), Value::Int(200)),
            (ColumnType::Bitn, ColumnData::Bit(Some(true)), Value::Bool(true)),
            (ColumnType::Floatn, ColumnData::F64(Some(0.25)), Value::Float(0.25)),
            (ColumnType::Datetime2, ColumnData::DateTime2(None), Value::Null),
            (ColumnType::Money, ColumnData::F64(None), Value::Null),
            (ColumnType::NVarchar, ColumnData::String(None), Value::Null),
        ];
        for (column_type, data, expected) in cases {
            assert_eq!(value(column_type, &data), expected, "{column_type:?} {data:?}");
        }
    }

    #[test]
    fn procedures_get_their_parameter_declarations() {
        let t = chrono::Utc::now();
        assert_eq!(
            parameter_declarations(&[Bind::Timestamp(t), Bind::Timestamp(t), Bind::UnixSeconds(0)]),
            "@P1 datetime2, @P2 datetime2, @P3 bigint"
        );
    }
}
