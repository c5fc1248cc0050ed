//! The functions build their AWS clients as the CLI and the fault suite do: the same
//! attempt timeout and retries, so the fault figures describe what production runs.

use sluice_tests::*;

#[tokio::test]
async fn the_functions_clients_have_the_fault_suites_timeouts_and_retries_and_reach_aws() {
    // `sdk()` sets the Lambda-like environment (credentials, region, endpoint) and loads
    // the configuration through `sluice_lambda::sdk_config`, as a function's init does.
    let sdk = sdk().await;
    assert_eq!(
        sdk.timeout_config().and_then(|t| t.operation_attempt_timeout()),
        Some(sluice_aws::ATTEMPT_TIMEOUT)
    );
    assert_eq!(
        sdk.retry_config().map(|r| r.max_attempts()),
        Some(sluice_aws::MAX_ATTEMPTS)
    );
    // And the clients built from it reach the endpoint the environment names.
    let store = dynamo_store().await;
    let table = aws_sdk_dynamodb::Client::new(&sdk)
        .describe_table()
        .table_name(&store.tables().sources)
        .send()
        .await
        .unwrap();
    assert_eq!(
        table.table().and_then(|t| t.table_name()),
        Some(store.tables().sources.as_str())
    );
}
