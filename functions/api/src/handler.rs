//! The management API behind API Gateway (REST, IAM auth): sources, their test query,
//! the import log, and the connections sources share. JSON in and out; no answer ever holds a secret value.

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sluice_core::backfill::parse_instant;
use sluice_core::delivery::DeliveryError;
use sluice_core::{
    AdminError, Budget, Connection, ConnectionInput, ConnectionSecret, Deliverer, DeliveryStatus, FieldError,
    SecretsError, SourceAdmin, SourceConfig, SourceInput, TestQuery, Window, WriteKey,
};
use sluice_lambda::http::{
    error_body, json_body, no_route, path_param, respond, route, store_failure, store_message, upstream_message,
};
use tracing::{error, info};

/// The routes this function serves: `(method, resource)`.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/sources"),
    ("GET", "/sources"),
    ("GET", "/sources/{id}"),
    ("PATCH", "/sources/{id}"),
    ("DELETE", "/sources/{id}"),
    ("POST", "/sources/{id}/test-query"),
    ("GET", "/sources/{id}/runs"),
    ("GET", "/sources/{id}/runs/{run}"),
    ("GET", "/sources/{id}/deliveries"),
    ("POST", "/sources/{id}/deliveries/replay"),
    ("POST", "/connections"),
    ("GET", "/connections"),
    ("GET", "/connections/{id}"),
    ("PATCH", "/connections/{id}"),
    ("DELETE", "/connections/{id}"),
];

/// Failed calls one replay sends at most; the answer's `failed_left` says whether more wait.
const REPLAY_LIMIT: usize = 500;

/// What the API drives: sources, and the delivery of their calls.
pub struct Api {
    pub admin: SourceAdmin,
    pub deliverer: Deliverer,
}

/// Runs a page holds unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 20;

/// A replay delivers inside API Gateway's 29 s.
const REPLAY_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

