//! The relay's HTTP JSON bodies and its error answer, shared by the Worker, the daemon and the
//! phone clients. Every body is size-capped before parsing.

use serde::{Deserialize, Serialize};

/// Longest request body the relay parses.
pub const MAX_BODY: usize = 4096;
/// Longest phone label kept.
pub const MAX_LABEL: usize = 64;
/// Header carrying the optional registration secret (never a query parameter).
pub const REGISTRATION_HEADER: &str = "X-Loopsy-Registration-Secret";

/// `POST /v1/register` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    /// The new device's id.
    pub device_id: String,
    /// Its bearer secret (shown once; the relay keeps only a hash).
    pub device_secret: String,
}

/// `POST /v1/device/<d>/pair` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PairIssue {
    /// Seconds the token is valid (clamped to 30..=3600, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// `POST /v1/device/<d>/pair` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PairIssued {
    /// The token for the pair link.
    pub token: String,
    /// The single-use pairing id inside it.
    pub pair_id: String,
    /// Unix seconds when it expires.
    pub expires_at: u64,
}

/// `POST /v1/device/<d>/redeem` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    /// The token from the pair link.
    pub token: String,
    /// The phone's static X25519 public key (base64url, 32 bytes).
    pub phone_key: String,
    /// A label for lists (e.g. the browser), trimmed to 64 characters.
    #[serde(default)]
    pub label: String,
}

/// `POST /v1/device/<d>/redeem` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Redeemed {
    /// The device.
    pub device_id: String,
    /// The phone's id at this relay.
    pub phone_id: String,
    /// The phone's relay bearer (shown once).
    pub phone_secret: String,
    /// The pairing the daemon will ask the code for.
    pub pair_id: String,
}

/// One phone as the relay knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhoneEntry {
    /// Its id.
    pub phone_id: String,
    /// Its static public key as registered (base64url).
    pub phone_key: String,
    /// Its label.
    pub label: String,
    /// Unix seconds.
    pub paired_at: u64,
    /// Live WebSocket connections now.
    #[serde(default)]
    pub connections: u32,
}

/// `GET /v1/device/<d>/phones` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Phones {
    /// Registered phones.
    pub phones: Vec<PhoneEntry>,
}

/// `GET /health` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// Always true.
    pub ok: bool,
    /// `loopsy-relay`.
    pub service: String,
    /// Build version.
    pub version: String,
    /// Protocol versions spoken (`loopsy.vN`).
    pub protocols: Vec<u32>,
    /// Whether a registration secret is required.
    pub registration_secret: bool,
}

/// Every refusal: a status, a stable code and a message that says what to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({error})")]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Stable code.
    pub error: String,
    /// Human text.
    pub message: String,
    /// Seconds to wait, for 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: code.into(),
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// 400 bad_request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401: no credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// 403: wrong credential.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 409: already used.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 429 with the time to wait.
    pub fn limited(l: crate::limit::Limited) -> Self {
        Self {
            retry_after_s: Some(l.retry_after_s()),
            ..Self::new(429, "rate_limited", l.to_string())
        }
    }

    /// 503: the relay is not set up for this.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", self.error))
    }
}

impl From<crate::route::RouteError> for ApiError {
    fn from(e: crate::route::RouteError) -> Self {
        let code = match e {
            crate::route::RouteError::NotFound(_) => "not_found",
            crate::route::RouteError::MethodNotAllowed { .. } => "method_not_allowed",
            crate::route::RouteError::CredentialInUrl => "credential_in_url",
            _ => "bad_request",
        };
        Self::new(e.status(), code, e.to_string())
    }
}

impl From<crate::token::TokenError> for ApiError {
    fn from(e: crate::token::TokenError) -> Self {
        use crate::token::TokenError as T;
        match e {
            T::NoKey => Self::unavailable(e.to_string()),
            T::Expired => Self::new(401, "token_expired", e.to_string()),
            T::BadSignature | T::WrongDevice => Self::new(401, "token_invalid", e.to_string()),
            T::Malformed | T::BadId => Self::new(400, "token_malformed", e.to_string()),
        }
    }
}

impl From<crate::subprotocol::SubprotocolError> for ApiError {
    fn from(e: crate::subprotocol::SubprotocolError) -> Self {
        use crate::subprotocol::SubprotocolError as S;
        let code = match e {
            S::Unsupported { .. } | S::NoVersion => "unsupported_version",
            _ => "bad_request",
        };
        Self::new(400, code, e.to_string())
    }
}

/// Parse a JSON body of at most [`MAX_BODY`] bytes.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            413,
            "too_large",
            format!("request body over {MAX_BODY} bytes"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

/// A label made safe to store and show: no control characters, at most [`MAX_LABEL`] chars.
pub fn clean_label(label: &str) -> String {
    label
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A phone key as 32 bytes, from its base64url form.
pub fn parse_key(key: &str) -> Result<[u8; 32], ApiError> {
    use base64::Engine;
    let bad =
        || ApiError::bad_request("phone_key must be a 32-byte X25519 public key in base64url");
    if key.len() != 43 {
        return Err(bad());
    }
    let v = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key)
        .map_err(|_| bad())?;
    v.try_into().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() -> Result<(), ApiError> {
        let r: Redeem = parse_body(br#"{"token":"t","phone_key":"k"}"#)?;
        assert_eq!(r.label, "");
        assert!(parse_body::<Redeem>(br#"{"token":"t","phone_key":"k","x":1}"#).is_err());
        assert_eq!(
            parse_body::<Redeem>(&vec![b' '; MAX_BODY + 1]).map_err(|e| e.status),
            Err(413)
        );
        let p: PairIssue = parse_body(b"{}")?;
        assert_eq!(p.ttl_s, None);
        Ok(())
    }

    #[test]
    fn labels_and_keys() {
        assert_eq!(clean_label(" Pixel\u{7}\n 8 "), "Pixel 8");
        assert_eq!(clean_label(&"x".repeat(200)).len(), MAX_LABEL);
        assert!(parse_key("short").is_err());
        assert!(parse_key(&"A".repeat(43)).is_ok());
        assert!(parse_key(&"*".repeat(43)).is_err());
    }

    #[test]
    fn errors() {
        let e = ApiError::limited(crate::limit::Limited::Locked { retry_after_s: 9 });
        assert_eq!(e.status, 429);
        assert!(e.body().contains("\"retry_after_s\":9"));
        let e: ApiError = crate::route::RouteError::CredentialInUrl.into();
        assert_eq!((e.status, e.error.as_str()), (400, "credential_in_url"));
        let e: ApiError = crate::token::TokenError::Expired.into();
        assert_eq!(e.error, "token_expired");
    }
}
