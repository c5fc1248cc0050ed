//! What the engines reached over HTTPS (Snowflake, BigQuery) share: the client, the
//! endpoint a secret names, RS256 JSON Web Tokens, and their error messages.

use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sluice_core::{ConnectionSecret, SourceError, SourceErrorKind, TlsMode};

use crate::CONNECT_TIMEOUT;

/// A client for one session; `request_timeout` bounds each request.
/// The clock of an engine that has no session of its own: `SELECT CURRENT_TIMESTAMP()`.
pub(crate) async fn current_timestamp(
    session: &mut dyn sluice_core::SourceSession,
) -> Result<chrono::DateTime<chrono::Utc>, SourceError> {
    use futures::TryStreamExt;
    let query = sluice_core::RenderedQuery {
        sql: "SELECT CURRENT_TIMESTAMP()".into(),
        binds: Vec::new(),
    };
    let rows: Vec<sluice_core::Row> = session.stream(&query).try_collect().await?;
    match rows.first().and_then(|r| r.values.first()) {
        Some(sluice_core::Value::Timestamp(now)) => Ok(*now),
        other => Err(SourceError::new(
            SourceErrorKind::Query,
            format!("CURRENT_TIMESTAMP() returned {other:?}"),
        )),
    }
}

pub(crate) fn client(request_timeout: Duration) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(request_timeout)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SourceError::new(SourceErrorKind::Config, format!("cannot set up HTTPS: {e}")))
}

/// `https://host[:port]`, or `http://` when the secret says `tls: disable` (an emulator
/// on loopback); `default_host` when the secret names no host.
pub(crate) fn base_url(secret: &ConnectionSecret, default_host: &str) -> String {
    let scheme = if secret.tls() == TlsMode::Disable {
        "http"
    } else {
        "https"
    };
    let host = secret.host.as_deref().unwrap_or(default_host);
    match secret.port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// A transport failure: the host cannot be reached, TLS failed, or it timed out.
pub(crate) fn transport(e: &reqwest::Error, secret: &ConnectionSecret, what: &str) -> SourceError {
    let detail = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    let (kind, message) = if e.is_timeout() {
        (
            SourceErrorKind::Timeout,
            format!(
                "{what} timed out ({detail}); narrow the window (max_window_seconds) or raise query_timeout_seconds"
            ),
        )
    } else if detail.contains("certificate") || detail.contains("tls") || detail.contains("TLS") {
        (
            SourceErrorKind::Tls,
            format!(
                "{what}: TLS failed: {detail}; {}",
                crate::error::tls_hint(secret, &detail)
            ),
        )
    } else if e.is_connect() {
        return crate::error::unreachable(secret, detail);
    } else {
        (SourceErrorKind::Connect, format!("{what} failed: {detail}"))
    };
    SourceError::new(kind, secret.redact(&message))
}

/// The DER of a PEM block's body (any `-----BEGIN ...-----` label).
pub(crate) fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).ok()
}

/// An RSA key from a PKCS#8 PEM (`BEGIN PRIVATE KEY`), or a message that says what to give.
pub(crate) fn rsa_key(pem: &str, field: &str) -> Result<RsaKeyPair, SourceError> {
    let bad = |why: &str| {
        SourceError::new(
            SourceErrorKind::Config,
            format!(
                "the secret's {field} {why}; give an unencrypted RSA key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)"
            ),
        )
    };
    if pem.contains("ENCRYPTED PRIVATE KEY") {
        return Err(bad("is encrypted"));
    }
    let der = pem_der(pem).ok_or_else(|| bad("is not PEM"))?;
    RsaKeyPair::from_pkcs8(&der).map_err(|e| bad(&format!("is not a usable RSA key ({e})")))
}

/// A JSON Web Token signed with RS256.
pub(crate) fn jwt(key: &RsaKeyPair, claims: &serde_json::Value) -> Result<String, SourceError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| SourceError::new(SourceErrorKind::Config, "signing the login token failed"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    /// A 2048-bit test key, made with `openssl genpkey -algorithm RSA`.
    pub(crate) const TEST_KEY: &str = include_str!("../testdata/rsa_pkcs8.pem");

    #[test]
    fn tokens_verify_with_the_public_key() {
        let key = rsa_key(TEST_KEY, "private_key").unwrap();
        let token = jwt(&key, &serde_json::json!({"iss": "me", "exp": 1})).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap())
            .expect("the signature verifies");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(input.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(claims["iss"], "me");
    }

    #[test]
    fn unusable_keys_say_what_to_give() {
        for (pem, why) in [
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
                "is encrypted",
            ),
            ("not a key at all!", "is not PEM"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "is not a usable RSA key",
            ),
        ] {
            let e = rsa_key(pem, "private_key").err().unwrap();
            assert!(e.message.contains(why) && e.message.contains("PKCS#8"), "{e}");
        }
    }
}
