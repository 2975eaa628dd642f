//! Tool implementations, one file per capability. Each tool is a plain async function of
//! (context, caller, typed args) → `CallToolResult`, so the MCP server and inbound peer calls
//! run the very same code.

pub mod admin;
pub mod commands;
pub mod context;
pub mod exec;
pub mod files;
pub mod messages;
pub mod peers;
pub mod phone;
pub mod progress;
pub mod remote;
pub mod sessions;
pub mod status;
pub mod tasks;

use loopsy_mesh::node::NodeError;
use loopsy_mesh::pair::PairError;
use rmcp::model::CallToolResult;
use serde::Serialize;

use crate::tool_error::{ErrorCode, ToolError};
use crate::{Caller, DaemonCtx};

/// Run here with `cap` checked (yielding the arguments), or return the named peer's result
/// from the enclosing tool function.
macro_rules! local_or_return {
    ($ctx:expr, $caller:expr, $tool:literal, $a:expr, $cap:expr) => {
        match $crate::tools::exec::route_with($ctx, $caller, $tool, $a, $cap).await {
            Ok(a) => a,
            Err(r) => return r,
        }
    };
}
pub(crate) use local_or_return;

/// A node error as a tool error with the right code.
pub fn node_err(e: NodeError) -> ToolError {
    let code = match &e {
        NodeError::UnknownPeer(_) | NodeError::AmbiguousPeer { .. } => ErrorCode::NotFound,
        NodeError::Denied(_) => ErrorCode::PermissionDenied,
        NodeError::BadAddress(_) | NodeError::BadName(_) | NodeError::AlreadyPaired(_) => {
            ErrorCode::InvalidArguments
        }
        NodeError::Pair(PairError::WrongCode | PairError::TooManyAttempts) => {
            ErrorCode::PermissionDenied
        }
        NodeError::Pair(PairError::Malformed(_)) => ErrorCode::InvalidArguments,
        NodeError::Pair(_) => ErrorCode::Unavailable,
        NodeError::Unreachable { .. } | NodeError::PeerUnavailable(_) | NodeError::Stopped => {
            ErrorCode::Unavailable
        }
        NodeError::Build(_) | NodeError::Listen { .. } | NodeError::Trust(_) => ErrorCode::Internal,
    };
    ToolError::new(code, e.to_string())
}

/// How long reaching an offline or unreachable peer may take before a command fails.
pub const REACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connect to a trusted peer for a stream, failing within [`REACH_TIMEOUT`] with one line that
/// names the peer as the caller did (the raw dial errors go to the log, at debug level).
pub async fn reach(ctx: &DaemonCtx, peer: &str) -> Result<loopsy_mesh::PeerId, ToolError> {
    let offline = || {
        ToolError::new(
            ErrorCode::Unavailable,
            format!(
                "{peer} is offline or unreachable (no connection within {} s); `loopsy mesh status` shows when it was last seen",
                REACH_TIMEOUT.as_secs()
            ),
        )
    };
    match tokio::time::timeout(REACH_TIMEOUT, ctx.node().connect(peer)).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(NodeError::Unreachable { reason, .. })) => {
            tracing::debug!(%peer, %reason, "dial failed");
            Err(offline())
        }
        Ok(Err(e)) => Err(node_err(e)),
        Err(_) => Err(offline()),
    }
}

/// Where a call with an optional `peer` argument runs.
pub enum Target {
    /// Here.
    Local,
    /// On this peer (name or PeerId).
    Remote(String),
}

/// Decide where to run: no peer, or this node's own name/PeerId, means here. A call that
/// arrived from a peer never travels on (no confused deputy).
pub fn target(ctx: &DaemonCtx, caller: &Caller, peer: Option<&str>) -> Result<Target, ToolError> {
    match peer.map(str::trim) {
        None => Ok(Target::Local),
        // A blank from a template must not send a command to the wrong machine.
        Some("") => Err(ToolError::new(
            ErrorCode::InvalidArguments,
            "peer is empty: name a peer, or leave `peer` out to run on this machine",
        )),
        Some(p) if ctx.is_me(p) => Ok(Target::Local),
        Some(_) if matches!(caller, Caller::Peer { .. }) => Err(ToolError::new(
            ErrorCode::PermissionDenied,
            "a call from a peer cannot be forwarded to another peer",
        )),
        Some(p) => Ok(Target::Remote(p.to_string())),
    }
}

/// Run `tool` on `peer` with `args` (whose `peer` field must already be cleared).
pub async fn forward<A: Serialize>(
    ctx: &DaemonCtx,
    peer: &str,
    tool: &str,
    args: &A,
) -> CallToolResult {
    let json = match serde_json::to_string(args) {
        Ok(j) => j,
        Err(e) => return ToolError::new(ErrorCode::Internal, e.to_string()).into_result(),
    };
    match ctx.node().call(peer, tool, json).await {
        Ok(result) => serde_json::from_str::<CallToolResult>(&result).unwrap_or_else(|e| {
            ToolError::new(
                ErrorCode::Internal,
                format!("peer {peer} sent a malformed result: {e}"),
            )
            .into_result()
        }),
        Err(e) => node_err(e).into_result(),
    }
}

/// Refuse a peer without `cap`, saying whose policy it is and what to run where (here, or on
/// the machine that introduced it).
pub async fn require(
    ctx: &DaemonCtx,
    caller: &Caller,
    cap: loopsy_mesh::trust::Capability,
) -> Result<(), ToolError> {
    if caller.may(cap) {
        return Ok(());
    }
    let me = ctx.name();
    let why = match caller {
        Caller::Peer { id, name, .. } => match id.parse() {
            Ok(peer) => ctx.node().refusal(peer, cap).await,
            Err(_) => format!(
                "{me}'s policy: it has not granted {name} the {} capability",
                cap.name()
            ),
        },
        _ => format!(
            "{me}'s policy: the {} capability is not granted",
            cap.name()
        ),
    };
    Err(ToolError::new(ErrorCode::PermissionDenied, why))
}
