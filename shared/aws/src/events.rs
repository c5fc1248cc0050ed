//! Sluice's events on EventBridge: `sluice.run.completed`, `sluice.backfill.requested`.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use sluice_core::{Backfill, BoxError, Events, Run};

pub struct EventBridgeEvents {
    client: Client,
    bus: String,
}

/// The `source` of every event Sluice puts.
pub const EVENT_SOURCE: &str = "sluice";
pub const RUN_COMPLETED: &str = "sluice.run.completed";
pub const BACKFILL_REQUESTED: &str = "sluice.backfill.requested";

impl EventBridgeEvents {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        EventBridgeEvents {
            client,
            bus: bus.into(),
        }
    }
}

/// The detail of `sluice.backfill.requested`: which job to work on. The job itself can
/// be larger than an event may be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackfillRequested {
    pub source_id: String,
    pub backfill_id: String,
}

impl EventBridgeEvents {
    async fn put(&self, detail_type: &str, detail: String) -> Result<(), BoxError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(crate::aws_error)?;
        if out.failed_entry_count() > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| e.error_message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(format!("EventBridge refused the event: {why}").into());
        }
        Ok(())
    }
}

#[async_trait]
impl Events for EventBridgeEvents {
    async fn run_completed(&self, run: &Run) -> Result<(), BoxError> {
        self.put(RUN_COMPLETED, serde_json::to_string(run)?).await
    }

    async fn backfill_requested(&self, job: &Backfill) -> Result<(), BoxError> {
        let detail = BackfillRequested {
            source_id: job.source_id.clone(),
            backfill_id: job.id.clone(),
        };
        self.put(BACKFILL_REQUESTED, serde_json::to_string(&detail)?).await
    }
}
