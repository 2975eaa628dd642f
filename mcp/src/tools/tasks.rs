//! The task tools. A task lives on the daemon that created it; claims and updates from other
//! machines travel to it (the owner's PeerId is part of the task id), so concurrent claims
//! have exactly one winner. Creating a task also sends the assignee a `task` message, so its
//! agent learns of it with `loopsy_wait_for_message` instead of polling.

use std::collections::HashMap;
use std::time::Duration;

use loopsy_mesh::msg::{MsgType, Outgoing, envelope};
use loopsy_mesh::task::{Change, Task, TaskError, TaskStatus, owner_of};
use loopsy_mesh::trust::Capability;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tool_error::{ErrorCode, ToolError, success};
use crate::{Caller, DaemonCtx};

/// `loopsy_task_create` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// Who should do it: a peer (name or PeerId), `*` for any peer, or this machine's name.
    pub assignee: String,
    /// What to do, in words.
    pub description: String,
    /// Input data (any JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// A task id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimArgs {
    /// The task id (`t…@<owner>`).
    pub id: String,
    /// A label for the claiming worker (e.g. which agent), shown to the creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// `loopsy_task_update` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The task id.
    pub id: String,
    /// working, input-required, completed, failed or canceled.
    pub status: TaskStatus,
    /// What to tell the creator (for input-required: what you need).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The result (any JSON), with completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// `loopsy_task_list` arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only tasks in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// Only tasks assigned to this peer (name or PeerId; `*` for open ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The tasks created on this peer instead (those you may work on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// `loopsy_task_wait` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The task id.
    pub id: String,
    /// Return when the task reaches this status (default: completed). A finished task
    /// (completed, failed, canceled) always ends the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_status: Option<TaskStatus>,
    /// Give up after this many seconds (default 60, max 300; max 110 for a task on a peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 300))]
    pub timeout_s: Option<u64>,
}

/// A task with the names this machine knows its parties by.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    /// The task.
    #[serde(flatten)]
    pub task: Task,
    /// The owner's name here.
    pub owner_name: String,
    /// The assignee's name here (`*`: anyone).
    pub assignee_name: String,
    /// The claiming machine's name here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by_name: Option<String>,
}

/// Tasks.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TasksOut {
    /// Oldest first.
    pub tasks: Vec<TaskView>,
}

/// How a task wait ended.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TaskWaitOut {
    /// True if the task reached the status (or finished); false on timeout.
    pub reached: bool,
    /// The task now.
    pub task: TaskView,
}

fn err(e: TaskError) -> CallToolResult {
    let code = match &e {
        TaskError::Invalid(_) => ErrorCode::InvalidArguments,
        TaskError::NotFound(_) => ErrorCode::NotFound,
        TaskError::Conflict(_) => ErrorCode::Conflict,
        TaskError::Denied(_) => ErrorCode::PermissionDenied,
        TaskError::NotClaimed(_) => ErrorCode::NotClaimed,
        TaskError::Stopped => ErrorCode::Unavailable,
        TaskError::Store(_) => ErrorCode::Internal,
    };
    ToolError::new(code, e.to_string()).into_result()
}

async fn names(ctx: &DaemonCtx) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = ctx
        .node()
        .peers()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.peer_id, p.name))
        .collect();
    m.insert(ctx.node().peer_id().to_string(), ctx.name().to_string());
    m.insert("*".into(), "*".into());
    m
}

fn view(t: Task, names: &HashMap<String, String>) -> TaskView {
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    TaskView {
        owner_name: name(&t.owner),
        assignee_name: name(&t.assignee),
        claimed_by_name: t.claimed_by.as_deref().map(name),
        task: t,
    }
}

