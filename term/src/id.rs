//! Session ids: short, random, and safe to use as a file name under `sessions/`.
//!
//! The original deleted `$HOME` when handed `../..` as an id; here an id that is not exactly
//! 1–64 of `[A-Za-z0-9_-]` never reaches the file system.

use std::fmt;
use std::str::FromStr;

/// Longest accepted id.
pub const MAX_ID_LEN: usize = 64;

/// A validated session id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    /// Empty.
    #[error("session id is empty")]
    Empty,
    /// Too long.
    #[error("session id is {0} bytes; the limit is {MAX_ID_LEN}")]
    TooLong(usize),
    /// Has a character outside `[A-Za-z0-9_-]` (path separators, dots, spaces…).
    #[error("session id {0:?} may contain only letters, digits, '-' and '_'")]
    BadChar(String),
}

impl SessionId {
    /// A new random id (16 hex characters).
    pub fn random() -> Self {
        Self(hex::encode(rand::random::<[u8; 8]>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = SessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SessionIdError::TooLong(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            let shown: String = s.chars().take(MAX_ID_LEN).collect();
            return Err(SessionIdError::BadChar(shown));
        }
        Ok(Self(s.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "", "..", "../..", "a/b", "/etc", "a b", "x\0", ".hidden", "é",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "a".repeat(65).parse::<SessionId>(),
            Err(SessionIdError::TooLong(65))
        );
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<SessionId>().ok(), Some(a.clone()));
        let json = format!("\"{a}\"");
        let back: Result<SessionId, _> = serde_json_like(&json);
        assert_eq!(back.ok(), Some(a));
    }

    // serde round trip without a JSON dependency: a string deserializer.
    fn serde_json_like(s: &str) -> Result<SessionId, serde::de::value::Error> {
        use serde::de::IntoDeserializer;
        SessionId::deserialize(s.trim_matches('"').into_deserializer())
    }

    use serde::Deserialize;
}
