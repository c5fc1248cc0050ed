//! Running Sluice on one machine: the embedded store (one SQLite file), file-based
//! configuration with its secrets, and events written to the log.

mod config;
pub mod edit;
mod store;

pub use config::{FileSecrets, LocalConfig, LogEvents, StoreConfig};
pub use store::EmbeddedStore;
