//! BigQuery over its REST API (v2): a service-account key is exchanged for an access
//! token, the query runs as a query job with named parameters, and the rows are
//! read page by page (`pageToken`), each page only when the rows before it are
//! consumed.
//!
//! BigQuery has no read-only session, so every query is first dry-run (free) and
//! refused unless it is a SELECT, or one `CALL` of a procedure (a script to BigQuery,
//! whose last result set is the rows; the procedure's own writes are kept from it only
//! by the service account's roles); a job timeout bounds it. TIMESTAMP is UTC;
//! DATETIME has no zone and is read as UTC.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sluice_core::{Bind, ConnectionSecret, RenderedQuery, Row, SourceError, SourceErrorKind, SourceSession, Value};

use crate::web;

/// BigQuery's own fields of the secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// The service-account key file, as the JSON object Google gives.
    service_account: Option<ServiceAccountKey>,
    /// The default dataset, for table names without one.
    schema: Option<String>,
    /// The location (region) of the datasets, such as `EU` or `us-east1`.
    location: Option<String>,
}

/// A Google service-account key file; only the fields Sluice reads (the others are
/// allowed: the file is pasted whole). `Debug` never prints the key.
#[derive(Clone, Deserialize)]
pub(crate) struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

pub(crate) struct BigQuery {
    http: reqwest::Client,
    /// `.../bigquery/v2/projects/{project}`.
    base: String,
    token: Option<String>,
    secret: ConnectionSecret,
    options: Options,
    query_timeout: Duration,
}

/// Rows a page holds at most.
const PAGE_ROWS: u32 = 10_000;
/// How long one request waits for a job before it asks again.
const WAIT_MS: u64 = 10_000;

#[derive(Debug, Clone, Deserialize)]
struct Field {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryResponse {
    #[serde(default)]
    job_complete: bool,
    job_reference: Option<JobReference>,
    schema: Option<Schema>,
    #[serde(default)]
    rows: Vec<Json>,
    page_token: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

/// The answer to a dry run, a job: what BigQuery found the query to be
/// (`statistics.query.statementType`) and the columns it would return.
#[derive(Default, Deserialize)]
struct DryRun {
    #[serde(default)]
    statistics: DryRunStatistics,
}

#[derive(Default, Deserialize)]
struct DryRunStatistics {
    #[serde(default)]
    query: DryRunQuery,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DryRunQuery {
    statement_type: Option<String>,
    schema: Option<Schema>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobReference {
    /// Absent in a dry run's answer.
    job_id: Option<String>,
    location: Option<String>,
}

#[derive(Deserialize)]
struct Schema {
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize)]
struct ErrorProto {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

pub(crate) async fn connect(secret: &ConnectionSecret, query_timeout: Duration) -> Result<BigQuery, SourceError> {
    let http = web::client(Duration::from_millis(WAIT_MS) + Duration::from_secs(60))?;
    let project = &secret.database;
    let base = format!(
        "{}/bigquery/v2/projects/{project}",
        web::base_url(secret, "bigquery.googleapis.com")
    );
    let options: Options = crate::options(secret)?;
    let token = match (&options.service_account, &secret.host) {
        (Some(key), _) => Some(access_token(&http, key, secret).await?),
        // An emulator (a host of its own) takes requests without a token.
        (None, Some(_)) => None,
        (None, None) => {
            return Err(SourceError::new(
                SourceErrorKind::Config,
                "the secret has no service_account; put the service account's JSON key file in it, as an object",
            ));
        }
    };
    Ok(BigQuery {
        http,
        base,
        token,
        secret: secret.clone(),
        options,
        query_timeout,
    })
}

/// An OAuth access token for the service account (RFC 7523 JWT bearer grant).
async fn access_token(
    http: &reqwest::Client,
    key: &ServiceAccountKey,
    secret: &ConnectionSecret,
) -> Result<String, SourceError> {
    let assertion = web::jwt(
        &web::rsa_key(&key.private_key, "service_account.private_key")?,
        &token_claims(key, Utc::now()),
    )?;
    let response = http
        .post(&key.token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ])
        .send()
        .await
        .map_err(|e| web::transport(&e, secret, "getting a Google access token"))?;
    let status = response.status();
    let body: Json = response.json().await.unwrap_or_default();
    match body["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_string()),
        _ => Err(SourceError::new(
            SourceErrorKind::Auth,
            format!(
                "Google refused the service account {}: {} {}; check that the key is current and not disabled",
                key.client_email,
                body["error"].as_str().unwrap_or(status.as_str()),
                body["error_description"].as_str().unwrap_or_default()
            ),
        )),
    }
}

fn token_claims(key: &ServiceAccountKey, now: DateTime<Utc>) -> Json {
    json!({
        "iss": key.client_email,
        "scope": "https://www.googleapis.com/auth/bigquery",
        "aud": key.token_uri,
        "iat": now.timestamp(),
        "exp": now.timestamp() + 3600,
    })
}

impl BigQuery {
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<QueryResponse, SourceError> {
        let answer: QueryResponse = self.call_json(request).await?;
        if let Some(error) = answer.errors.first() {
            let kind = if error.reason == "timeout" {
                SourceErrorKind::Timeout
            } else {
                SourceErrorKind::Query
            };
            return Err(SourceError::new(
                kind,
                format!("the query failed: {} ({})", error.message, error.reason),
            ));
        }
        Ok(answer)
    }

