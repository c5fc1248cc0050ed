//! Time and ids come through ports, so that lease expiry, retries and every other
//! decision that reads the clock can be unit-tested with a clock the test moves.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::ContextV7;

/// The wall clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// New identifiers.
pub trait IdSource: Send + Sync {
    /// An id that sorts after the ids made before `at` (runs, backfill jobs).
    fn sortable_id(&self, at: DateTime<Utc>) -> String;
    /// An unguessable token (a lease's).
    fn token(&self) -> String;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// UUIDv7 ids (time-sortable) and UUIDv4 tokens.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidIds;

impl IdSource for UuidIds {
    fn sortable_id(&self, at: DateTime<Utc>) -> String {
        // One context for the process keeps ids made in the same millisecond in order.
        static CONTEXT: Mutex<ContextV7> = Mutex::new(ContextV7::new());
        let context = CONTEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ts = uuid::Timestamp::from_unix(&*context, at.timestamp().max(0) as u64, at.timestamp_subsec_nanos());
        uuid::Uuid::new_v7(ts).to_string()
    }

    fn token(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}
