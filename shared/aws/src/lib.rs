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
        Some(refusal) => BackendError::new(
            Some(refusal.code().unwrap_or("an unnamed service error").to_string()),
            refusal.message().unwrap_or("no message"),
        ),
        None => BackendError::message(DisplayErrorContext(e).to_string()),
    }
}

/// Loads the shared AWS configuration (region, credentials). `AWS_ENDPOINT_URL` (or
/// `endpoint_url`) points every client at a local endpoint such as moto.
pub async fn sdk_config(endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
