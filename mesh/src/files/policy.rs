//! Which paths a transfer may touch: canonicalised (symlinks resolved) before any check, so
//! `share/../../etc`, a symlink out of `share`, and a sibling `share-evil` are all outside
//! `share`. Applied on both ends of every transfer.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[files]` in config.toml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Roots a transfer may read or write under (`~` = the daemon user's home).
    pub allowed_paths: Vec<String>,
    /// Paths never read or written, even under an allowed root.
    pub denied_paths: Vec<String>,
    /// Write large received files with direct I/O (past the page cache) where the file
    /// system supports it.
    pub direct_io: bool,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            allowed_paths: vec!["~".into()],
            denied_paths: [
                "~/.ssh",
                "~/.gnupg",
                "~/.aws",
                "~/.config/gcloud",
                "~/.kube",
                "~/.loopsy",
                "~/.netrc",
                "~/.docker/config.json",
            ]
            .map(String::from)
            .to_vec(),
            direct_io: true,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not under any allowed root.
    #[error("{0} is outside files.allowed_paths")]
    NotAllowed(String),
    /// Under a denied path.
    #[error("{0} is in files.denied_paths")]
    Denied(String),
    /// Does not exist (or its directory does not).
    #[error("{0} does not exist")]
    NotFound(String),
    /// Not a usable path.
    #[error("{0}")]
    Invalid(String),
}

/// The resolved policy: canonical roots.
#[derive(Clone, Debug)]
pub struct PathPolicy {
    home: PathBuf,
    allowed: Vec<PathBuf>,
    denied: Vec<PathBuf>,
    direct_io: bool,
}

fn expand(p: &str, home: &Path) -> PathBuf {
    match p.strip_prefix('~') {
        Some("") => home.to_path_buf(),
        Some(rest) if rest.starts_with('/') => home.join(&rest[1..]),
        _ => {
            let pb = PathBuf::from(p);
            if pb.is_absolute() { pb } else { home.join(pb) }
        }
    }
}

/// Canonicalise what exists; for what does not (yet), canonicalise the nearest existing
/// ancestor and append the rest (which then contains no `..`).
fn canonical_lenient(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => canonical_lenient(parent).join(name),
        _ => p.to_path_buf(),
    }
}

impl PathPolicy {
    /// Resolve `cfg` against `home` (the daemon user's home directory).
    pub fn new(cfg: &FilesConfig, home: &Path) -> Self {
        let home = canonical_lenient(home);
        Self {
            allowed: cfg
                .allowed_paths
                .iter()
                .map(|p| canonical_lenient(&expand(p, &home)))
                .collect(),
            denied: cfg
                .denied_paths
                .iter()
                .map(|p| canonical_lenient(&expand(p, &home)))
                .collect(),
            home,
            direct_io: cfg.direct_io,
        }
    }

    /// Whether large received files are written with direct I/O (`files.direct_io`).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    fn check(&self, canon: PathBuf, shown: &str) -> Result<PathBuf, PathError> {
        if self.denied.iter().any(|d| canon.starts_with(d)) {
            return Err(PathError::Denied(shown.to_string()));
        }
        if !self.allowed.iter().any(|a| canon.starts_with(a)) {
            return Err(PathError::NotAllowed(shown.to_string()));
        }
        Ok(canon)
    }

    fn absolute(&self, p: &str) -> Result<PathBuf, PathError> {
        if p.is_empty() || p.contains('\0') {
            return Err(PathError::Invalid("empty path or NUL byte".into()));
        }
        Ok(expand(p, &self.home))
    }

    /// An existing file or directory to read.
    pub fn readable(&self, p: &str) -> Result<PathBuf, PathError> {
        let abs = self.absolute(p)?;
        let canon = std::fs::canonicalize(&abs).map_err(|_| PathError::NotFound(p.to_string()))?;
        self.check(canon, p)
    }

    /// A file to create or replace: its directory must exist; the name must be a plain name.
    pub fn writable(&self, p: &str) -> Result<PathBuf, PathError> {
        let abs = self.absolute(p)?;
        let name = match abs.components().next_back() {
            Some(Component::Normal(n)) => n.to_owned(),
            _ => return Err(PathError::Invalid(format!("{p} does not name a file"))),
        };
        let parent = abs
            .parent()
            .ok_or_else(|| PathError::Invalid(format!("{p} has no directory")))?;
        let dir = std::fs::canonicalize(parent)
            .map_err(|_| PathError::NotFound(parent.display().to_string()))?;
        let target = dir.join(&name);
        // A symlink at the destination is resolved too: writing through it must be allowed.
        let canon = match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => canon_or(&target),
            _ => target,
        };
        if canon.is_dir() {
            return Err(PathError::Invalid(format!(
                "{p} is a directory; give a file name"
            )));
        }
        self.check(canon, p)
    }
}

fn canon_or(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| canonical_lenient(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn traversal_symlinks_and_siblings_are_refused() -> std::io::Result<()> {
        let t = tempfile::tempdir()?;
        let home = t.path();
        std::fs::create_dir_all(home.join("share/sub"))?;
        std::fs::create_dir_all(home.join("share-evil"))?;
        std::fs::create_dir_all(home.join("secret"))?;
        std::fs::write(home.join("share/a.txt"), b"a")?;
        std::fs::write(home.join("share-evil/x"), b"x")?;
        std::fs::write(home.join("secret/key"), b"k")?;
        std::os::unix::fs::symlink(home.join("secret"), home.join("share/link"))?;
        std::os::unix::fs::symlink(home.join("secret/key"), home.join("share/keylink"))?;
        let cfg = FilesConfig {
            allowed_paths: vec!["~/share".into()],
            denied_paths: vec!["~/share/sub".into()],
            ..FilesConfig::default()
        };
        let p = PathPolicy::new(&cfg, home);

        assert!(p.readable("share/a.txt").is_ok());
        assert!(p.readable("~/share/a.txt").is_ok());
        assert!(matches!(
            p.readable("share/../secret/key"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.readable("share/link/key"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.readable("share/keylink"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.readable("share-evil/x"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(p.readable("share/sub"), Err(PathError::Denied(_))));
        assert!(matches!(
            p.readable("share/nope"),
            Err(PathError::NotFound(_))
        ));

        assert!(p.writable("share/new.txt").is_ok());
        assert!(matches!(
            p.writable("share/../secret/new"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.writable("share/link/new"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.writable("share/keylink"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.writable("share-evil/new"),
            Err(PathError::NotAllowed(_))
        ));
        assert!(matches!(
            p.writable("share/sub/new"),
            Err(PathError::Denied(_))
        ));
        assert!(matches!(p.writable("share/.."), Err(PathError::Invalid(_))));
        assert!(matches!(
            p.writable("share/nodir/new"),
            Err(PathError::NotFound(_))
        ));
        assert!(matches!(p.writable("share"), Err(PathError::Invalid(_))));
        assert!(matches!(p.readable(""), Err(PathError::Invalid(_))));
        Ok(())
    }

    #[test]
    fn defaults_deny_secrets() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(t.path().join(".ssh")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(t.path().join(".ssh/id_ed25519"), b"k").unwrap_or_else(|e| panic!("{e}"));
        let p = PathPolicy::new(&FilesConfig::default(), t.path());
        assert!(matches!(
            p.readable("~/.ssh/id_ed25519"),
            Err(PathError::Denied(_))
        ));
    }
}
