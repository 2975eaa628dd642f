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
    /// Paths never read or written, even under an allowed root: credential stores.
    pub denied_paths: Vec<String>,
    /// Paths never written (reading them is allowed): files something runs or obeys later,
    /// so writing them is running code (shell start-up files, service and autostart dirs,
    /// agents' settings and hooks, editors' and git's configs).
    pub write_denied_paths: Vec<String>,
    /// Path endings never written wherever they are (a repository's `.git/hooks`, a
    /// project's `.claude/settings.json`, `.envrc`, …).
    pub write_denied_anywhere: Vec<String>,
    /// Never write into a directory of `PATH` that is under the home directory
    /// (`~/.local/bin`, `~/.cargo/bin`, … where a planted program would run as a command).
    pub deny_writes_to_path_dirs: bool,
    /// Write large received files with direct I/O (past the page cache) where the file
    /// system supports it.
    pub direct_io: bool,
}

/// Credential stores: neither read nor written by default.
pub const DEFAULT_DENIED: &[&str] = &[
    "~/.ssh",
    "~/.gnupg",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.kube",
    "~/.loopsy",
    "~/.netrc",
    "~/.git-credentials",
    "~/.config/git/credentials",
    "~/.config/gh",
    "~/.config/hub",
    "~/.docker/config.json",
    "~/.npmrc",
    "~/.pypirc",
    "~/.cargo/credentials",
    "~/.cargo/credentials.toml",
    "~/.vault-token",
    "~/.terraform.d/credentials.tfrc.json",
    "~/.password-store",
    "~/.local/share/keyrings",
    "~/Library/Keychains",
    "~/.mozilla",
    "~/.config/google-chrome",
    "~/.config/chromium",
    "~/Library/Application Support/Google/Chrome",
    "~/Library/Application Support/Firefox",
    "~/.claude/.credentials.json",
    "~/.codex/auth.json",
    "~/.gemini/oauth_creds.json",
    "~/.local/share/opencode/auth.json",
];

/// Files something runs or obeys later: not written by default.
pub const DEFAULT_WRITE_DENIED: &[&str] = &[
    "~/.bashrc",
    "~/.bash_profile",
    "~/.bash_login",
    "~/.bash_logout",
    "~/.profile",
    "~/.zshrc",
    "~/.zshenv",
    "~/.zprofile",
    "~/.zlogin",
    "~/.zlogout",
    "~/.cshrc",
    "~/.tcshrc",
    "~/.kshrc",
    "~/.bashrc.d",
    "~/.zshrc.d",
    "~/.oh-my-zsh",
    "~/.config/fish",
    "~/.xprofile",
    "~/.xinitrc",
    "~/.xsession",
    "~/.pam_environment",
    "~/.config/environment.d",
    "~/.config/systemd",
    "~/.local/share/systemd",
    "~/.config/autostart",
    "~/.local/share/applications",
    "~/Library/LaunchAgents",
    "~/Documents/PowerShell",
    "~/Documents/WindowsPowerShell",
    "~/AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup",
    "~/.gitconfig",
    "~/.config/git",
    "~/.vimrc",
    "~/.vim",
    "~/.config/nvim",
    "~/.emacs",
    "~/.emacs.d",
    "~/.claude",
    "~/.claude.json",
    "~/.codex",
    "~/.gemini",
    "~/.config/opencode",
    "~/.cursor",
    "~/.config/Code/User",
    "~/Library/Application Support/Code/User",
    "~/.config/loopsy",
    "~/.cargo/config.toml",
    "~/.cargo/config",
];

/// Path endings not written anywhere by default.
pub const DEFAULT_WRITE_DENIED_ANYWHERE: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".git/modules",
    ".cargo/config.toml",
    ".cargo/config",
    ".envrc",
    ".claude/settings.json",
    ".claude/settings.local.json",
    ".mcp.json",
    ".vscode/tasks.json",
    ".vscode/settings.json",
    ".cursor/mcp.json",
    ".gemini/settings.json",
    ".codex/config.toml",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            allowed_paths: vec!["~".into()],
            denied_paths: strings(DEFAULT_DENIED),
            write_denied_paths: strings(DEFAULT_WRITE_DENIED),
            write_denied_anywhere: strings(DEFAULT_WRITE_DENIED_ANYWHERE),
            deny_writes_to_path_dirs: true,
            direct_io: true,
        }
    }
}

