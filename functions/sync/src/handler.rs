//! The scheduled sync: an EventBridge Scheduler schedule per source invokes this
//! function with `{"source_id": "..."}`.

use std::time::Duration;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Deserialize;
use sluice_core::{Run, RunStatus, StoreError, SyncService, Trigger};

/// The schedule's input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEvent {
    pub source_id: String,
}

/// Time kept back from the function timeout to finish writes and the run log.
pub const FINISH_MARGIN: Duration = Duration::from_secs(60);

/// Why an invocation failed. A failed run is an error too, so Lambda's failure
/// destination receives it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("run {run_id} of source {source_id} failed: {message}")]
    RunFailed {
        source_id: String,
        run_id: String,
        message: String,
    },
    #[error("the run log could not be written: {0}")]
    Store(#[from] StoreError),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Self {
        let error_type = match e {
            HandlerError::RunFailed { .. } => "Sluice.RunFailed",
            HandlerError::Store(_) => "Sluice.StoreUnavailable",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// One invocation: one run of the source, inside the invocation's time budget.
pub async fn handle(service: &SyncService, event: LambdaEvent<SyncEvent>) -> Result<Run, HandlerError> {
    let deadline = sluice_lambda::deadline(&event.context, FINISH_MARGIN);
    let run = service
        .run(&event.payload.source_id, Trigger::Schedule, deadline)
        .await?;
    match run.status {
        RunStatus::Failed => Err(HandlerError::RunFailed {
            source_id: run.source_id,
            run_id: run.id,
            message: run.message.unwrap_or_default(),
        }),
        RunStatus::Succeeded | RunStatus::Skipped => Ok(run),
    }
}
