//! `Sec-WebSocket-Protocol` negotiation: the protocol version and the bearer credential.
//!
//! Browsers cannot set headers on a WebSocket, so the bearer rides in the subprotocol list
//! (`loopsy.v1, loopsy.bearer.<token>`) — never in the URL, where proxies and logs keep it.
//! The relay echoes only the version it accepted.

/// The protocol versions this build speaks, newest first.
pub const SUPPORTED_VERSIONS: [u32; 1] = [1];
/// Prefix of a version entry (`loopsy.v1`).
pub const VERSION_PREFIX: &str = "loopsy.v";
/// Prefix of the bearer entry (`loopsy.bearer.<token>`).
pub const BEARER_PREFIX: &str = "loopsy.bearer.";
/// Longest header value we parse.
pub const MAX_HEADER: usize = 4096;
/// Longest bearer token accepted.
pub const MAX_BEARER: usize = 256;

/// What a client offered, after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The highest version both sides speak.
    pub version: u32,
    /// The bearer credential, if one was offered.
    pub bearer: Option<String>,
}

impl Offer {
    /// The value to echo in the 101 response's `Sec-WebSocket-Protocol`.
    pub fn accepted(&self) -> String {
        format!("{VERSION_PREFIX}{}", self.version)
    }
}

/// Why a subprotocol offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubprotocolError {
    /// Header too long.
    #[error("Sec-WebSocket-Protocol is longer than {MAX_HEADER} bytes")]
    TooLong,
    /// No `loopsy.vN` entry.
    #[error("no loopsy protocol version offered (expected e.g. \"loopsy.v1\")")]
    NoVersion,
    /// Only versions we do not speak.
    #[error(
        "unsupported loopsy protocol version(s) {offered:?}; this relay speaks {supported:?}: update the older side"
    )]
    Unsupported {
        /// What the client offered.
        offered: Vec<u32>,
        /// What we speak.
        supported: Vec<u32>,
    },
    /// A malformed or duplicated bearer entry.
    #[error("malformed bearer in Sec-WebSocket-Protocol")]
    BadBearer,
}

/// Negotiate from a raw `Sec-WebSocket-Protocol` header value.
pub fn negotiate(header: &str) -> Result<Offer, SubprotocolError> {
    if header.len() > MAX_HEADER {
        return Err(SubprotocolError::TooLong);
    }
    let mut offered = Vec::new();
    let mut bearer = None;
    for entry in header.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Some(tok) = entry.strip_prefix(BEARER_PREFIX) {
            let valid = !tok.is_empty()
                && tok.len() <= MAX_BEARER
                && tok
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid || bearer.is_some() {
                return Err(SubprotocolError::BadBearer);
            }
            bearer = Some(tok.to_string());
        } else if let Some(Ok(n)) = entry.strip_prefix(VERSION_PREFIX).map(str::parse::<u32>) {
            offered.push(n);
        }
    }
    if offered.is_empty() {
        return Err(SubprotocolError::NoVersion);
    }
    let version = SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| offered.contains(v))
        .ok_or_else(|| SubprotocolError::Unsupported {
            offered: offered.clone(),
            supported: SUPPORTED_VERSIONS.to_vec(),
        })?;
    Ok(Offer { version, bearer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_bearer() {
        let o = negotiate("loopsy.v1, loopsy.bearer.abc-DEF_1.2");
        assert_eq!(
            o,
            Ok(Offer {
                version: 1,
                bearer: Some("abc-DEF_1.2".into())
            })
        );
        assert_eq!(o.map(|o| o.accepted()), Ok("loopsy.v1".to_string()));
        assert_eq!(negotiate("loopsy.v7, loopsy.v1").map(|o| o.version), Ok(1));
    }

    #[test]
    fn refusals() {
        assert_eq!(negotiate(""), Err(SubprotocolError::NoVersion));
        assert_eq!(
            negotiate("chat, loopsy.bearer.x"),
            Err(SubprotocolError::NoVersion)
        );
        assert!(matches!(
            negotiate("loopsy.v9"),
            Err(SubprotocolError::Unsupported { .. })
        ));
        assert_eq!(
            negotiate("loopsy.v1, loopsy.bearer."),
            Err(SubprotocolError::BadBearer)
        );
        assert_eq!(
            negotiate("loopsy.v1, loopsy.bearer.a, loopsy.bearer.b"),
            Err(SubprotocolError::BadBearer)
        );
        assert_eq!(
            negotiate("loopsy.v1, loopsy.bearer.a b"),
            Err(SubprotocolError::BadBearer)
        );
        assert_eq!(negotiate(&"x".repeat(5000)), Err(SubprotocolError::TooLong));
    }
}
