//! `loopsy mcp install|uninstall` against sample configs of each agent (tests/fixtures/agents):
//! `--dry-run` shows a diff and writes nothing; install makes minimal edits (everything else in
//! each file stays, comments included) and keeps a backup; a second run changes nothing;
//! uninstall gives back the original files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};

use common::TestHome;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents");

/// (fixture, where it goes under $HOME)
const FILES: [(&str, &str); 6] = [
    ("claude.json", ".claude.json"),
    ("CLAUDE.md", ".claude/CLAUDE.md"),
    ("codex.toml", ".codex/config.toml"),
    ("gemini.json", ".gemini/settings.json"),
    ("cursor.json", ".cursor/mcp.json"),
    ("opencode.json", ".config/opencode/opencode.json"),
];

fn setup() -> (TestHome, tempfile::TempDir) {
    let user = tempfile::tempdir().unwrap();
    for (f, dest) in FILES {
        let to = user.path().join(dest);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(FIXTURES).join(f), &to).unwrap();
    }
    (TestHome::new(), user)
}

fn run(h: &TestHome, user: &Path, args: &[&str]) -> std::process::Output {
    let mut c = h.cmd(args);
    c.env("HOME", user).env("PATH", "/usr/bin:/bin");
    c.output().unwrap()
}

fn read(user: &Path, dest: &str) -> String {
    std::fs::read_to_string(user.join(dest)).unwrap()
}

/// JSON (with comments) as a value.
fn jsonc(text: &str) -> Value {
    let stripped: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&stripped).unwrap()
}

fn originals() -> Vec<(String, String)> {
    FILES
        .iter()
        .map(|(f, dest)| {
            (
                dest.to_string(),
                std::fs::read_to_string(PathBuf::from(FIXTURES).join(f)).unwrap(),
            )
        })
        .collect()
}

#[test]
fn install_edits_minimally_twice_is_a_no_op_and_uninstall_restores() {
    let (h, user) = setup();
    let u = user.path();
    let orig = originals();

    // Dry run: a diff per file, nothing written.
    let o = run(&h, u, &["mcp", "install", "--dry-run", "--instructions"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let diff = String::from_utf8_lossy(&o.stdout);
    for (_, dest) in FILES {
        assert!(diff.contains(dest), "no diff for {dest}:\n{diff}");
    }
    assert!(
        diff.contains("+    \"loopsy\"") || diff.contains("+  \"loopsy\""),
        "{diff}"
    );
    assert!(diff.contains("+[mcp_servers.loopsy]"), "{diff}");
    for (dest, text) in &orig {
        assert_eq!(&read(u, dest), text, "dry run wrote {dest}");
    }

    // Install.
    let o = run(&h, u, &["mcp", "install", "--instructions"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("registered").count(), 5, "{out}");
    let bin = env!("CARGO_BIN_EXE_loopsy");
    let home = h.path().display().to_string();
    for (dest, text) in &orig {
        let now = read(u, dest);
        // A backup of what was there.
        assert_eq!(
            std::fs::read_to_string(u.join(format!("{dest}.loopsy-backup"))).unwrap(),
            *text
        );
        // Minimal: at most one original line changed (a comma), everything else kept.
        let kept = now.lines().collect::<Vec<_>>();
        let lost: Vec<&str> = text.lines().filter(|l| !kept.contains(l)).collect();
        assert!(lost.len() <= 1, "{dest} lost {lost:?}:\n{now}");
    }
    // The right entry, in each agent's own format.
    let claude = jsonc(&read(u, ".claude.json"));
    assert_eq!(claude["mcpServers"]["loopsy"]["command"], bin);
    assert_eq!(claude["mcpServers"]["loopsy"]["type"], "stdio");
    assert_eq!(
        claude["mcpServers"]["loopsy"]["args"],
        serde_json::json!(["--home", home, "mcp"])
    );
    assert_eq!(claude["mcpServers"]["github"]["command"], "npx");
    assert_eq!(
        claude["projects"]["/home/me/src/app"]["history"][0]["display"],
        "fix the tests"
    );
    for dest in [".gemini/settings.json", ".cursor/mcp.json"] {
        assert_eq!(
            jsonc(&read(u, dest))["mcpServers"]["loopsy"]["command"],
            bin
        );
    }
    let oc = jsonc(&read(u, ".config/opencode/opencode.json"));
    assert_eq!(oc["mcp"]["loopsy"]["type"], "local");
    assert_eq!(oc["mcp"]["loopsy"]["command"][0], bin);
    assert!(read(u, ".config/opencode/opencode.json").contains("// comments are allowed"));
    let codex: toml::Table = read(u, ".codex/config.toml").parse().unwrap();
    assert_eq!(
        codex["mcp_servers"]["loopsy"]["command"].as_str(),
        Some(bin)
    );
    assert_eq!(
        codex["mcp_servers"]["docs"]["command"].as_str(),
        Some("docs-mcp")
    );
    assert!(read(u, ".codex/config.toml").starts_with("# Codex configuration\n"));
    let md = read(u, ".claude/CLAUDE.md");
    assert!(
        md.starts_with(&orig[1].1) && md.contains("loopsy_wait_for_message"),
        "{md}"
    );

    // Twice: nothing changes.
    let after: Vec<String> = FILES.iter().map(|(_, d)| read(u, d)).collect();
    let o = run(&h, u, &["mcp", "install", "--instructions"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("already registered")
            .count(),
        5
    );
    let again: Vec<String> = FILES.iter().map(|(_, d)| read(u, d)).collect();
    assert_eq!(after, again);

    // Uninstall gives back the originals.
    let o = run(&h, u, &["mcp", "uninstall"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (dest, text) in &orig {
        assert_eq!(&read(u, dest), text, "uninstall left {dest} changed");
    }
}

#[test]
fn only_installed_agents_are_touched_and_a_missing_one_is_a_clear_error() {
    let h = TestHome::new();
    let user = tempfile::tempdir().unwrap();
    let u = user.path();
    std::fs::create_dir_all(u.join(".codex")).unwrap();
    // Only Codex is there (its config not yet): it gets one; nobody else does.
    let o = run(&h, u, &["mcp", "install", "--no-instructions"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(read(u, ".codex/config.toml").contains("[mcp_servers.loopsy]"));
    assert!(!u.join(".claude.json").exists() && !u.join(".gemini").exists());
    assert!(!u.join(".codex/AGENTS.md").exists());
    let o = run(&h, u, &["mcp", "install", "--agent", "gemini"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("gemini does not look installed"), "{err}");
    // A broken config is reported, not overwritten.
    std::fs::write(u.join(".codex/config.toml"), "this is = = not toml").unwrap();
    let o = run(&h, u, &["mcp", "install", "--agent", "codex"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid TOML"));
    assert_eq!(read(u, ".codex/config.toml"), "this is = = not toml");
}
