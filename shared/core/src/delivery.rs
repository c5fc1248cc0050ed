//! Delivering Customer.io-style calls to a Segment-compatible batch API (Customer.io
//! Data Pipelines, Segment, RudderStack, ...). DynamoDB stays the system of record: a
//! call is delivered once per change of its record (its hash), deduplicated downstream
//! by its `messageId`, and a destination outage never blocks or rolls back a sync.
//!
//! The same [`Deliverer`] serves the Records stream's function and the CLI. It packs
//! calls into batches within the Segment limits (32 KB a call, 500 KB a batch),
//! retries 429 and 5xx with jittered backoff (honouring `Retry-After`), isolates a
//! call the destination refuses by splitting its batch, and records every call's
//! delivery state.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tracing::{info, warn};

use crate::ports::{Clock, Secrets, SecretsError, Store, StoreError, StoredRecord, WriteKey};
use crate::source::{Destination, SourceConfig};
use crate::sync::Budget;

/// The Segment spec's limit on one call.
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// The Segment spec's limit on one batch request.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Room kept in a batch for its envelope (`{"batch":[...],"sentAt":"..."}`).
const ENVELOPE_BYTES: usize = 128;
/// Reasons and errors are cut to this many characters.
const MAX_REASON_CHARS: usize = 300;

/// One call to deliver: its record's key and hash, and the call itself (the record's
/// fields: `type`, `userId`, `traits`, `messageId`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub key: String,
    pub hash: String,
    pub call: Map<String, Json>,
}

impl From<StoredRecord> for Outgoing {
    fn from(r: StoredRecord) -> Self {
        Outgoing {
            key: r.key,
            hash: r.hash,
            call: r.fields.into_iter().collect(),
        }
    }
}

impl Outgoing {
    fn message_id(&self) -> Option<String> {
        self.call.get("messageId").and_then(Json::as_str).map(str::to_string)
    }
}

/// What the destination answered a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Its `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
    /// The start of its body, for the reason of a refusal.
    pub body: String,
}

/// The request did not get an answer: a timeout, a refused or dropped connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SendError(pub String);

/// Posts batches to a destination (an HTTPS client in production).
#[async_trait]
pub trait CallSender: Send + Sync {
    /// Posts `body` (JSON) to `url` with the write key as HTTP Basic user.
    async fn post(&self, url: &str, key: &WriteKey, body: Vec<u8>) -> Result<Answer, SendError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Delivered,
    /// Refused, or not delivered after the retries; `last_error` says why.
    Failed,
}

