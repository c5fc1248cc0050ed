//! Delivering calls end to end: PostgreSQL rows synced into DynamoDB (moto), the
//! Records table's stream read from moto as Lambda would receive it, the deliver
//! function's handler fed those events, and a Segment-compatible receiver on loopback
//! that checks the write key and the size limits and injects faults. The write key
//! lives in Secrets Manager (moto); refused calls go to an SQS dead-letter queue; calls
//! a destination cannot take now are parked in the delivery log and sent by the
//! function's retry of parked calls, invoked here as its schedule invokes it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value as Json, json};
use sluice_aws::{DeadLetterQueue, SecretsManagerSecrets};
use sluice_core::delivery::DeliverySettings;
use sluice_core::{Deliverer, DeliveryStatus, Engine, RunStatus, SyncType, SystemClock, Trigger};
use sluice_deliver::{Delivery, Event, StreamEvent, dispatch, handle};
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
    sdk: aws_config::SdkConfig,
    /// The secret of the source's write key.
    key_secret: String,
}

/// Another source of the scenario: same database, store and stream, its own
/// destination.
struct Other {
    id: String,
    receiver: Receiver,
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
            // Read at every delivery, so that a fixed write key is used at once (the
            // functions keep it 5 minutes, less than the wait of a parked call).
            secrets: Arc::new(SecretsManagerSecrets::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
                Duration::ZERO,
            )),
            store: store.clone(),
            clock: Arc::new(SystemClock),
            // Parked calls are due at once: the tests invoke the retry when they mean to.
            settings: DeliverySettings {
                backoff: Duration::from_millis(50),
                park_wait: Duration::ZERO,
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
            sdk,
            key_secret,
        }
    }

    /// A second source on the same database, store and stream, with its own receiver.
    async fn add_source(&self, sync_type: SyncType, query: &str) -> Other {
        let first = self.store.get_source(&self.id).await.unwrap().unwrap().config;
        let write_key = format!("wk-{}", unique("secret"));
        let receiver = Receiver::start(&write_key).await;
        let key_secret = unique("sluice/wk");
        aws_sdk_secretsmanager::Client::new(&self.sdk)
            .create_secret()
            .name(&key_secret)
            .secret_string(json!({ "write_key": write_key }).to_string())
            .send()
            .await
            .unwrap();
        let mut src = source(&unique("dlv"), &self.db, query);
        src.secret_id = first.secret_id;
        src.sync_type = sync_type;
        src.destination = Some(
            serde_json::from_value(json!({"kind": "http", "base_url": receiver.base_url(), "secret_id": key_secret}))
                .unwrap(),
        );
        src.validate().unwrap();
        self.store.put_source(&src).await.unwrap();
        Other { id: src.id, receiver }
    }

    async fn sync_source(&self, id: &str) {
        let run = self.svc.run(id, Trigger::Schedule, None).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.message);
    }

    /// The schedule's invocation that sends the parked calls that are due.
    async fn retry(&self) -> Json {
        let event: Event = serde_json::from_value(json!({ "retry_parked": true })).unwrap();
        let answer = dispatch(&self.delivery, lambda_event(event)).await.unwrap();
        serde_json::to_value(answer).unwrap()
    }

    /// Replaces the write key's secret with `value` (None: deletes it).
    async fn set_key_secret(&self, value: Option<Json>) {
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk);
        match value {
            Some(value) => {
                let put = client
                    .put_secret_value()
                    .secret_id(&self.key_secret)
                    .secret_string(value.to_string())
                    .send()
                    .await;
                if put.is_err() {
                    // Deleted before: created again.
                    client
                        .create_secret()
                        .name(&self.key_secret)
                        .secret_string(value.to_string())
                        .send()
                        .await
                        .unwrap();
                }
            }
            None => {
                client
                    .delete_secret()
                    .secret_id(&self.key_secret)
                    .force_delete_without_recovery(true)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn states(&self, id: &str, status: DeliveryStatus) -> Vec<sluice_core::DeliveryState> {
        self.store
            .list_deliveries(id, Some(status), 10_000, None)
            .await
            .unwrap()
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
async fn every_call_arrives_once_through_faults_and_an_outage_is_parked_and_retried() {
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

    // An outage longer than the retries: the calls are parked, the stream moves on, and
    // the retry of parked calls delivers them.
    s.db.exec("UPDATE events SET amount = amount + 1, updated_at = now() WHERE id <= 20")
        .await;
    s.sync().await;
    s.receiver.forget();
    s.receiver.inject((0..5).map(|_| Fault::Status(503, None)));
    let (_, answer) = s.deliver().await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "the stream moves on");
    let waiting = s.states(&s.id, DeliveryStatus::Waiting).await;
    assert_eq!(waiting.len(), 20);
    assert!(
        waiting[0].last_error.as_deref().unwrap().contains("HTTP 503"),
        "{:?}",
        waiting[0]
    );
    let retried = s.retry().await;
    assert_eq!(
        (&retried["delivered"], &retried["waiting"]),
        (&json!(20), &json!(0)),
        "{retried}"
    );
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
            // No timestamp column: the destination stamps the call when it receives it.
            assert!(call.get("timestamp").is_none(), "{call}");
            assert!(call["userId"].is_string(), "{call}");
        }
    }
}

