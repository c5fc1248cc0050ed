//! What every Sluice Lambda function shares: its settings from the environment, the
//! clients and services built once at init, JSON logs, and the time budget.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use sluice_aws::{
    DeadLetterQueue, DynamoStore, EventBridgeEvents, ScheduleTarget, SchedulerSchedules, SecretsManagerSecrets,
    TableNames,
};
use sluice_core::backfiller::BackfillSettings;
use sluice_core::delivery::{DeliverySettings, SendError};
use sluice_core::{Backfiller, Deliverer, PreviewLimits, SourceAdmin, SyncService, SyncSettings, SystemClock};
use sluice_destinations::{AddressPolicy, HttpSender};
use sluice_sources::SqlReader;

pub mod http;
mod metrics;

pub use metrics::{EmfMetrics, emf};

/// A setting of the function's environment that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("the environment variable {0} is not set (template.yaml sets it)")]
    Missing(&'static str),
    #[error("{name} must be whole seconds, got {value:?}")]
    NotSeconds { name: &'static str, value: String },
    #[error("{name} must be a whole number, got {value:?}")]
    NotWhole { name: &'static str, value: String },
    #[error("{name} is {value} but must be {bound}")]
    OutOfRange {
        name: &'static str,
        value: u64,
        bound: &'static str,
    },
}

fn var(name: &'static str) -> Result<String, EnvError> {
    std::env::var(name).map_err(|_| EnvError::Missing(name))
}

/// Settings of a function, from its environment (template.yaml sets them).
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub tables: TableNames,
    /// `SLUICE_EVENT_BUS`, default `default`.
    pub event_bus: String,
    /// `SLUICE_LEASE_SECONDS`: the function timeout plus a margin; default 960.
    pub lease: Duration,
    /// `SLUICE_BACKFILL_RETRY_SECONDS`: the first wait before a failed chunk runs again;
    /// default 30.
    pub backfill_retry: Duration,
    /// `SLUICE_SCHEDULE_GROUP`: where the sources' schedules live, so the sync can adapt
    /// their rate; without it the adaptive frequency is only recorded.
    pub schedule_group: Option<String>,
    /// `SLUICE_METRICS_NAMESPACE`: the CloudWatch namespace of the runs' metrics; default
    /// `Sluice`.
    pub metrics_namespace: String,
    /// `SLUICE_DESTINATIONS_ALLOW_LOOPBACK`: destinations on loopback, for local runs
    /// only (template.yaml never sets it).
    pub destinations: AddressPolicy,
}

fn seconds(name: &'static str, default: u64) -> Result<Duration, EnvError> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| EnvError::NotSeconds { name, value }),
        Err(_) => Ok(Duration::from_secs(default)),
    }
}

/// `SLUICE_SOURCES_TABLE`, `SLUICE_RECORDS_TABLE`, `SLUICE_RUNS_TABLE` and
/// `SLUICE_MEMBERS_TABLE` (set by template.yaml).
fn tables() -> Result<TableNames, EnvError> {
    Ok(TableNames {
        sources: var("SLUICE_SOURCES_TABLE")?,
        records: var("SLUICE_RECORDS_TABLE")?,
        runs: var("SLUICE_RUNS_TABLE")?,
        members: var("SLUICE_MEMBERS_TABLE")?,
    })
}

impl FunctionConfig {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(FunctionConfig {
            tables: tables()?,
            event_bus: std::env::var("SLUICE_EVENT_BUS").unwrap_or_else(|_| "default".into()),
            lease: seconds("SLUICE_LEASE_SECONDS", 960)?,
            backfill_retry: seconds("SLUICE_BACKFILL_RETRY_SECONDS", 30)?,
            schedule_group: std::env::var("SLUICE_SCHEDULE_GROUP").ok(),
            metrics_namespace: std::env::var("SLUICE_METRICS_NAMESPACE").unwrap_or_else(|_| "Sluice".into()),
            destinations: AddressPolicy::from_env(),
        })
    }
}

