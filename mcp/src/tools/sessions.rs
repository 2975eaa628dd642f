//! The terminal-session tools: start, list, read, write, wait, stop and remove PTY sessions
//! here or on a peer (which needs the `pty` capability there).

use std::path::PathBuf;
use std::time::Duration;

use loopsy_mesh::trust::Capability;
use loopsy_term::proto::{ReadMode, ReadOut};
use loopsy_term::{Decision, SessionError, SessionInfo, SessionKind, StartSpec, WaitFor, WaitOut};
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::local_or_return;
use crate::tool_error::{ErrorCode, ToolError, success};
use crate::{Caller, DaemonCtx};

/// Longest a `loopsy_session_wait` call may block.
pub const MAX_WAIT_S: u64 = 300;

/// `loopsy_session_start` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// Peer (name or PeerId) to start it on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// shell (default), claude, codex, gemini, opencode, or custom (needs `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SessionKind>,
    /// For custom: the program, or a shell command line when `args` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments for the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory (default: the home directory of the machine it runs on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// A friendly name, unique among running sessions (default: kind-xxxx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Columns (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// Rows (default 40).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// For claude, codex and gemini: start the agent with its skip-permissions flag. The user
    /// must confirm on the machine it runs on (`loopsy approve <id>`), unless its config
    /// allows that kind; the refusal says which id to present as `approval` afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve: Option<bool>,
    /// The id from an earlier auto-approve refusal, once the user has approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// A session by id or name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionArgs {
    /// Peer the session runs on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Session id (or its name).
    pub id: String,
}

/// `loopsy_session_list` arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Peer to list; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// `loopsy_session_read` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// Peer the session runs on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Session id (or name).
    pub id: String,
    /// screen (default): the visible screen; scrollback: all kept output as text; since: the
    /// output after `cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ReadMode>,
    /// The `cursor` of an earlier read (for mode since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `loopsy_session_write` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// Peer the session runs on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Session id (or name).
    pub id: String,
    /// Text to type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Keys pressed after the text: Enter, Tab, Esc, Backspace, Up, Down, Left, Right,
    /// PageUp, PageDown, Home, End, F1-F12, Ctrl-<letter>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Send the text as a bracketed paste if the program asked for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paste: Option<bool>,
}

/// `loopsy_session_wait` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// Peer the session runs on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Session id (or name).
    pub id: String,
    /// A regular expression to wait for, on the screen or in new output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Wait for the program to exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<bool>,
    /// Return once the session has printed nothing for this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Give up after this many seconds (default 30, max 300); the result then says timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_WAIT_S))]
    pub timeout_s: Option<u64>,
}

crate::routed!(
    StartArgs,
    SessionArgs,
    ListArgs,
    ReadArgs,
    WriteArgs,
    WaitArgs
);

/// Sessions on one machine.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SessionsOut {
    /// Newest first.
    pub sessions: Vec<SessionInfo>,
}

/// A write that was delivered.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WriteOut {
    /// Bytes of text sent (keys not counted).
    pub text_bytes: usize,
    /// Keys sent.
    pub keys: usize,
}

