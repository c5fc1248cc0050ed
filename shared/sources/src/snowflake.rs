//! Snowflake over its REST protocol, the one Snowflake's own connectors speak: a login
//! request (password, or a key-pair JWT), then query requests whose results come as an
//! inline first part and further chunks, each fetched only when the rows before it
//! are consumed. Results are Arrow IPC streams (or JSON rows, which Snowflake may
//! still send); both convert to the same typed values.
//!
//! The session runs with `TIMEZONE = UTC`, `STATEMENT_TIMEOUT_IN_SECONDS` and
//! `AUTOCOMMIT = FALSE`: Snowflake has no read-only session, so anything a query
//! changes is never committed (grant the user's role SELECT only, too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, RecordBatch, StructArray, cast::AsArray, types};
use arrow_schema::DataType;
use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;
use sluice_core::{Bind, ConnectionSecret, RenderedQuery, Row, SourceError, SourceErrorKind, SourceSession, Value};

use crate::{column_name, decimal_text, web};

pub(crate) struct Snowflake {
    http: reqwest::Client,
    base: String,
    token: String,
    secret: ConnectionSecret,
    query_timeout: Duration,
}

/// Snowflake's answer envelope.
#[derive(Deserialize)]
struct Answer<T> {
    data: Option<T>,
    #[serde(default)]
    success: bool,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// A result column as Snowflake describes it.
#[derive(Debug, Clone, Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    scale: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryResult {
    #[serde(default)]
    rowtype: Vec<Column>,
    query_result_format: Option<String>,
    rowset_base64: Option<String>,
    rowset: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    chunks: Vec<Chunk>,
    chunk_headers: Option<HashMap<String, String>>,
    qrmk: Option<String>,
    get_result_url: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    url: String,
}

/// Codes of a query still running: poll its result URL.
const IN_PROGRESS: [&str; 2] = ["333333", "333334"];

/// Snowflake's own fields of the secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// The account identifier (`orgname-account` or `locator.region`); the host is
    /// `{account}.snowflakecomputing.com` unless the secret's `host` is given.
    account: Option<String>,
    /// The warehouse that runs the query.
    warehouse: Option<String>,
    /// The role of the session.
    role: Option<String>,
    /// The schema of the session.
    schema: Option<String>,
    /// Key-pair authentication: the user's unencrypted PKCS#8 private key (`BEGIN
    /// PRIVATE KEY`), in place of a password.
    private_key: Option<String>,
}

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<Snowflake, SourceError> {
    let config = |m: &str| SourceError::new(SourceErrorKind::Config, m);
    let options: Options = crate::options(secret)?;
    let account = options.account.as_deref().ok_or_else(|| {
        config("the secret has no account; give the Snowflake account identifier (orgname-account, or locator.region)")
    })?;
    let user = secret
        .username
        .as_deref()
        .ok_or_else(|| config("the secret has no username"))?;
    let base = web::base_url(secret, &format!("{account}.snowflakecomputing.com"));
    // Results can take as long as the statement timeout; polling covers longer waits.
    let http = web::client(query_timeout + Duration::from_secs(60))?;
    let mut data = json!({
        "CLIENT_APP_ID": "Sluice",
        "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
        "ACCOUNT_NAME": account_name(account),
        "LOGIN_NAME": user,
        "SESSION_PARAMETERS": {
            "AUTOCOMMIT": false,
            "TIMEZONE": "UTC",
            "STATEMENT_TIMEOUT_IN_SECONDS": query_timeout.as_secs().max(1),
            "QUERY_RESULT_FORMAT": "ARROW",
        },
    });
    match (&options.private_key, &secret.password) {
        (Some(pem), _) => {
            data["AUTHENTICATOR"] = "SNOWFLAKE_JWT".into();
            data["TOKEN"] = key_pair_jwt(pem, account, user, Utc::now())?.into();
        }
        (None, Some(password)) => data["PASSWORD"] = password.as_str().into(),
        (None, None) => return Err(config("the secret has neither password nor private_key")),
    }
    let mut params = vec![("databaseName", secret.database.as_str()), ("requestId", "")];
    let request_id = uuid::Uuid::new_v4().to_string();
    params[1].1 = &request_id;
    for (name, value) in [
        ("schemaName", &options.schema),
        ("warehouse", &options.warehouse),
        ("roleName", &options.role),
    ] {
        if let Some(value) = value {
            params.push((name, value));
        }
    }
    let answer: Answer<Login> = http
        .post(format!("{base}/session/v1/login-request"))
        .query(&params)
        .header("Accept", "application/json")
        .json(&json!({ "data": data }))
        .send()
        .await
        .map_err(|e| web::transport(&e, secret, "logging in to Snowflake"))?
        .json()
        .await
        .map_err(|e| web::transport(&e, secret, "reading Snowflake's login answer"))?;
    match answer {
        Answer {
            success: true,
            data: Some(Login { token }),
            ..
        } => Ok(Snowflake {
            http,
            base,
            token,
            secret: secret.clone(),
            query_timeout,
        }),
        failed => Err(SourceError::new(
            SourceErrorKind::Auth,
            secret.redact(&format!(
                "Snowflake refused the login: {} (code {}); check account, username and password or private_key, and that the user may use the warehouse, role and database given",
                failed.message.unwrap_or_default(),
                failed.code.unwrap_or_default()
            )),
        )),
    }
}

