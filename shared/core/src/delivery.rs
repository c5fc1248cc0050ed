//! Delivering Customer.io-style calls to a Segment-compatible batch API (Customer.io
//! Data Pipelines, Segment, RudderStack, ...). DynamoDB stays the system of record: a
//! call is delivered once per change of its record (its hash), deduplicated downstream
//! by its `messageId`, and a destination outage never blocks or rolls back a sync.
//!
//! The same [`Deliverer`] serves the Records stream's function and the CLI. It packs
//! calls into batches within the Segment limits (32 KB a call, 500 KB a batch),
//! retries 408, 429 and 5xx with jittered backoff (honouring `Retry-After`), isolates
//! a call the destination refuses (400, 413, 422) by splitting its batch, and records
//! every call's delivery state.
//!
//! Each source is delivered on its own: when its destination is unavailable or
//! misconfigured (it keeps failing, answers 401, 403 or 404, or the write key cannot
//! be read) the calls are parked, `waiting` in the delivery log with the time of their
//! next attempt, and [`Deliverer::retry_parked`] sends them then, waiting twice as long
//! after each failed retry (docs/decisions.md, "Parked calls").

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
    /// Deliveries in a row that found the destination unavailable (0 for a new call).
    pub parked: u32,
}

impl From<StoredRecord> for Outgoing {
    fn from(r: StoredRecord) -> Self {
        Outgoing {
            key: r.key,
            hash: r.hash,
            call: r.fields.into_iter().collect(),
            parked: 0,
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
    /// Refused by the destination (or over its size limit): put on the dead-letter
    /// queue and sent again only by a replay; `last_error` says why.
    Failed,
    /// Parked: the destination was unavailable or misconfigured, or the write key could
    /// not be read; sent again at `next_attempt_at`. `last_error` says why.
    Waiting,
}

impl DeliveryStatus {
    pub const NAMES: &str = "delivered, failed or waiting";

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Waiting => "waiting",
        }
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delivered" => Ok(DeliveryStatus::Delivered),
            "failed" => Ok(DeliveryStatus::Failed),
            "waiting" => Ok(DeliveryStatus::Waiting),
            _ => Err(format!("a delivery status is {}", DeliveryStatus::NAMES)),
        }
    }
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
    /// When a waiting call is sent again.
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Deliveries in a row that found the destination unavailable; each doubles the
    /// wait before the next attempt.
    #[serde(default)]
    pub parked: u32,
}

/// What one delivery did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryReport {
    pub delivered: u64,
    /// Calls the destination (or the size limit) refused: `(key, reason)`. They are
    /// not retried; their state says why.
    pub rejected: Vec<(String, String)>,
    /// Calls not delivered because the destination was unavailable or misconfigured
    /// (or time ran out), in order: they wait, and are sent again at their next attempt.
    pub undelivered: Vec<String>,
    /// Why the undelivered ones were not.
    pub error: Option<String>,
}

impl DeliveryReport {
    fn add(&mut self, other: DeliveryReport) {
        self.delivered += other.delivered;
        self.rejected.extend(other.rejected);
        self.undelivered.extend(other.undelivered);
        if other.error.is_some() {
            self.error = other.error;
        }
    }
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
    /// A parked call is first tried again after this long; each failed retry doubles it.
    pub park_wait: Duration,
    /// A parked call is tried again at least this often.
    pub max_park_wait: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            park_wait: Duration::from_secs(60),
            max_park_wait: Duration::from_secs(3_600),
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
    /// The destination refused a call of it (400, 413, 422).
    Refused {
        status: u16,
        reason: String,
    },
    /// The destination kept failing or is misconfigured (401, 403, 404, ...), or time
    /// ran out.
    Unavailable {
        attempts: u32,
        reason: String,
    },
}

/// What an answer says about the batch it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth sending again soon: throttled, a server error, a request timeout.
    Transient,
    /// About a call of the batch (malformed, too large, unprocessable): the batch is
    /// split until that call stands alone, and it is dead-lettered.
    Refused,
    /// The destination is misconfigured or gone (401, 403, 404, any other answer): no
    /// call is at fault, so they are all kept and retried later.
    Unavailable,
}

impl Verdict {
    /// The meaning of an HTTP status in the Segment batch API (Customer.io Data
    /// Pipelines, Segment and RudderStack answer alike).
    pub fn of(status: u16) -> Verdict {
        match status {
            200..=299 => Verdict::Delivered,
            408 | 429 | 500..=599 => Verdict::Transient,
            400 | 413 | 422 => Verdict::Refused,
            // 401/403 (a rotated or wrong write key), 404 (a wrong URL), redirects that
            // are not followed, anything unforeseen: keeping the calls is the safe side.
            _ => Verdict::Unavailable,
        }
    }
}

