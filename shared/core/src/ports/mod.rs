//! The ports: what the services need from the outside, one trait per aggregate, each
//! with its error contract. Adapters (the DynamoDB and embedded stores, the source
//! readers, Secrets Manager, Scheduler, EventBridge) implement them; `testing` has
//! in-memory ones for unit tests.

mod clock;
mod reader;
mod services;
mod store;

pub use clock::{Clock, IdSource, SystemClock, UuidIds};
pub use reader::{
    LoginCheck, OpenTransaction, OpenTransactions, SourceError, SourceErrorKind, SourceReader, SourceSession,
};
pub use services::{
    Events, EventsError, NoObserver, RunObserver, Schedule, ScheduleError, Schedules, SecretWriter, Secrets,
    SecretsError, WriteKey,
};
pub use store::{
    BackfillCreated, BackfillJobs, ConnectionStore, DeliveryLog, Lease, LeaseOutcome, RecordReader, RecordWriter,
    RunLog, SaveOutcome, SourceState, SourceStore, Store, StoreError, StoredRecord, WriteStats,
};

/// What an outside service said when it failed: its own error code when it has one,
/// and its message. Never a raw response, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct BackendError {
    /// The service's error code (`ThrottlingException`, SQLite's `SQLITE_BUSY`, ...).
    pub code: Option<String>,
    pub message: String,
}

impl BackendError {
    pub fn new(code: Option<String>, message: impl Into<String>) -> Self {
        BackendError {
            code,
            message: message.into(),
        }
    }

    /// A failure without a service code (a transport error, a limit of ours).
    pub fn message(message: impl Into<String>) -> Self {
        BackendError::new(None, message)
    }
}
