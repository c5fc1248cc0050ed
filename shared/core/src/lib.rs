//! Sluice's domain: sources, windows, records, runs and templates, the sync, backfill
//! and admin services, and the ports they drive. No AWS, no database driver, no HTTP:
//! adapters and the functions' edges live in their own crates.

pub mod address;
pub mod admin;
pub mod backfill;
pub mod backfiller;
pub mod cadence;
pub mod connection;
pub mod delivery;
pub mod mapping;
pub mod ports;
pub mod preview;
pub mod record;
pub mod run;
pub mod secret_json;
pub mod source;
pub mod stored;
pub mod sync;
pub mod template;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod value;
pub mod window;

pub use admin::{
    AdminError, ConnectionInput, ConnectionView, DeliveriesPage, RunsPage, SourceAdmin, SourceInput, SourceView,
    TestQuery,
};
pub use backfill::{Action, Backfill, BackfillRequest, ChunkStatus, JobStatus, Progress};
pub use backfiller::{BackfillError, BackfillSettings, Backfiller};
pub use cadence::Cadence;
pub use connection::Connection;
pub use delivery::{CallSender, Deliverer, DeliveryReport, DeliveryState, DeliveryStatus, Outgoing};
pub use mapping::{Mapped, MappingError, RowMapper};
pub use ports::*;
pub use preview::{Preview, PreviewLimits};
pub use record::{Member, Record, RecordBatch, Reject};
pub use run::{Run, RunStatus, Trigger, Warning};
pub use source::{
    ConnectionSecret, Destination, DestinationKind, Engine, FieldError, Region, SourceConfig, SshTunnel, SyncType,
    TlsMode,
};
pub use sync::{Budget, ChunkOutcome, Stop, SyncError, SyncService, SyncSettings};
pub use template::{Bind, PlaceholderStyle, QueryTemplate, RenderedQuery};
pub use value::{Row, Value};
pub use window::Window;
