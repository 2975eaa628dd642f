//! `loopsy mcp install|uninstall`: register loopsy as an MCP server in each installed agent's
//! own config (Claude Code, Codex, Gemini CLI, Cursor, opencode), editing the file in place so
//! everything else in it — order, comments, formatting — stays as it was. Idempotent; a
//! backup is kept next to each file changed; `--dry-run` prints the diff instead. Optionally
//! adds (or removes) a short loopsy section in the agent's instructions file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstRootNode};
use loopsy_mesh::Home;

use crate::ui::{self, DIM, OK};

/// An agent loopsy knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    /// Claude Code (`~/.claude.json`, `~/.claude/CLAUDE.md`).
    Claude,
    /// OpenAI Codex CLI (`~/.codex/config.toml`, `~/.codex/AGENTS.md`).
    Codex,
    /// Gemini CLI (`~/.gemini/settings.json`, `~/.gemini/GEMINI.md`).
    Gemini,
    /// Cursor (`~/.cursor/mcp.json`).
    Cursor,
    /// opencode (`~/.config/opencode/opencode.json`, `~/.config/opencode/AGENTS.md`).
    Opencode,
    /// Every one of the above that is installed.
    All,
}

const AGENTS: [Agent; 5] = [
    Agent::Claude,
    Agent::Codex,
    Agent::Gemini,
    Agent::Cursor,
    Agent::Opencode,
];

const START: &str = "<!-- loopsy:start -->";
const END: &str = "<!-- loopsy:end -->";

fn section() -> String {
    format!(
        "{START}\n## loopsy\n\nThis machine is part of a loopsy mesh: the `loopsy_*` MCP tools reach the \
user's other machines. `loopsy_list_peers` shows them. Run commands there with \
`loopsy_execute`, share state with `loopsy_context_*`, talk to their agents with \
`loopsy_send_message` and wait with `loopsy_wait_for_message` (never poll), hand off work \
with `loopsy_task_create` / `loopsy_task_wait`. Errors say what to do next.\n{END}\n"
    )
}

impl Agent {
    fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
            Agent::Cursor => "cursor",
            Agent::Opencode => "opencode",
            Agent::All => "all",
        }
    }

    fn config(self, h: &Path) -> PathBuf {
        match self {
            Agent::Claude => h.join(".claude.json"),
            Agent::Codex => h.join(".codex/config.toml"),
            Agent::Gemini => h.join(".gemini/settings.json"),
            Agent::Cursor => h.join(".cursor/mcp.json"),
            Agent::Opencode | Agent::All => h.join(".config/opencode/opencode.json"),
        }
    }

    fn instructions(self, h: &Path) -> Option<PathBuf> {
        match self {
            Agent::Claude => Some(h.join(".claude/CLAUDE.md")),
            Agent::Codex => Some(h.join(".codex/AGENTS.md")),
            Agent::Gemini => Some(h.join(".gemini/GEMINI.md")),
            Agent::Opencode => Some(h.join(".config/opencode/AGENTS.md")),
            Agent::Cursor | Agent::All => None,
        }
    }

    /// Installed: its config or config directory exists, or its binary is on PATH.
    fn installed(self, h: &Path) -> bool {
        let dir = match self {
            Agent::Claude => h.join(".claude"),
            Agent::Codex => h.join(".codex"),
            Agent::Gemini => h.join(".gemini"),
            Agent::Cursor => h.join(".cursor"),
            Agent::Opencode | Agent::All => h.join(".config/opencode"),
        };
        let bin = match self {
            Agent::Claude => "claude",
            Agent::Cursor => "cursor",
            other => other.name(),
        };
        self.config(h).exists() || dir.is_dir() || on_path(bin)
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The command an agent runs: this binary, with `--home` when it is not the default.
fn command(home: &Home) -> anyhow::Result<(String, Vec<String>)> {
    let exe = std::env::current_exe().context("cannot locate the loopsy binary")?;
    let mut args = Vec::new();
    let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".loopsy"));
    if default.as_deref() != Some(home.root()) {
        args.push("--home".to_string());
        args.push(home.root().display().to_string());
    }
    args.push("mcp".to_string());
    Ok((exe.display().to_string(), args))
}

fn strs(v: &[String]) -> CstInputValue {
    CstInputValue::Array(v.iter().map(|s| CstInputValue::String(s.clone())).collect())
}

