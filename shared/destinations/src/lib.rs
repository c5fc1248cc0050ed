//! The `CallSender` over HTTPS: one `POST /v1/batch` of the Segment spec, the write key
//! as HTTP Basic user (as Customer.io Data Pipelines, Segment and RudderStack take it).
//! Retries and limits are decided in core (`sluice_core::delivery`).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use sluice_core::delivery::{Answer, SendError};
use sluice_core::{CallSender, WriteKey};

/// How long one request may take before it counts as unanswered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Built once per process; its connections are kept alive between batches.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new() -> Result<Self, SendError> {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(|client| HttpSender { client })
            .map_err(|e| SendError(format!("the HTTP client cannot be built: {e}")))
    }
}

#[async_trait]
impl CallSender for HttpSender {
    async fn post(&self, url: &str, key: &WriteKey, body: Vec<u8>) -> Result<Answer, SendError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.0));
        let response = self
            .client
            .post(url)
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            // reqwest's errors name the URL and the cause, never a header.
            .map_err(|e| {
                SendError(if e.is_timeout() {
                    format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
                } else {
                    e.to_string()
                })
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = response.text().await.unwrap_or_default().chars().take(300).collect();
        Ok(Answer {
            status,
            retry_after,
            body,
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
