//! The delivery of calls: the Records table's DynamoDB stream invokes this function
//! with the records a sync wrote (new and changed ones only: an unchanged row is not
//! written again, and DynamoDB streams nothing for a write that changes nothing).
//! The calls of sources with a destination are delivered in order, each source on its
//! own and at the same time as the others; registration records and sources without
//! a destination are passed over.
//!
//! A call the destination refuses, or one over the size limit, is recorded as failed,
//! put on the dead-letter queue with its reason, and not retried: it neither blocks
//! nor re-sends the others. Calls a source's destination cannot take now (it is down,
//! answers 401/403/404, or the write key cannot be read) are parked, `waiting` in the
//! delivery log, and the stream moves on: no source holds up another. A schedule
//! invokes the function every minute with `{"retry_parked": true}` to send the parked
//! calls that are due. Only when a delivery state cannot be stored is the source's
//! first record reported as a batch item failure (ReportBatchItemFailures), so that
//! Lambda retries it and no call is lost.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use sluice_aws::{DeadLetterQueue, record_of_image};
use sluice_core::delivery::DeliveryError;
use sluice_core::{Budget, Deliverer, DeliveryReport, Outgoing, SourceConfig, Store, StoreError};
use tracing::{error, info, warn};

/// Time kept back from the function timeout to record the states and answer.
pub const FINISH_MARGIN: Duration = Duration::from_secs(10);

/// How long a retry of parked calls may run: less than the minute between two, so
/// that they do not overlap and send a call twice.
pub const RETRY_TIME: Duration = Duration::from_secs(50);

/// What invokes the function: a stream batch, or the schedule's retry of parked calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Event {
    Retry(RetryEvent),
    Stream(StreamEvent),
}

/// `{"retry_parked": true}`, the schedule's input (template.yaml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryEvent {
    pub retry_parked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Stream(StreamResponse),
    Retry(RetryResponse),
}

/// What a retry of parked calls did, over every source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetryResponse {
    pub delivered: u64,
    pub rejected: u64,
    /// Calls still waiting for their destination.
    pub waiting: u64,
    /// Sources whose parked calls could not be read or their states stored; their
    /// calls stay parked for the next retry.
    pub failed_sources: Vec<String>,
}

/// A stream event, the fields the delivery reads.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName")]
    pub event_name: String,
    pub dynamodb: StreamData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamData {
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<Map<String, Json>>,
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    /// When the write was made, in seconds since the epoch.
    #[serde(rename = "ApproximateCreationDateTime", default)]
    pub created: Option<f64>,
}

/// The answer Lambda reads with `ReportBatchItemFailures`: the stream is retried from
/// the first record named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the sources cannot be read: {0}")]
    Store(#[from] StoreError),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Self {
        Diagnostic {
            error_type: "Sluice.StoreUnavailable".into(),
            error_message: e.to_string(),
        }
    }
}

/// What the function works with, built once at init.
pub struct Delivery {
    pub store: std::sync::Arc<dyn Store>,
    pub deliverer: Deliverer,
    /// Where refused calls go with their reason; none only in local runs.
    pub dead_letters: Option<DeadLetterQueue>,
    /// The CloudWatch namespace of the EMF metrics; none prints none.
    pub metrics_namespace: Option<String>,
}

/// One source's calls in this event, in stream order, one per record (the last
/// image of a record the batch holds twice).
struct SourceCalls {
    calls: Vec<Outgoing>,
    /// Each call's sequence number, by record key.
    sequence: HashMap<String, String>,
}

/// Totals of an invocation, for the log and the metrics.
#[derive(Default)]
struct Totals {
    delivered: u64,
    rejected: u64,
    waiting: u64,
    oldest: Option<f64>,
}

impl Totals {
    fn add(&mut self, report: &DeliveryReport) {
        self.delivered += report.delivered;
        self.rejected += report.rejected.len() as u64;
        self.waiting += report.undelivered.len() as u64;
    }
}

