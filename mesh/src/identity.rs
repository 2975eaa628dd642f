//! This machine's ed25519 identity (`identity.key`, 0600); its libp2p PeerId names the machine.

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::fsutil;

/// An identity file larger than this is not one of ours.
const MAX_IDENTITY_BYTES: u64 = 4096;

/// The machine's keypair.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No identity yet.
    #[error("{} does not exist; run `loopsy init`", .0.display())]
    Missing(PathBuf),
    /// Group or others can read the secret key.
    #[error(
        "{} has mode {mode:04o}: others can read this machine's secret key. \
         Run `loopsy doctor --fix` (or `chmod 600 {}`)", path.display(), path.display()
    )]
    Loose {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The file is not a key we wrote.
    #[error("{} is not a valid loopsy identity ({reason}); move it away and run `loopsy init --force`", path.display())]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The OS refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        Self {
            keypair: Keypair::generate_ed25519(),
        }
    }

    /// Load `path`, refusing it if its permissions are loose.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(path.to_path_buf()));
            }
            Err(e) => return Err(io(e)),
        };
        let mode = fsutil::mode_of(path).map_err(io)?;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Loose {
                path: path.to_path_buf(),
                mode,
            });
        }
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if meta.len() > MAX_IDENTITY_BYTES {
            return Err(corrupt(format!("{} bytes is too large", meta.len())));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let keypair =
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if keypair.clone().try_into_ed25519().is_err() {
            return Err(corrupt("not an ed25519 key".into()));
        }
        Ok(Self { keypair })
    }

    /// Write the key to `path` atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = self
            .keypair
            .to_protobuf_encoding()
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        fsutil::atomic_write(path, &bytes, fsutil::PRIVATE_FILE).map_err(io)
    }

    /// The libp2p keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The machine's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }
}

// Refuses loose file modes, which exist on Unix.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("identity.key");
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Missing(_))
        ));
        let id = Identity::generate();
        id.save(&path)?;
        assert_eq!(Identity::load(&path)?.peer_id(), id.peer_id());

        fsutil::set_mode(&path, 0o644)?;
        let err = Identity::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("0644") && err.contains("doctor --fix"),
            "{err}"
        );

        fsutil::atomic_write(&path, b"garbage", fsutil::PRIVATE_FILE)?;
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Corrupt { .. })
        ));
        Ok(())
    }
}
