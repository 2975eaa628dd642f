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
    loopsy_sys::shell::find_on_path(bin, std::env::var_os("PATH").as_deref()).is_some()
}

/// The command an agent runs: this binary, with `--home` when it is not the default.
fn command(home: &Home) -> anyhow::Result<(String, Vec<String>)> {
    let exe = std::env::current_exe().context("cannot locate the loopsy binary")?;
    // Prefer the `loopsy` on PATH when it is this binary (a package manager's stable link,
    // not the versioned file behind it, which an upgrade removes).
    let exe = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(format!("loopsy{}", std::env::consts::EXE_SUFFIX)))
        .find(|c| c.is_file() && std::fs::canonicalize(c).ok() == std::fs::canonicalize(&exe).ok())
        .unwrap_or(exe);
    let mut args = Vec::new();
    let default = loopsy_sys::home_dir().map(|h| h.join(".loopsy"));
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
/// The JSON agents: set the `fields` of `<table>.loopsy` (keeping any other keys the user
/// added there), or with `fields = None` remove the entry.
fn edit_json(
    text: &str,
    table: &str,
    fields: Option<Vec<(String, CstInputValue)>>,
) -> anyhow::Result<String> {
    let text = if text.trim().is_empty() { "{}\n" } else { text };
    let root = CstRootNode::parse(text, &ParseOptions::default())
        .map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    let obj = root
        .object_value()
        .ok_or_else(|| anyhow::anyhow!("the file is not a JSON object"))?;
    match fields {
        Some(fields) => {
            let servers = obj
                .object_value_or_create(table)
                .ok_or_else(|| anyhow::anyhow!("\"{table}\" is not an object; fix it by hand"))?;
            match servers.get("loopsy") {
                Some(p) => {
                    let entry = p.object_value().ok_or_else(|| {
                        anyhow::anyhow!("\"{table}.loopsy\" is not an object; fix it by hand")
                    })?;
                    for (k, v) in fields {
                        let same = entry
                            .get(&k)
                            .and_then(|x| x.value())
                            .and_then(|x| x.to_serde_value())
                            == Some(input_to_json(&v));
                        if same {
                            continue;
                        }
                        match entry.get(&k) {
                            Some(x) => x.set_value(v),
                            None => {
                                entry.append(&k, v);
                            }
                        }
                    }
                }
                None => {
                    servers.append("loopsy", CstInputValue::Object(fields));
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

fn input_to_json(v: &CstInputValue) -> serde_json::Value {
    match v {
        CstInputValue::Null => serde_json::Value::Null,
        CstInputValue::Bool(b) => serde_json::Value::Bool(*b),
        CstInputValue::Number(n) => serde_json::from_str(n).unwrap_or(serde_json::Value::Null),
        CstInputValue::String(s) => serde_json::Value::String(s.clone()),
        CstInputValue::Array(a) => a.iter().map(input_to_json).collect(),
        CstInputValue::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), input_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
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
        let t = servers
            .entry("loopsy")
            .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("mcp_servers.loopsy is not a table; fix it by hand"))?;
        if t.get("command").and_then(|v| v.as_str()) != Some(cmd.0.as_str()) {
            t["command"] = toml_edit::value(cmd.0.clone());
        }
        let same_args = t.get("args").and_then(|v| v.as_array()).is_some_and(|a| {
            a.iter().map(|v| v.as_str()).collect::<Vec<_>>()
                == cmd.1.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>()
        });
        if !same_args {
            let mut args = toml_edit::Array::new();
            for a in &cmd.1 {
                args.push(a.as_str());
            }
            t["args"] = toml_edit::value(args);
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
    let entry = |v: Vec<(String, CstInputValue)>| add.then_some(v);
    match agent {
        Agent::Codex => edit_toml(text, &cmd, add),
        Agent::Claude => edit_json(
            text,
            "mcpServers",
            entry(vec![
                ("type".into(), CstInputValue::String("stdio".into())),
                ("command".into(), CstInputValue::String(c.clone())),
                ("args".into(), strs(a)),
            ]),
        ),
        Agent::Gemini | Agent::Cursor => edit_json(
            text,
            "mcpServers",
            entry(vec![
                ("command".into(), CstInputValue::String(c.clone())),
                ("args".into(), strs(a)),
            ]),
        ),
        Agent::Opencode | Agent::All => {
            let mut full = vec![c.clone()];
            full.extend(a.iter().cloned());
            edit_json(
                text,
                "mcp",
                // `enabled` only when the entry is new: a user who switched it off keeps it off.
                entry(vec![
                    ("type".into(), CstInputValue::String("local".into())),
                    ("command".into(), strs(&full)),
                ])
                .map(|mut f| {
                    if !text.contains("\"loopsy\"") {
                        f.push(("enabled".into(), CstInputValue::Bool(true)));
                    }
                    f
                }),
            )
        }
    }
}

fn new_instructions(text: &str, add: bool) -> anyhow::Result<String> {
    let starts = text.matches(START).count();
    let ends = text.matches(END).count();
    let stripped = match (text.find(START), text.find(END)) {
        (None, None) => text.to_string(),
        (Some(s), Some(e)) if starts == 1 && ends == 1 && e > s => {
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
        _ => bail!(
            "the loopsy section markers ({START} … {END}) are broken; fix or remove them by hand"
        ),
    };
    if !add {
        return Ok(stripped);
    }
    let mut out = stripped;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&section());
    Ok(out)
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
    // A symlinked config (dotfile managers) is edited where it really lives.
    let real = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("cannot follow the link {}", path.display()))?,
        _ => path.to_path_buf(),
    };
    let mode = loopsy_sys::fs::mode_of(&real).unwrap_or(loopsy_sys::fs::PUBLIC_FILE);
    if let Some(old) = old {
        // The first backup is the file as it was before loopsy ever touched it; keep it.
        let mut backup = real.as_os_str().to_owned();
        backup.push(".loopsy-backup");
        let backup = PathBuf::from(backup);
        if !backup.exists() {
            write_new(&backup, old.as_bytes(), mode)
                .with_context(|| format!("cannot back up {}", path.display()))?;
        }
    }
    if let Some(dir) = real.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut tmp = real.as_os_str().to_owned();
    tmp.push(".loopsy-tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = write_new(&tmp, new.as_bytes(), mode) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    std::fs::rename(&tmp, &real).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(dir) = real.parent() {
        let _ = loopsy_sys::fs::sync_dir(dir);
    }
    Ok(true)
}

/// Create `path` (it must not exist) with `mode` from the start, write and fsync.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = loopsy_sys::fs::with_mode(
        std::fs::OpenOptions::new().write(true).create_new(true),
        mode,
    )
    .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
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
    let user_home = loopsy_sys::home_dir().context("no home directory (HOME is not set)")?;
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
        let inew = new_instructions(iold.as_deref().unwrap_or(""), add)
            .with_context(|| format!("cannot edit {}", ipath.display()))?;
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
        let v = vec![("command".into(), CstInputValue::String("l".into()))];
        let added = edit_json(text, "mcpServers", Some(v.clone())).unwrap();
        assert_eq!(edit_json(&added, "mcpServers", Some(v)).unwrap(), added);
        assert!(edit_json("{\"mcpServers\": []}", "mcpServers", None).is_ok());
        assert!(
            edit_json(
                "{\"mcpServers\": []}",
                "mcpServers",
                Some(vec![("a".into(), CstInputValue::Null)])
            )
            .is_err()
        );
        assert!(
            added.contains("// a comment") && added.contains("\"other\""),
            "{added}"
        );
        assert!(added.contains("\"loopsy\""), "{added}");
        let removed = edit_json(&added, "mcpServers", None).unwrap();
        assert_eq!(removed, text);
    }

    #[test]
    fn a_users_own_keys_in_the_entry_are_kept() {
        let text =
            "{\"mcpServers\": {\"loopsy\": {\"command\": \"old\", \"env\": {\"A\": \"1\"}}}}";
        let v = vec![("command".into(), CstInputValue::String("new".into()))];
        let out = edit_json(text, "mcpServers", Some(v)).unwrap();
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["mcpServers"]["loopsy"]["command"], "new");
        assert_eq!(j["mcpServers"]["loopsy"]["env"]["A"], "1");
        let toml = "[mcp_servers.loopsy]\ncommand = \"old\"\nstartup_timeout_sec = 20\n";
        let out = edit_toml(toml, &("new".into(), vec!["mcp".into()]), true).unwrap();
        assert!(
            out.contains("startup_timeout_sec = 20") && out.contains("\"new\""),
            "{out}"
        );
    }

    #[test]
    fn instructions_section_round_trips() {
        let text = "# My rules\n\nBe nice.\n";
        let added = new_instructions(text, true).unwrap();
        assert!(added.starts_with(text) && added.contains(START));
        assert_eq!(new_instructions(&added, true).unwrap(), added);
        assert_eq!(new_instructions(&added, false).unwrap(), text);
        assert!(new_instructions(&format!("{text}{START}\nhalf"), true).is_err());
    }
}