    /// `request`'s answer as `T`, when BigQuery accepted it.
    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, SourceError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| web::transport(&e, &self.secret, "the BigQuery request"))?;
        let status = response.status();
        let body: Json = response
            .json()
            .await
            .map_err(|e| web::transport(&e, &self.secret, "reading BigQuery's answer"))?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or(status.as_str()).to_string();
            let (kind, hint) = match status.as_u16() {
                401 | 403 => (
                    SourceErrorKind::Auth,
                    "; give the service account the roles BigQuery Data Viewer (on the data) and BigQuery Job User (on the project in `database`)",
                ),
                _ => (SourceErrorKind::Query, ""),
            };
            return Err(SourceError::new(
                kind,
                format!("BigQuery refused the query: {message}{hint}"),
            ));
        }
        serde_json::from_value(body).map_err(|e| {
            SourceError::new(
                SourceErrorKind::Query,
                format!("BigQuery sent an answer Sluice cannot read: {e}"),
            )
        })
    }

    /// What describes `query` to BigQuery, in a query request and in a query job alike.
    fn query_fields(&self, query: &RenderedQuery) -> serde_json::Map<String, Json> {
        // The template writes @p1, @p2, ...: named parameters p1, p2, ...
        let parameters: Vec<Json> = query
            .binds
            .iter()
            .enumerate()
            .map(|(i, bind)| {
                let (kind, value) = match *bind {
                    Bind::Timestamp(t) => ("TIMESTAMP", t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                    Bind::UnixSeconds(s) => ("INT64", s.to_string()),
                };
                json!({"name": format!("p{}", i + 1), "parameterType": {"type": kind}, "parameterValue": {"value": value}})
            })
            .collect();
        let mut fields = serde_json::Map::new();
        fields.insert("query".into(), query.sql.as_str().into());
        fields.insert("useLegacySql".into(), false.into());
        fields.insert("parameterMode".into(), "NAMED".into());
        fields.insert("queryParameters".into(), parameters.into());
        if let Some(dataset) = &self.options.schema {
            fields.insert(
                "defaultDataset".into(),
                json!({"projectId": self.secret.database, "datasetId": dataset}),
            );
        }
        fields
    }

    /// A jobs.query request that runs `query`.
    fn request_body(&self, query: &RenderedQuery) -> Json {
        let mut body = self.query_fields(query);
        body.insert("maxResults".into(), PAGE_ROWS.into());
        body.insert("timeoutMs".into(), WAIT_MS.into());
        body.insert("jobTimeoutMs".into(), self.query_timeout.as_millis().to_string().into());
        body.insert("formatOptions".into(), json!({"useInt64Timestamp": true}));
        if let Some(location) = &self.options.location {
            body.insert("location".into(), location.as_str().into());
        }
        Json::Object(body)
    }

    /// Dry-runs `query` (free; nothing runs) as a query job, whose answer says what
    /// statement BigQuery found it to be (`statistics.query.statementType`), and refuses
    /// it unless that is a SELECT, or one CALL of a procedure; the columns it would
    /// return. Several statements are refused before anything is sent.
    async fn dry_run(&self, query: &RenderedQuery) -> Result<Vec<Field>, SourceError> {
        let one_call = match statements(&query.sql)? {
            Statements::One { call } => call,
            Statements::Several => {
                return Err(SourceError::new(
                    SourceErrorKind::Query,
                    "the query holds more than one statement; Sluice reads only: the template must be one SELECT, or one CALL of a procedure",
                ));
            }
        };
        let mut job = json!({
            "configuration": {"dryRun": true, "query": self.query_fields(query)},
            "jobReference": {"projectId": self.secret.database},
        });
        if let Some(location) = &self.options.location {
            job["jobReference"]["location"] = location.as_str().into();
        }
        let dry: DryRun = self
            .call_json(self.http.post(format!("{}/jobs", self.base)).json(&job))
            .await?;
        let DryRunQuery { statement_type, schema } = dry.statistics.query;
        match statement_type.as_deref() {
            Some("SELECT") => {}
            Some("SCRIPT") if one_call => {}
            Some(other) => {
                return Err(SourceError::new(
                    SourceErrorKind::Query,
                    format!(
                        "the query is a {other} statement; Sluice reads only: the template must be one SELECT, or one CALL of a procedure"
                    ),
                ));
            }
            None => {
                return Err(SourceError::new(
                    SourceErrorKind::Query,
                    "BigQuery's dry run of the query did not say what statement it is (no statistics.query.statementType), so Sluice cannot tell that it only reads and does not run it; Sluice reads only: the template must be one SELECT, or one CALL of a procedure",
                ));
            }
        }
        Ok(schema.map(|s| s.fields).unwrap_or_default())
    }

    /// A page of a finished (or finishing) job's results.
    async fn page(&self, job: &JobReference, page_token: Option<&str>) -> Result<QueryResponse, SourceError> {
        let mut params = vec![
            ("maxResults", PAGE_ROWS.to_string()),
            ("timeoutMs", WAIT_MS.to_string()),
            ("formatOptions.useInt64Timestamp", "true".into()),
        ];
        if let Some(location) = &job.location {
            params.push(("location", location.clone()));
        }
        if let Some(token) = page_token {
            params.push(("pageToken", token.to_string()));
        }
        self.call(
            self.http
                .get(format!(
                    "{}/queries/{}",
                    self.base,
                    job.job_id.as_deref().unwrap_or_default()
                ))
                .query(&params),
        )
        .await
    }

    /// Runs `query` after a dry run shows it only reads; the first page, complete.
    async fn start(&self, query: &RenderedQuery) -> Result<(QueryResponse, Vec<Field>), SourceError> {
        self.dry_run(query).await?;
        let mut answer = self
            .call(
                self.http
                    .post(format!("{}/queries", self.base))
                    .json(&self.request_body(query)),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + self.query_timeout;
        while !answer.job_complete {
            let job = answer
                .job_reference
                .as_ref()
                .filter(|j| j.job_id.is_some())
                .ok_or_else(|| SourceError::new(SourceErrorKind::Query, "BigQuery gave no job to wait for"))?;
            if tokio::time::Instant::now() >= deadline {
                return Err(SourceError::new(
                    SourceErrorKind::Timeout,
                    "the query ran past query_timeout_seconds; filter on a partitioned or clustered date column, narrow the window (max_window_seconds) or raise query_timeout_seconds",
                ));
            }
            answer = self.page(job, None).await?;
        }
        let fields = answer.schema.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
        Ok((answer, fields))
    }
}

#[async_trait]
impl SourceSession for BigQuery {
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError> {
        web::current_timestamp(self).await
    }

    async fn login_check(&mut self) -> sluice_core::LoginCheck {
        crate::login_check::bigquery()
    }

    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError> {
        Ok(self.dry_run(query).await?.into_iter().map(|f| f.name).collect())
    }

    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>> {
        let this = &*self;
        stream::once(this.start(query))
            .map_ok(move |(first, fields)| {
                let columns: std::sync::Arc<[String]> = fields.iter().map(|f| f.name.clone()).collect();
                let job = first.job_reference.clone();
                // Each step yields one page's rows and fetches the next page lazily.
                stream::try_unfold(Some(first), move |page| {
                    let (fields, columns, job) = (fields.clone(), columns.clone(), job.clone());
                    async move {
                        let Some(page) = page else { return Ok(None) };
                        let rows: Vec<Result<Row, SourceError>> = page
                            .rows
                            .iter()
                            .map(|row| {
                                Ok(Row {
                                    columns: columns.clone(),
                                    values: row_values(row, &fields),
                                })
                            })
                            .collect();
                        let next = match (&page.page_token, &job) {
                            (Some(token), Some(job)) => Some(this.page(job, Some(token)).await?),
                            _ => None,
                        };
                        Ok(Some((stream::iter(rows), next)))
                    }
                })
                .try_flatten()
            })
            .try_flatten()
            .boxed()
    }
}

enum Statements {
    One { call: bool },
    Several,
}

/// How many statements `sql` holds, read by BigQuery's lexical rules (comments, raw and
/// triple-quoted strings, quoted names): a `;` before the last token separates two.
/// Text that cannot be read is refused, not guessed at.
fn statements(sql: &str) -> Result<Statements, SourceError> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&sqlparser::dialect::BigQueryDialect {}, sql)
        .tokenize()
        .map_err(|e| {
            SourceError::new(
                SourceErrorKind::Query,
                format!("the query cannot be read as BigQuery SQL ({e}); correct its syntax"),
            )
        })?;
    let mut code = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_)));
    let call = code.next().is_some_and(
        |t| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("call")),
    );
    let mut rest: Vec<_> = code.collect();
    while rest.last() == Some(&&Token::SemiColon) {
        rest.pop();
    }
    Ok(if rest.contains(&&Token::SemiColon) {
        Statements::Several
    } else {
        Statements::One { call }
    })
}

