//! Lambda entry point: build the clients once, then serve invocations.

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice_api::{Api, handle};
use sluice_lambda::{ApiConfig, deliverer, source_admin};

// Rows are many small allocations; mimalloc spends far less time on them than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let init = sluice_lambda::init().await;
    let config = ApiConfig::from_env()?;
    let api = &Api {
        admin: source_admin(&init.sdk, &config),
        deliverer: deliverer(&init.sdk, &config.function)?,
    };
    init.ready();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayProxyRequest>| async move {
        Ok::<_, Error>(handle(api, &event.payload).await)
    }))
    .await
}
