//! The delivery of calls: the Records table's DynamoDB stream invokes this function
//! with the records a sync wrote (new and changed ones only: an unchanged row is not
//! written again, and DynamoDB streams nothing for a write that changes nothing).
//! The calls of sources with a destination are delivered in order; registration
//! records and sources without one are passed over.
//!
//! A call the destination refuses, or one over the size limit, is recorded as failed,
//! put on the dead-letter queue with its reason, and not retried: it neither blocks
//! nor re-sends the others. Calls the destination could not take after the retries
//! are reported as batch item failures (ReportBatchItemFailures), so Lambda retries
//! the stream from the first of them; the calls after it that went through are sent
//! again, and their `messageId` makes the destination drop the copies.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use sluice_aws::{DeadLetterQueue, record_of_image};
use sluice_core::delivery::DeliveryError;
use sluice_core::{Budget, Deliverer, DeliveryReport, Outgoing, SecretsError, SourceConfig, Store, StoreError};
use tracing::{error, info, warn};

/// Time kept back from the function timeout to record the states and answer.
pub const FINISH_MARGIN: Duration = Duration::from_secs(10);

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
    undelivered: u64,
    oldest: Option<f64>,
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
    let mut retry_from: Option<String> = None;
    for source_id in order {
        let SourceCalls { calls, sequence } = by_source.remove(&source_id).expect("listed");
        let Some(state) = d.store.get_source(&source_id).await? else {
            continue;
        };
        let config = state.config;
        if config.destination.is_none() || !is_call(&config) {
            continue;
        }
        let count = calls.len() as u64;
        let report = match d.deliverer.deliver(&config, calls, &budget).await {
            Ok(report) => report,
            Err(e @ DeliveryError::Secrets(SecretsError::Backend { .. })) => {
                warn!(source_id, error = %e, "the write key cannot be read now; Lambda retries");
                totals.undelivered += count;
                retry_from = earliest(retry_from, sequence.values().cloned());
                continue;
            }
            Err(e) => {
                // A source that cannot deliver at all (no write key) must not hold the
                // stream up for the others: its calls go to the dead-letter queue.
                error!(source_id, error = %e, "the source's calls cannot be delivered");
                totals.rejected += count;
                dead_letter(
                    d,
                    &source_id,
                    &sequence.keys().map(|k| (k.clone(), e.to_string())).collect::<Vec<_>>(),
                )
                .await;
                continue;
            }
        };
        totals.delivered += report.delivered;
        totals.rejected += report.rejected.len() as u64;
        totals.undelivered += report.undelivered.len() as u64;
        dead_letter(d, &source_id, &report.rejected).await;
        retry_from = earliest(retry_from, undelivered_sequences(&report, &sequence));
    }
    let lag = totals.oldest.map(|t| (Utc::now().timestamp() as f64 - t).max(0.0));
    info!(
        delivered = totals.delivered,
        rejected = totals.rejected,
        undelivered = totals.undelivered,
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

fn is_call(config: &SourceConfig) -> bool {
    sluice_core::mapping::Call::of(config.sync_type).is_some()
}

fn undelivered_sequences<'a>(
    report: &'a DeliveryReport,
    sequence: &'a HashMap<String, String>,
) -> impl Iterator<Item = String> + 'a {
    report.undelivered.iter().filter_map(|k| sequence.get(k).cloned())
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
        json!({"Name": "CallsUndelivered", "Unit": "Count"}),
    ];
    let mut doc = json!({
        "_aws": {"Timestamp": now.timestamp_millis(), "CloudWatchMetrics": [{
            "Namespace": namespace, "Dimensions": [[]], "Metrics": [] }]},
        "CallsDelivered": t.delivered,
        "CallsRejected": t.rejected,
        "CallsUndelivered": t.undelivered,
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
            undelivered: 0,
            oldest: None,
        };
        let doc = emf("Sluice/test", &t, Some(2.5), Utc::now());
        for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            assert!(doc[m["Name"].as_str().unwrap()].is_number(), "{doc}");
        }
        assert_eq!(doc["CallsDelivered"], 3);
    }
}