pub async fn handle(api: &Api, request: &ApiGatewayProxyRequest) -> ApiGatewayProxyResponse {
    let admin = &api.admin;
    let (method, resource) = route(request);
    let id = path_param(request, "id");
    info!(method, resource, source_id = id, "api request");
    let query = |name: &str| request.query_string_parameters.first(name);
    // A page's cursor: the last id of the page before. API Gateway passes `?before=` on
    // as an empty value, which is no id.
    let cursor = |name: &'static str| match query(name) {
        Some("") => Err(bad(
            name,
            "is empty: give the id of the last item of the page before, or leave it out for the first page",
        )),
        other => Ok(other),
    };
    let body = match json_body(request) {
        Ok(body) => body,
        Err(e) => return respond(400, &error_body("bad_request", Some(&e.field), &e.reason)),
    };
    let required = |body: Option<Json>| body.ok_or_else(|| bad("body", "is required: a JSON object"));
    let result: Result<(i64, Json), AdminError> = async {
        Ok(match (method, resource) {
            ("POST", "/sources") => (
                201,
                json!(admin.create(source_input(admin, required(body)?, None)?).await?),
            ),
            ("GET", "/sources") => (200, json!({ "sources": admin.list().await? })),
            ("GET", "/sources/{id}") => (200, json!(admin.get(id).await?)),
            ("PATCH", "/sources/{id}") => {
                let current = admin.get(id).await?.config;
                let input = source_input(admin, merge_patch(&current, required(body)?)?, Some(id))?;
                (200, json!(admin.replace(id, input).await?))
            }
            ("DELETE", "/sources/{id}") => {
                let purge = match query("purge") {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => return Err(bad("purge", &format!("is {other:?}; use true or false"))),
                };
                let purged = admin.delete(id, purge).await?;
                (200, json!({ "deleted": id, "records_purged": purged }))
            }
            ("POST", "/sources/{id}/test-query") => {
                (200, json!(admin.test_query(id, test_query(admin, id, body)?).await?))
            }
            ("GET", "/sources/{id}/runs") => {
                let limit = match query("limit") {
                    None => DEFAULT_PAGE,
                    Some(l) => l
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| bad("limit", "must be a whole number from 1 to 100"))?,
                };
                (200, json!(admin.runs(id, limit, cursor("before")?).await?))
            }
            ("GET", "/sources/{id}/runs/{run}") => (200, json!(admin.run(id, path_param(request, "run")).await?)),
            ("GET", "/sources/{id}/deliveries") => {
                let status = match query("status") {
                    None => None,
                    Some(s) => Some(
                        s.parse::<DeliveryStatus>()
                            .map_err(|e| bad("status", &format!("is {s:?}; {e}")))?,
                    ),
                };
                let limit = match query("limit") {
                    None => DEFAULT_PAGE,
                    Some(l) => l
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad("limit", "must be a whole number from 1 to 1000"))?,
                };
                (200, json!(admin.deliveries(id, status, limit, cursor("after")?).await?))
            }
            ("POST", "/sources/{id}/deliveries/replay") => {
                let config = admin.get(id).await?.config;
                if config.destination.is_none() {
                    return Err(bad("destination", "the source has no destination to deliver to"));
                }
                let budget = Budget::until(Some(tokio::time::Instant::now() + REPLAY_BUDGET));
                let report = api
                    .deliverer
                    .replay_failed(&config, REPLAY_LIMIT, &budget)
                    .await
                    .map_err(|e| match e {
                        DeliveryError::Store(e) => AdminError::Store(e),
                        DeliveryError::Secrets(e) => AdminError::Secrets(e),
                        DeliveryError::NoDestination(_) => {
                            bad("destination", "the source has no destination to deliver to")
                        }
                    })?;
                let mut left = false;
                for status in [DeliveryStatus::Failed, DeliveryStatus::Waiting] {
                    left |= !admin.deliveries(id, Some(status), 1, None).await?.deliveries.is_empty();
                }
                (200, json!({ "report": report, "failed_left": left }))
            }
            ("POST", "/connections") => (
                201,
                json!(
                    admin
                        .create_connection(connection_input(required(body)?, None)?)
                        .await?
                ),
            ),
            ("GET", "/connections") => (200, json!({ "connections": admin.connections().await? })),
            ("GET", "/connections/{id}") => (200, json!(admin.connection(id).await?)),
            ("PATCH", "/connections/{id}") => {
                let current = admin.connection(id).await?.connection;
                let input = connection_input(required(body)?, Some(&current))?;
                (200, json!(admin.replace_connection(id, input).await?))
            }
            ("DELETE", "/connections/{id}") => {
                admin.delete_connection(id).await?;
                (200, json!({ "deleted": id }))
            }
            _ => return Ok((0, Json::Null)),
        })
    }
    .await;
    match result {
        Ok((0, _)) => no_route(ROUTES, method, resource),
        Ok((status, body)) => respond(status, &body),
        Err(e) => {
            let (status, code, field) = match &e {
                AdminError::BadRequest(r) => (400, "bad_request", Some(r.field.as_str())),
                AdminError::NotFound(_) | AdminError::RunNotFound { .. } | AdminError::ConnectionNotFound(_) => {
                    (404, "not_found", None)
                }
                AdminError::Conflict(_) | AdminError::ConnectionConflict(_) | AdminError::SecretTaken(_) => {
                    (409, "conflict", None)
                }
                AdminError::ConnectionInUse { .. } => (409, "in_use", None),
                AdminError::Secrets(_) | AdminError::Schedule(_) => (502, "upstream", None),
                AdminError::Store(e) => {
                    let (status, code) = store_failure(e);
                    (status, code, None)
                }
            };
            if status >= 500 {
                error!(error = %e, "api request failed");
            }
            let message = match &e {
                AdminError::BadRequest(r) => r.reason.clone(),
                AdminError::Conflict(id) => format!("{e}; change it with PATCH /sources/{id}"),
                AdminError::ConnectionConflict(id) => format!("{e}; change it with PATCH /connections/{id}"),
                AdminError::Secrets(SecretsError::Backend { id, source }) => {
                    upstream_message(&format!("Secrets Manager, for the secret `{id}`,"), source)
                }
                AdminError::Schedule(s) => upstream_message(
                    &format!(
                        "EventBridge Scheduler, {} the schedule of `{}`,",
                        s.operation, s.source_id
                    ),
                    &s.source,
                ),
                AdminError::Store(s) => store_message(s),
                other => other.to_string(),
            };
            respond(status, &error_body(code, field, &message))
        }
    }
}