/// The JSON agents: set (or with `entry = None`, remove) `<table>.loopsy`.
fn edit_json(text: &str, table: &str, entry: Option<CstInputValue>) -> anyhow::Result<String> {
    let text = if text.trim().is_empty() { "{}\n" } else { text };
    let root = CstRootNode::parse(text, &ParseOptions::default())
        .map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    let obj = root
        .object_value()
        .ok_or_else(|| anyhow::anyhow!("the file is not a JSON object"))?;
    match entry {
        Some(v) => {
            let servers = obj.object_value_or_set(table);
            match servers.get("loopsy") {
                Some(p) => p.set_value(v),
                None => {
                    servers.append("loopsy", v);
                }
            }
        }
        None => {
            if let Some(servers) = obj.object_value(table)
                && let Some(p) = servers.get("loopsy")
            {
                p.remove();
                if servers.properties().is_empty()
                    && let Some(t) = obj.get(table)
                {
                    t.remove();
                }
            }
        }
    }
    Ok(root.to_string())
}

/// Codex: `[mcp_servers.loopsy]` in config.toml.
fn edit_toml(text: &str, cmd: &(String, Vec<String>), add: bool) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("not valid TOML")?;
    if add {
        let servers = doc
            .entry("mcp_servers")
            .or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                toml_edit::Item::Table(t)
            })
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("mcp_servers is not a table"))?;
        let mut t = toml_edit::Table::new();
        t["command"] = toml_edit::value(cmd.0.clone());
        let mut args = toml_edit::Array::new();
        for a in &cmd.1 {
            args.push(a.as_str());
        }
        t["args"] = toml_edit::value(args);
        let same = servers
            .get("loopsy")
            .and_then(|l| l.as_table())
            .is_some_and(|l| l.to_string() == t.to_string());
        if !same {
            servers.insert("loopsy", toml_edit::Item::Table(t));
        }
    } else if let Some(servers) = doc.get_mut("mcp_servers").and_then(|s| s.as_table_mut()) {
        servers.remove("loopsy");
        if servers.is_empty() {
            doc.remove("mcp_servers");
        }
    }
    Ok(doc.to_string())
}

fn new_config(agent: Agent, text: &str, home: &Home, add: bool) -> anyhow::Result<String> {
    let cmd = command(home)?;
    let (c, a) = (&cmd.0, &cmd.1);
    let entry = |v: CstInputValue| add.then_some(v);
    match agent {
        Agent::Codex => edit_toml(text, &cmd, add),
        Agent::Claude => edit_json(
            text,
            "mcpServers",
            entry(CstInputValue::Object(vec![
                ("type".into(), CstInputValue::String("stdio".into())),
                ("command".into(), CstInputValue::String(c.clone())),
                ("args".into(), strs(a)),
            ])),
        ),
        Agent::Gemini | Agent::Cursor => edit_json(
            text,
            "mcpServers",
            entry(CstInputValue::Object(vec![
                ("command".into(), CstInputValue::String(c.clone())),
                ("args".into(), strs(a)),
            ])),
        ),
        Agent::Opencode | Agent::All => {
            let mut full = vec![c.clone()];
            full.extend(a.iter().cloned());
            edit_json(
                text,
                "mcp",
                entry(CstInputValue::Object(vec![
                    ("type".into(), CstInputValue::String("local".into())),
                    ("command".into(), strs(&full)),
                    ("enabled".into(), CstInputValue::Bool(true)),
                ])),
            )
        }
    }
}

fn new_instructions(text: &str, add: bool) -> String {
    let stripped = match (text.find(START), text.find(END)) {
        (Some(s), Some(e)) if e > s => {
            let mut end = e + END.len();
            if text[end..].starts_with('\n') {
                end += 1;
            }
            let mut start = s;
            // The blank line we put before the section goes with it.
            if text[..start].ends_with("\n\n") {
                start -= 1;
            }
            format!("{}{}", &text[..start], &text[end..])
        }
        _ => text.to_string(),
    };
    if !add {
        return stripped;
    }
    let mut out = stripped;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&section());
    out
}

