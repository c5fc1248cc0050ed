//! Source databases: sessions that read, read-only, in UTC, with a statement timeout.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::Serialize;

use crate::source::ConnectionSecret;
use crate::template::RenderedQuery;
use crate::value::Row;

/// What went wrong with the source database. `message` names the cause and the fix and
/// never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: SourceErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The secret or config cannot describe a connection.
    Config,
    /// Host unreachable, refused, DNS.
    Connect,
    /// Wrong user or password, or no access to the database.
    Auth,
    /// TLS negotiation or certificate verification.
    Tls,
    /// The query failed on the server (syntax, missing table, permissions).
    Query,
    /// The statement timeout was reached.
    Timeout,
}

impl SourceError {
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        SourceError {
            kind,
            message: message.into(),
        }
    }
}

/// A transaction another session holds open on the source database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    /// When it began, in UTC, already less the engine's rounding: no row it writes
    /// with the database's time can be stamped earlier.
    pub started_at: DateTime<Utc>,
    /// Who holds it, for people: `pid 4711 (user app, application "psql")`.
    pub session: String,
}

/// What a session can see of the transactions still open on its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenTransactions {
    /// The login sees every session's transactions: the oldest that could still
    /// write, if any.
    Seen(Option<OpenTransaction>),
    /// The login (or the engine) cannot see them: why, and the grant that fixes it.
    Unseen(String),
}

/// What a source's login may do beyond reading, from the database's own catalogs
/// (issue 20). A read-only session stops plain writes, but not all: a procedure that
/// commits, DDL that commits implicitly, `dblink_exec`. Only a login that cannot write
/// is a guarantee, so the test query and the runs say which kind the source has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LoginCheck {
    /// The login cannot write; `detail` says what was checked.
    ReadOnly { detail: String },
    /// The login can write. Each entry is a statement that drops one way it can (a
    /// grant, an attribute, a membership, an ownership).
    Writable { revoke: Vec<String> },
    /// The check itself failed (no right to read the catalogs, say).
    CouldNotCheck { reason: String },
    /// This engine's logins are not checked, for `reason`.
    NotChecked { reason: String },
}

impl LoginCheck {
    pub fn read_only(detail: impl Into<String>) -> Self {
        LoginCheck::ReadOnly { detail: detail.into() }
    }

    pub fn could_not_check(reason: impl Into<String>) -> Self {
        LoginCheck::CouldNotCheck { reason: reason.into() }
    }

    /// Writable when `revoke` names anything, else read-only with `detail`.
    pub fn from_revokes(revoke: Vec<String>, detail: impl Into<String>) -> Self {
        if revoke.is_empty() {
            LoginCheck::read_only(detail)
        } else {
            LoginCheck::Writable { revoke }
        }
    }

    /// Proven unable to write.
    pub fn is_read_only(&self) -> bool {
        matches!(self, LoginCheck::ReadOnly { .. })
    }

    /// The same result with every credential of `secret` removed from its texts (a
    /// driver's error may quote a connection string).
    pub fn redacted(self, secret: &ConnectionSecret) -> Self {
        match self {
            LoginCheck::ReadOnly { detail } => LoginCheck::ReadOnly {
                detail: secret.redact(&detail),
            },
            LoginCheck::Writable { revoke } => LoginCheck::Writable {
                revoke: revoke.iter().map(|r| secret.redact(r)).collect(),
            },
            LoginCheck::CouldNotCheck { reason } => LoginCheck::CouldNotCheck {
                reason: secret.redact(&reason),
            },
            LoginCheck::NotChecked { reason } => LoginCheck::NotChecked {
                reason: secret.redact(&reason),
            },
        }
    }
}

/// One line for a run's log and the test query's warnings.
impl std::fmt::Display for LoginCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginCheck::ReadOnly { detail } => write!(f, "the login can only read ({detail})"),
            LoginCheck::Writable { revoke } => write!(
                f,
                "the login can write, so only Sluice's read-only session stands between a query and your data; give Sluice a login that can only read, or drop what lets this one write: {}",
                revoke.join("; ")
            ),
            LoginCheck::CouldNotCheck { reason } => write!(f, "could not check what the login may do: {reason}"),
            LoginCheck::NotChecked { reason } => write!(f, "the login was not checked: {reason}"),
        }
    }
}

/// Opens sessions on source databases.
#[async_trait]
pub trait SourceReader: Send + Sync {
    /// Checks what only the engine knows of a secret (its own fields), without
    /// connecting.
    ///
    /// # Errors
    /// A [`SourceErrorKind::Config`] error naming the field.
    fn check(&self, secret: &ConnectionSecret) -> Result<(), SourceError>;

    /// Connects with `secret` and returns a session that is read-only, set to UTC, and
    /// has `query_timeout` as its statement timeout.
    ///
    /// # Errors
    /// A [`SourceError`] whose kind says which step failed (connect, auth, TLS).
    async fn open(
        &self,
        secret: &ConnectionSecret,
        query_timeout: Duration,
    ) -> Result<Box<dyn SourceSession>, SourceError>;
}

/// One read-only connection to a source database.
#[async_trait]
pub trait SourceSession: Send {
    /// The database's own clock, in UTC: the upper bound of the window.
    async fn now(&mut self) -> Result<DateTime<Utc>, SourceError>;

    /// The oldest transaction that another session holds open and that could still
    /// write, so that the window stops before rows not yet visible (DESIGN §3). Engines
    /// that cannot show other sessions' transactions say why.
    ///
    /// # Errors
    /// A [`SourceError`] only when the session itself fails; a login that may not see
    /// other sessions is [`OpenTransactions::Unseen`], not an error.
    async fn open_transactions(&mut self) -> Result<OpenTransactions, SourceError> {
        Ok(OpenTransactions::Unseen(
            "this engine does not show other sessions' transactions to Sluice".into(),
        ))
    }

    /// The names of the columns `query` returns, found without running it, so a
    /// missing column is reported even when the window holds no rows. Empty when the
    /// engine cannot tell before running (a stored procedure, say).
    async fn columns(&mut self, query: &RenderedQuery) -> Result<Vec<String>, SourceError>;

    /// Streams the rows of `query`, converting each value to a typed [`crate::Value`].
    /// Never collects the result set.
    fn stream<'a>(&'a mut self, query: &'a RenderedQuery) -> BoxStream<'a, Result<Row, SourceError>>;

    /// Called once the stream of a query is dropped, read to its end or not: ends the
    /// query on the server and checks that it left the session as it found it (SQL
    /// Server: a procedure that committed Sluice's transaction fails the run here).
    async fn finish(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    /// The host key the SSH bastion showed, as an OpenSSH line, when the session runs
    /// through a tunnel.
    fn ssh_host_key(&self) -> Option<&str> {
        None
    }

    /// What the session's login may do beyond reading, read from the catalogs (never by
    /// trying a write). A failed check is [`LoginCheck::CouldNotCheck`], not an error:
    /// whether it stops a run is the source's choice (`require_read_only_login`).
    async fn login_check(&mut self) -> LoginCheck {
        LoginCheck::NotChecked {
            reason: "Sluice does not check the logins of this engine".into(),
        }
    }
}