impl Deliverer {
    /// Delivers `calls` of `source` in order and records each one's state. Calls the
    /// destination cannot take now (it is unavailable or misconfigured, the write key
    /// cannot be read, or `budget` runs out) are parked: `waiting`, in the report's
    /// `undelivered`, and sent again by [`Deliverer::retry_parked`].
    ///
    /// # Errors
    /// Only when the source has no destination, or the states cannot be stored.
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
        let mut report = DeliveryReport::default();
        let key = match self.secrets.write_key(&destination.secret_id).await {
            Ok(key) => Some(key),
            Err(e) => {
                report.error = Some(format!(
                    "the write key cannot be read: {e}; fix the secret `{}` (README \"Delivering calls\")",
                    destination.secret_id
                ));
                None
            }
        };
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
            let sent = match (&report.error, &key) {
                (None, Some(key)) => self.send(destination, key, &batch, budget).await,
                // The destination is unavailable: the rest waits with the calls before.
                (error, _) => Sent::Unavailable {
                    attempts: 0,
                    reason: error.clone().unwrap_or_default(),
                },
            };
            match sent {
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
                    states.extend(batch.iter().map(|(c, _)| self.parked(c, attempts, &reason)));
                    report.undelivered.extend(batch.into_iter().map(|(c, _)| c.key));
                    report.error = Some(reason);
                }
            }
        }
        self.store.put_deliveries(&source.id, &states).await?;
        if let Some(reason) = &report.error {
            // The alarm on CallsWaiting (template.yaml) catches this line's metric.
            warn!(
                source_id = source.id,
                waiting = report.undelivered.len(),
                reason,
                "the destination is unavailable or misconfigured; the calls wait and are retried later"
            );
        }
        info!(
            source_id = source.id,
            delivered = report.delivered,
            rejected = report.rejected.len(),
            undelivered = report.undelivered.len(),
            "calls delivered"
        );
        Ok(report)
    }

    /// Delivers new calls of `source` (from the Records stream), unless calls of the
    /// source are parked: then the destination is taken as still unavailable and these
    /// wait with them, so that a destination that is down costs no time.
    ///
    /// # Errors
    /// As [`Deliverer::deliver`].
    pub async fn deliver_new(
        &self,
        source: &SourceConfig,
        calls: Vec<Outgoing>,
        budget: &Budget,
    ) -> Result<DeliveryReport, DeliveryError> {
        let far = DateTime::<Utc>::MAX_UTC;
        let Some(first) = self.store.parked(&source.id, far, 1).await?.into_iter().next() else {
            return self.deliver(source, calls, budget).await;
        };
        let reason = format!(
            "waiting behind the source's parked calls; the last error: {}",
            first.last_error.as_deref().unwrap_or("none")
        );
        let now = self.clock.now();
        let at = first.next_attempt_at.unwrap_or(now).max(now);
        let states: Vec<_> = calls
            .iter()
            .map(|c| DeliveryState {
                // They share the parked calls' fate: their next attempt, and its backoff.
                next_attempt_at: Some(at),
                parked: first.parked,
                ..self.state(c, DeliveryStatus::Waiting, 0, Some(reason.clone()))
            })
            .collect();
        self.store.put_deliveries(&source.id, &states).await?;
        info!(
            source_id = source.id,
            waiting = states.len(),
            "calls parked behind the source's waiting calls"
        );
        Ok(DeliveryReport {
            undelivered: calls.into_iter().map(|c| c.key).collect(),
            error: Some(reason),
            ..DeliveryReport::default()
        })
    }

    /// Sends the source's parked calls that are due, in their current version, page
    /// by page, until none is due, the destination fails again (they are parked again,
    /// for twice as long) or the budget runs out.
    ///
    /// # Errors
    /// As [`Deliverer::deliver`].
    pub async fn retry_parked(&self, source: &SourceConfig, budget: &Budget) -> Result<DeliveryReport, DeliveryError> {
        const PAGE: usize = 500;
        let mut total = DeliveryReport::default();
        // The parked index may lag behind the states just written (a DynamoDB GSI is
        // eventually consistent): a call is sent once per sweep.
        let mut seen = std::collections::HashSet::new();
        while budget.stop(Duration::ZERO).is_none() {
            let due = self.store.parked(&source.id, self.clock.now(), PAGE).await?;
            let due: Vec<_> = due.into_iter().filter(|s| seen.insert(s.record_key.clone())).collect();
            if due.is_empty() {
                break;
            }
            let calls = self.current_calls(source, due).await?;
            let report = self.deliver(source, calls, budget).await?;
            let stop = report.error.is_some();
            total.add(report);
            if stop {
                break;
            }
        }
        Ok(total)
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
            let stop = report.error.is_some();
            total.add(report);
            on_progress(&total);
            if stop {
                return Ok(total);
            }
        }
    }

    /// Sends again now, in their current version, the calls whose delivery failed or
    /// waits (at most `limit` of each).
    ///
    /// # Errors
    /// As [`Deliverer::deliver`].
    pub async fn replay_failed(
        &self,
        source: &SourceConfig,
        limit: usize,
        budget: &Budget,
    ) -> Result<DeliveryReport, DeliveryError> {
        let mut states = Vec::new();
        for status in [DeliveryStatus::Failed, DeliveryStatus::Waiting] {
            states.extend(
                self.store
                    .list_deliveries(&source.id, Some(status), limit, None)
                    .await?,
            );
        }
        let calls = self.current_calls(source, states).await?;
        self.deliver(source, calls, budget).await
    }

    /// The stored records of `states`, as calls that carry their parked count. A state
    /// whose record is gone is closed as failed, so it is not looked for again.
    async fn current_calls(
        &self,
        source: &SourceConfig,
        states: Vec<DeliveryState>,
    ) -> Result<Vec<Outgoing>, DeliveryError> {
        // A few reads in flight: a page of parked calls is read in a fraction of the
        // time one by one would take.
        let mut records = Vec::with_capacity(states.len());
        for chunk in states.chunks(16) {
            let mut reads = Vec::with_capacity(chunk.len());
            for state in chunk {
                reads.push(self.store.get_record(&source.id, &state.record_key));
            }
            records.extend(futures::future::try_join_all(reads).await?);
        }
        let mut calls = Vec::with_capacity(states.len());
        let mut gone = Vec::new();
        for (state, record) in states.into_iter().zip(records) {
            match record {
                Some(record) => calls.push(Outgoing {
                    parked: state.parked,
                    ..Outgoing::from(record)
                }),
                None => gone.push(DeliveryState {
                    status: DeliveryStatus::Failed,
                    updated_at: self.clock.now(),
                    next_attempt_at: None,
                    last_error: Some("its record is no longer stored".into()),
                    ..state
                }),
            }
        }
        self.store.put_deliveries(&source.id, &gone).await?;
        Ok(calls)
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
            next_attempt_at: None,
            parked: 0,
        }
    }

    /// A parked call's state: tried again after `park_wait`, doubled for each
    /// delivery in a row that found the destination unavailable.
    fn parked(&self, call: &Outgoing, attempts: u32, reason: &str) -> DeliveryState {
        let wait = self
            .settings
            .park_wait
            .saturating_mul(1 << call.parked.min(16))
            .min(self.settings.max_park_wait);
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
        DeliveryState {
            next_attempt_at: Some(self.clock.now() + wait),
            parked: call.parked + 1,
            ..self.state(call, DeliveryStatus::Waiting, attempts, Some(reason.to_string()))
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
                Ok(a) => match Verdict::of(a.status) {
                    Verdict::Delivered => return Sent::Delivered { attempts: attempt },
                    Verdict::Transient => (
                        format!("HTTP {} from {url}: {}", a.status, redact(&a.body, key)),
                        a.retry_after,
                    ),
                    Verdict::Refused => {
                        return Sent::Refused {
                            status: a.status,
                            reason: redact(&a.body, key),
                        };
                    }
                    Verdict::Unavailable => {
                        return Sent::Unavailable {
                            attempts: attempt,
                            reason: format!(
                                "HTTP {} from {url}: {}; the destination is misconfigured (a wrong or rotated write key, a wrong URL): fix it, the calls are kept",
                                a.status,
                                redact(&a.body, key)
                            ),
                        };
                    }
                },
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

/// The waiting states of `states` due by `due_by`, the earliest first (the stores
/// without an index on the next attempt sort them here).
pub fn due(states: impl Iterator<Item = DeliveryState>, due_by: DateTime<Utc>, limit: usize) -> Vec<DeliveryState> {
    let mut due: Vec<_> = states
        .filter(|d| d.status == DeliveryStatus::Waiting && d.next_attempt_at.is_some_and(|at| at <= due_by))
        .collect();
    due.sort_by_key(|d| d.next_attempt_at);
    due.truncate(limit);
    due
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

/// A destination's message without the write key (some echo the request, with its
/// Basic authorization header): removed before the message is cut, so that no part of
/// it survives at the cut.
fn redact(message: &str, key: &WriteKey) -> String {
    let mut text = message.to_string();
    if !key.0.is_empty() {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.0));
        text = text.replace(&key.0, "<redacted>").replace(&basic, "<redacted>");
    }
    text.chars().take(MAX_REASON_CHARS).collect()
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
            parked: 0,
        }
    }

    /// A stored track record `k{i}` whose call has `messageId` `m{i}`.
    fn record(i: i64, v: &str) -> crate::record::Record {
        let columns: std::sync::Arc<[String]> = ["type", "messageId", "v"].map(String::from).into();
        crate::record::Record::new(
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
    }

    fn unavailable(status: u16, retry_after: Option<u64>) -> Result<Answer, SendError> {
        Ok(Answer {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: "busy".into(),
        })
    }

    async fn fixture(sender: Arc<Scripted>) -> (Deliverer, Arc<MemoryStore>, SourceConfig) {
        let (d, store, config, _) = fixture_with_clock(sender).await;
        (d, store, config)
    }

    async fn fixture_with_clock(sender: Arc<Scripted>) -> (Deliverer, Arc<MemoryStore>, SourceConfig, Arc<TestClock>) {
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
            clock: clock.clone(),
            settings: DeliverySettings::default(),
        };
        (deliverer, store, config, clock)
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
        let waiting = store
            .list_deliveries("events", Some(DeliveryStatus::Waiting), 1_000, None)
            .await
            .unwrap();
        assert_eq!(waiting.len(), 200, "every call is parked, also those never sent");
        assert!(waiting[0].last_error.as_deref().unwrap().contains("HTTP 500"));
        let minute = chrono::Duration::seconds(60);
        assert!(
            waiting
                .iter()
                .all(|s| s.parked == 1 && s.next_attempt_at == Some(d.clock.now() + minute))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn parked_calls_are_retried_when_due_with_a_doubling_wait_and_arrive_once() {
        let sender = Arc::new(Scripted::default());
        *sender.answers.lock().unwrap() = (0..5).map(|_| unavailable(503, None)).collect();
        let (d, store, config, clock) = fixture_with_clock(sender.clone()).await;
        use crate::ports::RecordWriter;
        let batch = crate::record::RecordBatch::new((0..11).map(|i| record(i, "a")).collect());
        store.write_records("events", batch, true).await.unwrap();
        let mut calls: Vec<Outgoing> = store
            .undelivered("events", None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(Outgoing::from)
            .collect();
        let last = calls.pop().unwrap();
        let report = d.deliver_new(&config, calls, &Budget::default()).await.unwrap();
        assert_eq!(report.undelivered.len(), 10);
        // New calls wait behind the parked ones, without a request.
        let requests = sender.requests.load(Ordering::Relaxed);
        let report = d.deliver_new(&config, vec![last], &Budget::default()).await.unwrap();
        assert_eq!(report.undelivered, ["k9"]);
        assert_eq!(sender.requests.load(Ordering::Relaxed), requests);
        // Not due yet: nothing is sent.
        let early = d.retry_parked(&config, &Budget::default()).await.unwrap();
        assert_eq!(early, DeliveryReport::default());
        // Due (a minute after the retries gave up), and still down: parked again for
        // twice as long.
        tokio::time::advance(Duration::from_secs(90)).await;
        *sender.answers.lock().unwrap() = (0..5).map(|_| unavailable(502, None)).collect();
        let again = d.retry_parked(&config, &Budget::default()).await.unwrap();
        assert_eq!((again.delivered, again.undelivered.len()), (0, 11));
        let parked = store.parked("events", DateTime::<Utc>::MAX_UTC, 100).await.unwrap();
        assert!(
            parked
                .iter()
                .all(|s| s.parked == 2 && s.next_attempt_at == Some(clock.now() + chrono::Duration::seconds(120))),
            "{parked:?}"
        );
        // Back: each call arrives once, in its order.
        tokio::time::advance(Duration::from_secs(150)).await;
        let back = d.retry_parked(&config, &Budget::default()).await.unwrap();
        assert_eq!((back.delivered, back.undelivered.len()), (11, 0));
        let mut ids: Vec<_> = sender
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|c| c["messageId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        let mut expected: Vec<_> = (0..11).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(ids, expected, "each once");
        assert!(
            store
                .parked("events", DateTime::<Utc>::MAX_UTC, 100)
                .await
                .unwrap()
                .is_empty()
        );
        let quiet = d.retry_parked(&config, &Budget::default()).await.unwrap();
        assert_eq!(quiet, DeliveryReport::default(), "nothing twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_misconfigured_destination_keeps_every_call_and_only_a_bad_call_is_refused() {
        for status in [401, 403, 404, 405, 410] {
            let sender = Arc::new(Scripted::default());
            *sender.answers.lock().unwrap() = vec![unavailable(status, None)];
            let (d, store, config) = fixture(sender.clone()).await;
            let report = d
                .deliver(&config, (0..8).map(|i| call(i, 10)).collect(), &Budget::default())
                .await
                .unwrap();
            assert_eq!(
                (report.delivered, report.rejected.len(), report.undelivered.len()),
                (0, 0, 8)
            );
            assert_eq!(
                sender.requests.load(Ordering::Relaxed),
                1,
                "{status}: not split, not retried now"
            );
            let error = report.error.unwrap();
            assert!(
                error.contains(&format!("HTTP {status}")) && error.contains("the calls are kept"),
                "{error}"
            );
            assert!(!error.contains(KEY));
            let waiting = store
                .list_deliveries("events", Some(DeliveryStatus::Waiting), 10, None)
                .await
                .unwrap();
            assert_eq!(waiting.len(), 8, "{status}");
        }
        for status in [400, 413, 422] {
            let sender = Arc::new(Scripted::default());
            *sender.answers.lock().unwrap() = vec![unavailable(status, None)];
            let (d, _, config) = fixture(sender.clone()).await;
            let report = d.deliver(&config, vec![call(0, 10)], &Budget::default()).await.unwrap();
            assert_eq!(report.rejected.len(), 1, "{status} is about the call");
        }
        assert_eq!(Verdict::of(408), Verdict::Transient);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_key_that_cannot_be_read_parks_the_calls_with_the_reason() {
        let sender = Arc::new(Scripted::default());
        let (mut d, store, config) = fixture(sender.clone()).await;
        for (secrets, reason) in [
            (MemorySecrets::default(), "does not exist"),
            (
                {
                    let s = MemorySecrets::default();
                    crate::ports::SecretWriter::put_write_key(&s, "wk", &WriteKey(String::new()))
                        .await
                        .unwrap();
                    s
                },
                "expected {\"write_key\"",
            ),
        ] {
            d.secrets = Arc::new(secrets);
            let report = d.deliver(&config, vec![call(1, 10)], &Budget::default()).await.unwrap();
            assert_eq!(report.undelivered, ["m-0001"]);
            let waiting = store
                .list_deliveries("events", Some(DeliveryStatus::Waiting), 10, None)
                .await
                .unwrap();
            let error = waiting[0].last_error.clone().unwrap();
            assert!(
                error.contains("the write key cannot be read") && error.contains(reason),
                "{error}"
            );
        }
        assert_eq!(sender.requests.load(Ordering::Relaxed), 0);
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
        use crate::record::RecordBatch;
        let sender = Arc::new(Scripted::default());
        let (d, store, config) = fixture(sender.clone()).await;
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
        let waiting = store
            .list_deliveries("events", Some(DeliveryStatus::Waiting), 10, None)
            .await
            .unwrap();
        assert_eq!(waiting.len(), 1, "the replay finds the parked call");
        let replayed = d.replay_failed(&config, 100, &Budget::default()).await.unwrap();
        assert_eq!(replayed.delivered, 1);
        let received = sender.received.lock().unwrap();
        assert_eq!(received.len(), 6);
        assert_eq!(received[5]["v"], "b", "the changed call is sent in its new version");
    }

    #[test]
    fn no_part_of_the_write_key_survives_in_a_reason() {
        use base64::Engine;
        let key = WriteKey("wk-live-9f8e7d6c5b4a".into());
        // The key straddles the cut, then the Basic header an echo would show.
        let echoed = format!(
            "{}{} Authorization: Basic {}",
            "x".repeat(MAX_REASON_CHARS - 5),
            key.0,
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.0))
        );
        let reason = redact(&echoed, &key);
        assert!(reason.chars().count() <= MAX_REASON_CHARS);
        assert!(!reason.contains("wk-l"), "{reason}");
        let full = redact(&echoed[MAX_REASON_CHARS - 5..], &key);
        assert!(!full.contains("d2stbGl2"), "no base64 of the key: {full}");
    }
}