fn err(e: SessionError) -> CallToolResult {
    let code = match e.code() {
        "invalid_arguments" => ErrorCode::InvalidArguments,
        "not_found" => ErrorCode::NotFound,
        "unavailable" => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    ToolError::new(code, e.to_string()).into_result()
}

fn invalid(m: impl Into<String>) -> CallToolResult {
    ToolError::new(ErrorCode::InvalidArguments, m.into()).into_result()
}

fn line(i: &SessionInfo) -> String {
    let state = match (i.state, i.exit_code) {
        (loopsy_term::SessionState::Exited, Some(c)) => format!("exited {c}"),
        (s, _) => format!("{s:?}").to_lowercase(),
    };
    format!("{} {} ({}) {state}: {}", i.id, i.name, i.kind, i.command)
}

/// `loopsy_session_start`
pub async fn start(ctx: &DaemonCtx, caller: &Caller, a: StartArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_session_start", a, Capability::Pty);
    let kind = a.kind.unwrap_or(if a.command.is_some() {
        SessionKind::Custom
    } else {
        SessionKind::Shell
    });
    let path = std::env::var_os("PATH");
    let shell = std::env::var_os("SHELL");
    let (program, args) = match (kind, &a.command, &a.args) {
        // A command line without args runs under the shell, like loopsy_execute.
        (SessionKind::Custom, Some(cmd), None) if cmd.trim().contains(char::is_whitespace) => {
            loopsy_sys::shell::command_line_parts(cmd)
        }
        _ => match kind.resolve(a.command.as_deref(), shell.as_deref(), path.as_deref()) {
            Ok(p) => (p, a.args.clone().unwrap_or_default()),
            Err(e) => {
                // A missing program is not found; a custom session without one is the
                // caller's arguments.
                let code = match e {
                    loopsy_term::kind::LaunchError::NoCommand => ErrorCode::InvalidArguments,
                    loopsy_term::kind::LaunchError::NotInstalled { .. } => ErrorCode::NotFound,
                };
                return ToolError::new(code, e.to_string()).into_result();
            }
        },
    };
    let mut args = args;
    // The skip-permissions switches come only through auto_approve (and the user's
    // confirmation here), however they are spelled and whatever the session kind.
    if let Some(f) = loopsy_term::bypass::find(&program, &args) {
        return ToolError::new(
            ErrorCode::PermissionDenied,
            format!(
                "`{}` makes {} skip its permission prompts, which only the user on {} may allow: start kind {} with auto_approve: true instead (they confirm with `loopsy approve <id>` there)",
                f.spelling,
                f.agent,
                ctx.name(),
                f.agent
            ),
        )
        .into_result();
    }
    if a.auto_approve == Some(true) {
        match ctx
            .sessions()
            .approvals()
            .decide(kind, &caller.owner(), a.approval.as_deref())
        {
            Decision::Allowed(flag) => args.insert(0, flag.to_string()),
            Decision::NoFlag => {
                return invalid(format!(
                    "kind {} has no auto-approve flag; only claude, codex and gemini do",
                    kind.name()
                ));
            }
            Decision::NeedsConfirmation { id, flag } => {
                return ToolError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "auto-approve ({flag}) for {} must be confirmed by the user on {}: ask them to run `loopsy approve {id}` there, then call loopsy_session_start again with approval: \"{id}\" (valid 10 minutes). Or start without auto_approve.",
                        kind.name(),
                        ctx.name()
                    ),
                )
                .into_result();
            }
        }
    }
    // `~` is this machine's home, as for `loopsy_execute` and the file tools.
    let cwd = a
        .cwd
        .as_deref()
        .map(loopsy_sys::expand_home)
        .unwrap_or_else(home);
    let spec = StartSpec {
        name: a.name.clone(),
        kind: kind.name().to_string(),
        program,
        args,
        cwd,
        env: Default::default(),
        cols: a.cols.unwrap_or(120),
        rows: a.rows.unwrap_or(40),
    };
    match ctx.sessions().start(spec).await {
        Ok(i) => success(format!("started {}", line(&i)), &i),
        Err(e) => err(e),
    }
}

/// Where sessions start when no `cwd` is given.
fn home() -> PathBuf {
    loopsy_sys::home_dir().unwrap_or_else(|| "/".into())
}

/// Have a spare shell ready here (in the background), for a client that is likely to open
/// one soon: it is what `loopsy_session_start` with no arguments starts, so that start
/// finds its prompt already drawn. Off when `sessions.spare_shell_s` is 0.
pub fn prewarm_shell(ctx: &DaemonCtx) {
    let shell = std::env::var_os("SHELL");
    let path = std::env::var_os("PATH");
    let Ok(program) = SessionKind::Shell.resolve(None, shell.as_deref(), path.as_deref()) else {
        return;
    };
    let spec = StartSpec {
        name: None,
        kind: SessionKind::Shell.name().to_string(),
        program,
        args: Vec::new(),
        cwd: home(),
        env: Default::default(),
        cols: 120,
        rows: 40,
    };
    let sessions = ctx.sessions().clone();
    tokio::spawn(async move {
        if let Err(e) = sessions.prewarm(spec).await {
            tracing::warn!("cannot start a spare shell: {e}");
        }
    });
}

/// One kind of session.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct KindView {
    /// `shell`, `claude`, `codex`, `gemini`, `opencode`.
    pub kind: String,
    /// Whether it can start here (shell always; agents when their program is on PATH).
    pub installed: bool,
    /// The flag `auto_approve` would add (it needs the user's confirmation on this machine).
    pub auto_approve_flag: Option<String>,
}

/// The kinds of session this machine can start.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct KindsOut {
    /// Shell first, then the agents.
    pub kinds: Vec<KindView>,
}

