//! Writes batches as tasks, several in flight, so reading and writing overlap.

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::Instrument;

use super::SyncError;
use crate::ports::{Store, StoreError, WriteStats};
use crate::record::{Record, RecordBatch};

/// After this many records written with none unchanged, a window stops checking hashes:
/// the check costs a read per record and would save nothing.
const HASH_CHECK_PROBE: u64 = 1_000;

pub(super) struct Writer {
    store: Arc<dyn Store>,
    source_id: Arc<str>,
    max_in_flight: usize,
    tasks: JoinSet<Result<WriteStats, StoreError>>,
    stats: WriteStats,
    check_unchanged: bool,
}

impl Writer {
    pub(super) fn new(store: Arc<dyn Store>, source_id: &str, max_in_flight: usize) -> Self {
        Writer {
            store,
            source_id: source_id.into(),
            max_in_flight: max_in_flight.max(1),
            tasks: JoinSet::new(),
            stats: WriteStats::default(),
            check_unchanged: true,
        }
    }

    /// Starts writing `records`, once fewer than `max_in_flight` writes are under way.
    pub(super) async fn submit(&mut self, records: Vec<Record>) -> Result<(), SyncError> {
        while self.tasks.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let (store, source_id, check) = (self.store.clone(), self.source_id.clone(), self.check_unchanged);
        let batch = RecordBatch::new(records);
        self.tasks
            .spawn(async move { store.write_records(&source_id, batch, check).await }.in_current_span());
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), SyncError> {
        if let Some(done) = self.tasks.join_next().await {
            self.stats += done??;
            if self.stats.unchanged == 0 && self.stats.written >= HASH_CHECK_PROBE {
                self.check_unchanged = false;
            }
        }
        Ok(())
    }

    /// Waits for every write: durable when it returns.
    pub(super) async fn finish(mut self) -> Result<WriteStats, SyncError> {
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        Ok(self.stats)
    }
}
