//! Lambda entry point: build the clients once, then serve stream batches.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sluice_deliver::{Delivery, Event, dispatch};
use sluice_lambda::{FunctionConfig, deliverer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let init = sluice_lambda::init().await;
    let config = FunctionConfig::from_env()?;
    let delivery = &Delivery {
        store: Arc::new(sluice_lambda::store(&init.sdk, &config)),
        deliverer: deliverer(&init.sdk, &config)?,
        dead_letters: sluice_lambda::dead_letters(&init.sdk),
        metrics_namespace: Some(config.metrics_namespace.clone()),
    };
    init.ready();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| dispatch(delivery, event))).await
}