/// The account name a login carries: the locator without region or cloud, upper case.
fn account_name(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_uppercase()
}

/// The JWT of key-pair authentication: issued by `ACCOUNT.USER.SHA256:fingerprint`,
/// where the fingerprint is of the public key the user was given in Snowflake.
fn key_pair_jwt(pem: &str, account: &str, user: &str, now: DateTime<Utc>) -> Result<String, SourceError> {
    let key = web::rsa_key(pem, "private_key")?;
    let spki = key.public_key().as_der().map_err(|_| {
        SourceError::new(
            SourceErrorKind::Config,
            "the private_key's public half cannot be encoded",
        )
    })?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    let fingerprint = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let subject = format!("{}.{}", account_name(account), user.to_uppercase());
    web::jwt(
        &key,
        &json!({
            "iss": format!("{subject}.SHA256:{fingerprint}"),
            "sub": subject,
            "iat": now.timestamp(),
            "exp": now.timestamp() + 3600,
        }),
    )
}

impl Snowflake {
    async fn post_query(&self, query: &RenderedQuery, describe_only: bool) -> Result<QueryResult, SourceError> {
        let bindings: serde_json::Map<String, serde_json::Value> = query
            .binds
            .iter()
            .enumerate()
            .map(|(i, bind)| {
                let (kind, value) = match *bind {
                    Bind::Timestamp(t) => ("TIMESTAMP_NTZ", t.timestamp_nanos_opt().unwrap_or_default().to_string()),
                    Bind::UnixSeconds(s) => ("FIXED", s.to_string()),
                };
                ((i + 1).to_string(), json!({ "type": kind, "value": value }))
            })
            .collect();
        let mut body = json!({
            "sqlText": query.sql,
            "asyncExec": false,
            "describeOnly": describe_only,
            "querySubmissionTime": Utc::now().timestamp_millis(),
        });
        if !bindings.is_empty() {
            body["bindings"] = bindings.into();
        }
        let request = self
            .http
            .post(format!("{}/queries/v1/query-request", self.base))
            .query(&[("requestId", uuid::Uuid::new_v4().to_string())])
            .json(&body);
        let mut answer: Answer<QueryResult> = self.send(request).await?;
        let deadline = tokio::time::Instant::now() + self.query_timeout;
        let mut pause = Duration::from_millis(250);
        // A query that outlasts Snowflake's wait returns "in progress" and a URL to poll.
        while answer.code.as_deref().is_some_and(|c| IN_PROGRESS.contains(&c)) {
            let url = answer
                .data
                .as_ref()
                .and_then(|d| d.get_result_url.clone())
                .ok_or_else(|| {
                    SourceError::new(
                        SourceErrorKind::Query,
                        "Snowflake said the query runs on but gave no result URL",
                    )
                })?;
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            answer = self.send(self.http.get(format!("{}{url}", self.base))).await?;
        }
        match answer {
            Answer {
                success: true,
                data: Some(result),
                ..
            } => Ok(result),
            failed => {
                let code = failed.code.unwrap_or_default();
                let message = failed.message.unwrap_or_default();
                if code == "000630" {
                    return Err(timed_out());
                }
                let kind = if matches!(code.as_str(), "390112" | "390104" | "390103") {
                    SourceErrorKind::Auth
                } else {
                    SourceErrorKind::Query
                };
                Err(SourceError::new(
                    kind,
                    format!("the query failed: {message} (code {code})"),
                ))
            }
        }
    }

