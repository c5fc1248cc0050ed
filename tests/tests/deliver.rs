//! Delivering calls end to end: PostgreSQL rows synced into DynamoDB (moto), the
//! Records table's stream read from moto as Lambda would receive it, the deliver
//! function's handler fed those events, and a Segment-compatible receiver on loopback
//! that checks the write key and the size limits and injects faults. The write key
//! lives in Secrets Manager (moto); refused calls go to an SQS dead-letter queue.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value as Json, json};
use sluice_aws::{DeadLetterQueue, SecretsManagerSecrets};
use sluice_core::delivery::DeliverySettings;
use sluice_core::{Deliverer, DeliveryStatus, Engine, RunStatus, SyncType, SystemClock, Trigger};
use sluice_deliver::{Delivery, StreamEvent, handle};
use sluice_destinations::{AddressPolicy, HttpSender};
use sluice_tests::receiver::{Fault, Receiver};
use sluice_tests::stream::RecordsStream;
use sluice_tests::*;

/// Every log line of this test process, to search for the write key.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Sink;
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(|| Sink)
            .init();
        Mutex::default()
    })
}

struct Scenario {
    db: Database,
    store: Arc<sluice_aws::DynamoStore>,
    svc: sluice_core::SyncService,
    delivery: Delivery,
    stream: RecordsStream,
    receiver: Receiver,
    sqs: aws_sdk_sqs::Client,
    dlq: String,
    id: String,
}

impl Scenario {
    async fn new(sync_type: SyncType, ddl: &str, query: &str) -> Self {
        logs();
        let sdk = sdk().await;
        let db = Database::new(Engine::Postgres).await;
        db.exec(ddl).await;
        let store = Arc::new(dynamo_store().await);
        let write_key = format!("wk-{}", unique("secret"));
        let receiver = Receiver::start(&write_key).await;
        let key_secret = unique("sluice/wk");
        aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(&key_secret)
            .secret_string(json!({ "write_key": write_key }).to_string())
            .send()
            .await
            .unwrap();
        let mut src = source(&unique("dlv"), &db, query);
        src.sync_type = sync_type;
        src.destination = Some(
            serde_json::from_value(json!({"kind": "http", "base_url": receiver.base_url(), "secret_id": key_secret}))
                .unwrap(),
        );
        src.validate().unwrap();
        store.put_source(&src).await.unwrap();
        let svc = service(store.clone(), secrets_for(&src, &db));
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let dlq = sqs
            .create_queue()
            .queue_name(unique("dlq"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let deliverer = Deliverer {
            sender: Arc::new(HttpSender::new(AddressPolicy { allow_loopback: true }).unwrap()),
            secrets: Arc::new(SecretsManagerSecrets::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
                Duration::from_secs(300),
            )),
            store: store.clone(),
            clock: Arc::new(SystemClock),
            settings: DeliverySettings {
                backoff: Duration::from_millis(50),
                ..DeliverySettings::default()
            },
        };
        let delivery = Delivery {
            store: store.clone(),
            deliverer,
            dead_letters: Some(DeadLetterQueue::new(sqs.clone(), dlq.clone())),
            metrics_namespace: Some("Sluice/test".into()),
        };
        let stream = RecordsStream::open(&sdk, &store.tables().records).await;
        Scenario {
            db,
            store,
            svc,
            delivery,
            stream,
            receiver,
            sqs,
            dlq,
            id: src.id,
        }
    }

    async fn sync(&self) {
        let run = self.svc.run(&self.id, Trigger::Schedule, None).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    }

    /// The next stream event, and the handler's answer to it.
    async fn deliver(&mut self) -> (Json, Json) {
        let event = self.stream.next_event().await;
        let answer = self.deliver_event(event.clone()).await;
        (event, answer)
    }

    async fn deliver_event(&self, event: Json) -> Json {
        let payload: StreamEvent = serde_json::from_value(event).unwrap();
        let answer = handle(&self.delivery, lambda_event(payload)).await.unwrap();
        serde_json::to_value(answer).unwrap()
    }

    async fn dead_letters(&self) -> Vec<Json> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.dlq)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
            .collect()
    }

    fn assert_write_key_never_shown(&self, answers: &[Json]) {
        let key = self.receiver.write_key();
        let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
        assert!(logs.contains("stream batch delivered"), "the logs were captured");
        assert!(!logs.contains(key), "a log line holds the write key");
        for a in answers {
            assert!(!a.to_string().contains(key), "an answer holds the write key: {a}");
        }
    }
}

