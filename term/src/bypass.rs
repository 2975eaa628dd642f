//! Every known spelling of the agent CLIs' "skip your permission prompts" switches, in one
//! table. A session start whose command line carries one — whatever the session kind, however
//! the agent is reached (its path, a shell line, `env`, `npx`) — needs the local user's
//! confirmation (`auto_approve` + `loopsy approve`), never just a caller's say-so.

use std::path::Path;

/// (agent, the words of one spelling). Multi-word spellings must appear in that order.
pub const TABLE: &[(&str, &[&str])] = &[
    ("claude", &["--dangerously-skip-permissions"]),
    ("claude", &["--allow-dangerously-skip-permissions"]),
    ("claude", &["--permission-mode", "bypassPermissions"]),
    ("claude", &["--permission-mode=bypassPermissions"]),
    ("codex", &["--dangerously-bypass-approvals-and-sandbox"]),
    ("codex", &["--yolo"]),
    ("codex", &["--ask-for-approval", "never"]),
    ("codex", &["--ask-for-approval=never"]),
    ("codex", &["-a", "never"]),
    ("codex", &["--sandbox", "danger-full-access"]),
    ("codex", &["--sandbox=danger-full-access"]),
    ("codex", &["-s", "danger-full-access"]),
    ("codex", &["-c", "approval_policy=never"]),
    ("codex", &["-c", "sandbox_mode=danger-full-access"]),
    ("gemini", &["--yolo"]),
    ("gemini", &["-y"]),
    ("gemini", &["--approval-mode", "yolo"]),
    ("gemini", &["--approval-mode=yolo"]),
];

/// Program names (file stems) and npm packages that are each agent.
const NAMES: &[(&str, &str)] = &[
    ("claude", "claude"),
    ("claude-code", "claude"),
    ("@anthropic-ai/claude-code", "claude"),
    ("codex", "codex"),
    ("@openai/codex", "codex"),
    ("gemini", "gemini"),
    ("@google/gemini-cli", "gemini"),
];

/// A bypass switch found in a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The agent it belongs to.
    pub agent: &'static str,
    /// The switch as written in the table (words joined by a space).
    pub spelling: String,
}

/// Which agent a word names, if any: `/usr/local/bin/claude`, `claude.cmd`, `@openai/codex`,
/// `@google/gemini-cli@latest`.
fn agent_of(word: &str) -> Option<&'static str> {
    let w = word.trim_matches(['"', '\'']);
    let w = w
        .strip_prefix('@')
        .map(|rest| format!("@{}", rest.split('@').next().unwrap_or(rest)))
        .unwrap_or_else(|| w.to_string());
    let stem = if w.starts_with('@') {
        w.to_lowercase()
    } else {
        Path::new(&w)
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    };
    NAMES.iter().find(|(n, _)| *n == stem).map(|(_, a)| *a)
}

/// Spellings that mean only one thing, wherever they appear.
fn unmistakable(spelling: &[&str]) -> bool {
    spelling
        .iter()
        .any(|w| w.starts_with("--dangerously") || w.contains("bypassPermissions"))
}

/// The first bypass switch in `program args…`. Words of a shell command line (`sh -c
/// "claude --yolo"`) are looked at too; a word that names an agent makes the spellings of
/// that agent count from there on.
pub fn find(program: &Path, args: &[String]) -> Option<Found> {
    let mut words: Vec<String> = vec![program.to_string_lossy().into_owned()];
    for a in args {
        if a.contains(char::is_whitespace) {
            words.extend(
                a.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
                    .map(|w| w.trim_matches(['"', '\'', '(', ')']).to_string())
                    .filter(|w| !w.is_empty()),
            );
        } else {
            words.push(a.trim_matches(['"', '\'']).to_string());
        }
    }
    let mut agent: Option<&'static str> = None;
    for i in 0..words.len() {
        if let Some(a) = agent_of(&words[i]) {
            agent = Some(a);
            continue;
        }
        for (who, spelling) in TABLE {
            let fits = words.len() - i >= spelling.len()
                && spelling.iter().zip(&words[i..]).all(|(s, w)| s == w);
            if fits && (agent == Some(*who) || unmistakable(spelling)) {
                return Some(Found {
                    agent: who,
                    spelling: spelling.join(" "),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_spelling_is_caught_however_the_agent_is_reached() {
        for (agent, spelling) in TABLE {
            let want = Some(Found {
                agent,
                spelling: spelling.join(" "),
            });
            let line = format!("{agent} {}", spelling.join(" "));
            let direct = find(
                Path::new(&format!("/usr/local/bin/{agent}")),
                &strs(spelling),
            );
            assert!(direct.is_some(), "{line}: direct");
            assert_eq!(direct.map(|f| f.spelling), want.clone().map(|f| f.spelling));
            let cmd = find(Path::new(&format!("{agent}.cmd")), &strs(spelling));
            assert!(cmd.is_some(), "{line}: .cmd");
            let shell = find(
                Path::new("/bin/sh"),
                &strs(&["-c", &format!("cd x && {line}")]),
            );
            assert!(shell.is_some(), "{line}: in a shell line");
            let env = find(Path::new("/usr/bin/env"), &{
                let mut v = strs(&["FOO=1", agent]);
                v.extend(strs(spelling));
                v
            });
            assert!(env.is_some(), "{line}: through env");
        }
        let npx = find(
            Path::new("npx"),
            &strs(&["@google/gemini-cli@latest", "--approval-mode=yolo"]),
        );
        assert_eq!(npx.map(|f| f.agent), Some("gemini"));
        let npx = find(
            Path::new("npx"),
            &strs(&[
                "-y",
                "@anthropic-ai/claude-code",
                "--permission-mode",
                "bypassPermissions",
            ]),
        );
        assert_eq!(npx.map(|f| f.agent), Some("claude"));
    }

    #[test]
    fn ordinary_commands_pass() {
        for (p, a) in [
            ("/bin/ls", vec!["-y"]),
            ("/usr/bin/apt", vec!["install", "-y", "vim"]),
            ("echo", vec!["--yolo"]),
            ("/bin/sh", vec!["-c", "yes | head -a never"]),
            ("claude", vec!["--permission-mode", "plan"]),
            ("codex", vec!["-a", "on-request", "-s", "workspace-write"]),
            ("gemini", vec!["--approval-mode", "default"]),
        ] {
            assert_eq!(find(Path::new(p), &strs(&a)), None, "{p} {a:?}");
        }
        // The unmistakable ones count anywhere.
        assert!(
            find(
                Path::new("/bin/sh"),
                &strs(&["-c", "my-wrapper --dangerously-skip-permissions"])
            )
            .is_some()
        );
    }
}
