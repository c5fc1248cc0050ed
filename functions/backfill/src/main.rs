//! Lambda entry point: build the clients once, then serve invocations.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice_backfill::handle;
use sluice_lambda::{FunctionConfig, backfiller};

// Rows are many small allocations; mimalloc spends far less time on them than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let init = sluice_lambda::init().await;
    let config = FunctionConfig::from_env()?;
    let backfiller = backfiller(&init.sdk, &config);
    init.ready();
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        handle(&backfiller, event)
    }))
    .await
}