/// Where the delivery of one record's call stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub record_key: String,
    /// The record's hash that was (or failed to be) delivered.
    pub hash: String,
    pub message_id: Option<String>,
    pub status: DeliveryStatus,
    /// Requests that carried this version of the call.
    pub attempts: u32,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryReport {
    pub delivered: u64,
    /// Calls the destination (or the size limit) refused: `(key, reason)`. They are
    /// not retried; their state says why.
    pub rejected: Vec<(String, String)>,
    /// Calls not delivered because the destination kept failing (or time ran out),
    /// in order: a later delivery sends them again.
    pub undelivered: Vec<String>,
    /// Why the undelivered ones were not.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("source `{0}` has no destination; set one (README \"Delivering calls\")")]
    NoDestination(String),
    #[error("{0}")]
    Secrets(#[from] SecretsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Requests per batch before it counts as undelivered.
    pub attempts: u32,
    /// The first retry waits about this long; each next one twice as long.
    pub backoff: Duration,
    /// Waits are never longer than this (nor than a `Retry-After` of the destination).
    pub max_backoff: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Delivers calls. Built once per process and shared.
pub struct Deliverer {
    pub sender: Arc<dyn CallSender>,
    /// Where the destinations' write keys are.
    pub secrets: Arc<dyn Secrets>,
    /// Where delivery states are kept, and (from the CLI) undelivered calls read.
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
}

/// A batch's fate.
enum Sent {
    Delivered {
        attempts: u32,
    },
    /// The destination refused it (a 4xx other than 429).
    Refused {
        status: u16,
        reason: String,
    },
    /// It kept failing, or time ran out.
    Unavailable {
        attempts: u32,
        reason: String,
    },
}

impl Deliverer {
    /// Delivers `calls` of `source` in order and records each one's state. Reading
    /// stops being retried when `budget` runs out; what was not delivered is in the
    /// report's `undelivered`.
    ///
    /// # Errors
    /// Only when the source has no destination, its write key cannot be read, or the
    /// states cannot be stored.
    pub async fn deliver(
        &self,
        source: &SourceConfig,
        calls: Vec<Outgoing>,
        budget: &Budget,
    ) -> Result<DeliveryReport, DeliveryError> {
        let destination = source
            .destination
            .as_ref()
            .ok_or_else(|| DeliveryError::NoDestination(source.id.clone()))?;
        let key = self.secrets.write_key(&destination.secret_id).await?;
        let mut report = DeliveryReport::default();
        let mut states = Vec::with_capacity(calls.len());
        let mut sized = Vec::with_capacity(calls.len());
        for call in calls {
            let json = serde_json::to_vec(&call.call).expect("calls serialize");
            if json.len() > MAX_CALL_BYTES {
                let reason = format!(
                    "the call is {} bytes, over the destination's limit of {MAX_CALL_BYTES} bytes a call; select fewer or smaller columns",
                    json.len()
                );
                states.push(self.state(&call, DeliveryStatus::Failed, 0, Some(reason.clone())));
                report.rejected.push((call.key, reason));
            } else {
                sized.push((call, json));
            }
        }
        let mut pending: std::collections::VecDeque<Vec<(Outgoing, Vec<u8>)>> = batches(sized).into();
        while let Some(batch) = pending.pop_front() {
            if report.error.is_some() {
                // The destination is unavailable: the rest waits for the next delivery.
                report.undelivered.extend(batch.into_iter().map(|(c, _)| c.key));
                continue;
            }
            match self.send(destination, &key, &batch, budget).await {
                Sent::Delivered { attempts } => {
                    report.delivered += batch.len() as u64;
                    states.extend(
                        batch
                            .iter()
                            .map(|(c, _)| self.state(c, DeliveryStatus::Delivered, attempts, None)),
                    );
                }
                Sent::Refused { status, .. } if batch.len() > 1 => {
                    // One call may spoil a batch: the halves go apart until it stands alone.
                    info!(
                        status,
                        calls = batch.len(),
                        "the destination refused a batch; its halves are sent apart"
                    );
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    pending.push_front(second);
                    pending.push_front(first);
                }
                Sent::Refused { status, reason } => {
                    let (call, _) = batch.into_iter().next().expect("one call");
                    let reason = format!("the destination refused the call (HTTP {status}): {reason}");
                    states.push(self.state(&call, DeliveryStatus::Failed, 1, Some(reason.clone())));
                    report.rejected.push((call.key, reason));
                }
                Sent::Unavailable { attempts, reason } => {
                    warn!(
                        calls = batch.len(),
                        attempts, reason, "the destination is unavailable; the calls wait for the next delivery"
                    );
                    states.extend(
                        batch
                            .iter()
                            .map(|(c, _)| self.state(c, DeliveryStatus::Failed, attempts, Some(reason.clone()))),
                    );
                    report.undelivered.extend(batch.into_iter().map(|(c, _)| c.key));
                    report.error = Some(reason);
                }
            }
        }
        self.store.put_deliveries(&source.id, &states).await?;
        info!(
            source_id = source.id,
            delivered = report.delivered,
            rejected = report.rejected.len(),
            undelivered = report.undelivered.len(),
            "calls delivered"
        );
        Ok(report)
    }

    /// Delivers the source's calls that have no delivery state for their current
    /// version (a delivery from the store, as the CLI makes it), `batch` at a time, until
    /// none is left, the destination fails or the budget runs out. `on_progress` sees
    /// the running totals.
    ///
    /// # Errors
    /// As [`Deliverer::deliver`].
    pub async fn deliver_undelivered(
        &self,
        source: &SourceConfig,
        batch: usize,
        budget: &Budget,
        on_progress: &(dyn Fn(&DeliveryReport) + Send + Sync),
    ) -> Result<DeliveryReport, DeliveryError> {
        let mut total = DeliveryReport::default();
        let mut after: Option<String> = None;
        loop {
            let calls: Vec<Outgoing> = self
                .store
                .undelivered(&source.id, after.as_deref(), batch.max(1))
                .await?
                .into_iter()
                .map(Outgoing::from)
                .collect();
            if calls.is_empty() || budget.stop(Duration::ZERO).is_some() {
                return Ok(total);
            }
            after = calls.last().map(|c| c.key.clone());
            let report = self.deliver(source, calls, budget).await?;
            total.delivered += report.delivered;
            total.rejected.extend(report.rejected);
            total.undelivered.extend(report.undelivered);
            on_progress(&total);
            if let Some(error) = report.error {
                total.error = Some(error);
                return Ok(total);
            }
        }
    }

    /// Sends again, in their current version, the calls whose delivery failed (at most
    /// `limit`).
    ///
    /// # Errors
    /// As [`Deliverer::deliver`].
    pub async fn replay_failed(
        &self,
        source: &SourceConfig,
        limit: usize,
        budget: &Budget,
    ) -> Result<DeliveryReport, DeliveryError> {
        let failed = self
            .store
            .list_deliveries(&source.id, Some(DeliveryStatus::Failed), limit, None)
            .await?;
        let mut calls = Vec::with_capacity(failed.len());
        for state in failed {
            if let Some(record) = self.store.get_record(&source.id, &state.record_key).await? {
                calls.push(Outgoing::from(record));
            }
        }
        self.deliver(source, calls, budget).await
    }

    fn state(&self, call: &Outgoing, status: DeliveryStatus, attempts: u32, error: Option<String>) -> DeliveryState {
        let now = self.clock.now();
        DeliveryState {
            record_key: call.key.clone(),
            hash: call.hash.clone(),
            message_id: call.message_id(),
            status,
            attempts,
            updated_at: now,
            delivered_at: (status == DeliveryStatus::Delivered).then_some(now),
            last_error: error.map(|e| e.chars().take(MAX_REASON_CHARS).collect()),
        }
    }

    /// Posts one batch, retrying what may succeed later.
    async fn send(
        &self,
        destination: &Destination,
        key: &WriteKey,
        batch: &[(Outgoing, Vec<u8>)],
        budget: &Budget,
    ) -> Sent {
        let body = envelope(batch, self.clock.now());
        let url = destination.batch_url();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (reason, retry_after) = match self.sender.post(&url, key, body.clone()).await {
                Ok(a) if (200..300).contains(&a.status) => return Sent::Delivered { attempts: attempt },
                Ok(a) if a.status == 429 || a.status >= 500 => (
                    format!("HTTP {} from {url}: {}", a.status, redact(&a.body, key)),
                    a.retry_after,
                ),
                Ok(a) => {
                    return Sent::Refused {
                        status: a.status,
                        reason: redact(&a.body, key),
                    };
                }
                Err(e) => (format!("{url}: {}", redact(&e.0, key)), None),
            };
            let wait = retry_after
                .unwrap_or_else(|| self.backoff(attempt))
                .min(self.settings.max_backoff);
            if attempt >= self.settings.attempts || budget.stop(wait).is_some() {
                return Sent::Unavailable {
                    attempts: attempt,
                    reason: format!("not delivered after {attempt} attempts; the last: {reason}"),
                };
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Exponential backoff with full jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .settings
            .backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.settings.max_backoff);
        cap.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// Packs calls, in order, into batches of at most [`MAX_BATCH_BYTES`].
fn batches(calls: Vec<(Outgoing, Vec<u8>)>) -> Vec<Vec<(Outgoing, Vec<u8>)>> {
    let mut out: Vec<Vec<(Outgoing, Vec<u8>)>> = Vec::new();
    let mut size = 0;
    for call in calls {
        let len = call.1.len() + 1;
        match out.last_mut() {
            Some(batch) if size + len <= MAX_BATCH_BYTES - ENVELOPE_BYTES => {
                size += len;
                batch.push(call);
            }
            _ => {
                size = len;
                out.push(vec![call]);
            }
        }
    }
    out
}

/// `{"batch": [...], "sentAt": "..."}`, from the calls' JSON as it is.
fn envelope(batch: &[(Outgoing, Vec<u8>)], now: DateTime<Utc>) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|(_, j)| j.len() + 1).sum::<usize>() + ENVELOPE_BYTES);
    body.extend_from_slice(b"{\"batch\":[");
    for (i, (_, json)) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.extend_from_slice(format!("],\"sentAt\":\"{}\"}}", crate::Value::iso_timestamp(&now)).as_bytes());
    body
}

/// A destination's message without the write key (some echo the request).
fn redact(message: &str, key: &WriteKey) -> String {
    let text: String = message.chars().take(MAX_REASON_CHARS).collect();
    text.replace(&key.0, "<redacted>")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::ports::{DeliveryLog, SourceStore};
    use crate::testing::{MemorySecrets, MemoryStore, TestClock};

    const KEY: &str = "wk-test-d3e1";

    /// A destination that answers from a script, then 200, and keeps every call it took.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<Vec<Result<Answer, SendError>>>,
        received: Mutex<Vec<Json>>,
        requests: AtomicUsize,
        /// A call whose `messageId` is this is refused with 400.
        poison: Option<&'static str>,
    }

    #[async_trait]
    impl CallSender for Scripted {
        async fn post(&self, url: &str, key: &WriteKey, body: Vec<u8>) -> Result<Answer, SendError> {
            assert_eq!((url, key.0.as_str()), ("http://127.0.0.1:1/v1/batch", KEY));
            assert!(body.len() <= MAX_BATCH_BYTES, "a batch over the limit: {}", body.len());
            self.requests.fetch_add(1, Ordering::Relaxed);
            let scripted = { self.answers.lock().unwrap().pop() };
            if let Some(answer) = scripted {
                return answer;
            }
            let batch: Json = serde_json::from_slice(&body).unwrap();
            let calls = batch["batch"].as_array().unwrap();
            if calls
                .iter()
                .any(|c| Some(c["messageId"].as_str().unwrap()) == self.poison)
            {
                return Ok(Answer {
                    status: 400,
                    retry_after: None,
                    body: format!("bad call {KEY}"),
                });
            }
            self.received.lock().unwrap().extend(calls.iter().cloned());
            Ok(Answer {
                status: 200,
                retry_after: None,
                body: "{}".into(),
            })
        }
    }

    fn call(i: usize, padding: usize) -> Outgoing {
        let mut call = Map::new();
        call.insert("type".into(), json!("track"));
        call.insert("messageId".into(), json!(format!("m-{i}")));
        call.insert("properties".into(), json!({ "pad": "x".repeat(padding) }));
        Outgoing {
            key: format!("m-{i:04}"),
            hash: format!("h{i}"),
            call,
        }
    }

    fn unavailable(status: u16, retry_after: Option<u64>) -> Result<Answer, SendError> {
        Ok(Answer {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: "busy".into(),
        })
    }

    async fn fixture(sender: Arc<Scripted>) -> (Deliverer, Arc<MemoryStore>, SourceConfig) {
        let store = Arc::new(MemoryStore::new());
        let config: SourceConfig = serde_json::from_value(json!({
            "id": "events", "name": "Events", "engine": "postgres", "secret_id": "db", "sync_type": "track",
            "query": "SELECT 1 WHERE d >= {{ last_update_time }}",
            "destination": {"kind": "http", "base_url": "http://127.0.0.1:1", "secret_id": "wk"}
        }))
        .unwrap();
        config.validate().unwrap();
        store.put_source(&config).await.unwrap();
        let secrets = MemorySecrets::default();
        crate::ports::SecretWriter::put_write_key(&secrets, "wk", &WriteKey(KEY.into()))
            .await
            .unwrap();
        let clock = Arc::new(TestClock::at(Utc::now()));
        let deliverer = Deliverer {
            sender,
            secrets: Arc::new(secrets),
            store: store.clone(),
            clock,
            settings: DeliverySettings::default(),
        };
        (deliverer, store, config)
    }

    #[tokio::test(start_paused = true)]
    async fn calls_go_in_order_in_batches_under_the_limit_and_each_state_is_kept() {
        let sender = Arc::new(Scripted::default());
        let (d, store, config) = fixture(sender.clone()).await;
        let calls: Vec<_> = (0..300).map(|i| call(i, 4_000)).collect();
        let report = d.deliver(&config, calls, &Budget::default()).await.unwrap();
        assert_eq!(
            (report.delivered, report.rejected.len(), report.undelivered.len()),
            (300, 0, 0)
        );
        let ids: Vec<_> = sender
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|c| c["messageId"].clone())
            .collect();
        assert_eq!(ids, (0..300).map(|i| json!(format!("m-{i}"))).collect::<Vec<_>>());
        assert!(
            sender.requests.load(Ordering::Relaxed) >= 3,
            "1.2 MB of calls need three batches"
        );
        let states = store.list_deliveries("events", None, 1_000, None).await.unwrap();
        assert_eq!(states.len(), 300);
        assert!(
            states
                .iter()
                .all(|s| s.status == DeliveryStatus::Delivered && s.attempts == 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_and_server_errors_are_retried_after_the_wait_they_ask_for() {
        let sender = Arc::new(Scripted::default());
        // Popped from the end: 429 (Retry-After 7 s), 500, 503, then success.
        *sender.answers.lock().unwrap() = vec![
            unavailable(503, None),
            Err(SendError("connection reset".into())),
            unavailable(429, Some(7)),
        ];
        let (d, store, config) = fixture(sender.clone()).await;
        let started = tokio::time::Instant::now();
        let report = d.deliver(&config, vec![call(1, 10)], &Budget::default()).await.unwrap();
        assert_eq!(report.delivered, 1);
        assert!(started.elapsed() >= Duration::from_secs(7), "Retry-After was honoured");
        let states = store.list_deliveries("events", None, 10, None).await.unwrap();
        assert_eq!(states[0].attempts, 4);
        assert_eq!(sender.received.lock().unwrap().len(), 1, "exactly once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_destination_that_keeps_failing_leaves_the_rest_for_the_next_delivery() {
        let sender = Arc::new(Scripted::default());
        *sender.answers.lock().unwrap() = (0..5).map(|_| unavailable(500, None)).collect();
        let (d, store, config) = fixture(sender.clone()).await;
        let calls: Vec<_> = (0..200).map(|i| call(i, 4_000)).collect();
        let report = d.deliver(&config, calls, &Budget::default()).await.unwrap();
        assert_eq!(report.delivered, 0);
        assert_eq!(report.undelivered.len(), 200);
        assert!(
            report
                .error
                .as_deref()
                .unwrap()
                .contains("not delivered after 5 attempts"),
            "{report:?}"
        );
        assert_eq!(sender.requests.load(Ordering::Relaxed), 5, "the later batches wait");
        let failed = store
            .list_deliveries("events", Some(DeliveryStatus::Failed), 1_000, None)
            .await
            .unwrap();
        assert!(!failed.is_empty() && failed[0].last_error.as_deref().unwrap().contains("HTTP 500"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_or_refused_call_is_rejected_with_its_reason_and_the_others_go() {
        let sender = Arc::new(Scripted {
            poison: Some("m-3"),
            ..Scripted::default()
        });
        let (d, store, config) = fixture(sender.clone()).await;
        let mut calls: Vec<_> = (0..8).map(|i| call(i, 10)).collect();
        calls.push(call(8, MAX_CALL_BYTES));
        let report = d.deliver(&config, calls, &Budget::default()).await.unwrap();
        assert_eq!(report.delivered, 7);
        let reasons: Vec<_> = report.rejected.iter().map(|(k, r)| (k.as_str(), r.as_str())).collect();
        assert_eq!(reasons.len(), 2);
        assert!(
            reasons
                .iter()
                .any(|(k, r)| *k == "m-0008" && r.contains("over the destination's limit of 32768 bytes"))
        );
        let (_, refused) = reasons.iter().find(|(k, _)| *k == "m-0003").unwrap();
        assert!(
            refused.starts_with("the destination refused the call (HTTP 400)"),
            "{refused}"
        );
        assert!(!refused.contains(KEY), "the write key is redacted: {refused}");
        let failed = store
            .list_deliveries("events", Some(DeliveryStatus::Failed), 10, None)
            .await
            .unwrap();
        assert_eq!(failed.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_delivers_what_changed_since_and_replays_what_failed() {
        use crate::ports::RecordWriter;
        use crate::record::{Record, RecordBatch};
        let sender = Arc::new(Scripted::default());
        let (d, store, config) = fixture(sender.clone()).await;
        let record = |i: i64, v: &str| {
            let columns: std::sync::Arc<[String]> = ["type", "messageId", "v"].map(String::from).into();
            Record::new(
                format!("k{i}"),
                crate::value::Row {
                    columns,
                    values: vec![
                        crate::Value::Text("track".into()),
                        crate::Value::Text(format!("m{i}")),
                        crate::Value::Text(v.into()),
                    ],
                },
            )
        };
        let batch = |v: &str| RecordBatch::new((0..5).map(|i| record(i, v)).collect());
        store.write_records("events", batch("a"), true).await.unwrap();
        let report = d
            .deliver_undelivered(&config, 2, &Budget::default(), &|_| {})
            .await
            .unwrap();
        assert_eq!(report.delivered, 5);
        let again = d
            .deliver_undelivered(&config, 2, &Budget::default(), &|_| {})
            .await
            .unwrap();
        assert_eq!(again.delivered, 0, "nothing changed, nothing is sent");
        store
            .write_records("events", RecordBatch::new(vec![record(2, "b")]), true)
            .await
            .unwrap();
        *sender.answers.lock().unwrap() = (0..5).map(|_| unavailable(502, None)).collect();
        let down = d
            .deliver_undelivered(&config, 2, &Budget::default(), &|_| {})
            .await
            .unwrap();
        assert_eq!(down.undelivered, ["k2"]);
        let replayed = d.replay_failed(&config, 100, &Budget::default()).await.unwrap();
        assert_eq!(replayed.delivered, 1);
        let received = sender.received.lock().unwrap();
        assert_eq!(received.len(), 6);
        assert_eq!(received[5]["v"], "b", "the changed call is sent in its new version");
    }
}
