//! Sluice's events on EventBridge: `sluice.run.completed`, `sluice.backfill.requested`.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use sluice_core::{BackendError, Backfill, Events, EventsError, Run};

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
    async fn put(&self, event: &'static str, detail: String) -> Result<(), EventsError> {
        let failed = |source: BackendError| EventsError { event, source };
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(event)
            .detail(detail)
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| failed(crate::aws_error(e)))?;
        if out.failed_entry_count() > 0 {
            let why = out
                .entries()
                .iter()
                .filter_map(|e| e.error_message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(failed(BackendError::message(format!(
                "EventBridge refused the event: {why}"
            ))));
        }
        Ok(())
    }
}

#[async_trait]
impl Events for EventBridgeEvents {
    async fn run_completed(&self, run: &Run) -> Result<(), EventsError> {
        self.put(RUN_COMPLETED, serde_json::to_string(run).expect("runs serialize"))
            .await
    }

    async fn backfill_requested(&self, job: &Backfill) -> Result<(), EventsError> {
        let detail = BackfillRequested {
            source_id: job.source_id.clone(),
            backfill_id: job.id.clone(),
        };
        self.put(
            BACKFILL_REQUESTED,
            serde_json::to_string(&detail).expect("details serialize"),
        )
        .await
    }
}
