//! Pair tokens: what the QR carries so a phone may register with the relay once.
//!
//! Binary, to keep the QR small: `version u8 | expires u32 BE (unix s) | device id 16 | pair
//! id 16`, then HMAC-SHA256 over a domain tag and those bytes, all base64url. The relay checks
//! the MAC, the expiry and the device, and burns the pair id (single use) in the device's
//! Durable Object. The short code the user types is *not* in here: the daemon checks it, over
//! the end-to-end channel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Token format version.
pub const TOKEN_VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 4 + 16 + 16;
const MAC_LEN: usize = 32;
/// Length of a token in text form.
pub const TOKEN_LEN: usize =
    (BODY_LEN + MAC_LEN).div_ceil(3) * 4 - (3 - (BODY_LEN + MAC_LEN) % 3) % 3;
/// Shortest signing key accepted.
pub const MIN_KEY_LEN: usize = 32;
/// Longest lifetime a token may have.
pub const MAX_TTL_S: u64 = 3600;
/// Shortest lifetime a token may have.
pub const MIN_TTL_S: u64 = 30;
const DOMAIN: &[u8] = b"loopsy-pair-token/1";

/// A verified token's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairToken {
    /// The device it pairs with (hex).
    pub device_id: String,
    /// The single-use pairing it belongs to (hex); the daemon knows its code.
    pub pair_id: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The relay has no (or too short a) signing key.
    #[error("the relay has no pair-token key (set the PAIR_TOKEN_SECRET secret, 32+ characters)")]
    NoKey,
    /// Not a token at all.
    #[error("the pair token is malformed: copy the whole link again")]
    Malformed,
    /// The MAC does not match: forged or altered.
    #[error("the pair token is not genuine (forged or altered): scan the QR again")]
    BadSignature,
    /// Past its expiry.
    #[error("the pair token expired: run `loopsy mobile pair` again")]
    Expired,
    /// For another device.
    #[error("the pair token is for another device")]
    WrongDevice,
    /// A device id that is not 32 hex characters.
    #[error("bad device or pair id")]
    BadId,
}

fn mac(key: &[u8], body: &[u8]) -> Result<Hmac<Sha256>, TokenError> {
    if key.len() < MIN_KEY_LEN {
        return Err(TokenError::NoKey);
    }
    let mut m = Hmac::<Sha256>::new_from_slice(key).map_err(|_| TokenError::NoKey)?;
    m.update(DOMAIN);
    m.update(body);
    Ok(m)
}

fn id_bytes(hex_id: &str) -> Result<[u8; 16], TokenError> {
    let v = hex::decode(hex_id).map_err(|_| TokenError::BadId)?;
    v.try_into().map_err(|_| TokenError::BadId)
}

/// Clamp a requested lifetime into `[MIN_TTL_S, MAX_TTL_S]`.
pub fn clamp_ttl(ttl_s: Option<u64>) -> u64 {
    ttl_s.unwrap_or(300).clamp(MIN_TTL_S, MAX_TTL_S)
}

/// Mint a token for `device_id` and `pair_id` (both hex) that expires at `expires_at`.
pub fn issue(
    key: &[u8],
    device_id: &str,
    pair_id: &str,
    expires_at: u64,
) -> Result<String, TokenError> {
    let exp = u32::try_from(expires_at).map_err(|_| TokenError::Malformed)?;
    let mut body = Vec::with_capacity(BODY_LEN + MAC_LEN);
    body.push(TOKEN_VERSION);
    body.extend_from_slice(&exp.to_be_bytes());
    body.extend_from_slice(&id_bytes(device_id)?);
    body.extend_from_slice(&id_bytes(pair_id)?);
    let tag = mac(key, &body)?.finalize().into_bytes();
    body.extend_from_slice(&tag);
    Ok(URL_SAFE_NO_PAD.encode(body))
}

/// Read a token without checking its MAC (a phone does this to learn the device id).
pub fn peek(token: &str) -> Result<PairToken, TokenError> {
    if token.len() != TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    let (body, _) = raw
        .split_at_checked(BODY_LEN)
        .ok_or(TokenError::Malformed)?;
    if body[0] != TOKEN_VERSION {
        return Err(TokenError::Malformed);
    }
    let exp = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    Ok(PairToken {
        device_id: hex::encode(&body[5..21]),
        pair_id: hex::encode(&body[21..37]),
        expires_at: u64::from(exp),
    })
}

/// Verify `token` for `device_id` at unix time `now`.
pub fn verify(key: &[u8], token: &str, device_id: &str, now: u64) -> Result<PairToken, TokenError> {
    let t = peek(token)?;
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    let (body, tag) = raw.split_at(BODY_LEN);
    mac(key, body)?
        .verify_slice(tag)
        .map_err(|_| TokenError::BadSignature)?;
    if t.device_id != device_id {
        return Err(TokenError::WrongDevice);
    }
    if now >= t.expires_at {
        return Err(TokenError::Expired);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-key";
    const D: &str = "0123456789abcdef0123456789abcdef";
    const P: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn issue_and_verify() -> Result<(), TokenError> {
        let t = issue(KEY, D, P, 1_000)?;
        assert_eq!(t.len(), TOKEN_LEN);
        let v = verify(KEY, &t, D, 999)?;
        assert_eq!(
            v,
            PairToken {
                device_id: D.into(),
                pair_id: P.into(),
                expires_at: 1_000
            }
        );
        assert_eq!(peek(&t)?, v);
        Ok(())
    }

    #[test]
    fn refusals() -> Result<(), TokenError> {
        let t = issue(KEY, D, P, 1_000)?;
        assert_eq!(verify(KEY, &t, D, 1_000), Err(TokenError::Expired));
        assert_eq!(
            verify(b"another-key-another-key-another-key", &t, D, 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(KEY, &t, "ffffffffffffffffffffffffffffffff", 1),
            Err(TokenError::WrongDevice)
        );
        // Flip each character: never accepted.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).map_err(|_| TokenError::Malformed)?;
            assert!(verify(KEY, &s, D, 1).is_err(), "tampered at {i}");
        }
        assert_eq!(verify(KEY, "", D, 1), Err(TokenError::Malformed));
        assert_eq!(
            verify(KEY, &"A".repeat(5000), D, 1),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(KEY, &format!("{t}="), D, 1),
            Err(TokenError::Malformed)
        );
        assert_eq!(issue(b"short", D, P, 1), Err(TokenError::NoKey));
        assert_eq!(issue(KEY, "zz", P, 1), Err(TokenError::BadId));
        Ok(())
    }

    #[test]
    fn ttl_clamp() {
        assert_eq!(clamp_ttl(None), 300);
        assert_eq!(clamp_ttl(Some(1)), MIN_TTL_S);
        assert_eq!(clamp_ttl(Some(1 << 40)), MAX_TTL_S);
    }
}