/// What the management API needs besides: where schedules go, where secrets live.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub function: FunctionConfig,
    /// `SLUICE_SCHEDULE_GROUP`, `SLUICE_SYNC_FUNCTION_ARN`, `SLUICE_SCHEDULER_ROLE_ARN`,
    /// `SLUICE_SCHEDULE_DLQ_ARN`.
    pub schedules: ScheduleTarget,
    /// `SLUICE_SECRETS_PREFIX`: secrets the API creates are named `{prefix}{source_id}`.
    pub secrets_prefix: String,
    /// `SLUICE_TEST_QUERY_SECONDS` (default 25, at most 28: API Gateway gives up after
    /// 29 s) and `SLUICE_TEST_QUERY_MAX_ROWS` (default 100,000).
    pub test_query: PreviewLimits,
}

/// The test query's time limit: the answer must reach API Gateway before its 29 s
/// integration timeout, or the caller gets a 504 while the database keeps working.
const TEST_QUERY_SECONDS: u64 = 25;
const GATEWAY_SECONDS: u64 = 29;

fn test_query_limits() -> Result<PreviewLimits, EnvError> {
    let time = seconds("SLUICE_TEST_QUERY_SECONDS", TEST_QUERY_SECONDS)?;
    if time.is_zero() || time.as_secs() >= GATEWAY_SECONDS {
        return Err(EnvError::OutOfRange {
            name: "SLUICE_TEST_QUERY_SECONDS",
            value: time.as_secs(),
            bound: "from 1 to 28 (API Gateway answers 504 after 29 s)",
        });
    }
    let rows = match std::env::var("SLUICE_TEST_QUERY_MAX_ROWS") {
        Ok(value) => value.parse().map_err(|_| EnvError::NotWhole {
            name: "SLUICE_TEST_QUERY_MAX_ROWS",
            value,
        })?,
        Err(_) => PreviewLimits::default().rows,
    };
    Ok(PreviewLimits { time: Some(time), rows })
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(ApiConfig {
            function: FunctionConfig::from_env()?,
            schedules: ScheduleTarget {
                group: var("SLUICE_SCHEDULE_GROUP")?,
                function_arn: var("SLUICE_SYNC_FUNCTION_ARN")?,
                role_arn: var("SLUICE_SCHEDULER_ROLE_ARN")?,
                dead_letter_arn: std::env::var("SLUICE_SCHEDULE_DLQ_ARN").ok(),
            },
            secrets_prefix: std::env::var("SLUICE_SECRETS_PREFIX").unwrap_or_else(|_| "sluice/".into()),
            test_query: test_query_limits()?,
        })
    }
}

/// Builds the clients and the source admin service once, at init.
pub fn source_admin(sdk: &aws_config::SdkConfig, config: &ApiConfig) -> SourceAdmin {
    let secrets = Arc::new(SecretsManagerSecrets::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        Duration::from_secs(300),
    ));
    SourceAdmin::new(
        Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.function.tables.clone(),
        )),
        Arc::new(SqlReader),
        secrets.clone(),
        secrets,
        Arc::new(SchedulerSchedules::new(
            aws_sdk_scheduler::Client::new(sdk),
            config.schedules.clone(),
        )),
        config.secrets_prefix.clone(),
    )
    .with_test_query_limits(config.test_query)
}

/// Builds the clients and the sync service once, at init.
pub fn sync_service(sdk: &aws_config::SdkConfig, config: &FunctionConfig) -> SyncService {
    let service = SyncService::new(
        Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            config.tables.clone(),
        )),
        Arc::new(SqlReader),
        Arc::new(SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            Duration::from_secs(300),
        )),
        Arc::new(EventBridgeEvents::new(
            aws_sdk_eventbridge::Client::new(sdk),
            config.event_bus.clone(),
        )),
        SyncSettings {
            lease: config.lease,
            ..SyncSettings::default()
        },
    )
    .with_observer(Arc::new(EmfMetrics {
        namespace: config.metrics_namespace.clone(),
    }));
    match &config.schedule_group {
        Some(group) => service.with_schedules(Arc::new(SchedulerSchedules::rates_only(
            aws_sdk_scheduler::Client::new(sdk),
            group.clone(),
        ))),
        None => service,
    }
}

/// The DynamoDB store, built once at init.
pub fn store(sdk: &aws_config::SdkConfig, config: &FunctionConfig) -> DynamoStore {
    DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config.tables.clone())
}

