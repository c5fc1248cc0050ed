//! The backfill function. Three kinds of invocation reach it:
//! - API Gateway (REST, IAM auth): `POST|GET /sources/{id}/backfills`,
//!   `GET|DELETE /sources/{id}/backfills/{job}`;
//! - `sluice.backfill.requested` from EventBridge, put by the POST: work on that job now;
//! - the pump schedule's `{"action": "pump"}`, every minute: work on every active job
//!   whose work stopped (crash, timeout, throttling, a busy source).

use std::time::Duration;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;
use serde_json::{Value as Json, json};
use sluice_aws::{BACKFILL_REQUESTED, BackfillRequested};
use sluice_core::{Backfill, BackfillError, BackfillRequest, Backfiller, Budget, Progress};
use sluice_lambda::http::{error_body, json_body, no_route, path_param, respond, route, store_failure, store_message};
use tracing::{error, info};

/// Time kept back from the function timeout to save the job and log the last run.
pub const FINISH_MARGIN: Duration = Duration::from_secs(30);

/// Jobs a list answer holds at most.
const LIST_LIMIT: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(
        "unrecognised event: expected an API Gateway request, a {BACKFILL_REQUESTED} event or {{\"action\": \"pump\"}}"
    )]
    UnknownEvent,
    #[error("backfill work failed: {0}")]
    Work(#[from] BackfillError),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Self {
        let error_type = match e {
            HandlerError::UnknownEvent => "Sluice.UnknownEvent",
            HandlerError::Work(_) => "Sluice.BackfillFailed",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// A job as the API shows it: the job, its totals, the errors of failed chunks.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    #[serde(flatten)]
    pub job: &'a Backfill,
    pub progress: Progress,
    pub errors: Vec<String>,
}

impl<'a> JobView<'a> {
    pub fn new(job: &'a Backfill) -> Self {
        JobView {
            job,
            progress: job.progress(),
            errors: job.errors(),
        }
    }
}

/// One invocation, whichever kind it is.
pub async fn handle(backfiller: &Backfiller, event: LambdaEvent<Json>) -> Result<Json, HandlerError> {
    let payload = event.payload;
    if payload.get("httpMethod").is_some() {
        let request: ApiGatewayProxyRequest =
            serde_json::from_value(payload).map_err(|_| HandlerError::UnknownEvent)?;
        let response = api(backfiller, &request).await;
        return Ok(serde_json::to_value(response).expect("responses serialize"));
    }
    let budget = Budget::until(sluice_lambda::deadline(&event.context, FINISH_MARGIN));
    if payload.get("detail-type").and_then(Json::as_str) == Some(BACKFILL_REQUESTED) {
        let requested: BackfillRequested =
            serde_json::from_value(payload["detail"].clone()).map_err(|_| HandlerError::UnknownEvent)?;
        let job = backfiller.work(&requested.source_id, &budget, &|_| {}).await?;
        return Ok(json!({ "worked_on": job.as_ref().map(JobView::new) }));
    }
    if payload.get("action").and_then(Json::as_str) == Some("pump") {
        let jobs = backfiller.pump(&budget).await?;
        let views: Vec<JobView> = jobs.iter().map(JobView::new).collect();
        return Ok(json!({ "worked_on": views }));
    }
    Err(HandlerError::UnknownEvent)
}

/// The routes this function serves: `(method, resource)`.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/sources/{id}/backfills"),
    ("GET", "/sources/{id}/backfills"),
    ("GET", "/sources/{id}/backfills/{job}"),
    ("DELETE", "/sources/{id}/backfills/{job}"),
];

/// The API: every answer is JSON, every error says what and why.
pub async fn api(backfiller: &Backfiller, request: &ApiGatewayProxyRequest) -> ApiGatewayProxyResponse {
    let (method, resource) = route(request);
    let (source_id, job_id) = (path_param(request, "id"), path_param(request, "job"));
    info!(method, resource, source_id, job_id, "backfill api request");
    let result = match (method, resource) {
        ("POST", "/sources/{id}/backfills") => match parse_body(request) {
            Ok(body) => backfiller
                .create(source_id, &body)
                .await
                .map(|job| (202, view(&job, true))),
            Err(e) => Err(e),
        },
        ("GET", "/sources/{id}/backfills") => backfiller.list(source_id, LIST_LIMIT).await.map(|jobs| {
            let views: Vec<Json> = jobs.iter().map(|j| view(j, false)).collect();
            (200, json!({ "backfills": views }))
        }),
        ("GET", "/sources/{id}/backfills/{job}") => backfiller
            .get(source_id, job_id)
            .await
            .map(|job| (200, view(&job, true))),
        ("DELETE", "/sources/{id}/backfills/{job}") => backfiller
            .cancel(source_id, job_id)
            .await
            .map(|job| (202, view(&job, true))),
        _ => return no_route(ROUTES, method, resource),
    };
    match result {
        Ok((status, body)) => respond(status, &body),
        Err(e) => {
            let (status, code, field) = match &e {
                BackfillError::BadRequest(r) => (400, "bad_request", Some(r.field.as_str())),
                BackfillError::SourceNotFound(_) | BackfillError::JobNotFound { .. } => (404, "not_found", None),
                BackfillError::Conflict { .. } => (409, "conflict", None),
                BackfillError::Store(e) => {
                    let (status, code) = store_failure(e);
                    (status, code, None)
                }
            };
            if status >= 500 {
                error!(error = %e, "backfill api request failed");
            }
            let message = match &e {
                BackfillError::BadRequest(r) => r.reason.clone(),
                BackfillError::Conflict { source_id, existing } => {
                    format!("{e} (DELETE /sources/{source_id}/backfills/{existing})")
                }
                BackfillError::Store(s) => store_message(s),
                other => other.to_string(),
            };
            let mut body = error_body(code, field, &message);
            if let BackfillError::Conflict { existing, .. } = &e {
                body["error"]["existing_backfill_id"] = json!(existing);
            }
            respond(status, &body)
        }
    }
}

fn parse_body(request: &ApiGatewayProxyRequest) -> Result<BackfillRequest, BackfillError> {
    let bad = |reason: String| BackfillError::BadRequest(sluice_core::FieldError::new("body", reason));
    match json_body(request)? {
        None => Err(bad(
            r#"is empty; send {"start": "2024-01-01", "end": "2024-04-01", "chunk": "1d"}"#.into(),
        )),
        Some(body) => serde_json::from_value(body).map_err(|e| bad(format!("is not a valid backfill request: {e}"))),
    }
}

fn view(job: &Backfill, with_chunks: bool) -> Json {
    let mut v = serde_json::to_value(JobView::new(job)).expect("jobs serialize");
    if !with_chunks && let Some(o) = v.as_object_mut() {
        o.remove("chunks");
    }
    v
}