fn status_str(s: TaskStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Who is acting: the calling peer, or this machine for its own agents.
fn who(ctx: &DaemonCtx, caller: &Caller) -> String {
    match caller {
        Caller::Peer { id, .. } => id.clone(),
        _ => ctx.node().peer_id().to_string(),
    }
}

/// Where task `id` lives: `Ok(None)` here, `Ok(Some(peer))` on a peer.
async fn route(
    ctx: &DaemonCtx,
    caller: &Caller,
    id: &str,
) -> Result<Option<String>, CallToolResult> {
    let Some(owner) = owner_of(id) else {
        return Err(ToolError::new(
            ErrorCode::InvalidArguments,
            format!("{id:?} is not a task id (they look like t…@<PeerId>)"),
        )
        .into_result());
    };
    if owner == ctx.node().peer_id().to_string() {
        if let Err(e) = super::require(ctx, caller, Capability::Messages).await {
            return Err(e.into_result());
        }
        return Ok(None);
    }
    if matches!(caller, Caller::Peer { .. }) {
        return Err(ToolError::new(
            ErrorCode::PermissionDenied,
            "a call from a peer cannot be forwarded to another peer",
        )
        .into_result());
    }
    Ok(Some(owner.to_string()))
}

/// `loopsy_task_create`
pub async fn create(ctx: &DaemonCtx, caller: &Caller, a: CreateArgs) -> CallToolResult {
    if matches!(caller, Caller::Peer { .. }) {
        return ToolError::new(
            ErrorCode::PermissionDenied,
            "create tasks on your own machine; they reach the assignee from there",
        )
        .into_result();
    }
    let peers = ctx.node().peers().await.unwrap_or_default();
    let target = a.assignee.trim();
    let (assignee, to): (String, Vec<_>) = if target == "*" {
        (
            "*".into(),
            peers
                .iter()
                .filter_map(|p| p.peer_id.parse().ok())
                .collect(),
        )
    } else if ctx.is_me(target) {
        (ctx.node().peer_id().to_string(), Vec::new())
    } else {
        match peers
            .iter()
            .find(|p| p.name == target || p.peer_id == target)
        {
            Some(p) => (
                p.peer_id.clone(),
                p.peer_id.parse().ok().into_iter().collect(),
            ),
            None => {
                return ToolError::new(
                    ErrorCode::NotFound,
                    format!("no trusted peer {target:?} (or use \"*\" for any peer)"),
                )
                .into_result();
            }
        }
    };
    let task = match ctx.tasks().create(assignee, a.description, a.input).await {
        Ok(t) => t,
        Err(e) => return err(e),
    };
    // Tell the assignee(s): a durable message, retried until delivered.
    if !to.is_empty() {
        let body = serde_json::json!({
            "task": task.id, "description": task.description, "input": task.input,
        })
        .to_string();
        let all = target == "*";
        if let Err(e) = ctx
            .messages()
            .send(Outgoing {
                to,
                all,
                kind: MsgType::Task,
                body,
                ttl_s: envelope::DEFAULT_TTL_S,
                reply_to: None,
                thread: Some(task.id.clone()),
            })
            .await
        {
            return ToolError::new(
                ErrorCode::Unavailable,
                format!(
                    "task {} was created, but the assignee could not be told: {e}",
                    task.id
                ),
            )
            .into_result();
        }
    }
    let v = view(task, &names(ctx).await);
    success(
        format!(
            "task {} for {} (submitted; the assignee gets a task message)",
            v.task.id, v.assignee_name
        ),
        &v,
    )
}

/// A peer may only see (and act on) tasks for it, open ones, or ones it claimed: anything
/// else is "not found" to it.
async fn visible(ctx: &DaemonCtx, caller: &Caller, id: &str) -> Result<(), CallToolResult> {
    let Caller::Peer { id: peer, .. } = caller else {
        return Ok(());
    };
    match ctx.tasks().get(id).await {
        Ok(Some(t))
            if t.assignee == *peer
                || t.assignee == "*"
                || t.claimed_by.as_deref() == Some(peer.as_str()) =>
        {
            Ok(())
        }
        Ok(_) => Err(err(TaskError::NotFound(id.to_string()))),
        Err(e) => Err(err(e)),
    }
}

async fn change(
    ctx: &DaemonCtx,
    caller: &Caller,
    tool: &str,
    id: &str,
    c: Change,
    args: &impl Serialize,
) -> CallToolResult {
    match route(ctx, caller, id).await {
        Err(r) => r,
        Ok(Some(owner)) => super::forward(ctx, &owner, tool, args).await,
        Ok(None) => match visible(ctx, caller, id).await {
            Err(r) => r,
            Ok(()) => apply_here(ctx, caller, id, c).await,
        },
    }
}

async fn apply_here(ctx: &DaemonCtx, caller: &Caller, id: &str, c: Change) -> CallToolResult {
    {
        match ctx.tasks().change(id, &who(ctx, caller), c).await {
            Ok(t) => {
                let v = view(t, &names(ctx).await);
                success(
                    format!("task {} is {}", v.task.id, status_str(v.task.status)),
                    &v,
                )
            }
            Err(e) => err(e),
        }
    }
}

/// `loopsy_task_claim`
pub async fn claim(ctx: &DaemonCtx, caller: &Caller, a: ClaimArgs) -> CallToolResult {
    let c = Change::Claim {
        worker: a.worker.clone(),
    };
    change(ctx, caller, "loopsy_task_claim", &a.id, c, &a).await
}

/// `loopsy_task_update`
pub async fn update(ctx: &DaemonCtx, caller: &Caller, a: UpdateArgs) -> CallToolResult {
    let c = Change::Update {
        status: a.status,
        note: a.note.clone(),
        result: a.result.clone(),
    };
    change(ctx, caller, "loopsy_task_update", &a.id, c, &a).await
}

/// `loopsy_task_list`
pub async fn list(ctx: &DaemonCtx, caller: &Caller, mut a: ListArgs) -> CallToolResult {
    match super::target(ctx, caller, a.peer.as_deref()) {
        Err(e) => return e.into_result(),
        Ok(super::Target::Remote(p)) => {
            a.peer = None;
            return super::forward(ctx, &p, "loopsy_task_list", &a).await;
        }
        Ok(super::Target::Local) => {}
    }
    if let Err(e) = super::require(ctx, caller, Capability::Messages).await {
        return e.into_result();
    }
    let names = names(ctx).await;
    let assignee = a.assignee.as_deref().map(|x| {
        names
            .iter()
            .find(|(id, n)| *n == x || *id == x)
            .map_or_else(|| x.to_string(), |(id, _)| id.clone())
    });
    let all = match ctx.tasks().list().await {
        Ok(t) => t,
        Err(e) => return err(e),
    };
    let me_caller = who(ctx, caller);
    let tasks: Vec<TaskView> = all
        .into_iter()
        // A peer sees what it may work on: tasks for it, open ones, or ones it claimed.
        .filter(|t| {
            !matches!(caller, Caller::Peer { .. })
                || t.assignee == me_caller
                || t.assignee == "*"
                || t.claimed_by.as_deref() == Some(&me_caller)
        })
        .filter(|t| a.status.is_none_or(|s| s == t.status))
        .filter(|t| assignee.as_ref().is_none_or(|x| *x == t.assignee))
        .map(|t| view(t, &names))
        .collect();
    let text = if tasks.is_empty() {
        "no tasks".to_string()
    } else {
        tasks
            .iter()
            .map(|t| {
                format!(
                    "{} [{}] for {}: {}",
                    t.task.id,
                    status_str(t.task.status),
                    t.assignee_name,
                    t.task.description
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    success(text, &TasksOut { tasks })
}

/// `loopsy_task_wait`: block until the task reaches a status or finishes.
pub async fn wait(ctx: &DaemonCtx, caller: &Caller, a: WaitArgs) -> CallToolResult {
    let timeout = a.timeout_s.unwrap_or(60);
    let owner = match route(ctx, caller, &a.id).await {
        Err(r) => return r,
        Ok(o) => o,
    };
    // An RPC gives up at 120 s: a wait that crosses the mesh (either way) stays under it.
    let max = if owner.is_some() || matches!(caller, Caller::Peer { .. }) {
        110
    } else {
        300
    };
    if timeout > max {
        return ToolError::new(
            ErrorCode::InvalidArguments,
            format!("timeout_s must be at most {max} here"),
        )
        .into_result();
    }
    if let Some(owner) = owner {
        return super::forward(ctx, &owner, "loopsy_task_wait", &a).await;
    }
    if let Err(r) = visible(ctx, caller, &a.id).await {
        return r;
    }
    let until = a.until_status.unwrap_or(TaskStatus::Completed);
    let mut changes = ctx.tasks().changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let t = match ctx.tasks().get(&a.id).await {
            Ok(Some(t)) => t,
            Ok(None) => return err(TaskError::NotFound(a.id)),
            Err(e) => return err(e),
        };
        let reached = t.status == until || t.status.is_final();
        let timed_out = !reached
            && match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => false,
                Ok(Err(_)) => return err(TaskError::Stopped),
                Err(_) => true,
            };
        if reached || timed_out {
            let v = view(t, &names(ctx).await);
            return success(
                format!(
                    "task {} is {}{}",
                    v.task.id,
                    status_str(v.task.status),
                    if reached { "" } else { " (timed out waiting)" }
                ),
                &TaskWaitOut { reached, task: v },
            );
        }
    }
}
