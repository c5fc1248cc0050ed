//! The `CallSender` over HTTPS: one `POST /v1/batch` of the Segment spec, the write key
//! as HTTP Basic user (as Customer.io Data Pipelines, Segment and RudderStack take it).
//! Retries and limits are decided in core (`sluice_core::delivery`).
//!
//! A destination is someone else's public API, and whoever writes a source chooses its
//! URL: so the sender reaches public addresses only (every address a name resolves to
//! is checked, at every connection, so DNS cannot answer a public address when the
//! source is saved and a private one later), over HTTPS, follows no redirect, uses no
//! proxy from the environment, and reads at most [`MAX_ANSWER_BYTES`] of an answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sluice_core::address::refused_address;
use sluice_core::delivery::{Answer, SendError};
use sluice_core::{CallSender, WriteKey};

/// How long one request may take before it counts as unanswered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer's body that is read: enough for a destination's reason, and
/// no more, whatever it sends.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// Where the sender may connect besides public addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback addresses, over http or https: a receiver on the same machine, for
    /// local tests and benchmarks. Private, link-local and metadata addresses stay
    /// refused.
    pub allow_loopback: bool,
}

impl AddressPolicy {
    /// `SLUICE_DESTINATIONS_ALLOW_LOOPBACK=true` (or `1`) allows loopback.
    pub fn from_env() -> Self {
        let value = std::env::var("SLUICE_DESTINATIONS_ALLOW_LOOPBACK").unwrap_or_default();
        AddressPolicy {
            allow_loopback: matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        }
    }

    /// Why `ip` may not be connected to, naming `host` and the address.
    fn refuse(&self, host: &str, ip: IpAddr) -> Option<String> {
        let why = refused_address(ip, self.allow_loopback)?;
        let fix = if ip.to_canonical().is_loopback() {
            " (for a receiver on this machine in local tests, set SLUICE_DESTINATIONS_ALLOW_LOOPBACK=true)"
        } else {
            ""
        };
        Some(format!(
            "{host} is {ip}, {why}: Sluice delivers only to public addresses{fix}"
        ))
    }
}

/// Built once per process; its connections are kept alive between batches.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    policy: AddressPolicy,
}

impl HttpSender {
    pub fn new(policy: AddressPolicy) -> Result<Self, SendError> {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would be the one to resolve the name: the check below would see
            // the proxy's address, not the destination's.
            .no_proxy()
            .dns_resolver(PublicOnly { policy })
            .build()
            .map(|client| HttpSender { client, policy })
            .map_err(|e| SendError(format!("the HTTP client cannot be built: {e}")))
    }

    /// The URL, if its scheme and (for an address written in it, which no resolver
    /// sees) its host may be used.
    fn check(&self, url: &str) -> Result<reqwest::Url, SendError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| SendError(format!("not a URL: {e}")))?;
        let host = parsed.host_str().unwrap_or_default().to_string();
        // The URL parser writes an address in its one canonical form (`2130706433` and
        // `0x7f.1` become 127.0.0.1), so this sees the address that is connected to.
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let loopback = match ip {
            Some(ip) => ip.to_canonical().is_loopback(),
            None => host.eq_ignore_ascii_case("localhost"),
        };
        if let Some(reason) = ip.and_then(|ip| self.policy.refuse(&host, ip)) {
            return Err(SendError(reason));
        }
        match parsed.scheme() {
            "https" => {}
            "http" if loopback && self.policy.allow_loopback => {}
            _ => {
                return Err(SendError(
                    "destinations are reached over https only (plain http only to loopback, with SLUICE_DESTINATIONS_ALLOW_LOOPBACK=true, for local tests)".into(),
                ));
            }
        }
        Ok(parsed)
    }
}

/// Resolves names with the system's resolver and keeps only the addresses the policy
/// allows; a name left with none fails the connection with the reason.
#[derive(Debug)]
struct PublicOnly {
    policy: AddressPolicy,
}

/// The connection was refused by [`AddressPolicy`]: found again in reqwest's error chain.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.refuse(&host, a.ip()) {
                    None => true,
                    Some(reason) => {
                        first_refusal.get_or_insert(reason);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), first_refusal) {
                (true, Some(reason)) => Err(Box::new(Refused(reason)) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// What a failed request says: the policy's refusal when it was one, else reqwest's
/// error (which names the URL and the cause, never a header).
fn failure(e: reqwest::Error) -> SendError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(refused) = c.downcast_ref::<Refused>() {
            return SendError(refused.0.clone());
        }
        cause = c.source();
    }
    SendError(if e.is_timeout() {
        format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
    } else {
        e.to_string()
    })
}

#[async_trait]
impl CallSender for HttpSender {
    async fn post(&self, url: &str, key: &WriteKey, body: Vec<u8>) -> Result<Answer, SendError> {
        let url = self.check(url)?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.0));
        let mut response = self
            .client
            .post(url)
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(failure)?;
        let status = response.status();
        if status.is_redirection() {
            // Following it would send the write key (and the calls) wherever the
            // answer points. An answer, not a refusal of the calls: they wait.
            let location: String = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere")
                .chars()
                .take(120)
                .collect();
            return Err(SendError(format!(
                "answered HTTP {} redirecting to {location}; Sluice follows no redirect: set the destination's base_url to the URL that answers",
                status.as_u16()
            )));
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        // The start of the body only: the rest is never read (the connection closes).
        let mut head = Vec::new();
        while head.len() < MAX_ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - head.len())]),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Answer {
            status: status.as_u16(),
            retry_after,
            body: String::from_utf8_lossy(&head).into_owned(),
        })
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (at.to_utc() - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = retry_after(&later).unwrap();
        assert!((85..=90).contains(&d.as_secs()), "{d:?}");
        assert_eq!(retry_after("soon"), None);
    }
}