const TWO_SOURCES: &str = "CREATE TABLE events (id int, src text, user_id text, event text, amount int,
                           updated_at timestamptz DEFAULT now())";

/// `source`'s query over the shared table.
fn query_of(source: &str) -> String {
    format!(
        "SELECT id AS message_id, user_id, event, amount FROM events WHERE src = '{source}'
         AND updated_at >= {{{{ last_update_time }}}} AND updated_at < {{{{ upper_date_limit }}}}"
    )
}

fn insert(source: &str, ids: std::ops::Range<i32>) -> String {
    format!(
        "INSERT INTO events (id, src, user_id, event, amount)
         SELECT g, '{source}', 'u' || g, 'Order Completed', g FROM generate_series({}, {}) g",
        ids.start,
        ids.end - 1
    )
}

fn assert_once(receiver: &Receiver, ids: std::ops::Range<i32>, what: &str) {
    let counts = receiver.by_message_id();
    let expected: std::collections::BTreeMap<String, usize> = ids.map(|i| (i.to_string(), 1)).collect();
    assert_eq!(counts, expected, "{what}: each call once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_on_one_stream_one_destination_down_the_other_arrives_on_time_and_each_call_once() {
    let mut s = Scenario::new(
        SyncType::Track,
        &format!("{TWO_SOURCES}; {}; {}", insert("a", 1..51), insert("b", 1..51)),
        &query_of("a"),
    )
    .await;
    let b = s.add_source(SyncType::Track, &query_of("b")).await;
    // B's destination is down: 503s, then dropped connections.
    b.receiver.down(Some(Fault::Status(503, None)));
    s.sync().await;
    s.sync_source(&b.id).await;
    let (event, answer) = s.deliver().await;
    assert_eq!(
        event["Records"].as_array().unwrap().len(),
        100,
        "both sources in one batch"
    );
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "the stream moves on");
    assert_once(&s.receiver, 1..51, "A, in the same invocation");
    assert!(b.receiver.calls().is_empty());
    let waiting = s.states(&b.id, DeliveryStatus::Waiting).await;
    assert_eq!(waiting.len(), 50);
    assert!(
        waiting[0].last_error.as_deref().unwrap().contains("HTTP 503"),
        "{waiting:?}"
    );

    // Still down, with new rows for both: A's arrive at once; B's wait behind its
    // parked calls without a request to its destination.
    b.receiver.down(Some(Fault::Drop));
    s.db.exec(&format!("{}; {}", insert("a", 51..81), insert("b", 51..81)))
        .await;
    s.sync().await;
    s.sync_source(&b.id).await;
    let requests = b.receiver.requests();
    let (_, answer) = s.deliver().await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    assert_once(&s.receiver, 1..81, "A");
    assert_eq!(b.receiver.requests(), requests, "parked behind, not sent");
    assert_eq!(s.states(&b.id, DeliveryStatus::Waiting).await.len(), 80);

    // A retry while it is down parks them again; A is not touched.
    let retried = s.retry().await;
    assert_eq!(
        (&retried["delivered"], &retried["waiting"]),
        (&json!(0), &json!(80)),
        "{retried}"
    );
    assert!(b.receiver.calls().is_empty());
    let waiting = s.states(&b.id, DeliveryStatus::Waiting).await;
    assert!(waiting.iter().all(|w| w.parked == 2), "{:?}", waiting[0]);

    // Back: the next retry delivers B's calls, once each; later ones find nothing.
    b.receiver.down(None);
    let retried = s.retry().await;
    assert_eq!(
        (&retried["delivered"], &retried["waiting"]),
        (&json!(80), &json!(0)),
        "{retried}"
    );
    assert_once(&b.receiver, 1..81, "B, after it is back");
    assert_eq!(s.retry().await["delivered"], 0);
    assert_once(&b.receiver, 1..81, "B");
    assert_once(&s.receiver, 1..81, "A");
    assert_eq!(s.states(&b.id, DeliveryStatus::Delivered).await.len(), 80);
    assert!(s.dead_letters().await.is_empty(), "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_key_secret_missing_or_malformed_parks_the_calls_and_replay_finds_them() {
    let mut s = Scenario::new(
        SyncType::Track,
        &format!("{TWO_SOURCES}; {}", insert("a", 1..21)),
        &query_of("a"),
    )
    .await;
    s.set_key_secret(Some(json!({ "key": "not the right field" }))).await;
    s.sync().await;
    let (_, answer) = s.deliver().await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    let waiting = s.states(&s.id, DeliveryStatus::Waiting).await;
    assert_eq!(waiting.len(), 20);
    let error = waiting[0].last_error.clone().unwrap();
    assert!(
        error.contains("the write key cannot be read") && error.contains("expected {\"write_key\""),
        "{error}"
    );
    // Missing: the retry records why.
    s.set_key_secret(None).await;
    assert_eq!(s.retry().await["waiting"], 20);
    let waiting = s.states(&s.id, DeliveryStatus::Waiting).await;
    let error = waiting[0].last_error.clone().unwrap();
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(s.receiver.requests(), 0);

    // Fixed: the replay (the API's and the CLI's) finds every one and sends it once.
    s.set_key_secret(Some(json!({ "write_key": s.receiver.write_key() })))
        .await;
    let config = s.store.get_source(&s.id).await.unwrap().unwrap().config;
    let report = s
        .delivery
        .deliverer
        .replay_failed(&config, 500, &sluice_core::Budget::default())
        .await
        .unwrap();
    assert_eq!((report.delivered, report.undelivered.len()), (20, 0), "{report:?}");
    assert_once(&s.receiver, 1..21, "after the fix");
    assert!(s.states(&s.id, DeliveryStatus::Waiting).await.is_empty());
    assert_eq!(s.retry().await["delivered"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_write_key_401_keeps_every_call_and_they_arrive_once_the_key_is_fixed() {
    let mut s = Scenario::new(
        SyncType::Track,
        &format!("{TWO_SOURCES}; {}", insert("a", 1..41)),
        &query_of("a"),
    )
    .await;
    s.set_key_secret(Some(json!({ "write_key": "wk-the-old-one" }))).await;
    s.sync().await;
    let (_, answer) = s.deliver().await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    assert_eq!(s.receiver.requests(), 1, "not split down to single calls");
    assert_eq!(s.receiver.unauthorized().len(), 1);
    assert!(s.dead_letters().await.is_empty(), "nothing dead-lettered");
    let waiting = s.states(&s.id, DeliveryStatus::Waiting).await;
    assert_eq!(waiting.len(), 40);
    let error = waiting[0].last_error.clone().unwrap();
    assert!(
        error.contains("HTTP 401") && error.contains("the calls are kept"),
        "{error}"
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("the destination is unavailable or misconfigured"),
        "the line the alarm's metric goes with"
    );
    // Still the old key at the next retry: kept again.
    assert_eq!(s.retry().await["waiting"], 40);
    assert!(s.receiver.calls().is_empty());

    s.set_key_secret(Some(json!({ "write_key": s.receiver.write_key() })))
        .await;
    let retried = s.retry().await;
    assert_eq!(
        (&retried["delivered"], &retried["waiting"]),
        (&json!(40), &json!(0)),
        "{retried}"
    );
    assert_once(&s.receiver, 1..41, "after the key is fixed");
    assert_eq!(s.states(&s.id, DeliveryStatus::Delivered).await.len(), 40);
    s.assert_write_key_never_shown(&[retried]);
}
