//! Sluice's domain: sources, windows, records, runs and templates, the sync service,
//! and the ports it drives. No AWS and no database driver in here.

pub mod admin;
pub mod backfill;
pub mod backfiller;
pub mod cadence;
pub mod call;
pub mod metrics;
pub mod ports;
pub mod preview;
pub mod record;
pub mod run;
pub mod source;
pub mod sync;
pub mod template;
pub mod value;
pub mod window;

pub use admin::{AdminError, RunsPage, SourceAdmin, SourceView};
pub use backfill::{Backfill, BackfillRequest, ChunkStatus, JobStatus, Progress, RequestError};
pub use backfiller::{BackfillError, BackfillSettings, Backfiller};
pub use cadence::Cadence;
pub use ports::*;
pub use preview::Preview;
pub use record::{Member, Record, RecordMapper, Reject};
pub use run::{Run, RunStatus, Trigger, Warning};
pub use source::{ConnectionSecret, Engine, ServiceAccountKey, SourceConfig, SshTunnel, SyncType, TlsMode};
pub use sync::{Budget, ChunkOutcome, Stop, SyncError, SyncService, SyncSettings};
pub use template::{Bind, PlaceholderStyle, QueryTemplate, RenderedQuery};
pub use value::{Row, Value};
