//! The data dir (`$LOOPSY_HOME`, default `~/.loopsy`) and the names of everything in it.

use std::path::{Path, PathBuf};

use crate::fsutil;

/// Environment variable that selects the data dir.
pub const HOME_ENV: &str = "LOOPSY_HOME";

/// The data dir and the paths of the files the daemon keeps there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Use `root` as the data dir (it need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The data dir from an explicit flag, else `$LOOPSY_HOME`, else `~/.loopsy`.
    pub fn resolve(flag: Option<&Path>) -> Result<Self, String> {
        if let Some(p) = flag {
            return Ok(Self::new(absolute(p)));
        }
        if let Some(p) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(Self::new(absolute(Path::new(&p))));
        }
        let home = loopsy_sys::home_dir()
            .ok_or("neither LOOPSY_HOME nor a home directory is set; pass --home <dir>")?;
        Ok(Self::new(home.join(".loopsy")))
    }

    /// The data dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `identity.key`: the ed25519 secret key (0600).
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity.key")
    }
    /// `api.token`: the bearer token for the local HTTP MCP endpoint (0600).
    pub fn token(&self) -> PathBuf {
        self.root.join("api.token")
    }
    /// `trust.json`: the peers this machine trusts (0600).
    pub fn trust(&self) -> PathBuf {
        self.root.join("trust.json")
    }
    /// `loopsy.sock`: the local control socket (0600).
    pub fn socket(&self) -> PathBuf {
        self.root.join("loopsy.sock")
    }
    /// `daemon.pid`: holds the daemon's pid while it holds the OS lock on it.
    pub fn pidfile(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    /// `daemon.flags.json`: the command-line flags the daemon last started with (what
    /// `loopsy restart` reuses when given none).
    pub fn daemon_flags(&self) -> PathBuf {
        self.root.join("daemon.flags.json")
    }
    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// `logs/daemon.log`: the daemon's own log when started in the background.
    pub fn daemon_log(&self) -> PathBuf {
        self.logs().join("daemon.log")
    }
    /// `logs/audit.jsonl`: one line per tool call.
    pub fn audit_log(&self) -> PathBuf {
        self.logs().join("audit.jsonl")
    }
    /// `sessions/`: one record per PTY session.
    pub fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }

    /// Create the data dir and its subdirs, owner-only.
    pub fn ensure_dirs(&self) -> std::io::Result<()> {
        fsutil::ensure_private_dir(&self.root)?;
        fsutil::ensure_private_dir(&self.logs())?;
        fsutil::ensure_private_dir(&self.sessions())?;
        Ok(())
    }

    /// Refuse a data dir whose socket path would not fit in a Unix socket address.
    pub fn check_socket_path(&self) -> Result<(), String> {
        loopsy_sys::ipc::check_path(&self.socket())
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

// Unix paths and socket address lengths.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_paths_live_under_root() -> Result<(), String> {
        let h = Home::resolve(Some(Path::new("/tmp/x")))?;
        assert_eq!(h.root(), Path::new("/tmp/x"));
        assert_eq!(h.socket(), Path::new("/tmp/x/loopsy.sock"));
        assert_eq!(h.audit_log(), Path::new("/tmp/x/logs/audit.jsonl"));
        Ok(())
    }

    #[test]
    fn long_socket_path_is_refused() {
        let h = Home::new(format!("/tmp/{}", "a".repeat(120)));
        assert!(h.check_socket_path().is_err());
        assert!(Home::new("/tmp/short").check_socket_path().is_ok());
    }
}