const EVENTS: &str = "CREATE TABLE events (id int, user_id text, event text, amount numeric(10,2),
                       updated_at timestamptz DEFAULT now())";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_arrives_once_through_faults_and_an_outage_is_retried_from_the_stream() {
    let mut s = Scenario::new(
        SyncType::Track,
        &format!(
            "{EVENTS}; INSERT INTO events (id, user_id, event, amount)
             SELECT g, 'u' || g % 7, 'Order Completed', g FROM generate_series(1, 300) g"
        ),
        "SELECT id AS message_id, user_id, event, amount FROM events
         WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}",
    )
    .await;
    s.sync().await;
    // Throttled (Retry-After 1 s), a server error, a dropped connection: retried inside
    // the invocation.
    s.receiver
        .inject([Fault::Status(429, Some(1)), Fault::Status(500, None), Fault::Drop]);
    let (event, answer) = s.deliver().await;
    assert_eq!(event["Records"].as_array().unwrap().len(), 300);
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let counts = s.receiver.by_message_id();
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|n| *n == 1), "exactly once");
    let first = &s.receiver.calls()[0];
    assert_eq!(
        (first["type"].as_str(), first["event"].as_str()),
        (Some("track"), Some("Order Completed"))
    );

    // An outage longer than the retries: the batch is reported failed from its first
    // record, and Lambda's retry of the same records delivers them.
    s.db.exec("UPDATE events SET amount = amount + 1, updated_at = now() WHERE id <= 20")
        .await;
    s.sync().await;
    s.receiver.forget();
    s.receiver.inject((0..5).map(|_| Fault::Status(503, None)));
    let event = s.stream.next_event().await;
    let first_sequence = event["Records"][0]["dynamodb"]["SequenceNumber"].clone();
    let answer = s.deliver_event(event.clone()).await;
    assert_eq!(
        answer["batchItemFailures"],
        json!([{ "itemIdentifier": first_sequence }])
    );
    let failed = s
        .store
        .list_deliveries(&s.id, Some(DeliveryStatus::Failed), 100, None)
        .await
        .unwrap();
    assert_eq!(failed.len(), 20);
    assert!(
        failed[0].last_error.as_deref().unwrap().contains("HTTP 503"),
        "{:?}",
        failed[0]
    );
    let answer = s.deliver_event(event).await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let counts = s.receiver.by_message_id();
    assert_eq!((counts.len(), counts.values().max()), (20, Some(&1)));
    assert_eq!(s.receiver.calls()[0]["properties"]["amount"], 2, "the changed call");

    // Nothing changed: a re-sync writes nothing, so the stream has nothing to deliver.
    s.receiver.forget();
    let requests = s.receiver.requests();
    s.sync().await;
    let (event, _) = s.deliver().await;
    assert_eq!(event["Records"], json!([]));
    assert_eq!(s.receiver.requests(), requests);
    assert!(s.receiver.unauthorized().is_empty());
    s.assert_write_key_never_shown(&[answer]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updated_row_resends_its_call_and_an_oversized_one_is_refused_with_its_reason() {
    let mut s = Scenario::new(
        SyncType::Identify,
        "CREATE TABLE people (id int, user_id text, plan text, bio text, updated_at timestamptz DEFAULT now());
         INSERT INTO people (id, user_id, plan, bio) VALUES
           (1, 'u1', 'free', 'short'), (2, 'u2', 'pro', repeat('x', 40000)), (3, 'u3', 'free', NULL)",
        "SELECT user_id, plan, bio FROM people
         WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}",
    )
    .await;
    s.sync().await;
    let (_, answer) = s.deliver().await;
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [] }),
        "a refused call does not hold the stream up"
    );
    let delivered: Vec<_> = s.receiver.calls().iter().map(|c| c["userId"].clone()).collect();
    assert_eq!(delivered, [json!("u1"), json!("u3")]);
    let failed = s
        .store
        .list_deliveries(&s.id, Some(DeliveryStatus::Failed), 10, None)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].record_key, "u2");
    let reason = failed[0].last_error.clone().unwrap();
    assert!(
        reason.contains("over the destination's limit of 32768 bytes a call"),
        "{reason}"
    );
    let letters = s.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0]["record_key"].as_str(), letters[0]["reason"].as_str()),
        (Some("u2"), Some(reason.as_str()))
    );

    // An update: the changed call (a new messageId: identify calls carry the row's
    // hash) arrives once; the others are not sent again.
    let before = s.receiver.calls()[0]["messageId"].clone();
    s.db.exec("UPDATE people SET plan = 'enterprise', updated_at = now() WHERE id = 1")
        .await;
    s.sync().await;
    s.receiver.forget();
    let (_, answer) = s.deliver().await;
    let calls = s.receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["traits"]["plan"], "enterprise");
    assert_ne!(calls[0]["messageId"], before);
    let delivered = s
        .store
        .list_deliveries(&s.id, Some(DeliveryStatus::Delivered), 10, None)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 2);
    s.assert_write_key_never_shown(&[answer, json!(failed), json!(letters)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_timeout_is_sent_again_with_the_same_message_ids() {
    let mut s = Scenario::new(
        SyncType::Track,
        &format!(
            "{EVENTS}; INSERT INTO events (id, user_id, event, amount)
             SELECT g, 'u1', 'Signed Up', g FROM generate_series(1, 5) g"
        ),
        "SELECT user_id, event, amount FROM events
         WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}",
    )
    .await;
    s.sync().await;
    // The receiver takes the batch but answers after the client gave up: the client
    // cannot know, sends it again, and the copies share their messageIds.
    s.receiver.inject([Fault::Slow(
        sluice_destinations::REQUEST_TIMEOUT + Duration::from_secs(1),
    )]);
    let (_, answer) = s.deliver().await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let counts = s.receiver.by_message_id();
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 2),
        "each call twice, under one messageId: {counts:?}"
    );
    let states = s.store.list_deliveries(&s.id, None, 10, None).await.unwrap();
    assert!(
        states
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered && d.attempts == 2),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_type_arrives_once_in_the_segment_shape() {
    let table = "CREATE TABLE acts (id int, user_id text, event text, name text, group_id text, previous_id text,
                                    updated_at timestamptz DEFAULT now());
                 INSERT INTO acts (id, user_id, event, name, group_id, previous_id)
                 SELECT g, 'u' || g, 'Clicked', 'Home', 'g' || g % 3, 'anon-' || g FROM generate_series(1, 40) g";
    let window = "WHERE updated_at >= {{ last_update_time }} AND updated_at < {{ upper_date_limit }}";
    let cases = [
        (SyncType::Identify, "user_id, name AS first_name", "identify"),
        (SyncType::Track, "user_id, event, id AS message_id", "track"),
        (SyncType::Group, "group_id, user_id, name", "group"),
        (SyncType::Page, "user_id, name, id AS message_id", "page"),
        (SyncType::Screen, "user_id, name, id AS message_id", "screen"),
        (SyncType::Alias, "user_id, previous_id", "alias"),
    ];
    for (sync_type, columns, kind) in cases {
        let mut s = Scenario::new(sync_type, table, &format!("SELECT {columns} FROM acts {window}")).await;
        s.sync().await;
        s.receiver.inject([Fault::Status(429, None), Fault::Status(500, None)]);
        let (_, answer) = s.deliver().await;
        assert_eq!(answer, json!({ "batchItemFailures": [] }), "{kind}");
        let counts = s.receiver.by_message_id();
        assert_eq!(counts.len(), 40, "{kind}: {counts:?}");
        assert!(counts.values().all(|n| *n == 1), "{kind}: exactly once");
        for call in s.receiver.calls() {
            assert_eq!(call["type"], kind);
            assert!(call["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{call}");
            assert!(call["userId"].is_string(), "{call}");
        }
    }
}
