//! AWS adapters: the DynamoDB store, connection secrets in Secrets Manager, one
//! EventBridge Scheduler schedule per source, and Sluice's events on EventBridge. Clients are built once per process.

mod dynamo;
#[cfg(feature = "events")]
mod events;
mod item;
#[cfg(feature = "queues")]
mod queues;
#[cfg(feature = "schedules")]
mod schedules;
#[cfg(feature = "secrets")]
mod secrets;

pub use dynamo::{DynamoStore, TableNames};

/// A Records-table stream image (DynamoDB's JSON form) as the source id and the record
/// it holds, read as the store reads records back; `None` when it is not a record.
pub fn record_of_image(
    image: &serde_json::Map<String, serde_json::Value>,
) -> Option<(String, sluice_core::StoredRecord)> {
    let item = item::item_from_json(image)?;
    let source_id = item::s(&item, "source_id")?;
    Some((source_id, item::stored_record(&item)))
}
#[cfg(feature = "events")]
pub use events::{BACKFILL_REQUESTED, BackfillRequested, EventBridgeEvents, RUN_COMPLETED};
#[cfg(feature = "queues")]
pub use queues::DeadLetterQueue;
#[cfg(feature = "schedules")]
pub use schedules::{ScheduleTarget, SchedulerSchedules, rate_expression};
#[cfg(feature = "secrets")]
pub use secrets::SecretsManagerSecrets;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use sluice_core::BackendError;

/// What an AWS service said, as the one error type every AWS adapter returns: its own
/// code and message when it refused a request (the SDK's full context would dump the
/// raw response into the run log), the full context for transport failures (which name
/// the endpoint and the cause).
pub(crate) fn aws_error<E, R>(e: SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(refusal) => {
            let code = refusal.code().unwrap_or("an unnamed service error");
            let mut message = refusal.message().unwrap_or("no message").to_string();
            if THROTTLING.contains(&code) {
                message.push_str(&format!(
                    " (still throttled after {MAX_ATTEMPTS} attempts; {TRY_AGAIN}: raise the service's limit (a DynamoDB table: on-demand capacity or more throughput) or run fewer sources at once)"
                ));
            } else if SERVER_ERRORS.contains(&code) {
                message.push_str(&still_failing());
            }
            BackendError::new(Some(code.to_string()), message)
        }
        None => BackendError::message(DisplayErrorContext(e).to_string() + &still_failing()),
    }
}

/// Said of a call that failed on AWS's side or on the way every time it was tried.
fn still_failing() -> String {
    format!(" (still failing after {MAX_ATTEMPTS} attempts; {TRY_AGAIN})")
}

/// What a caller may do after a failed AWS call: every write Sluice makes is safe to
/// repeat (upserts, conditional watermarks, creates that find their own earlier work).
const TRY_AGAIN: &str = "nothing done is lost, and the next run, or the request sent again, does the rest";

/// How long one attempt of an AWS call may take before it is tried again. The SDK has
/// no such limit by default, so an answer that never came held a run until the
/// function's timeout; DynamoDB answers a batch in milliseconds.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Attempts of one AWS call (throttling, 5xx, a reset or timed-out connection), with
/// the SDK's exponential backoff and jitter between them.
pub const MAX_ATTEMPTS: u32 = 5;

/// The codes of AWS's own failures (HTTP 5xx), which the SDK retries.
const SERVER_ERRORS: [&str; 5] = [
    "InternalServerError",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceErrorException",
    "ServiceUnavailable",
];

/// The codes AWS answers a caller over its throughput with.
const THROTTLING: [&str; 4] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
];

/// Loads the shared AWS configuration (region, credentials), with attempt timeouts and
/// retries. `AWS_ENDPOINT_URL` (or `endpoint_url`) points every client at a local
/// endpoint such as moto.
pub async fn sdk_config(endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