/// The function's entry: a stream batch or a retry of parked calls.
pub async fn dispatch(d: &Delivery, event: LambdaEvent<Event>) -> Result<Response, HandlerError> {
    let LambdaEvent { payload, context } = event;
    match payload {
        Event::Stream(stream) => handle(d, LambdaEvent::new(stream, context)).await.map(Response::Stream),
        Event::Retry(RetryEvent { retry_parked: wanted }) => {
            if !wanted {
                return Ok(Response::Retry(RetryResponse::default()));
            }
            let cap = tokio::time::Instant::now() + RETRY_TIME;
            let deadline = sluice_lambda::deadline(&context, FINISH_MARGIN).map_or(cap, |d| d.min(cap));
            let budget = Budget::until(Some(deadline));
            retry_parked(d, &budget).await.map(Response::Retry)
        }
    }
}

pub async fn handle(d: &Delivery, event: LambdaEvent<StreamEvent>) -> Result<StreamResponse, HandlerError> {
    let budget = Budget::until(sluice_lambda::deadline(&event.context, FINISH_MARGIN));
    let mut order: Vec<String> = Vec::new();
    let mut by_source: HashMap<String, SourceCalls> = HashMap::new();
    let mut totals = Totals::default();
    for record in event.payload.records {
        let Some(image) = record.dynamodb.new_image.filter(|_| record.event_name != "REMOVE") else {
            continue;
        };
        let Some((source_id, stored)) = record_of_image(&image) else {
            warn!(
                sequence = record.dynamodb.sequence_number,
                "a stream record that is not a Sluice record; passed over"
            );
            continue;
        };
        totals.oldest = match (totals.oldest, record.dynamodb.created) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let entry = by_source.entry(source_id.clone()).or_insert_with(|| {
            order.push(source_id);
            SourceCalls {
                calls: Vec::new(),
                sequence: HashMap::new(),
            }
        });
        entry.calls.retain(|c| c.key != stored.key);
        entry
            .sequence
            .insert(stored.key.clone(), record.dynamodb.sequence_number);
        entry.calls.push(Outgoing::from(stored));
    }
    // Every source at once: a slow destination costs the others no time.
    let deliveries = order.into_iter().map(|source_id| {
        let calls = by_source.remove(&source_id).expect("listed");
        let budget = &budget;
        async move {
            let outcome = deliver_source(d, &source_id, calls.calls, budget).await;
            (source_id, calls.sequence, outcome)
        }
    });
    let mut retry_from: Option<String> = None;
    for (source_id, sequence, outcome) in futures::future::join_all(deliveries).await {
        match outcome {
            Ok(Some(report)) => {
                totals.add(&report);
                dead_letter(d, &source_id, &report.rejected).await;
            }
            Ok(None) => {}
            Err(e) => {
                // No state could be stored: Lambda retries this source's calls.
                error!(source_id, error = %e, "the calls' delivery states cannot be stored; Lambda retries them");
                totals.waiting += sequence.len() as u64;
                retry_from = earliest(retry_from, sequence.into_values());
            }
        }
    }
    let lag = totals.oldest.map(|t| (Utc::now().timestamp() as f64 - t).max(0.0));
    info!(
        delivered = totals.delivered,
        rejected = totals.rejected,
        waiting = totals.waiting,
        lag_seconds = lag,
        retry_from = retry_from.as_deref(),
        "stream batch delivered"
    );
    if let Some(namespace) = &d.metrics_namespace {
        println!("{}", emf(namespace, &totals, lag, Utc::now()));
    }
    Ok(StreamResponse {
        batch_item_failures: retry_from
            .into_iter()
            .map(|item_identifier| ItemFailure { item_identifier })
            .collect(),
    })
}

/// Delivers one source's calls of a stream batch; none when the source has no
/// destination (or no calls).
async fn deliver_source(
    d: &Delivery,
    source_id: &str,
    calls: Vec<Outgoing>,
    budget: &Budget,
) -> Result<Option<DeliveryReport>, DeliveryError> {
    let Some(state) = d.store.get_source(source_id).await? else {
        return Ok(None);
    };
    if state.config.destination.is_none() || !is_call(&state.config) {
        return Ok(None);
    }
    d.deliverer.deliver_new(&state.config, calls, budget).await.map(Some)
}