    async fn send<T: for<'de> Deserialize<'de>>(&self, request: reqwest::RequestBuilder) -> Result<T, SourceError> {
        request
            .header("Authorization", format!("Snowflake Token=\"{}\"", self.token))
            .header("Accept", "application/snowflake")
            .send()
            .await
            .map_err(|e| web::transport(&e, &self.secret, "the Snowflake query"))?
            .json()
            .await
            .map_err(|e| web::transport(&e, &self.secret, "reading Snowflake's answer"))
    }

    /// The body of a result chunk, from the cloud storage URL Snowflake gave.
    async fn chunk(&self, url: &str, result: &QueryResult) -> Result<Vec<u8>, SourceError> {
        let mut request = self.http.get(url);
        if let Some(headers) = &result.chunk_headers {
            for (name, value) in headers {
                request = request.header(name, value);
            }
        } else if let Some(key) = &result.qrmk {
            request = request
                .header("x-amz-server-side-encryption-customer-algorithm", "AES256")
                .header("x-amz-server-side-encryption-customer-key", key);
        }
        let response = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| web::transport(&e, &self.secret, "fetching a Snowflake result chunk"))?;
        Ok(response
            .bytes()
            .await
            .map_err(|e| web::transport(&e, &self.secret, "reading a Snowflake result chunk"))?
            .to_vec())
    }
}

fn timed_out() -> SourceError {
    SourceError::new(
        SourceErrorKind::Timeout,
        "the query ran past its statement timeout; cluster or filter on the date column, narrow the window (max_window_seconds) or raise query_timeout_seconds",
    )
}

impl Drop for Snowflake {
    /// Logs the session out, so it does not linger until Snowflake expires it.
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request = self
                .http
                .post(format!("{}/session", self.base))
                .query(&[("delete", "true")])
                .header("Authorization", format!("Snowflake Token=\"{}\"", self.token));
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

#[async_trait]
impl SourceSession for Snowflake {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        web::current_timestamp(self).await
    }

    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        let described = self.post_query(query, true).await?;
        Ok(described.rowtype.iter().map(|c| column_name(&c.name)).collect())
    }

    async fn login_check(&mut self) -> sluice_core::LoginCheck {
        crate::login_check::snowflake(self).await
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        let this = &*self;
        stream::once(this.post_query(query, false))
            .map_ok(move |result| {
                let result = Arc::new(result);
                let names: Arc<[String]> = result.rowtype.iter().map(|c| column_name(&c.name)).collect();
                // Part 0 is inline; parts 1.. are the chunks, fetched one at a time.
                stream::iter(0..=result.chunks.len())
                    .then(move |part| {
                        let (result, names) = (result.clone(), names.clone());
                        async move {
                            let body = match part {
                                0 => None,
                                n => Some(this.chunk(&result.chunks[n - 1].url, &result).await?),
                            };
                            let rows = decode_part(&result, body, &names)?;
                            Ok::<_, SourceError>(stream::iter(rows.into_iter().map(Ok)))
                        }
                    })
                    .try_flatten()
            })
            .try_flatten()
            .boxed()
    }
}

