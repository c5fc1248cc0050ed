//! Driver errors translated into [`SourceError`]s that name the cause and the fix.

// Each engine uses some of these; a build without every engine leaves some unused.
#![cfg_attr(
    not(all(feature = "sql", feature = "sqlserver", feature = "oracle")),
    allow(dead_code)
)]

use sluice_core::{ConnectionSecret, SourceError, SourceErrorKind, TlsMode};

/// `host:port` of the secret, for messages (the file path for SQLite).
pub(crate) fn target(secret: &ConnectionSecret) -> String {
    match (&secret.host, secret.port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.clone(),
        _ => secret.database.clone(),
    }
}

/// The secret's TLS mode as written in it, saying when it is the default.
pub(crate) fn tls_mode(secret: &ConnectionSecret) -> String {
    let name = match secret.tls() {
        TlsMode::VerifyFull => "verify-full",
        TlsMode::Require => "require",
        TlsMode::Disable => "disable",
    };
    match secret.tls {
        Some(_) => name.to_string(),
        None => format!("{name} (the default when the secret has no tls)"),
    }
}

/// How to fix a failed TLS handshake whose error text is `text`. rustls names the two
/// usual verify-full failures; each has its own fix.
pub(crate) fn tls_hint(secret: &ConnectionSecret, text: &str) -> String {
    let host = secret.host.as_deref().unwrap_or("the host");
    if text.contains("UnknownIssuer") || text.contains("unknown issuer") || text.contains("self-signed") {
        "the server's certificate is not signed by a CA Sluice trusts (the system's roots and Amazon RDS's CAs). Either put the PEM of the CA that signed it in the secret's ca_cert (for a private or self-signed CA: the certificate stays verified), or set the secret's tls to require, knowing that the certificate is then not verified and anyone between Sluice and the database can pose as it and read the password".to_string()
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        format!(
            "the server's certificate is not valid for the host name {host}: set the secret's host to a name on the certificate"
        )
    } else if text.contains("does not support TLS") {
        format!(
            "the server offers no TLS, and the secret's tls is {}: enable TLS on the server (with a certificate), or set tls to disable if the network between Sluice and the database is private",
            tls_mode(secret)
        )
    } else {
        "check the secret's `tls` setting (verify-full needs a certificate for this host name signed by a trusted CA or the secret's ca_cert; require encrypts without verifying; disable only on private networks)".to_string()
    }
}

/// The host cannot be reached at all.
pub(crate) fn unreachable(secret: &ConnectionSecret, cause: impl std::fmt::Display) -> SourceError {
    SourceError::new(
        SourceErrorKind::Connect,
        secret.redact(&format!(
            "cannot reach {} at {}: {cause}; check host and port, and that the database accepts connections from Sluice (firewall, security group)",
            secret.engine,
            target(secret)
        )),
    )
}

/// Connecting took longer than [`crate::CONNECT_TIMEOUT`].
pub(crate) fn timed_out(secret: &ConnectionSecret) -> SourceError {
    SourceError::new(
        SourceErrorKind::Connect,
        format!(
            "connecting to {} at {}:{} timed out after {} s; check host and port, and that the database accepts connections from Sluice (firewall, security group)",
            secret.engine,
            secret.host.as_deref().unwrap_or("localhost"),
            secret
                .port
                .or(secret.engine.default_port())
                .map_or_else(|| "default port".into(), |p| p.to_string()),
            crate::CONNECT_TIMEOUT.as_secs()
        ),
    )
}

/// An error while connecting and setting up the session.
#[cfg(feature = "sql")]
pub(crate) fn classify_connect(e: sqlx::Error, secret: &ConnectionSecret) -> SourceError {
    let target = target(secret);
    let tls_failure = |text: &str| {
        ["certificate", "TLS", "tls", "SSL", "handshake"]
            .iter()
            .any(|w| text.contains(w))
    };
    let tls_hint = |text: &str| tls_hint(secret, text);
    let (kind, message) = match &e {
        sqlx::Error::Io(io) if tls_failure(&io.to_string()) => (
            SourceErrorKind::Tls,
            format!("TLS with {target} failed: {io}; {}", tls_hint(&io.to_string())),
        ),
        sqlx::Error::Io(io) => return unreachable(secret, io),
        sqlx::Error::Tls(t) => (
            SourceErrorKind::Tls,
            format!("TLS with {target} failed: {t}; {}", tls_hint(&format!("{t:?} {t}"))),
        ),
        sqlx::Error::Database(db) => {
            let code = error_code(&**db);
            let auth = matches!(code.as_str(), "28P01" | "28000" | "1045" | "1044" | "3D000" | "1049");
            if auth {
                (
                    SourceErrorKind::Auth,
                    format!(
                        "{} at {target} refused the login: {} (code {code}); check username, password and database in the secret",
                        secret.engine,
                        db.message()
                    ),
                )
            } else {
                (
                    SourceErrorKind::Connect,
                    format!(
                        "{} at {target} refused the session: {} (code {code})",
                        secret.engine,
                        db.message()
                    ),
                )
            }
        }
        other => {
            let text = other.to_string();
            let tls = text.contains("TLS") || text.contains("SSL") || text.contains("certificate");
            if tls {
                (
                    SourceErrorKind::Tls,
                    format!(
                        "TLS with {target} failed: {text}; check the secret's `tls` setting or the server's TLS support"
                    ),
                )
            } else {
                (
                    SourceErrorKind::Connect,
                    format!("connecting to {} at {target} failed: {text}", secret.engine),
                )
            }
        }
    };
    SourceError::new(kind, secret.redact(&message))
}

/// A database error's code: MySQL's and MariaDB's error number (their SQLSTATE is a
/// broad class: 70100 is both a statement timeout and a KILL QUERY), else the SQLSTATE.
#[cfg(feature = "sql")]
fn error_code(db: &dyn sqlx::error::DatabaseError) -> String {
    #[cfg(feature = "mysql")]
    if let Some(e) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return e.number().to_string();
    }
    db.code().unwrap_or_default().to_string()
}

/// An error while running the query or reading its rows.
#[cfg(feature = "sql")]
pub(crate) fn classify_query(e: sqlx::Error) -> SourceError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = error_code(&**db);
            let (kind, hint) = match code.as_str() {
                "57014" | "1969" | "3024" => (
                    SourceErrorKind::Timeout,
                    "; the query ran past its statement timeout: add an index on the date column, narrow the window (max_window_seconds) or raise query_timeout_seconds",
                ),
                "25006" | "1792" | "1290" => (
                    SourceErrorKind::Query,
                    "; Sluice runs queries read-only: the template must be a SELECT",
                ),
                // PostgreSQL's connection exceptions and operator intervention (the
                // session terminated, the server shutting down): the connection is gone.
                c if c.starts_with("08") || c.starts_with("57P") => (SourceErrorKind::Connect, ""),
                _ => (SourceErrorKind::Query, ""),
            };
            SourceError::new(kind, format!("the query failed: {} (code {code}){hint}", db.message()))
        }
        sqlx::Error::Io(io) => SourceError::new(
            SourceErrorKind::Connect,
            format!("the connection was lost while reading rows: {io}"),
        ),
        other => SourceError::new(SourceErrorKind::Query, format!("the query failed: {other}")),
    }
}