/// `loopsy_session_kinds`
pub async fn kinds(ctx: &DaemonCtx, caller: &Caller, a: ListArgs) -> CallToolResult {
    let _ = local_or_return!(ctx, caller, "loopsy_session_kinds", a, Capability::Pty);
    let installed = SessionKind::installed_agents(std::env::var_os("PATH").as_deref());
    let kinds: Vec<KindView> = SessionKind::ALL
        .iter()
        .filter(|k| **k != SessionKind::Custom)
        .map(|k| KindView {
            kind: k.name().to_string(),
            installed: *k == SessionKind::Shell || installed.contains(k),
            auto_approve_flag: k.auto_approve_flag().map(str::to_string),
        })
        .collect();
    let text = kinds
        .iter()
        .filter(|k| k.installed)
        .map(|k| k.kind.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    success(format!("can start: {text}"), &KindsOut { kinds })
}

/// `loopsy_session_list`
pub async fn list(ctx: &DaemonCtx, caller: &Caller, a: ListArgs) -> CallToolResult {
    let _ = local_or_return!(ctx, caller, "loopsy_session_list", a, Capability::Pty);
    let sessions = ctx.sessions().list().await;
    let text = if sessions.is_empty() {
        "no sessions".to_string()
    } else {
        sessions.iter().map(line).collect::<Vec<_>>().join("\n")
    };
    success(text, &SessionsOut { sessions })
}

/// `loopsy_session_stop`
pub async fn stop(ctx: &DaemonCtx, caller: &Caller, a: SessionArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_session_stop", a, Capability::Pty);
    match ctx.sessions().stop(&a.id).await {
        Ok(i) => success(line(&i), &i),
        Err(e) => err(e),
    }
}

/// `loopsy_session_remove`
pub async fn remove(ctx: &DaemonCtx, caller: &Caller, a: SessionArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_session_remove", a, Capability::Pty);
    match ctx.sessions().remove(&a.id).await {
        Ok(i) => success(format!("removed {}", line(&i)), &i),
        Err(e) => err(e),
    }
}

/// `loopsy_session_read`
pub async fn read(ctx: &DaemonCtx, caller: &Caller, a: ReadArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_session_read", a, Capability::Pty);
    let cursor = match a.cursor.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return invalid("cursor must be the value an earlier read returned"),
    };
    let mode = a.mode.unwrap_or_default();
    if mode == ReadMode::Since && cursor.is_none() {
        return invalid("mode since needs the cursor of an earlier read");
    }
    match ctx.sessions().read(&a.id, mode, cursor).await {
        Ok(r) => {
            let r: ReadOut = r;
            success(r.text.clone(), &r)
        }
        Err(e) => err(e),
    }
}

/// `loopsy_session_write`
pub async fn write(ctx: &DaemonCtx, caller: &Caller, a: WriteArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_session_write", a, Capability::Pty);
    let text = a.text.unwrap_or_default();
    let keys = a.keys.unwrap_or_default();
    if text.is_empty() && keys.is_empty() {
        return invalid("give text, keys, or both");
    }
    let out = WriteOut {
        text_bytes: text.len(),
        keys: keys.len(),
    };
    match ctx
        .sessions()
        .write(&a.id, text, keys, a.paste.unwrap_or(false))
        .await
    {
        Ok(()) => success(
            format!("sent {} bytes and {} keys", out.text_bytes, out.keys),
            &out,
        ),
        Err(e) => err(e),
    }
}

/// `loopsy_session_wait`
pub async fn wait(ctx: &DaemonCtx, caller: &Caller, a: WaitArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_session_wait", a, Capability::Pty);
    let timeout = a.timeout_s.unwrap_or(30);
    if timeout > MAX_WAIT_S {
        return invalid(format!("timeout_s must be at most {MAX_WAIT_S}"));
    }
    let pattern = match a.pattern.as_deref().map(regex::Regex::new) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => return invalid(format!("pattern is not a valid regular expression: {e}")),
    };
    let what = WaitFor {
        pattern,
        exit: a.exit.unwrap_or(false),
        idle: a.idle_ms.map(Duration::from_millis),
    };
    if what.pattern.is_none() && !what.exit && what.idle.is_none() {
        return invalid("give pattern, exit: true, or idle_ms");
    }
    match ctx
        .sessions()
        .wait(&a.id, &what, Duration::from_secs(timeout))
        .await
    {
        Ok(w) => {
            let w: WaitOut = w;
            success(format!("{}: {}", w.reason, line(&w.session)), &w)
        }
        Err(e) => err(e),
    }
}

/// `loopsy_approve` arguments (admin session only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveArgs {
    /// The request id from the agent's refusal; omit to list what is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Pending auto-approve requests.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalsOut {
    /// The requests (after an approval: just that one).
    pub requests: Vec<loopsy_term::ApprovalView>,
}

/// `loopsy_approve`: the user confirms an auto-approve request (CLI only).
pub async fn approve(ctx: &DaemonCtx, a: ApproveArgs) -> CallToolResult {
    let approvals = ctx.sessions().approvals();
    match a.id {
        None => {
            let requests = approvals.list();
            let text = if requests.is_empty() {
                "no pending auto-approve requests".to_string()
            } else {
                requests
                    .iter()
                    .map(|r| format!("{} {} {} from {}", r.id, r.kind, r.flag, r.requested_by))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            success(text, &ApprovalsOut { requests })
        }
        Some(id) => match approvals.approve(id.trim()) {
            Some(v) => success(
                format!("approved {} for {} ({})", v.id, v.requested_by, v.flag),
                &ApprovalsOut { requests: vec![v] },
            ),
            None => ToolError::new(
                ErrorCode::NotFound,
                format!("no pending auto-approve request {id:?} (they expire after 10 minutes)"),
            )
            .into_result(),
        },
    }
}