/// The rows of one part of a result: the inline first part (`body` None) or a chunk.
fn decode_part(result: &QueryResult, body: Option<Vec<u8>>, names: &Arc<[String]>) -> Result<Vec<Row>, SourceError> {
    let arrow = result.query_result_format.as_deref() != Some("json");
    let rows: Vec<Vec<Value>> = match (arrow, body) {
        (true, None) => {
            let encoded = result.rowset_base64.as_deref().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| malformed(&e))?;
            arrow_rows(&bytes, &result.rowtype)?
        }
        (true, Some(bytes)) => arrow_rows(&bytes, &result.rowtype)?,
        (false, None) => json_rows(result.rowset.as_deref().unwrap_or_default(), &result.rowtype),
        (false, Some(bytes)) => {
            // A JSON chunk is the rows without the enclosing brackets.
            let text = [b"[".as_slice(), &bytes, b"]"].concat();
            let rowset: Vec<Vec<Option<String>>> = serde_json::from_slice(&text).map_err(|e| malformed(&e))?;
            json_rows(&rowset, &result.rowtype)
        }
    };
    Ok(rows
        .into_iter()
        .map(|values| Row {
            columns: names.clone(),
            values,
        })
        .collect())
}

fn malformed(e: &dyn std::fmt::Display) -> SourceError {
    SourceError::new(
        SourceErrorKind::Query,
        format!("Snowflake sent a result Sluice cannot read: {e}"),
    )
}

/// The rows of an Arrow IPC stream, typed by Snowflake's column descriptions.
fn arrow_rows(bytes: &[u8], rowtype: &[Column]) -> Result<Vec<Vec<Value>>, SourceError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| malformed(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| malformed(&e))?;
        let columns: Vec<Vec<Value>> = batch
            .columns()
            .iter()
            .zip(rowtype)
            .map(|(array, column)| arrow_column(array, column))
            .collect();
        rows.extend((0..batch.num_rows()).map(|i| columns.iter().map(|c| c[i].clone()).collect::<Vec<_>>()));
    }
    Ok(rows)
}

/// One Arrow column as values. Snowflake sends numbers as integers scaled by
/// `scale`, times of day and timestamps as scaled integers or as structs of epoch
/// seconds and nanoseconds (and a zone, which an instant does not need).
fn arrow_column(array: &ArrayRef, column: &Column) -> Vec<Value> {
    let scale = column.scale.unwrap_or(0);
    let kind = column.kind.to_ascii_lowercase();
    let integers = integers(array);
    (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                return Value::Null;
            }
            let int = integers.as_ref().map(|v| v[i]);
            match (kind.as_str(), array.data_type()) {
                ("fixed", DataType::Decimal128(..)) => {
                    // Snowflake picks the narrowest physical type per part: a whole number
                    // is an Int however it travelled, so its hash does not change.
                    let unscaled = array.as_primitive::<types::Decimal128Type>().value(i);
                    match i64::try_from(unscaled) {
                        Ok(v) if scale == 0 => Value::Int(v),
                        _ => Value::decimal(decimal_text(unscaled, scale)),
                    }
                }
                ("fixed", _) if scale == 0 => int.map_or_else(|| unsupported(column, array), Value::Int),
                ("fixed", _) => int.map_or_else(
                    || unsupported(column, array),
                    |v| Value::decimal(decimal_text(v.into(), scale)),
                ),
                ("real", DataType::Float64) => Value::Float(array.as_primitive::<types::Float64Type>().value(i)),
                ("text", DataType::Utf8) => Value::Text(array.as_string::<i32>().value(i).to_string()),
                ("variant" | "object" | "array", DataType::Utf8) => json_text(array.as_string::<i32>().value(i)),
                ("boolean", DataType::Boolean) => Value::Bool(array.as_boolean().value(i)),
                ("binary", DataType::Binary) => Value::Bytes(array.as_binary::<i32>().value(i).to_vec()),
                ("date", _) => int
                    .and_then(|days| NaiveDate::from_num_days_from_ce_opt(719_163 + days as i32))
                    .map_or_else(|| unsupported(column, array), Value::Date),
                ("time", _) => int
                    .and_then(|v| {
                        let (secs, nanos) = split_scaled(v, scale);
                        NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, nanos)
                    })
                    .map_or_else(|| unsupported(column, array), Value::Time),
                ("timestamp_ntz" | "timestamp_ltz" | "timestamp_tz", DataType::Struct(_)) => {
                    let parts = array.as_struct();
                    let epoch = struct_int(parts, "epoch", i);
                    let instant = match struct_int(parts, "fraction", i) {
                        Some(nanos) => epoch.and_then(|s| DateTime::from_timestamp(s, nanos as u32)),
                        None => epoch.and_then(|v| {
                            let (secs, nanos) = split_scaled(v, scale);
                            DateTime::from_timestamp(secs, nanos)
                        }),
                    };
                    instant.map_or_else(|| unsupported(column, array), Value::Timestamp)
                }
                ("timestamp_ntz" | "timestamp_ltz" | "timestamp_tz", _) => int
                    .and_then(|v| {
                        let (secs, nanos) = split_scaled(v, scale);
                        DateTime::from_timestamp(secs, nanos)
                    })
                    .map_or_else(|| unsupported(column, array), Value::Timestamp),
                _ => unsupported(column, array),
            }
        })
        .collect()
}

