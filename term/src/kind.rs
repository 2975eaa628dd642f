//! Session kinds (shell and the agent CLIs) and how each is launched.

use std::ffi::OsStr;
use std::path::PathBuf;

/// What runs in a session.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// The user's login shell (`$SHELL`, else `/bin/sh`).
    Shell,
    /// Claude Code.
    Claude,
    /// OpenAI Codex CLI.
    Codex,
    /// Gemini CLI.
    Gemini,
    /// opencode.
    Opencode,
    /// A command the user names.
    Custom,
}

/// Why a session's program cannot be launched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The agent CLI is not on PATH.
    #[error("{binary} is not installed (not found on PATH); {hint}")]
    NotInstalled {
        /// The program looked for.
        binary: String,
        /// How to install it.
        hint: &'static str,
    },
    /// `custom` without a command.
    #[error("a custom session needs a command")]
    NoCommand,
}

impl SessionKind {
    /// Every kind, in display order.
    pub const ALL: [SessionKind; 6] = [
        Self::Shell,
        Self::Claude,
        Self::Codex,
        Self::Gemini,
        Self::Opencode,
        Self::Custom,
    ];

    /// The lowercase name used on the wire and in the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::Gemini => "gemini",
            Self::Opencode => "opencode",
            Self::Custom => "custom",
        }
    }

    /// The agent CLI's program name, for agent kinds.
    pub fn agent_binary(self) -> Option<&'static str> {
        match self {
            Self::Claude => Some("claude"),
            Self::Codex => Some("codex"),
            Self::Gemini => Some("gemini"),
            Self::Opencode => Some("opencode"),
            Self::Shell | Self::Custom => None,
        }
    }

    /// The flag that makes the agent skip its permission prompts. Off unless the user confirms
    /// it on this machine.
    pub fn auto_approve_flag(self) -> Option<&'static str> {
        match self {
            Self::Claude => Some("--dangerously-skip-permissions"),
            Self::Codex => Some("--dangerously-bypass-approvals-and-sandbox"),
            Self::Gemini => Some("--yolo"),
            Self::Shell | Self::Opencode | Self::Custom => None,
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Self::Claude => "install Claude Code: npm install -g @anthropic-ai/claude-code",
            Self::Codex => "install Codex: npm install -g @openai/codex",
            Self::Gemini => "install Gemini CLI: npm install -g @google/gemini-cli",
            Self::Opencode => "install opencode: npm install -g opencode-ai",
            Self::Shell | Self::Custom => "check PATH",
        }
    }

    /// The program to run: the shell from `shell_env` (`$SHELL`), an agent found on `path_env`
    /// (`$PATH`), or the first word of a custom `command`.
    pub fn resolve(
        self,
        command: Option<&str>,
        shell_env: Option<&OsStr>,
        path_env: Option<&OsStr>,
    ) -> Result<PathBuf, LaunchError> {
        let find = |bin: &str, hint| {
            find_on_path(bin, path_env).ok_or_else(|| LaunchError::NotInstalled {
                binary: bin.to_string(),
                hint,
            })
        };
        match self {
            Self::Shell => Ok(loopsy_sys::shell::interactive(shell_env, path_env)),
            Self::Custom => {
                let cmd = command
                    .and_then(|c| c.split_whitespace().next())
                    .ok_or(LaunchError::NoCommand)?;
                if cmd.contains(std::path::is_separator) {
                    Ok(PathBuf::from(cmd))
                } else {
                    find(cmd, "check the command name and PATH")
                }
            }
            agent => {
                let bin = agent.agent_binary().unwrap_or("sh");
                find(bin, agent.install_hint())
            }
        }
    }

    /// The agent kinds installed on this machine (for "new session" pickers).
    pub fn installed_agents(path_env: Option<&OsStr>) -> Vec<SessionKind> {
        Self::ALL
            .into_iter()
            .filter(|k| {
                k.agent_binary()
                    .is_some_and(|b| find_on_path(b, path_env).is_some())
            })
            .collect()
    }
}

/// The first executable file called `bin` in the directories of `path_env` (on Windows also
/// `bin` with an extension from `PATHEXT`: `claude.cmd`).
pub fn find_on_path(bin: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    loopsy_sys::shell::find_on_path(bin, path_env)
}

// POSIX paths and modes.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn agents_resolve_only_when_installed() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().as_os_str();
        let err = SessionKind::Claude.resolve(None, None, Some(path));
        assert!(
            matches!(&err, Err(LaunchError::NotInstalled { binary, .. }) if binary == "claude")
        );
        assert!(
            err.err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("npm install")
        );

        let bin = dir.path().join("claude");
        std::fs::write(&bin, "#!/bin/sh\n")?;
        loopsy_sys::fs::set_mode(&bin, 0o755)?;
        assert_eq!(SessionKind::Claude.resolve(None, None, Some(path)), Ok(bin));
        assert_eq!(
            SessionKind::installed_agents(Some(path)),
            vec![SessionKind::Claude]
        );
        Ok(())
    }

    #[test]
    fn shell_and_custom() {
        assert_eq!(
            SessionKind::Shell.resolve(None, Some(OsStr::new("/bin/zsh")), None),
            Ok(PathBuf::from("/bin/zsh"))
        );
        assert_eq!(
            SessionKind::Shell.resolve(None, None, None),
            Ok(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            SessionKind::Custom.resolve(None, None, None),
            Err(LaunchError::NoCommand)
        );
        assert_eq!(
            SessionKind::Custom.resolve(Some("/usr/bin/top -d 1"), None, None),
            Ok(PathBuf::from("/usr/bin/top"))
        );
    }
}
