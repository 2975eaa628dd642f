//! Saved commands ("your commands" in the phone app): a label and a command line to start as a
//! session with one tap. Kept in `commands.json` in the data dir (atomic writes), validated on
//! the way in, and only ever shown as text.

use std::path::{Path, PathBuf};

use loopsy_mesh::fsutil::{PRIVATE_FILE, atomic_write};
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DaemonCtx;
use crate::tool_error::{ErrorCode, ToolError, success};

/// Most commands kept.
pub const MAX_COMMANDS: usize = 50;
const MAX_LABEL: usize = 80;
const MAX_COMMAND: usize = 1000;
const MAX_ARGS: usize = 32;
const MAX_FILE: u64 = 1 << 20;

/// A saved command.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SavedCommand {
    /// Its id (`cmd-` and 8 hex digits).
    pub id: String,
    /// What the picker shows.
    pub label: String,
    /// The program, or a shell command line when `args` is empty.
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory (default: home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `loopsy_command_save` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveArgs {
    /// Update this command; omit to add one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What the picker shows (1-80 characters).
    pub label: String,
    /// The program, or a shell command line when `args` is empty.
    pub command: String,
    /// Arguments (at most 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `loopsy_command_remove` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// The command's id.
    pub id: String,
}

/// The saved commands.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CommandsOut {
    /// In the order they were added.
    pub commands: Vec<SavedCommand>,
}

fn path(ctx: &DaemonCtx) -> PathBuf {
    ctx.home().root().join("commands.json")
}

fn load(p: &Path) -> Result<Vec<SavedCommand>, String> {
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", p.display())),
        Ok(m) if m.len() > MAX_FILE => return Err(format!("{}: too large", p.display())),
        Ok(_) => {}
    }
    let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
}

fn store(p: &Path, c: &[SavedCommand]) -> Result<(), String> {
    let b = serde_json::to_vec_pretty(c).map_err(|e| e.to_string())?;
    atomic_write(p, &b, PRIVATE_FILE).map_err(|e| format!("{}: {e}", p.display()))
}

fn text(c: &[SavedCommand]) -> String {
    if c.is_empty() {
        return "no saved commands".into();
    }
    c.iter()
        .map(|c| format!("{} {}: {}", c.id, c.label, c.command))
        .collect::<Vec<_>>()
        .join("\n")
}

fn invalid(m: impl Into<String>) -> CallToolResult {
    ToolError::new(ErrorCode::InvalidArguments, m.into()).into_result()
}

/// Check a command's fields; the cleaned label.
fn validate(a: &SaveArgs) -> Result<String, String> {
    let label: String = a.label.trim().to_string();
    if label.is_empty() || label.chars().count() > MAX_LABEL || label.chars().any(char::is_control)
    {
        return Err(format!(
            "label must be 1-{MAX_LABEL} characters with no control characters"
        ));
    }
    if a.command.trim().is_empty() || a.command.len() > MAX_COMMAND || a.command.contains('\0') {
        return Err(format!("command must be 1-{MAX_COMMAND} bytes"));
    }
    let args = a.args.as_deref().unwrap_or_default();
    if args.len() > MAX_ARGS
        || args
            .iter()
            .any(|x| x.len() > MAX_COMMAND || x.contains('\0'))
    {
        return Err(format!(
            "at most {MAX_ARGS} arguments of {MAX_COMMAND} bytes each"
        ));
    }
    if a.cwd
        .as_ref()
        .is_some_and(|c| c.len() > 4096 || c.contains('\0'))
    {
        return Err("cwd is too long".into());
    }
    Ok(label)
}

/// `loopsy_command_list`
pub async fn list(ctx: &DaemonCtx) -> CallToolResult {
    match load(&path(ctx)) {
        Ok(c) => success(text(&c), &CommandsOut { commands: c }),
        Err(e) => ToolError::new(ErrorCode::Internal, e).into_result(),
    }
}

/// `loopsy_command_save`
pub async fn save(ctx: &DaemonCtx, a: SaveArgs) -> CallToolResult {
    let label = match validate(&a) {
        Ok(l) => l,
        Err(e) => return invalid(e),
    };
    let p = path(ctx);
    let mut all = match load(&p) {
        Ok(c) => c,
        Err(e) => return ToolError::new(ErrorCode::Internal, e).into_result(),
    };
    let entry = |id: String| SavedCommand {
        id,
        label: label.clone(),
        command: a.command.clone(),
        args: a.args.clone().unwrap_or_default(),
        cwd: a.cwd.clone().filter(|c| !c.is_empty()),
    };
    match &a.id {
        Some(id) => match all.iter_mut().find(|c| &c.id == id) {
            Some(c) => *c = entry(id.clone()),
            None => {
                return ToolError::new(ErrorCode::NotFound, format!("no saved command {id:?}"))
                    .into_result();
            }
        },
        None => {
            if all.len() >= MAX_COMMANDS {
                return invalid(format!(
                    "at most {MAX_COMMANDS} saved commands: delete one first"
                ));
            }
            all.push(entry(format!("cmd-{:08x}", rand::random::<u32>())));
        }
    }
    match store(&p, &all) {
        Ok(()) => success(text(&all), &CommandsOut { commands: all }),
        Err(e) => ToolError::new(ErrorCode::Internal, e).into_result(),
    }
}

/// `loopsy_command_remove`
pub async fn remove(ctx: &DaemonCtx, a: RemoveArgs) -> CallToolResult {
    let p = path(ctx);
    let mut all = match load(&p) {
        Ok(c) => c,
        Err(e) => return ToolError::new(ErrorCode::Internal, e).into_result(),
    };
    let before = all.len();
    all.retain(|c| c.id != a.id);
    if all.len() == before {
        return ToolError::new(ErrorCode::NotFound, format!("no saved command {:?}", a.id))
            .into_result();
    }
    match store(&p, &all) {
        Ok(()) => success(text(&all), &CommandsOut { commands: all }),
        Err(e) => ToolError::new(ErrorCode::Internal, e).into_result(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(label: &str, command: &str) -> SaveArgs {
        SaveArgs {
            id: None,
            label: label.into(),
            command: command.into(),
            args: None,
            cwd: None,
        }
    }

    #[test]
    fn validation() {
        assert_eq!(validate(&args(" build ", "make")).as_deref(), Ok("build"));
        assert!(validate(&args("", "make")).is_err());
        assert!(validate(&args("a\u{1b}[31m", "make")).is_err());
        assert!(validate(&args(&"x".repeat(81), "make")).is_err());
        assert!(validate(&args("ok", " ")).is_err());
        let mut a = args("ok", "make");
        a.args = Some(vec!["x".into(); 33]);
        assert!(validate(&a).is_err());
    }

    #[test]
    fn store_roundtrip() -> Result<(), String> {
        let d = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = d.path().join("commands.json");
        assert!(load(&p)?.is_empty());
        let c = vec![SavedCommand {
            id: "cmd-00000001".into(),
            label: "<b>build</b>".into(),
            command: "make".into(),
            args: vec![],
            cwd: None,
        }];
        store(&p, &c)?;
        assert_eq!(load(&p)?, c);
        Ok(())
    }
}
