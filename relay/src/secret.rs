//! Bearer secrets: minted from 32 random bytes, shown once as base64url, stored only as a
//! SHA-256 hash, compared in constant time. Ids are 16 random bytes as hex.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of entropy in a secret.
pub const SECRET_BYTES: usize = 32;
/// Length of a secret in its text form.
pub const SECRET_LEN: usize = 43;

/// A secret in text form from 32 random bytes.
pub fn secret_from(bytes: &[u8; SECRET_BYTES]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An id (device or phone) from 16 random bytes.
pub fn id_from(bytes: &[u8; 16]) -> String {
    hex::encode(bytes)
}

/// Whether `s` looks like a secret this relay minted (so garbage is refused before hashing).
pub fn well_formed(s: &str) -> bool {
    s.len() == SECRET_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The stored form of a secret: lowercase hex SHA-256.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored`, in time independent of where they differ.
pub fn matches(secret: &str, stored: &str) -> bool {
    if !well_formed(secret) {
        return false;
    }
    let h = hash(secret);
    h.len() == stored.len() && bool::from(h.as_bytes().ct_eq(stored.as_bytes()))
}

/// Whether two operator-chosen secrets (any length) are equal, in time independent of where
/// they differ (both are hashed first).
pub fn same(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// The bearer from an `Authorization: Bearer <t>` header value.
pub fn from_authorization(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_hash_match() {
        let s = secret_from(&[7u8; 32]);
        assert_eq!(s.len(), SECRET_LEN);
        assert!(well_formed(&s));
        let stored = hash(&s);
        assert_eq!(stored.len(), 64);
        assert!(matches(&s, &stored));
        assert!(!matches(&secret_from(&[8u8; 32]), &stored));
        assert!(!matches("short", &stored));
        assert!(!matches(&s, "not-a-hash"));
        assert_eq!(id_from(&[0xab; 16]).len(), 32);
        assert!(same("operator secret", "operator secret"));
        assert!(!same("operator secret", "operator secreT"));
        assert!(!same("", "x"));
    }

    #[test]
    fn authorization_header() {
        assert_eq!(from_authorization("Bearer abc"), Some("abc"));
        assert_eq!(from_authorization("bearer  abc "), Some("abc"));
        assert_eq!(from_authorization("Basic abc"), None);
        assert_eq!(from_authorization("Bearer"), None);
        assert_eq!(from_authorization("Bearer  "), None);
    }
}
