//! How every read of a source begins, whether a run, a backfill chunk or a preview:
//! the query compiled, the secret fetched, a read-only session opened.

use std::time::Duration;

use super::SyncError;
use crate::ports::{Secrets, SourceReader, SourceSession};
use crate::source::SourceConfig;
use crate::template::QueryTemplate;

/// A source's compiled query and an open session on its database.
pub(crate) struct OpenSource {
    pub template: QueryTemplate,
    pub session: Box<dyn SourceSession>,
}

impl OpenSource {
    /// # Errors
    /// The template's error before anything is fetched, then the secret's, then the
    /// database's.
    pub(crate) async fn open(
        config: &SourceConfig,
        reader: &dyn SourceReader,
        secrets: &dyn Secrets,
    ) -> Result<Self, SyncError> {
        let template = QueryTemplate::compile(&config.query)?;
        let secret = secrets.connection(&config.secret_id).await?;
        let timeout = Duration::from_secs(config.query_timeout_seconds.into());
        let session = reader.open(&secret, timeout).await?;
        Ok(OpenSource { template, session })
    }
}
