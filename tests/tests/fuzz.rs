//! The management API fuzzed through its OpenAPI document: schemathesis (PyPI) sends
//! generated requests (odd ids, unicode, huge bodies and templates, extreme dates and
//! numbers, wrong types) to the API and backfill handlers served on loopback as API
//! Gateway serves them (tests/src/gateway.rs), over moto. No answer may be a 5xx,
//! every 400 must name its field, answers must match the document, and none may hold
//! the secret a source was created with.

use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;
use sluice_aws::ScheduleTarget;
use sluice_lambda::{ApiConfig, FunctionConfig, backfiller, deliverer, source_admin};
use sluice_tests::gateway::LocalGateway;
use sluice_tests::*;

const PASSWORD: &str = "pw-fuzz-never-in-an-answer-7d1e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_generated_requests_get_no_5xx_and_every_400_names_its_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schemathesis = root.join(".venv-fuzz/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis is not in .venv-fuzz: run the tests with `bash infra/test.sh`, which installs it"
    );
    let sdk = sdk().await;
    let store = dynamo_store().await;
    let group = unique("fuzz");
    aws_sdk_scheduler::Client::new(&sdk)
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .unwrap();
    let function = FunctionConfig {
        tables: store.tables().clone(),
        event_bus: "default".into(),
        lease: std::time::Duration::from_secs(960),
        backfill_retry: std::time::Duration::from_secs(30),
        schedule_group: Some(group.clone()),
        metrics_namespace: "Sluice/test".into(),
    };
    let config = ApiConfig {
        function: function.clone(),
        schedules: ScheduleTarget {
            group,
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:sluice-sync".into(),
            role_arn: "arn:aws:iam::123456789012:role/sluice-scheduler".into(),
            dead_letter_arn: None,
        },
        secrets_prefix: format!("{}/", unique("fuzz")),
    };
    let gateway = LocalGateway::start(
        sluice_api::Api {
            admin: source_admin(&sdk, &config),
            deliverer: deliverer(&sdk, &function).unwrap(),
        },
        backfiller(&sdk, &function),
    )
    .await;

    // One real source, so that generated requests also reach existing resources.
    let db = Database::new(sluice_core::Engine::Postgres).await;
    db.create_sales(10).await;
    let mut connection = db.secret.clone();
    connection["password"] = PASSWORD.into();
    let body = serde_json::json!({"id": "fuzz-source", "name": "Sales", "engine": "postgres",
        "sync_type": "registration", "query": SALES_QUERY, "connection": connection});
    let created = reqwest::Client::new()
        .post(format!("{}/sources", gateway.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        [201, 409].contains(&created.status().as_u16()),
        "{:?}",
        created.text().await
    );

    let url = gateway.url();
    let report = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .current_dir(&root)
            .args([
                "run",
                "openapi.yaml",
                "--url",
                &url,
                "--workers",
                "2",
                "--max-examples",
                "90",
            ])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args([
                "--phases",
                "examples,coverage,fuzzing",
                "--suppress-health-check",
                "all",
            ])
            .args(["--seed", "15", "--generation-database", "none"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let output = String::from_utf8_lossy(&report.stdout).into_owned() + &String::from_utf8_lossy(&report.stderr);

    let exchanges = gateway.exchanges();
    let server_errors: Vec<_> = exchanges.iter().filter(|(s, _, _)| *s >= 500).collect();
    let unnamed: Vec<_> = exchanges
        .iter()
        .filter(|(s, _, body)| {
            *s == 400
                && serde_json::from_str::<Json>(body)
                    .ok()
                    .and_then(|b| b["error"]["field"].as_str().map(|f| !f.is_empty()))
                    != Some(true)
        })
        .collect();
    let leaked: Vec<_> = exchanges.iter().filter(|(_, _, b)| b.contains(PASSWORD)).collect();
    let by_status = exchanges
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut m, (s, _, _)| {
            *m.entry(*s).or_insert(0) += 1;
            m
        });
    println!("schemathesis: {} requests, by status {by_status:?}", exchanges.len());
    assert!(
        exchanges.len() >= 1_000,
        "at least 1,000 requests: {}\n{output}",
        exchanges.len()
    );
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:#?}");
    assert!(unnamed.is_empty(), "400s that name no field: {unnamed:#?}");
    assert!(leaked.is_empty(), "answers holding the password: {leaked:#?}");
    assert!(report.status.success(), "schemathesis found failures:\n{output}");
}