/// The column as i64s, when its physical type is an integer or a date.
fn integers(array: &ArrayRef) -> Option<Vec<i64>> {
    let widen = |values: Vec<i64>| Some(values);
    match array.data_type() {
        DataType::Int8 => widen(
            array
                .as_primitive::<types::Int8Type>()
                .values()
                .iter()
                .map(|&v| v.into())
                .collect(),
        ),
        DataType::Int16 => widen(
            array
                .as_primitive::<types::Int16Type>()
                .values()
                .iter()
                .map(|&v| v.into())
                .collect(),
        ),
        DataType::Int32 => widen(
            array
                .as_primitive::<types::Int32Type>()
                .values()
                .iter()
                .map(|&v| v.into())
                .collect(),
        ),
        DataType::Int64 => widen(array.as_primitive::<types::Int64Type>().values().to_vec()),
        DataType::Date32 => widen(
            array
                .as_primitive::<types::Date32Type>()
                .values()
                .iter()
                .map(|&v| v.into())
                .collect(),
        ),
        _ => None,
    }
}

fn struct_int(parts: &StructArray, name: &str, i: usize) -> Option<i64> {
    let field = parts.column_by_name(name)?;
    integers(field).map(|v| v[i])
}

/// A value in units of 10^-scale seconds as whole seconds and nanoseconds.
fn split_scaled(value: i64, scale: u32) -> (i64, u32) {
    let unit = 10i64.pow(scale.min(9));
    let (secs, rest) = (value.div_euclid(unit), value.rem_euclid(unit));
    (secs, (rest * 10i64.pow(9 - scale.min(9))) as u32)
}

fn unsupported(column: &Column, array: &ArrayRef) -> Value {
    Value::Unsupported(format!("{} ({})", column.kind.to_ascii_uppercase(), array.data_type()))
}

fn json_text(text: &str) -> Value {
    serde_json::from_str(text).map_or_else(|_| Value::Text(text.to_string()), Value::Json)
}

/// Rows of a JSON result: every value is text, in the form of its type.
fn json_rows(rowset: &[Vec<Option<String>>], rowtype: &[Column]) -> Vec<Vec<Value>> {
    rowset
        .iter()
        .map(|row| {
            row.iter()
                .zip(rowtype)
                .map(|(v, c)| v.as_deref().map_or(Value::Null, |text| json_value(text, c)))
                .collect()
        })
        .collect()
}

