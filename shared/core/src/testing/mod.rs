//! In-memory implementations of every port (feature `test-util`), so that each
//! decision of the services can be unit-tested in milliseconds: a store, a source
//! database whose rows and clock the test scripts, secrets, events, schedules, and a
//! clock that moves with tokio's (paused) time. The contract suite
//! (tests/tests/store_contract.rs) runs [`MemoryStore`] beside the real stores.

mod reader;
mod store;

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use reader::{ScriptedDatabase, ScriptedReader};
pub use store::MemoryStore;

use crate::backfill::Backfill;
use crate::ports::{
    Clock, Events, EventsError, Schedule, ScheduleError, Schedules, SecretWriter, Secrets, SecretsError,
};
use crate::run::Run;
use crate::source::ConnectionSecret;

/// The wall clock of a test: `base` plus the tokio time elapsed since it was made, so
/// that under `#[tokio::test(start_paused = true)]` sleeps and `tokio::time::advance`
/// move it, in no real time.
#[derive(Debug)]
pub struct TestClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TestClock {
    pub fn at(base: DateTime<Utc>) -> Self {
        TestClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).expect("test durations fit");
        self.base + elapsed
    }
}

/// Secrets held in memory, by id.
#[derive(Debug, Default)]
pub struct MemorySecrets(Mutex<BTreeMap<String, serde_json::Value>>);

impl MemorySecrets {
    pub fn with(id: &str, secret: ConnectionSecret) -> Self {
        let value = serde_json::to_value(secret).expect("secrets serialize");
        MemorySecrets(Mutex::new(BTreeMap::from([(id.to_string(), value)])))
    }
}

#[async_trait]
impl Secrets for MemorySecrets {
    async fn value(&self, secret_id: &str) -> Result<serde_json::Value, SecretsError> {
        self.0
            .lock()
            .expect("not poisoned")
            .get(secret_id)
            .cloned()
            .ok_or_else(|| SecretsError::NotFound { id: secret_id.into() })
    }
}

#[async_trait]
impl SecretWriter for MemorySecrets {
    async fn put(&self, secret_id: &str, value: &serde_json::Value) -> Result<(), SecretsError> {
        let mut secrets = self.0.lock().expect("not poisoned");
        secrets.insert(secret_id.into(), value.clone());
        Ok(())
    }

    async fn create(&self, secret_id: &str, value: &serde_json::Value) -> Result<bool, SecretsError> {
        let mut secrets = self.0.lock().expect("not poisoned");
        if secrets.contains_key(secret_id) {
            return Ok(false);
        }
        secrets.insert(secret_id.into(), value.clone());
        Ok(true)
    }

    async fn delete(&self, secret_id: &str) -> Result<(), SecretsError> {
        self.0.lock().expect("not poisoned").remove(secret_id);
        Ok(())
    }
}

/// Events kept in memory: `(detail type, source id)`, in order.
#[derive(Debug, Default)]
pub struct RecordedEvents(pub Mutex<Vec<(&'static str, String)>>);

impl RecordedEvents {
    pub fn taken(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

#[async_trait]
impl Events for RecordedEvents {
    async fn run_completed(&self, run: &Run) -> Result<(), EventsError> {
        let mut events = self.0.lock().expect("not poisoned");
        events.push(("sluice.run.completed", run.source_id.clone()));
        Ok(())
    }

    async fn backfill_requested(&self, job: &Backfill) -> Result<(), EventsError> {
        let mut events = self.0.lock().expect("not poisoned");
        events.push(("sluice.backfill.requested", job.source_id.clone()));
        Ok(())
    }
}

/// Schedules kept in memory: each source's, and every rate change in order.
#[derive(Debug, Default)]
pub struct MemorySchedules {
    pub schedules: Mutex<BTreeMap<String, Schedule>>,
    pub rate_changes: Mutex<Vec<(String, u32)>>,
}

#[async_trait]
impl Schedules for MemorySchedules {
    async fn put_schedule(&self, schedule: &Schedule) -> Result<(), ScheduleError> {
        let mut schedules = self.schedules.lock().expect("not poisoned");
        schedules.insert(schedule.source_id.clone(), schedule.clone());
        Ok(())
    }

    async fn delete_schedule(&self, source_id: &str) -> Result<(), ScheduleError> {
        self.schedules.lock().expect("not poisoned").remove(source_id);
        Ok(())
    }

    async fn set_rate(&self, source_id: &str, every_minutes: u32) -> Result<(), ScheduleError> {
        let mut changes = self.rate_changes.lock().expect("not poisoned");
        changes.push((source_id.into(), every_minutes));
        if let Some(s) = self.schedules.lock().expect("not poisoned").get_mut(source_id) {
            s.every_minutes = every_minutes;
        }
        Ok(())
    }
}