/// `SLUICE_DELIVERY_DLQ_URL`: where calls that cannot be delivered go, with their
/// reason (template.yaml sets it).
pub fn dead_letters(sdk: &aws_config::SdkConfig) -> Option<DeadLetterQueue> {
    std::env::var("SLUICE_DELIVERY_DLQ_URL")
        .ok()
        .map(|url| DeadLetterQueue::new(aws_sdk_sqs::Client::new(sdk), url))
}

/// Builds the delivery of calls (HTTPS to the sources' destinations) once, at init.
pub fn deliverer(sdk: &aws_config::SdkConfig, config: &FunctionConfig) -> Result<Deliverer, SendError> {
    Ok(Deliverer {
        sender: Arc::new(HttpSender::new(config.destinations)?),
        secrets: Arc::new(SecretsManagerSecrets::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            Duration::from_secs(300),
        )),
        store: Arc::new(store(sdk, config)),
        clock: Arc::new(SystemClock),
        settings: DeliverySettings::default(),
    })
}

/// Builds the backfill service (over its own sync service) once, at init.
pub fn backfiller(sdk: &aws_config::SdkConfig, config: &FunctionConfig) -> Backfiller {
    Backfiller::new(
        Arc::new(sync_service(sdk, config)),
        BackfillSettings {
            retry_base: config.backfill_retry,
            ..BackfillSettings::default()
        },
    )
}

/// The instant this invocation must be done by, keeping `margin` in hand.
/// `None` when the invocation carries no deadline in the future (local runtimes may
/// send none): the work then runs to its end.
pub fn deadline(context: &lambda_runtime::Context, margin: Duration) -> Option<Instant> {
    let remaining = context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
    tracing::debug!(remaining_ms = remaining.as_millis() as u64, "invocation time budget");
    if remaining.is_zero() {
        tracing::warn!(
            deadline_ms = context.deadline,
            "the invocation's deadline has passed already; working without one"
        );
        return None;
    }
    // A function given a short timeout keeps a fifth of it in hand, not the whole margin.
    Some(Instant::now() + remaining.saturating_sub(margin.min(remaining / 5)))
}

/// What a function's init builds first: its JSON logs and the SDK's configuration.
pub struct Init {
    started: Instant,
    pub sdk: aws_config::SdkConfig,
}

/// Starts a function's init: JSON logs, then the SDK's configuration.
pub async fn init() -> Init {
    let started = Instant::now();
    init_tracing();
    Init {
        started,
        sdk: sdk_config().await,
    }
}

/// The SDK configuration the functions run with: region and credentials from the Lambda
/// environment, and the same attempt timeouts and retries as the CLI and the fault
/// suite (`sluice_aws::sdk_config`), so the fault figures describe what production runs.
pub async fn sdk_config() -> aws_config::SdkConfig {
    sluice_aws::sdk_config(None).await
}

impl Init {
    /// Ends the init, once the clients are built: logs how long it took, the part of a
    /// cold start that is ours.
    pub fn ready(self) {
        tracing::info!(
            init_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "clients built; serving invocations"
        );
    }
}

/// JSON logs for CloudWatch at the level `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` names
/// (`error`, `warn`, `info`, `debug`, `trace`; default `info`). A plain level rather than
/// per-target filters keeps `regex` out of the binary.
fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .ok()
        .and_then(|l| l.to_lowercase().parse().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(seconds_left: u64) -> lambda_runtime::Context {
        let mut context = lambda_runtime::Context::default();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        context.deadline = (now + Duration::from_secs(seconds_left)).as_millis() as u64;
        context
    }

    #[test]
    fn the_margin_is_kept_but_never_more_than_a_fifth_of_the_time_left() {
        let left = |d: Instant| (d - Instant::now()).as_secs_f64();
        let long = left(deadline(&context(900), Duration::from_secs(60)).unwrap());
        assert!((838.0..=841.0).contains(&long), "{long}");
        let short = left(deadline(&context(30), Duration::from_secs(60)).unwrap());
        assert!((23.0..=24.5).contains(&short), "{short}");
        assert!(deadline(&lambda_runtime::Context::default(), Duration::from_secs(60)).is_none());
    }
}
