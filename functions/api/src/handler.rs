//! The management API behind API Gateway (REST, IAM auth): sources, their test query,
//! and the import log. JSON in and out; no answer ever holds a secret value.

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use serde_json::{Value as Json, json};
use sluice_core::{AdminError, SourceAdmin};
use sluice_lambda::http::{error_body, json_body, no_route, path_param, respond, route};
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
];

/// Runs a page holds unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 20;

pub async fn handle(admin: &SourceAdmin, request: &ApiGatewayProxyRequest) -> ApiGatewayProxyResponse {
    let (method, resource) = route(request);
    let id = path_param(request, "id");
    info!(method, resource, source_id = id, "api request");
    let query = |name: &str| request.query_string_parameters.first(name);
    let body = match json_body(request) {
        Ok(body) => body,
        Err(reason) => return respond(400, &error_body("bad_request", Some("body"), &reason)),
    };
    let required = |body: Option<Json>| body.ok_or_else(|| bad("body", "is required: a JSON object"));
    let result: Result<(i64, Json), AdminError> = async {
        Ok(match (method, resource) {
            ("POST", "/sources") => (201, json!(admin.create(required(body)?).await?)),
            ("GET", "/sources") => (200, json!({ "sources": admin.list().await? })),
            ("GET", "/sources/{id}") => (200, json!(admin.get(id).await?)),
            ("PATCH", "/sources/{id}") => (200, json!(admin.patch(id, required(body)?).await?)),
            ("DELETE", "/sources/{id}") => {
                let purge = match query("purge") {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => return Err(bad("purge", &format!("is {other:?}; use true or false"))),
                };
                let purged = admin.delete(id, purge).await?;
                (200, json!({ "deleted": id, "records_purged": purged }))
            }
            ("POST", "/sources/{id}/test-query") => (200, json!(admin.test_query(id, body).await?)),
            ("GET", "/sources/{id}/runs") => {
                let limit = match query("limit") {
                    None => DEFAULT_PAGE,
                    Some(l) => l
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| bad("limit", "must be a whole number from 1 to 100"))?,
                };
                (200, json!(admin.runs(id, limit, query("before")).await?))
            }
            ("GET", "/sources/{id}/runs/{run}") => (200, json!(admin.run(id, path_param(request, "run")).await?)),
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
                AdminError::NotFound(_) | AdminError::RunNotFound { .. } => (404, "not_found", None),
                AdminError::Conflict(_) => (409, "conflict", None),
                AdminError::Secrets(_) | AdminError::Schedule(_) => (502, "upstream", None),
                AdminError::Store(_) => (500, "internal", None),
            };
            if status >= 500 {
                error!(error = %e, "api request failed");
            }
            let message = match &e {
                AdminError::BadRequest(r) => r.reason.clone(),
                other => other.to_string(),
            };
            respond(status, &error_body(code, field, &message))
        }
    }
}

fn bad(field: &str, reason: &str) -> AdminError {
    AdminError::BadRequest(sluice_core::RequestError::new(field, reason))
}
