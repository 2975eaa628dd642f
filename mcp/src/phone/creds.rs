//! `relay.json` (0600): the relay this daemon uses, its device credentials there, and the
//! daemon's static end-to-end key. Written by `loopsy relay configure`, read at start.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use loopsy_mesh::fsutil::{PRIVATE_FILE, atomic_write, mode_of};
use loopsy_relay::e2e::KeyPair;
use serde::{Deserialize, Serialize};

/// Largest `relay.json` read.
const MAX_BYTES: u64 = 64 * 1024;

/// What `relay.json` holds.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Creds {
    /// The relay's base URL (`https://…`, or `http://127.0.0.1:…` for `relay dev`).
    pub url: String,
    /// This device's id there.
    pub device_id: String,
    /// Its bearer secret there.
    pub device_secret: String,
    /// The daemon's static X25519 secret (base64url), for the end-to-end channel.
    pub e2e_secret: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("url", &self.url)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Creds {
    /// The daemon's end-to-end key pair.
    pub fn keypair(&self) -> Result<KeyPair, String> {
        let raw = URL_SAFE_NO_PAD
            .decode(&self.e2e_secret)
            .map_err(|_| "relay.json: e2e_secret is not base64url".to_string())?;
        KeyPair::from_secret(&raw).map_err(|e| format!("relay.json: {e}"))
    }

    /// Encode a new key pair's secret for storing.
    pub fn encode_secret(k: &KeyPair) -> String {
        URL_SAFE_NO_PAD.encode(k.secret())
    }
}

/// Where `relay.json` lives.
pub fn path(home: &loopsy_mesh::Home) -> PathBuf {
    home.root().join("relay.json")
}

/// Load it; `Ok(None)` if no relay is configured.
pub fn load(path: &Path) -> Result<Option<Creds>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if meta.len() > MAX_BYTES {
        return Err(format!(
            "{}: too large to be relay settings",
            path.display()
        ));
    }
    let mode = mode_of(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {mode:o}); it holds secrets: chmod 600 it or run `loopsy doctor --fix`",
            path.display()
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Save it (atomically, 0600).
pub fn save(path: &Path, c: &Creds) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(c).map_err(|e| e.to_string())?;
    atomic_write(path, &bytes, PRIVATE_FILE).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_mode() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path().join("relay.json");
        assert_eq!(load(&p)?, None);
        let k = KeyPair::generate().map_err(|e| e.to_string())?;
        let c = Creds {
            url: "http://127.0.0.1:1".into(),
            device_id: "d".into(),
            device_secret: "s".into(),
            e2e_secret: Creds::encode_secret(&k),
        };
        save(&p, &c)?;
        assert_eq!(mode_of(&p).map_err(|e| e.to_string())?, 0o600);
        let back = load(&p)?.ok_or("missing")?;
        assert_eq!(back.keypair()?.public, k.public);
        assert!(!format!("{back:?}").contains("\"s\""));
        if !loopsy_sys::fs::is_loose(&p).map_err(|e| e.to_string())? {
            loopsy_sys::fs::set_mode(&p, 0o644).map_err(|e| e.to_string())?;
        }
        // Where modes exist (Unix), a loose file is refused.
        if loopsy_sys::fs::is_loose(&p).map_err(|e| e.to_string())? {
            assert!(load(&p).is_err());
        }
        Ok(())
    }
}