/// Sends the parked calls that are due, every source at once.
pub async fn retry_parked(d: &Delivery, budget: &Budget) -> Result<RetryResponse, HandlerError> {
    let sources: Vec<SourceConfig> = d
        .store
        .list_sources()
        .await?
        .into_iter()
        .map(|s| s.config)
        .filter(|c| c.destination.is_some() && is_call(c))
        .collect();
    let retries = sources
        .iter()
        .map(|config| async move { (config.id.as_str(), d.deliverer.retry_parked(config, budget).await) });
    let mut totals = Totals::default();
    let mut response = RetryResponse::default();
    for (source_id, outcome) in futures::future::join_all(retries).await {
        match outcome {
            Ok(report) => {
                totals.add(&report);
                dead_letter(d, source_id, &report.rejected).await;
            }
            Err(e) => {
                error!(source_id, error = %e, "the parked calls cannot be retried now; they stay parked for the next retry");
                response.failed_sources.push(source_id.to_string());
            }
        }
    }
    info!(
        delivered = totals.delivered,
        rejected = totals.rejected,
        waiting = totals.waiting,
        "parked calls retried"
    );
    if let Some(namespace) = &d.metrics_namespace {
        println!("{}", emf(namespace, &totals, None, Utc::now()));
    }
    Ok(RetryResponse {
        delivered: totals.delivered,
        rejected: totals.rejected,
        waiting: totals.waiting,
        ..response
    })
}

fn is_call(config: &SourceConfig) -> bool {
    sluice_core::mapping::Call::of(config.sync_type).is_some()
}

/// The earliest of the sequence numbers (they are decimal strings of equal meaning,
/// compared as numbers).
fn earliest(current: Option<String>, more: impl Iterator<Item = String>) -> Option<String> {
    current
        .into_iter()
        .chain(more)
        .min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)))
}

async fn dead_letter(d: &Delivery, source_id: &str, rejected: &[(String, String)]) {
    let Some(queue) = &d.dead_letters else { return };
    for (record_key, reason) in rejected {
        let letter = json!({ "source_id": source_id, "record_key": record_key, "reason": reason });
        if let Err(e) = queue.send(&letter).await {
            error!(source_id, record_key, error = %e, "could not put a refused call on the dead-letter queue; its delivery state says why it failed");
        }
    }
}

/// The invocation's metrics as one CloudWatch Embedded Metric Format document.
fn emf(namespace: &str, t: &Totals, lag: Option<f64>, now: DateTime<Utc>) -> Json {
    let mut metrics = vec![
        json!({"Name": "CallsDelivered", "Unit": "Count"}),
        json!({"Name": "CallsRejected", "Unit": "Count"}),
        json!({"Name": "CallsWaiting", "Unit": "Count"}),
    ];
    let mut doc = json!({
        "_aws": {"Timestamp": now.timestamp_millis(), "CloudWatchMetrics": [{
            "Namespace": namespace, "Dimensions": [[]], "Metrics": [] }]},
        "CallsDelivered": t.delivered,
        "CallsRejected": t.rejected,
        "CallsWaiting": t.waiting,
    });
    if let Some(lag) = lag {
        metrics.push(json!({"Name": "DeliveryLag", "Unit": "Seconds"}));
        doc["DeliveryLag"] = json!(lag);
    }
    doc["_aws"]["CloudWatchMetrics"][0]["Metrics"] = Json::Array(metrics);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_sequence_number_is_the_smallest_number() {
        let seq = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(earliest(None, seq(&["900", "1000", "95"])), Some("95".into()));
        assert_eq!(earliest(Some("7".into()), seq(&["10"])), Some("7".into()));
        assert_eq!(earliest(None, seq(&[])), None);
    }

    #[test]
    fn the_metrics_declare_what_they_hold() {
        let t = Totals {
            delivered: 3,
            rejected: 1,
            waiting: 0,
            oldest: None,
        };
        let doc = emf("Sluice/test", &t, Some(2.5), Utc::now());
        for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            assert!(doc[m["Name"].as_str().unwrap()].is_number(), "{doc}");
        }
        assert_eq!(doc["CallsDelivered"], 3);
    }
}
