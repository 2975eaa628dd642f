//! The relay's HTTP API as the daemon and CLI use it (register, pair tokens, phones). Bearers
//! go in `Authorization`, never in the URL; plain `http://` is allowed only for a relay on
//! this machine (`loopsy relay dev`).

use std::time::Duration;

use loopsy_relay::api::{
    ApiError, Health, PairIssue, PairIssued, Phones, REGISTRATION_HEADER, Registered,
};
use serde::de::DeserializeOwned;

use super::creds::Creds;

/// How long one relay call may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_ANSWER: usize = 1 << 20;

/// Why a relay call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// Not a usable relay URL.
    #[error("{0}")]
    BadUrl(String),
    /// No answer.
    #[error("cannot reach the relay at {url}: {why}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        why: String,
    },
    /// The relay answered with a refusal.
    #[error("the relay refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its stable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// An answer that is not what a loopsy relay says.
    #[error("unexpected answer from the relay: {0}")]
    Bad(String),
}

/// Check and normalise a relay base URL: `https://host[:port]` (no path, query or fragment),
/// or `http://` to a loopback address.
pub fn normalize_url(url: &str) -> Result<String, RelayError> {
    let url = url.trim().trim_end_matches('/');
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split([':', '/']).next().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback())
            || r.starts_with("[::1]");
        if !loopback {
            return Err(RelayError::BadUrl(format!(
                "{url}: use https:// (plain http is allowed only for a relay on this machine)"
            )));
        }
        r
    } else {
        return Err(RelayError::BadUrl(format!(
            "{url}: a relay URL starts with https://"
        )));
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(RelayError::BadUrl(format!(
            "{url}: give just the relay's base URL, like https://loopsy-relay.you.workers.dev"
        )));
    }
    Ok(url.to_string())
}

/// The WebSocket URL for a relay path.
pub fn ws_url(base: &str, path: &str) -> String {
    let base = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_string());
    format!("{base}{path}")
}

/// A client for one or more relays.
#[derive(Debug, Clone)]
pub struct RelayApi {
    http: reqwest::Client,
}

impl RelayApi {
    /// A client with loopsy's timeouts and user agent.
    pub fn new() -> Result<Self, RelayError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("loopsy/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RelayError::Bad(e.to_string()))?;
        Ok(Self { http })
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, RelayError> {
        let resp = req.send().await.map_err(|e| RelayError::Unreachable {
            url: url.to_string(),
            why: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| RelayError::Unreachable {
            url: url.to_string(),
            why: e.without_url().to_string(),
        })?;
        if bytes.len() > MAX_ANSWER {
            return Err(RelayError::Bad("answer too large".into()));
        }
        if status >= 400 {
            let e: ApiError = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                ApiError::new(
                    status,
                    "http",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>(),
                )
            });
            return Err(RelayError::Refused {
                status,
                code: e.error,
                message: e.message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| RelayError::Bad(e.to_string()))
    }

    /// `GET /health`: is this a loopsy relay, and does it want a registration secret?
    pub async fn health(&self, base: &str) -> Result<Health, RelayError> {
        let url = format!("{base}/health");
        let h: Health = self.answer(base, self.http.get(&url)).await?;
        if h.service != "loopsy-relay" {
            return Err(RelayError::Bad(format!("{base} is not a loopsy relay")));
        }
        Ok(h)
    }

    /// `POST /v1/register`.
    pub async fn register(
        &self,
        base: &str,
        registration_secret: Option<&str>,
    ) -> Result<Registered, RelayError> {
        let mut req = self.http.post(format!("{base}/v1/register"));
        if let Some(s) = registration_secret {
            req = req.header(REGISTRATION_HEADER, s);
        }
        self.answer(base, req).await
    }

    /// `POST /v1/device/<d>/pair`.
    pub async fn pair_issue(&self, c: &Creds, ttl_s: u64) -> Result<PairIssued, RelayError> {
        let req = self
            .http
            .post(format!("{}/v1/device/{}/pair", c.url, c.device_id))
            .bearer_auth(&c.device_secret)
            .json(&PairIssue { ttl_s: Some(ttl_s) });
        self.answer(&c.url, req).await
    }

    /// `GET /v1/device/<d>/phones`.
    pub async fn phones(&self, c: &Creds) -> Result<Phones, RelayError> {
        let req = self
            .http
            .get(format!("{}/v1/device/{}/phones", c.url, c.device_id))
            .bearer_auth(&c.device_secret);
        self.answer(&c.url, req).await
    }

    /// `DELETE /v1/device/<d>/phones/<p>`.
    pub async fn revoke(&self, c: &Creds, phone_id: &str) -> Result<(), RelayError> {
        let req = self
            .http
            .delete(format!(
                "{}/v1/device/{}/phones/{phone_id}",
                c.url, c.device_id
            ))
            .bearer_auth(&c.device_secret);
        let _: serde_json::Value = self.answer(&c.url, req).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("https://r.example.workers.dev/")
                .ok()
                .as_deref(),
            Some("https://r.example.workers.dev")
        );
        assert!(normalize_url("http://127.0.0.1:8787").is_ok());
        assert!(normalize_url("http://localhost:8787").is_ok());
        for bad in [
            "http://relay.example.com",
            "ftp://x",
            "https://",
            "https://x/path",
            "https://x?token=1",
            "https://user@x",
            "relay.example.com",
        ] {
            assert!(normalize_url(bad).is_err(), "{bad}");
        }
        assert_eq!(ws_url("https://a.b", "/v1/x"), "wss://a.b/v1/x");
        assert_eq!(
            ws_url("http://127.0.0.1:1", "/v1/x"),
            "ws://127.0.0.1:1/v1/x"
        );
    }
}
