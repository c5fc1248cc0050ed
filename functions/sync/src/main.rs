//! Lambda entry point: build the clients once, then serve invocations.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice_lambda::{FunctionConfig, init_tracing, sync_service};
use sluice_sync::{SyncEvent, handle};

// Rows are many small allocations; mimalloc spends far less time on them than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let config = FunctionConfig::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let service = sync_service(&sdk, &config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<SyncEvent>| handle(&service, event))).await
}
