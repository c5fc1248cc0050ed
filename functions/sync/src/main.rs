//! Lambda entry point: build the clients once, then serve invocations.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice_lambda::{FunctionConfig, sync_service};
use sluice_sync::{SyncEvent, handle};

// Rows are many small allocations; mimalloc spends far less time on them than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let init = sluice_lambda::init().await;
    let config = FunctionConfig::from_env()?;
    let service = sync_service(&init.sdk, &config);
    init.ready();
    lambda_runtime::run(service_fn(|event: LambdaEvent<SyncEvent>| handle(&service, event))).await
}
