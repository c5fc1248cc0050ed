//! The sync function's real handler, fed the scheduler's event, against moto (Secrets
//! Manager, DynamoDB, EventBridge) and PostgreSQL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use sluice_core::{Engine, RunStatus};
use sluice_lambda::{FunctionConfig, sync_service};
use sluice_sync::{SyncEvent, handle};
use sluice_tests::*;

fn event(source_id: &str) -> LambdaEvent<SyncEvent> {
    let fixture =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scheduled-sync.json")).unwrap();
    let mut payload: SyncEvent = serde_json::from_str(&fixture).unwrap();
    assert_eq!(payload.source_id, "sales");
    payload.source_id = source_id.to_string();
    let mut context = Context::default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    context.deadline = (now + Duration::from_secs(900)).as_millis() as u64;
    LambdaEvent::new(payload, context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_invocation_syncs_logs_and_announces_the_run() {
    let sdk = sdk().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(500).await;

    // What a deployment has: the secret, the tables, an event bus with a rule to a queue.
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    // Loopback PostgreSQL trusts the login, so this password is only a marker to search for.
    const PASSWORD: &str = "pw-never-in-output-7f3a";
    let mut secret_json = db.secret.clone();
    secret_json["password"] = PASSWORD.into();
    let secret_id = secrets_manager_secret(&secret_json).await;
    let store = dynamo_store().await;
    let bus = unique("bus");
    let (sqs, queue_url) = event_queue(&sdk, &bus, "sluice.run.completed").await;

    let mut src = source(&unique("lambda"), &db, SALES_QUERY);
    src.secret_id = secret_id.clone();
    store.put_source(&src).await.unwrap();
    let config = FunctionConfig {
        tables: store.tables().clone(),
        event_bus: bus,
        lease: Duration::from_secs(960),
        backfill_retry: Duration::from_secs(30),
        schedule_group: None,
        metrics_namespace: "Sluice/test".into(),
        destinations: Default::default(),
    };
    let svc = sync_service(&sdk, &config);

    // A scheduled invocation: rows synced, the run logged and announced.
    let run = handle(&svc, event(&src.id)).await.unwrap();
    assert_eq!(
        (run.status, run.rows_written),
        (RunStatus::Succeeded, 500),
        "{:?}",
        run.message
    );
    assert_eq!(store.count_records(&src.id).await.unwrap(), 500);
    assert_eq!(store.list_runs(&src.id, 5, None).await.unwrap(), vec![run.clone()]);
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<serde_json::Value> = received
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["detail-type"], "sluice.run.completed");
    assert_eq!(bodies[0]["detail"]["id"], run.id.as_str());
    assert_eq!(bodies[0]["detail"]["rows_written"], 500);

    // A failing run is logged, announced, and returned as a typed error (for the
    // function's failure destination); the secret's password is nowhere in it.
    let mut broken = src.clone();
    broken.query = "SELECT * FROM missing_table WHERE updated_at >= {{ last_update_time }}".into();
    store.put_source(&broken).await.unwrap();
    let err = handle(&svc, event(&src.id)).await.unwrap_err();
    let diagnostic: Diagnostic = err.into();
    assert_eq!(diagnostic.error_type, "Sluice.RunFailed");
    assert!(
        diagnostic
            .error_message
            .contains("relation \"missing_table\" does not exist"),
        "{}",
        diagnostic.error_message
    );
    let runs = store.list_runs(&src.id, 5, None).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(runs.len(), 2);
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(received.messages().len(), 1);
    assert!(!received.messages()[0].body().unwrap().contains(PASSWORD));
    assert!(!diagnostic.error_message.contains(PASSWORD));
    assert!(!serde_json::to_string(&runs).unwrap().contains(PASSWORD));

    // An unknown source is a failed run too, logged under that id.
    let err = handle(&svc, event("no-such-source")).await.unwrap_err();
    assert!(
        err.to_string().contains("source `no-such-source` does not exist"),
        "{err}"
    );
    // A warm container keeps the secret for a few minutes; a cold one reads it again,
    // and a secret that is gone names itself.
    secrets
        .delete_secret()
        .secret_id(&secret_id)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    store.put_source(&src).await.unwrap();
    let warm = handle(&svc, event(&src.id)).await.unwrap();
    assert_eq!(
        warm.status,
        RunStatus::Succeeded,
        "the cached secret is used: {:?}",
        warm.message
    );
    let fresh = sync_service(&sdk, &config); // a cold container: nothing cached
    let err = handle(&fresh, event(&src.id)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("secret `{secret_id}` does not exist")),
        "{err}"
    );
    let state = store.get_source(&src.id).await.unwrap().unwrap();
    assert_eq!(state.watermark, warm.watermark, "failed runs leave the watermark");
}