impl FilesConfig {
    /// The default rules this config no longer has: each one opens a way for a peer with
    /// `files-read` to read a secret, or with `files-write` to run code here (for `doctor`).
    pub fn opened_defaults(&self) -> Vec<String> {
        let missing = |list: &[String], defaults: &[&str], what: &str| -> Vec<String> {
            defaults
                .iter()
                .filter(|d| !list.iter().any(|x| x == *d))
                .map(|d| format!("{what} no longer lists {d}"))
                .collect()
        };
        let mut out = missing(&self.denied_paths, DEFAULT_DENIED, "files.denied_paths");
        out.extend(missing(
            &self.write_denied_paths,
            DEFAULT_WRITE_DENIED,
            "files.write_denied_paths",
        ));
        out.extend(missing(
            &self.write_denied_anywhere,
            DEFAULT_WRITE_DENIED_ANYWHERE,
            "files.write_denied_anywhere",
        ));
        if !self.deny_writes_to_path_dirs {
            out.push("files.deny_writes_to_path_dirs is off".into());
        }
        out
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
    /// Under a path that is never written.
    #[error(
        "{0} is never written: {1} (a file something runs or obeys later; files.{2} in config.toml)"
    )]
    WriteDenied(String, &'static str, &'static str),
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
    write_denied: Vec<PathBuf>,
    write_denied_anywhere: Vec<PathBuf>,
    path_dirs: Vec<PathBuf>,
    direct_io: bool,
}

/// Does `p` start with `prefix`? Case-blind where file systems usually are (macOS, Windows).
fn under(p: &Path, prefix: &Path) -> bool {
    if loopsy_sys::fs::CASE_BLIND_PATHS {
        let low = |x: &Path| PathBuf::from(x.to_string_lossy().to_lowercase());
        low(p).starts_with(low(prefix))
    } else {
        p.starts_with(prefix)
    }
}

/// Is `p` in the hooks or config of a bare repository (`proj.git/hooks/…`, `proj.git/config`)?
fn in_bare_repo_hooks(p: &Path) -> bool {
    let parts: Vec<String> = p
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_lowercase())
        .collect();
    parts
        .windows(2)
        .any(|w| w[0].len() > 4 && w[0].ends_with(".git") && (w[1] == "hooks" || w[1] == "config"))
}

