//! The pair link the QR code carries: `<relay>/app#pair=<token>.<daemon key>`.
//!
//! Everything after `#` stays in the browser (fragments are never sent to a server), so the
//! token and key reach the phone without entering any log. The short code is not in the link:
//! a leaked link alone cannot pair.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::token::{PairToken, TokenError, peek};

/// Longest link accepted.
pub const MAX_LINK: usize = 2048;

/// A parsed pair link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairLink {
    /// The relay's base URL (`https://relay.example.workers.dev`).
    pub relay: String,
    /// The pair token.
    pub token: String,
    /// The daemon's static X25519 public key.
    pub daemon_key: [u8; 32],
}

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a pair link.
    #[error("not a loopsy pair link (expected <relay>/app#pair=…): copy the whole link")]
    Malformed,
    /// Its token is malformed.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl PairLink {
    /// The URL for the QR code.
    pub fn to_url(&self) -> String {
        format!(
            "{}/app#pair={}.{}",
            self.relay.trim_end_matches('/'),
            self.token,
            URL_SAFE_NO_PAD.encode(self.daemon_key)
        )
    }

    /// Parse a link (as scanned or pasted).
    pub fn parse(url: &str) -> Result<Self, LinkError> {
        let url = url.trim();
        if url.len() > MAX_LINK {
            return Err(LinkError::Malformed);
        }
        let (relay, frag) = url.split_once("/app#pair=").ok_or(LinkError::Malformed)?;
        if !(relay.starts_with("https://") || relay.starts_with("http://")) {
            return Err(LinkError::Malformed);
        }
        let (token, key) = frag.split_once('.').ok_or(LinkError::Malformed)?;
        let key = URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| LinkError::Malformed)?;
        let daemon_key: [u8; 32] = key.try_into().map_err(|_| LinkError::Malformed)?;
        peek(token)?;
        Ok(Self {
            relay: relay.to_string(),
            token: token.to_string(),
            daemon_key,
        })
    }

    /// What the token says (device, pairing, expiry), unverified.
    pub fn token_info(&self) -> Result<PairToken, TokenError> {
        peek(&self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() -> Result<(), LinkError> {
        let token = crate::token::issue(
            b"0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
            "00112233445566778899aabbccddeeff",
            2_000_000_000,
        )?;
        let l = PairLink {
            relay: "https://r.example.workers.dev".into(),
            token,
            daemon_key: [9; 32],
        };
        let url = l.to_url();
        assert!(url.len() < 200, "{}", url.len());
        assert_eq!(PairLink::parse(&url)?, l);
        assert_eq!(
            l.token_info()?.device_id,
            "0123456789abcdef0123456789abcdef"
        );
        for bad in [
            "",
            "https://x/app",
            "ftp://x/app#pair=a.b",
            "https://x/app#pair=nodot",
            &url.replace(".", "!"),
            &format!("{url}xx"),
        ] {
            assert!(PairLink::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