fn bad(field: &str, reason: &str) -> AdminError {
    AdminError::BadRequest(FieldError::new(field, reason))
}

/// A source from a request body: a [`SourceConfig`] plus either `secret_id` (an
/// existing secret) or `connection` (stored as the secret Sluice owns). `path_id` is
/// the id the URL names, which the body must not contradict.
fn source_input(admin: &SourceAdmin, mut body: Json, path_id: Option<&str>) -> Result<SourceInput, FieldError> {
    let Some(object) = body.as_object_mut() else {
        return Err(FieldError::new("body", "must be a JSON object (a source)"));
    };
    let connection = connection_secret(object.remove("connection"))?;
    if let (Some(path_id), Some(Json::String(body_id))) = (path_id, object.get("id"))
        && body_id != path_id
    {
        return Err(FieldError::new(
            "id",
            format!("is {body_id:?} but the URL names {path_id:?}"),
        ));
    }
    let id = object.get("id").and_then(Json::as_str).unwrap_or_default().to_string();
    // A connection's id names its secret; the config keeps the secret's name, as a
    // source of the local config file does.
    match object.remove("connection_id") {
        None | Some(Json::Null) => {}
        Some(Json::String(connection_id)) => {
            if connection.is_some() {
                return Err(FieldError::new(
                    "connection_id",
                    "give either connection_id (a shared connection) or connection (the source's own), not both",
                ));
            }
            let secret_id = admin.connection_secret(&connection_id);
            match object.insert("secret_id".into(), Json::String(secret_id.clone())) {
                Some(Json::String(given)) if given != secret_id => {
                    return Err(FieldError::new(
                        "secret_id",
                        format!("is {given:?}, but connection_id names the secret {secret_id:?}: give one of them"),
                    ));
                }
                _ => {}
            }
        }
        Some(_) => return Err(FieldError::new("connection_id", "must be a connection's id, a string")),
    }
    if connection.is_some() && !object.contains_key("secret_id") {
        object.insert("secret_id".into(), Json::String(admin.owned_secret(&id)));
    }
    // A destination's write key is stored as a secret; the config keeps its name.
    let write_key = match object.get_mut("destination").and_then(Json::as_object_mut) {
        Some(destination) => match destination.remove("write_key") {
            None | Some(Json::Null) => None,
            Some(Json::String(key)) if !key.is_empty() => {
                destination
                    .entry("secret_id")
                    .or_insert_with(|| Json::String(admin.owned_write_key(&id)));
                Some(WriteKey(key))
            }
            Some(_) => {
                return Err(FieldError::new(
                    "destination.write_key",
                    "must be the write key, a string",
                ));
            }
        },
        None => None,
    };
    let config: SourceConfig = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" => serde_error(&e.inner().to_string()),
            _ => FieldError::new(path, e.inner().to_string()),
        }
    })?;
    Ok(SourceInput {
        config,
        connection,
        write_key,
    })
}

