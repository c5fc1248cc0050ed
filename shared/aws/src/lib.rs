//! AWS adapters: the DynamoDB store, connection secrets in Secrets Manager, one
//! EventBridge Scheduler schedule per source, and Sluice's events on EventBridge. Clients are built once per process.

mod dynamo;
mod events;
mod item;
mod schedules;
mod secrets;

pub use dynamo::{DynamoStore, TableNames};
pub use events::{BACKFILL_REQUESTED, BackfillRequested, EventBridgeEvents, RUN_COMPLETED};
pub use schedules::{ScheduleTarget, SchedulerSchedules, rate_expression};
pub use secrets::SecretsManagerSecrets;

/// Loads the shared AWS configuration (region, credentials). `AWS_ENDPOINT_URL` (or
/// `endpoint_url`) points every client at a local endpoint such as moto.
pub async fn sdk_config(endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
