//! `trust.json`: the peers this machine trusts, what each may do, and where it was last seen.
//! Owned by the node task (revocation must reach live connections at once); persisted
//! atomically on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Largest trust file we read.
const MAX_TRUST_BYTES: u64 = 4 << 20;

/// What a trusted peer may do on this machine.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Run commands (`loopsy_execute`).
    Exec,
    /// Open terminal sessions.
    Pty,
    /// Read files (pull, list).
    FilesRead,
    /// Write files (push).
    FilesWrite,
    /// Read and write the replicated context.
    Context,
    /// Send messages and tasks.
    Messages,
}

impl Capability {
    /// Every capability: the default grant for a paired machine.
    pub const ALL: [Capability; 6] = [
        Self::Exec,
        Self::Pty,
        Self::FilesRead,
        Self::FilesWrite,
        Self::Context,
        Self::Messages,
    ];

    /// The name used in the CLI and config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Pty => "pty",
            Self::FilesRead => "files-read",
            Self::FilesWrite => "files-write",
            Self::Context => "context",
            Self::Messages => "messages",
        }
    }

    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One trusted peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPeer {
    /// Its friendly name (unique among our peers).
    pub name: String,
    /// What it may do here.
    pub caps: Vec<Capability>,
    /// Unix time of pairing.
    pub paired_at: u64,
    /// Addresses it was last reached at (multiaddrs), newest first.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The member that introduced it (PeerId), when it was not paired directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced_by: Option<String>,
}

impl TrustedPeer {
    /// Does it hold `cap`?
    pub fn can(&self, cap: Capability) -> bool {
        self.caps.contains(&cap)
    }
}

/// The trust file's contents: PeerId (base58) → peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    /// Format version.
    #[serde(default = "one")]
    pub version: u32,
    /// Trusted peers by PeerId.
    #[serde(default)]
    pub peers: BTreeMap<String, TrustedPeer>,
    /// Peers removed here: introductions from other members never bring them back (only a
    /// new pairing does).
    #[serde(default)]
    pub removed: std::collections::BTreeSet<String>,
}

fn one() -> u32 {
    1
}

/// Why the trust file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Unreadable or unwritable.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid.
    #[error("{} is corrupt ({reason}); move it away to start with no trusted peers", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Trust {
    /// Load `path`; a missing file is an empty trust list.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let io = |source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |reason: String| TrustError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(e)),
            Ok(m) if m.len() > MAX_TRUST_BYTES => {
                return Err(corrupt(format!("{} bytes", m.len())));
            }
            Ok(_) => {}
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let t: Trust = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        for (id, p) in &t.peers {
            id.parse::<libp2p::PeerId>()
                .map_err(|e| corrupt(format!("peer id {id:?}: {e}")))?;
            crate::config::validate_name(&p.name).map_err(corrupt)?;
        }
        Ok(t)
    }

    /// Write atomically (0600).
    pub fn save(&self, path: &Path) -> Result<(), TrustError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| TrustError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        fsutil::atomic_write(path, &bytes, fsutil::PRIVATE_FILE).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Find a peer by PeerId or name.
    pub fn find(&self, who: &str) -> Option<(&String, &TrustedPeer)> {
        self.peers
            .get_key_value(who)
            .or_else(|| self.peers.iter().find(|(_, p)| p.name == who))
    }

    /// A name for a new peer that does not clash with ours or another peer's.
    pub fn unique_name(&self, wanted: &str, own_name: &str, peer_id: &str) -> String {
        let taken = |n: &str| {
            n == own_name
                || self
                    .peers
                    .iter()
                    .any(|(id, p)| p.name == n && id != peer_id)
        };
        if !taken(wanted) {
            return wanted.to_string();
        }
        (2..)
            .map(|i| format!("{wanted}-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| peer_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_find_and_names() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("trust.json");
        let mut t = Trust::load(&path)?;
        assert!(t.peers.is_empty());
        let id = libp2p::PeerId::random().to_string();
        t.peers.insert(
            id.clone(),
            TrustedPeer {
                name: "kai".into(),
                caps: Capability::ALL.to_vec(),
                paired_at: 1,
                addrs: vec![],
                introduced_by: None,
            },
        );
        t.save(&path)?;
        let back = Trust::load(&path)?;
        assert_eq!(back, t);
        assert_eq!(fsutil::mode_of(&path)?, 0o600);
        assert_eq!(back.find("kai").map(|(k, _)| k.clone()), Some(id.clone()));
        assert_eq!(
            back.find(&id).map(|(_, p)| p.name.clone()),
            Some("kai".into())
        );
        assert_eq!(back.unique_name("kai", "me", "other"), "kai-2");
        assert_eq!(back.unique_name("kai", "me", &id), "kai");
        assert_eq!(back.unique_name("me", "me", "x"), "me-2");
        assert_eq!(Capability::parse("files-read"), Some(Capability::FilesRead));
        std::fs::write(
            &path,
            b"{\"peers\":{\"nope\":{\"name\":\"a\",\"caps\":[],\"paired_at\":0}}}",
        )?;
        assert!(matches!(
            Trust::load(&path),
            Err(TrustError::Corrupt { .. })
        ));
        Ok(())
    }
}