/// `current` with the top-level fields of `changes` replaced (a JSON merge patch of
/// one level); the id cannot change.
fn merge_patch(current: &SourceConfig, changes: Json) -> Result<Json, FieldError> {
    let Json::Object(changes) = changes else {
        return Err(FieldError::new("body", "must be a JSON object of the fields to change"));
    };
    let mut merged = serde_json::to_value(current).expect("configs serialize");
    if ["connection", "connection_id"].iter().any(|f| changes.contains_key(*f)) && !changes.contains_key("secret_id") {
        // The secret the config names follows the new connection.
        merged
            .as_object_mut()
            .expect("a config is an object")
            .remove("secret_id");
    }
    for (field, value) in changes {
        if field == "id" && value != Json::String(current.id.clone()) {
            return Err(FieldError::new("id", "cannot change; create a new source instead"));
        }
        merged[field] = value;
    }
    Ok(merged)
}

/// A connection secret from a request body, if it holds one.
fn connection_secret(value: Option<Json>) -> Result<Option<ConnectionSecret>, FieldError> {
    match value {
        None | Some(Json::Null) => Ok(None),
        // Never serde's own text: it quotes the value, a password say.
        Some(c) => ConnectionSecret::from_value(c)
            .map(Some)
            .map_err(|e| FieldError::new("connection", e)),
    }
}

/// A connection from a request body: what it is, and its `connection` (the secret to
/// store). For a change, `current` with the body's fields replaced; `engine` may be
/// left to the secret's.
fn connection_input(mut body: Json, current: Option<&Connection>) -> Result<ConnectionInput, FieldError> {
    let Some(object) = body.as_object_mut() else {
        return Err(FieldError::new("body", "must be a JSON object (a connection)"));
    };
    let secret = connection_secret(object.remove("connection"))?;
    let mut merged = match current {
        Some(current) => {
            if let Some(id) = object.get("id")
                && id != &Json::String(current.id.clone())
            {
                return Err(FieldError::new("id", "cannot change; create a new connection instead"));
            }
            serde_json::to_value(current).expect("connections serialize")
        }
        None => json!({}),
    };
    for (field, value) in std::mem::take(object) {
        merged[field] = value;
    }
    if let Some(secret) = &secret
        && merged.get("engine").is_none()
    {
        merged["engine"] = json!(secret.engine);
    }
    let connection: Connection = serde_path_to_error::deserialize(merged).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" => serde_error(&e.inner().to_string()),
            _ => FieldError::new(path, e.inner().to_string()),
        }
    })?;
    Ok(ConnectionInput { connection, secret })
}

/// The body of a test query: an unsaved source (and its connection), and a window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestQueryBody {
    source: Option<Json>,
    connection: Option<Json>,
    window: Option<WindowBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    last_update_time: String,
    upper_date_limit: String,
}

fn test_query(admin: &SourceAdmin, id: &str, body: Option<Json>) -> Result<TestQuery, FieldError> {
    let body: TestQueryBody = match body {
        None => TestQueryBody::default(),
        Some(b) => serde_json::from_value(b).map_err(|e| serde_error(&e.to_string()))?,
    };
    let window = body
        .window
        .map(|w| {
            Ok::<_, FieldError>(Window {
                from: parse_instant("window.last_update_time", &w.last_update_time)?,
                to: parse_instant("window.upper_date_limit", &w.upper_date_limit)?,
            })
        })
        .transpose()?;
    let source = match body.source {
        None => None,
        Some(source) if !source.is_object() => {
            return Err(FieldError::new("source", "must be a JSON object (a source)"));
        }
        Some(mut source) => {
            if let Some(connection) = body.connection {
                source["connection"] = connection;
            }
            if source.get("id").is_none() {
                source["id"] = Json::String(id.into());
            }
            Some(source_input(admin, source, Some(id))?)
        }
    };
    Ok(TestQuery { source, window })
}

/// A serde message as a field error: the field a missing or unknown field message
/// names, else the body.
fn serde_error(message: &str) -> FieldError {
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        // A key named "" names nothing: the body holds it.
        .filter(|field| !field.is_empty())
        .unwrap_or("body");
    FieldError::new(field, message)
}
