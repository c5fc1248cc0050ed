//! How every read of a source begins, whether a run, a backfill chunk or a preview:
//! the query compiled, the secret fetched, a read-only session opened.

use std::time::Duration;

use tracing::{info, warn};

use super::SyncError;
use crate::ports::{LoginCheck, Secrets, SourceError, SourceReader, SourceSession};
use crate::source::{ConnectionSecret, SourceConfig};
use crate::template::QueryTemplate;
use crate::window::{UpperBound, upper_bound};

/// A source's compiled query and an open session on its database.
pub(crate) struct OpenSource {
    pub template: QueryTemplate,
    pub session: Box<dyn SourceSession>,
    /// The secret the session was opened with, to scrub what the login check says.
    secret: ConnectionSecret,
}

impl OpenSource {
    /// Opens `config`'s source. A tunnel whose secret pins no host key must meet
    /// `recorded_host_key`, the key its bastion showed first; with neither, the tunnel
    /// trusts the key it is shown, and the session says which it was.
    ///
    /// # Errors
    /// The template's error before anything is fetched, then the secret's, then the
    /// database's.
    pub(crate) async fn open(
        config: &SourceConfig,
        reader: &dyn SourceReader,
        secrets: &dyn Secrets,
        recorded_host_key: Option<&str>,
    ) -> Result<Self, SyncError> {
        let template = QueryTemplate::compile(&config.query)?;
        let mut secret = secrets.connection(&config.secret_id).await?;
        if let Some(tunnel) = secret.ssh_tunnel.as_mut()
            && tunnel.host_key.is_none()
        {
            tunnel.host_key = recorded_host_key.map(str::to_string);
        }
        let timeout = Duration::from_secs(config.query_timeout_seconds.into());
        let session = reader.open(&secret, timeout).await?;
        Ok(OpenSource {
            template,
            session,
            secret,
        })
    }

    /// Who the session logs in as, and where (see [`ConnectionSecret::login_digest`]).
    pub(crate) fn login_digest(&self) -> u128 {
        self.secret.login_digest()
    }

    /// What the session's login may do beyond reading; never a credential.
    pub(crate) async fn check_login(&mut self) -> LoginCheck {
        self.session.login_check().await.redacted(&self.secret)
    }
}

impl OpenSource {
    /// Where windows read now may end: the database's clock, capped at the oldest
    /// transaction still open (read after the clock, so a transaction that begins in
    /// between began after the bound). Logged, with a warning naming a transaction
    /// that has held the source back for long.
    ///
    /// # Errors
    /// The database's, when the session fails.
    pub(crate) async fn upper_bound(&mut self) -> Result<UpperBound, SourceError> {
        let clock = self.session.now().await?;
        let bound = upper_bound(clock, self.session.open_transactions().await?);
        match &bound.long_open {
            Some(t) => warn!(
                upper_date_limit = %bound.at, session = %t.session, bound = %bound.reason,
                "a long-open transaction holds the window back"
            ),
            None => info!(upper_date_limit = %bound.at, bound = %bound.reason, "window bound"),
        }
        Ok(bound)
    }
}