/// Does `p` contain the components of `ending` in a row (`.git/hooks` in
/// `/h/src/x/.git/hooks/pre-commit`)?
fn contains_run(p: &Path, ending: &Path) -> bool {
    let fold = |c: std::path::Component| {
        let s = c.as_os_str().to_string_lossy().into_owned();
        if loopsy_sys::fs::CASE_BLIND_PATHS {
            s.to_lowercase()
        } else {
            s
        }
    };
    let parts: Vec<String> = p.components().map(fold).collect();
    let want: Vec<String> = ending.components().map(fold).collect();
    !want.is_empty() && parts.windows(want.len()).any(|w| w == want.as_slice())
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
            write_denied: cfg
                .write_denied_paths
                .iter()
                .map(|p| canonical_lenient(&expand(p, &home)))
                .collect(),
            write_denied_anywhere: cfg
                .write_denied_anywhere
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.is_relative())
                .collect(),
            path_dirs: if cfg.deny_writes_to_path_dirs {
                std::env::var_os("PATH")
                    .map(|v| {
                        std::env::split_paths(&v)
                            .filter(|d| d.is_absolute())
                            .map(|d| canonical_lenient(&d))
                            .filter(|d| d.starts_with(&home) && *d != home)
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
            home,
            direct_io: cfg.direct_io,
        }
    }

    /// Whether large received files are written with direct I/O (`files.direct_io`).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    fn check(&self, canon: PathBuf, shown: &str) -> Result<PathBuf, PathError> {
        if self.denied.iter().any(|d| under(&canon, d)) {
            return Err(PathError::Denied(shown.to_string()));
        }
        if !self.allowed.iter().any(|a| under(&canon, a)) {
            return Err(PathError::NotAllowed(shown.to_string()));
        }
        Ok(canon)
    }

    /// The rules for writing on top of those for reading, checked on the path as named
    /// (`literal`, its directory resolved) and as resolved through a symlink at its end: a
    /// `~/.bashrc` that became a link to `~/dotfiles/bashrc` is refused either way.
    fn check_write(
        &self,
        canon: PathBuf,
        literal: &Path,
        shown: &str,
    ) -> Result<PathBuf, PathError> {
        let canon = self.check(canon, shown)?;
        let refuse = |why, key| Err(PathError::WriteDenied(shown.to_string(), why, key));
        let both = [canon.as_path(), literal];
        // Each rule also as it resolves now (it may have become a link since start-up:
        // `~/.zshrc` → `~/dotfiles/zshrc` makes the latter a start-up file too).
        let now: Vec<PathBuf> = self.write_denied.iter().map(|d| canon_or(d)).collect();
        if both.iter().any(|p| {
            self.write_denied
                .iter()
                .chain(now.iter())
                .any(|d| under(p, d))
        }) {
            return refuse("it is run or read as settings", "write_denied_paths");
        }
        if both.iter().any(|p| {
            self.write_denied_anywhere
                .iter()
                .any(|e| contains_run(p, e))
                || in_bare_repo_hooks(p)
        }) {
            return refuse(
                "it is run or read as settings in its project",
                "write_denied_anywhere",
            );
        }
        if self
            .path_dirs
            .iter()
            .any(|d| canon.parent().is_some_and(|p| under(p, d)))
        {
            return refuse(
                "it is in a directory of PATH, where a program runs as a command",
                "deny_writes_to_path_dirs",
            );
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
            _ => target.clone(),
        };
        if canon.is_dir() {
            return Err(PathError::Invalid(format!(
                "{p} is a directory; give a file name"
            )));
        }
        self.check_write(canon, &target, p)
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
    fn defaults_refuse_writes_that_would_run_code() -> std::io::Result<()> {
        let t = tempfile::tempdir()?;
        let h = t.path();
        for d in [
            ".config/systemd/user",
            ".claude",
            "src/app/.git/hooks",
            "bin",
            "notes",
        ] {
            std::fs::create_dir_all(h.join(d))?;
        }
        std::fs::write(h.join(".bashrc"), b"# rc")?;
        let mut cfg = FilesConfig::default();
        // A PATH dir under home, as ~/.local/bin or ~/.cargo/bin would be.
        let p = PathPolicy::new(&cfg, h);
        let mut with_bin = p.clone();
        with_bin.path_dirs = vec![canonical_lenient(&h.join("bin"))];
        for (path, key) in [
            ("~/.bashrc", "write_denied_paths"),
            ("~/.profile", "write_denied_paths"),
            ("~/.config/systemd/user/x.service", "write_denied_paths"),
            ("~/.claude/settings.json", "write_denied_paths"),
            ("~/src/app/.git/hooks/pre-commit", "write_denied_anywhere"),
        ] {
            match p.writable(path) {
                Err(PathError::WriteDenied(_, _, k)) => assert_eq!(k, key, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(matches!(
            with_bin.writable("~/bin/ls"),
            Err(PathError::WriteDenied(_, _, "deny_writes_to_path_dirs"))
        ));
        // A start-up file that is a symlink (a dotfiles manager), either name; a bare
        // repository's hooks; a submodule's.
        std::fs::create_dir_all(h.join("dotfiles"))?;
        std::fs::create_dir_all(h.join("srv/app.git/hooks"))?;
        std::fs::create_dir_all(h.join("src/app/.git/modules/lib/hooks"))?;
        std::fs::write(h.join("dotfiles/zshrc"), b"# z")?;
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(h.join("dotfiles/zshrc"), h.join(".zshrc"))?;
            assert!(p.writable("~/.zshrc").is_err(), "through the link");
            assert!(p.writable("~/dotfiles/zshrc").is_err(), "what it links to");
        }
        for path in [
            "~/srv/app.git/hooks/post-receive",
            "~/srv/app.git/config",
            "~/src/app/.git/modules/lib/hooks/pre-commit",
        ] {
            assert!(
                matches!(p.writable(path), Err(PathError::WriteDenied(..))),
                "{path}"
            );
        }
        // Reading them is fine; ordinary files are writable.
        assert!(p.readable("~/.bashrc").is_ok());
        assert!(p.writable("~/notes/todo.txt").is_ok());
        assert!(p.writable("~/src/app/main.rs").is_ok());
        // Each rule can be taken out, and doctor's list names what was opened.
        cfg.write_denied_paths.retain(|x| x != "~/.bashrc");
        assert!(PathPolicy::new(&cfg, h).writable("~/.bashrc").is_ok());
        assert_eq!(
            cfg.opened_defaults(),
            vec!["files.write_denied_paths no longer lists ~/.bashrc".to_string()]
        );
        assert!(FilesConfig::default().opened_defaults().is_empty());
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
        for f in [
            ".git-credentials",
            ".netrc",
            ".config/gh/hosts.yml",
            ".aws/credentials",
        ] {
            let path = t.path().join(f);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&path, b"secret").unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(p.readable(&format!("~/{f}")), Err(PathError::Denied(_))),
                "{f}"
            );
        }
    }
}