/// A row of `{"f": [{"v": ...}, ...]}` as values.
fn row_values(row: &Json, fields: &[Field]) -> Vec<Value> {
    let cells = row["f"].as_array().map(Vec::as_slice).unwrap_or_default();
    fields
        .iter()
        .enumerate()
        .map(|(i, field)| cells.get(i).map_or(Value::Null, |cell| field_value(&cell["v"], field)))
        .collect()
}

fn field_value(v: &Json, field: &Field) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    if field.mode.as_deref() == Some("REPEATED") {
        let element = Field {
            mode: None,
            ..field.clone()
        };
        let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
        return Value::Array(items.iter().map(|item| field_value(&item["v"], &element)).collect());
    }
    if matches!(field.kind.as_str(), "RECORD" | "STRUCT") {
        let values = row_values(v, &field.fields);
        let object = field
            .fields
            .iter()
            .zip(values)
            .map(|(f, value)| (f.name.clone(), value.to_plain_json()))
            .collect();
        return Value::Json(Json::Object(object));
    }
    let Some(text) = v.as_str() else {
        return Value::Unsupported(format!("{} ({v})", field.kind));
    };
    let unsupported = || Value::Unsupported(format!("{} ({text:?})", field.kind));
    match field.kind.as_str() {
        "INTEGER" | "INT64" => text.parse().map_or_else(|_| unsupported(), Value::Int),
        "FLOAT" | "FLOAT64" => text.parse().map_or_else(|_| unsupported(), Value::Float),
        "NUMERIC" | "BIGNUMERIC" => Value::decimal(text.to_string()),
        "BOOLEAN" | "BOOL" => Value::Bool(text == "true"),
        "STRING" | "GEOGRAPHY" | "INTERVAL" | "RANGE" => Value::Text(text.to_string()),
        "BYTES" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_or_else(|_| unsupported(), Value::Bytes),
        "DATE" => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_or_else(|_| unsupported(), Value::Date),
        "TIME" => NaiveTime::parse_from_str(text, "%H:%M:%S%.f").map_or_else(|_| unsupported(), Value::Time),
        "DATETIME" => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .map_or_else(|_| unsupported(), |t| Value::Timestamp(t.and_utc())),
        // Microseconds since the epoch (useInt64Timestamp), or float seconds without it.
        "TIMESTAMP" => match text.parse::<i64>() {
            Ok(micros) => DateTime::from_timestamp_micros(micros),
            Err(_) => text
                .parse::<f64>()
                .ok()
                .and_then(|s| DateTime::from_timestamp_micros((s * 1e6).round() as i64)),
        }
        .map_or_else(unsupported, Value::Timestamp),
        "JSON" => serde_json::from_str(text).map_or_else(|_| unsupported(), Value::Json),
        _ => unsupported(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn one_call_is_a_call_alone_whatever_its_comments_and_strings() {
        for sql in [
            "CALL ds.sales_between(@p1, @p2)",
            "  -- the window\n call `proj.ds.p`('a;b', \"--\") ;  ",
            "/* a; b */ CALL ds.p(@p1) # trailing; comment",
        ] {
            assert!(matches!(statements(sql), Ok(Statements::One { call: true })), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "CALL ds.p(); DELETE FROM ds.t WHERE TRUE",
            "DELETE FROM ds.t WHERE TRUE; CALL ds.p()",
            "BEGIN CALL ds.p(); END",
            "CALL ds.p('it\\'s'); DROP TABLE ds.t",
            // A raw string ends at its first quote: `\'` does not escape it.
            r"CALL ds.p(r'\'); DELETE FROM ds.t WHERE TRUE; SELECT '1'",
            r"CALL ds.p('''a'b'''); DELETE FROM ds.t WHERE TRUE",
        ] {
            assert!(!matches!(statements(sql), Ok(Statements::One { call: true })), "{sql}");
        }
    }

    use super::*;

    fn field(kind: &str) -> Field {
        Field {
            name: "c".into(),
            kind: kind.into(),
            mode: None,
            fields: vec![],
        }
    }

    #[test]
    fn timestamps_read_as_microseconds_or_float_seconds() {
        let t: DateTime<Utc> = "2024-03-01T10:00:00.5Z".parse().unwrap();
        assert_eq!(
            field_value(&json!("1709287200500000"), &field("TIMESTAMP")),
            Value::Timestamp(t)
        );
        assert_eq!(
            field_value(&json!("1.7092872005E9"), &field("TIMESTAMP")),
            Value::Timestamp(t)
        );
    }

    #[test]
    fn records_and_repeated_fields_nest() {
        let record = Field {
            name: "r".into(),
            kind: "RECORD".into(),
            mode: None,
            fields: vec![
                Field {
                    name: "n".into(),
                    ..field("NUMERIC")
                },
                Field {
                    name: "tags".into(),
                    mode: Some("REPEATED".into()),
                    ..field("STRING")
                },
            ],
        };
        let v = json!({"f": [{"v": "1.50"}, {"v": [{"v": "a"}, {"v": "b"}]}]});
        assert_eq!(
            field_value(&v, &record),
            Value::Json(json!({"n": 1.5, "tags": ["a", "b"]}))
        );
    }

    #[test]
    fn service_account_tokens_ask_google_for_bigquery() {
        let key = ServiceAccountKey {
            client_email: "sluice@p.iam.gserviceaccount.com".into(),
            private_key: include_str!("../testdata/rsa_pkcs8.pem").into(),
            token_uri: "https://oauth2.googleapis.com/token".into(),
        };
        let claims = token_claims(&key, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        assert_eq!(claims["iss"], "sluice@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["exp"], 1_700_003_600);
        assert!(web::jwt(&web::rsa_key(&key.private_key, "k").unwrap(), &claims).is_ok());
    }
}
