//! API Gateway (REST) answers: JSON bodies, and errors as
//! `{"error": {"code", "field"?, "message"}}`.

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use serde_json::{Value as Json, json};
use sluice_core::{BackendError, FieldError, StoreError};

pub fn respond(status: i64, body: &Json) -> ApiGatewayProxyResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.multi_value_headers = HeaderMap::new();
    response.body = Some(Body::Text(body.to_string()));
    response.is_base64_encoded = false;
    response
}

/// The status and code of a request the store failed: DynamoDB still failing after its
/// retries is upstream's failure (502, safe to send again); data it cannot read is ours.
pub fn store_failure(e: &StoreError) -> (i64, &'static str) {
    match e {
        StoreError::Backend { .. } => (502, "upstream"),
        StoreError::LeaseLost { .. } | StoreError::Corrupt { .. } => (500, "internal"),
    }
}

/// What the caller is told of an AWS call that failed: which call, and the service's
/// error code. Never AWS's message, which names role ARNs, the account id and resource
/// ARNs; the function's log has it whole.
pub fn upstream_message(call: &str, e: &BackendError) -> String {
    let code = e.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
    format!("{call} failed{code}; sending the request again is safe, and the function's log has the details")
}

/// [`upstream_message`] for a failed store call, else the error's own text.
pub fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::Backend { operation, source } => upstream_message(&format!("DynamoDB, {operation},"), source),
        other => other.to_string(),
    }
}

pub fn error_body(code: &str, field: Option<&str>, message: &str) -> Json {
    let mut e = json!({ "code": code, "message": message });
    if let Some(field) = field {
        e["field"] = json!(field);
    }
    json!({ "error": e })
}

/// 404 for a path no route serves, 405 for a method a route does not take.
pub fn no_route(routes: &[(&str, &str)], method: &str, resource: &str) -> ApiGatewayProxyResponse {
    if routes.iter().any(|(_, r)| *r == resource) {
        respond(
            405,
            &error_body(
                "method_not_allowed",
                None,
                &format!("{method} is not allowed on {resource}"),
            ),
        )
    } else {
        respond(
            404,
            &error_body("not_found", None, &format!("no route for {method} {resource}")),
        )
    }
}

/// The request's route: its method and resource template (`/sources/{id}`).
pub fn route(request: &ApiGatewayProxyRequest) -> (&str, &str) {
    (
        request.http_method.as_str(),
        request.resource.as_deref().unwrap_or_default(),
    )
}

pub fn path_param<'a>(request: &'a ApiGatewayProxyRequest, name: &str) -> &'a str {
    request
        .path_parameters
        .get(name)
        .map(String::as_str)
        .unwrap_or_default()
}

/// The request's JSON body; `Ok(None)` when there is none.
/// The largest request body read: a source is one DynamoDB item (at most 400 KB), and
/// nothing the API takes comes near this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn json_body(request: &ApiGatewayProxyRequest) -> Result<Option<Json>, FieldError> {
    let text = match (request.body.as_deref(), request.is_base64_encoded) {
        (None, _) => return Ok(None),
        (Some(_), true) => {
            return Err(FieldError::new(
                "body",
                "must be JSON sent as application/json, not base64-encoded binary",
            ));
        }
        (Some(b), false) => b,
    };
    if text.len() > MAX_BODY_BYTES {
        return Err(FieldError::new(
            "body",
            format!(
                "is {} bytes; a request may be at most {MAX_BODY_BYTES} (256 KiB): a source's query may be 100,000 characters",
                text.len()
            ),
        ));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| FieldError::new("body", format!("is not valid JSON: {e}")))
}
