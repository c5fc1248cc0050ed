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

/// Secrets Manager secrets of wrong shapes, each holding text to find again (a password
/// as a fraction or a list, an SSH tunnel's JSON cut short in a string, a truncated PEM
/// key, a service account with a bad key, a port that is text, a secret that is not
/// JSON). Their runs fail naming the field, and the text is in no output: not the run
/// log (`GET /runs`), the EventBridge event, the failure destination's error, the test
/// query's answer, the API's answer to a create, nor any log line at the most verbose
/// level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_of_the_functions_shows_any_part_of_a_malformed_secret() {
    // Every log line of the process, as CloudWatch would keep it.
    let logs = LogBuffer::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(logs.clone())
            .finish(),
    )
    .unwrap();
    let sdk = sdk().await;
    let db = Database::new(Engine::Postgres).await;
    db.create_sales(5).await;
    let u = unique("m");
    let leak = |what: &str| format!("LEAK-{what}-{u}");
    let with = |field: &str, value: serde_json::Value| {
        let mut secret = db.secret.clone();
        secret[field] = value;
        secret
    };
    let pem = |what: &str| {
        format!(
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC{}\n",
            leak(what)
        )
    };
    let tunnel =
        serde_json::json!({"host": "127.0.0.1", "port": 22, "username": "t", "private_key": pem("sshkey")}).to_string();
    let account = serde_json::json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
                                     "private_key": pem("sakey")});
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "fraction",
            with("password", serde_json::json!(9876.54321)).to_string(),
            "`password`: expected a string, got a number with a fraction",
        ),
        (
            "list",
            with("password", serde_json::json!([leak("list")])).to_string(),
            "`password`: expected a string",
        ),
        (
            "tunnel_cut",
            with("ssh_tunnel", tunnel[..tunnel.len() - 30].into()).to_string(),
            "`ssh_tunnel`: expected an object, or the object's JSON in a string; the string is not JSON",
        ),
        (
            "tunnel_pem",
            with("ssh_tunnel", serde_json::from_str(&tunnel).unwrap()).to_string(),
            "ssh_tunnel.private_key cannot be read",
        ),
        (
            "port",
            with("port", leak("port").into()).to_string(),
            "`port`: expected u16",
        ),
        (
            "service_account",
            serde_json::json!({"engine": "bigquery", "host": "127.0.0.1", "port": bigquery_port(), "tls": "disable",
                               "database": BIGQUERY_PROJECT, "service_account": account.to_string()})
            .to_string(),
            "service_account.private_key is not PEM",
        ),
        (
            "not_json",
            format!("{{\"password\": \"{}\"", leak("notjson")),
            "it is not JSON",
        ),
    ];
    let credentials: Vec<String> = ["9876.54321".to_string(), "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".into()]
        .into_iter()
        .chain(["list", "sshkey", "sakey", "port", "notjson"].map(leak))
        .collect();
    let leaks = |text: &str| credentials.iter().find(|c| text.contains(c.as_str())).cloned();

    let (api_config, store) = api_config(None).await;
    let bus = unique("bus");
    let (sqs, queue_url) = event_queue(&sdk, &bus, "sluice.run.completed").await;
    let config = FunctionConfig {
        event_bus: bus,
        ..api_config.function.clone()
    };
    let svc = sync_service(&sdk, &config);
    let api = sluice_api::Api {
        admin: sluice_lambda::source_admin(&sdk, &api_config),
        deliverer: sluice_lambda::deliverer(&sdk, &config).unwrap(),
    };
    let call = |event: serde_json::Value| {
        let request: aws_lambda_events::apigw::ApiGatewayProxyRequest = serde_json::from_value(event).unwrap();
        let api = &api;
        async move {
            match sluice_api::handle(api, &request).await.body {
                Some(aws_lambda_events::encodings::Body::Text(t)) => t,
                other => panic!("a text body: {other:?}"),
            }
        }
    };
    let mut seen = Vec::new();
    for (name, secret, expected) in &cases {
        let secret_id = unique("sluice/db");
        aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(&secret_id)
            .secret_string(secret)
            .send()
            .await
            .unwrap();
        let mut src = source(&unique(name), &db, SALES_QUERY);
        src.secret_id = secret_id;
        if *name == "service_account" {
            src.engine = Engine::Bigquery;
        }
        store.put_source(&src).await.unwrap();

        // The failure destination gets the handler's error.
        let diagnostic: Diagnostic = handle(&svc, event(&src.id)).await.unwrap_err().into();
        assert!(
            diagnostic.error_message.contains(expected),
            "{name}: {}",
            diagnostic.error_message
        );
        seen.push(diagnostic.error_message);
        let runs = store.list_runs(&src.id, 5, None).await.unwrap();
        assert_eq!(runs[0].status, RunStatus::Failed, "{name}");
        seen.push(serde_json::to_string(&runs).unwrap());
        seen.push(call(api_request("runs-list.json", &[("id", &src.id)], &[], None)).await);
        seen.push(call(api_request("sources-test-query.json", &[("id", &src.id)], &[], None)).await);
        // The same secret sent as a new source's connection, where its shape is wrong.
        if let Ok(connection) = serde_json::from_str::<serde_json::Value>(secret)
            && !matches!(*name, "tunnel_pem" | "service_account")
        {
            let body = serde_json::json!({"id": unique("new"), "name": "n", "engine": "postgres",
                "sync_type": "registration", "query": SALES_QUERY, "connection": connection});
            let answer = call(api_request("sources-create.json", &[], &[], Some(body))).await;
            assert!(answer.contains("\"field\":\"connection\""), "{name}: {answer}");
            seen.push(answer);
        }
    }
    // Every run was announced; no event holds the text.
    let mut events = Vec::new();
    while events.len() < cases.len() {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(5)
            .send()
            .await
            .unwrap();
        if received.messages().is_empty() {
            break;
        }
        events.extend(received.messages().iter().map(|m| m.body().unwrap().to_string()));
    }
    assert_eq!(events.len(), cases.len(), "{events:?}");
    seen.extend(events);
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "the logs were searched"
    );
    seen.push(logged);
    for text in &seen {
        assert!(leaks(text).is_none(), "{:?} is shown: {text}", leaks(text));
    }
}

/// Log lines kept in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
