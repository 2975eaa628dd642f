//! The local API token (`api.token`, 0600): the bearer for the optional HTTP MCP endpoint.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::fsutil;

/// Length of a token in bytes before hex encoding.
const TOKEN_BYTES: usize = 32;

/// A token shared by the HTTP endpoint and the code that reloads it after `loopsy key rotate`.
/// Clones share one value, so a rotation is seen by every holder at once.
#[derive(Clone, Default)]
pub struct ApiToken {
    current: Arc<RwLock<String>>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// A new random token: 64 hex characters.
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; TOKEN_BYTES]>())
}

/// Read the token file, refusing loose permissions and malformed contents.
pub fn read(path: &Path) -> Result<String, String> {
    let mode =
        fsutil::mode_of(path).map_err(|e| format!("{}: {e}; run `loopsy init`", path.display()))?;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}: others can read the API token. Run `loopsy doctor --fix` (or `chmod 600 {}`)",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = text.trim();
    if t.len() != TOKEN_BYTES * 2 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{} is not a valid token; run `loopsy key rotate`",
            path.display()
        ));
    }
    Ok(t.to_string())
}

/// Write a token file atomically with mode 0600.
pub fn write(path: &Path, token: &str) -> std::io::Result<()> {
    fsutil::atomic_write(path, format!("{token}\n").as_bytes(), fsutil::PRIVATE_FILE)
}

impl ApiToken {
    /// Load the token from `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let t = Self::default();
        t.reload(path)?;
        Ok(t)
    }

    /// Re-read `path` (after a rotation); on error the old token stays in force.
    pub fn reload(&self, path: &Path) -> Result<(), String> {
        let new = read(path)?;
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    /// Constant-time check of a presented bearer token.
    pub fn matches(&self, presented: &str) -> bool {
        let cur = match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if cur.is_empty() || cur.len() != presented.len() {
            return false;
        }
        cur.bytes()
            .zip(presented.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

// Refuses loose file modes, which exist on Unix.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn rotate_is_seen_by_clones() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("api.token");
        let a = generate();
        write(&p, &a)?;
        let tok = ApiToken::load(&p)?;
        let clone = tok.clone();
        assert!(clone.matches(&a));
        let b = generate();
        assert_ne!(a, b);
        write(&p, &b)?;
        tok.reload(&p)?;
        assert!(clone.matches(&b) && !clone.matches(&a));
        assert!(!clone.matches(""));
        fsutil::set_mode(&p, 0o640)?;
        assert!(read(&p).is_err());
        Ok(())
    }
}