/// Write `new` to `path` (backing the old file up first), or print the diff on a dry run.
/// Returns whether anything changed.
fn apply(path: &Path, old: Option<&str>, new: &str, dry_run: bool) -> anyhow::Result<bool> {
    if old == Some(new) || (old.is_none() && new.is_empty()) {
        return Ok(false);
    }
    let before = old.unwrap_or("");
    if dry_run {
        let diff = similar::TextDiff::from_lines(before, new);
        let shown = path.display().to_string();
        print!(
            "{}",
            diff.unified_diff()
                .context_radius(2)
                .header(&format!("{shown} (now)"), &format!("{shown} (after)"))
        );
        return Ok(true);
    }
    if let Some(old) = old {
        let mut backup = path.as_os_str().to_owned();
        backup.push(".loopsy-backup");
        std::fs::write(&backup, old)
            .with_context(|| format!("cannot back up {}", path.display()))?;
        if let Ok(m) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&backup, m.permissions());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".loopsy-tmp");
    std::fs::write(&tmp, new).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(m) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, m.permissions())?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(true)
}

fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What to do with the instructions file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instructions {
    /// Add the section without asking.
    Yes,
    /// Leave the file alone.
    No,
    /// Ask (only on a terminal; otherwise leave it).
    Ask,
}

/// `loopsy mcp install` (add = true) or `uninstall`.
pub fn run(
    home: &Home,
    agent: Agent,
    add: bool,
    dry_run: bool,
    instructions: Instructions,
) -> anyhow::Result<ExitCode> {
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")?;
    let chosen: Vec<Agent> = if agent == Agent::All {
        AGENTS
            .into_iter()
            .filter(|a| a.installed(&user_home))
            .collect()
    } else if agent.installed(&user_home) || !add {
        vec![agent]
    } else {
        bail!(
            "{} does not look installed here (no {} and no `{}` on PATH); install it first, or pick another with --agent",
            agent.name(),
            agent.config(&user_home).display(),
            agent.name()
        );
    };
    if chosen.is_empty() {
        anstream::eprintln!(
            "no supported agent found (Claude Code, Codex, Gemini CLI, Cursor, opencode); nothing to do"
        );
        return Ok(ExitCode::SUCCESS);
    }
    for a in chosen {
        let path = a.config(&user_home);
        let old = read(&path)?;
        if !add && old.is_none() {
            continue;
        }
        let new = new_config(a, old.as_deref().unwrap_or(""), home, add)
            .with_context(|| format!("cannot edit {}", path.display()))?;
        let changed = apply(&path, old.as_deref(), &new, dry_run)?;
        if !dry_run {
            let what = match (changed, add) {
                (false, true) => ui::paint(DIM, "already registered"),
                (false, false) => ui::paint(DIM, "not registered"),
                (true, true) => ui::paint(OK, "registered"),
                (true, false) => ui::paint(OK, "removed"),
            };
            anstream::println!("{:<9} {what}  {}", a.name(), path.display());
        }
        let Some(ipath) = a.instructions(&user_home) else {
            continue;
        };
        let want = match (add, instructions) {
            (false, _) => true,
            (true, Instructions::Yes) => true,
            (true, Instructions::No) => false,
            (true, Instructions::Ask) => !dry_run && std::io::stdin().is_terminal() && ask(&ipath)?,
        };
        if !want {
            continue;
        }
        let iold = read(&ipath)?;
        let inew = new_instructions(iold.as_deref().unwrap_or(""), add);
        if apply(&ipath, iold.as_deref(), &inew, dry_run)? && !dry_run {
            anstream::println!(
                "{:<9} {}  {}",
                "",
                ui::paint(
                    OK,
                    if add {
                        "section added"
                    } else {
                        "section removed"
                    }
                ),
                ipath.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ask(path: &Path) -> anyhow::Result<bool> {
    use std::io::Write;
    print!("Add a short loopsy section to {}? [y/N] ", path.display());
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_edits_keep_everything_else() {
        let text = "{\n  // a comment\n  \"theme\": \"dark\",\n  \"mcpServers\": {\n    \"other\": {\"command\": \"x\"}\n  }\n}\n";
        let v = CstInputValue::Object(vec![("command".into(), CstInputValue::String("l".into()))]);
        let added = edit_json(text, "mcpServers", Some(v)).unwrap();
        assert!(
            added.contains("// a comment") && added.contains("\"other\""),
            "{added}"
        );
        assert!(added.contains("\"loopsy\""), "{added}");
        let removed = edit_json(&added, "mcpServers", None).unwrap();
        assert_eq!(removed, text);
    }

    #[test]
    fn instructions_section_round_trips() {
        let text = "# My rules\n\nBe nice.\n";
        let added = new_instructions(text, true);
        assert!(added.starts_with(text) && added.contains(START));
        assert_eq!(new_instructions(&added, true), added);
        assert_eq!(new_instructions(&added, false), text);
    }
}