fn json_value(text: &str, column: &Column) -> Value {
    let seconds = |text: &str| {
        let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
        let nanos = format!("{frac:0<9}").get(..9)?.parse::<u32>().ok()?;
        Some((secs.parse::<i64>().ok()?, nanos))
    };
    let unsupported = || Value::Unsupported(format!("{} ({text:?})", column.kind.to_ascii_uppercase()));
    match column.kind.to_ascii_lowercase().as_str() {
        "fixed" if column.scale.unwrap_or(0) == 0 => text
            .parse()
            .map_or_else(|_| Value::decimal(text.to_string()), Value::Int),
        "fixed" => Value::decimal(text.to_string()),
        "real" => text.parse().map_or_else(|_| unsupported(), Value::Float),
        "text" => Value::Text(text.to_string()),
        "variant" | "object" | "array" => json_text(text),
        "boolean" => Value::Bool(matches!(text, "1" | "true" | "TRUE" | "True")),
        "binary" => (0..text.len())
            .step_by(2)
            .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .map_or_else(unsupported, Value::Bytes),
        "date" => text
            .parse::<i32>()
            .ok()
            .and_then(|days| NaiveDate::from_num_days_from_ce_opt(719_163 + days))
            .map_or_else(unsupported, Value::Date),
        "time" => seconds(text)
            .and_then(|(s, n)| NaiveTime::from_num_seconds_from_midnight_opt(s as u32, n))
            .map_or_else(unsupported, Value::Time),
        // TIMESTAMP_TZ adds " offset" after the instant, which is UTC already.
        "timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" => text
            .split(' ')
            .next()
            .and_then(seconds)
            .and_then(|(s, n)| DateTime::from_timestamp(s, n))
            .map_or_else(unsupported, Value::Timestamp),
        _ => unsupported(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(kind: &str, scale: u32) -> Column {
        Column {
            name: "c".into(),
            kind: kind.into(),
            scale: Some(scale),
        }
    }

    #[test]
    fn json_results_convert_like_arrow_results() {
        let t = DateTime::parse_from_rfc3339("2024-03-01T10:00:00.5Z").unwrap().to_utc();
        let cases = [
            ("fixed", 0, "42", Value::Int(42)),
            ("fixed", 2, "12.50", Value::Decimal("12.5".into())),
            (
                "fixed",
                0,
                "123456789012345678901234567890",
                Value::Decimal("123456789012345678901234567890".into()),
            ),
            ("real", 0, "0.25", Value::Float(0.25)),
            ("text", 0, "Zoë", Value::Text("Zoë".into())),
            ("variant", 0, r#"{"a":[1]}"#, Value::Json(json!({"a": [1]}))),
            ("boolean", 0, "1", Value::Bool(true)),
            ("binary", 0, "00ff", Value::Bytes(vec![0, 255])),
            (
                "date",
                0,
                "19783",
                Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()),
            ),
            (
                "time",
                9,
                "3600.5",
                Value::Time(NaiveTime::from_hms_milli_opt(1, 0, 0, 500).unwrap()),
            ),
            ("timestamp_ntz", 9, "1709287200.500000000", Value::Timestamp(t)),
            ("timestamp_tz", 9, "1709287200.500000000 1560", Value::Timestamp(t)),
        ];
        for (kind, scale, text, expected) in cases {
            assert_eq!(json_value(text, &column(kind, scale)), expected, "{kind} {text}");
        }
    }

    #[test]
    fn scaled_integers_split_into_seconds_and_nanoseconds() {
        assert_eq!(split_scaled(1_709_287_200_123, 3), (1_709_287_200, 123_000_000));
        assert_eq!(split_scaled(-1, 9), (-1, 999_999_999));
        assert_eq!(split_scaled(5, 0), (5, 0));
    }

    #[test]
    fn key_pair_tokens_name_the_account_the_user_and_the_key() {
        let pem = include_str!("../testdata/rsa_pkcs8.pem");
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let token = key_pair_jwt(pem, "xy12345.eu-west-1", "loader", now).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "XY12345.LOADER");
        assert!(claims["iss"].as_str().unwrap().starts_with("XY12345.LOADER.SHA256:"));
        assert_eq!(claims["exp"], 1_700_003_600);
    }
}
