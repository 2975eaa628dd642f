//! The tools a paired phone may call inside its end-to-end channel: the same handlers agents
//! use (one implementation per capability), run as `phone:<id>`, audited. Pairing, trust and
//! approval tools are not among them: a phone cannot approve its own auto-approve request.

use std::time::Instant;

use rmcp::model::CallToolResult;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::audit::AuditRecord;
use crate::tools::{commands, context, messages, peers, sessions, status};
use crate::{Caller, DaemonCtx};

/// What a phone may call.
pub const PHONE_TOOLS: [&str; 14] = [
    "loopsy_status",
    "loopsy_list_peers",
    "loopsy_context_list",
    "loopsy_check_inbox",
    "loopsy_session_kinds",
    "loopsy_command_list",
    "loopsy_command_save",
    "loopsy_command_remove",
    "loopsy_session_list",
    "loopsy_session_start",
    "loopsy_session_stop",
    "loopsy_session_remove",
    "loopsy_session_read",
    "loopsy_session_write",
];

fn parse<T: DeserializeOwned>(args: Value) -> Result<T, CallToolResult> {
    let args = if args.is_null() { json!({}) } else { args };
    serde_json::from_value(args).map_err(|e| {
        crate::ToolError::new(
            crate::ErrorCode::InvalidArguments,
            format!("bad arguments: {e}"),
        )
        .into_result()
    })
}

macro_rules! run {
    ($args:expr, $f:expr) => {
        match parse($args) {
            Ok(a) => $f(a).await,
            Err(r) => r,
        }
    };
}

/// Run `tool` for a phone; returns `(ok, structured value)`.
pub async fn call(ctx: &DaemonCtx, caller: &Caller, tool: &str, args: Value) -> (bool, Value) {
    let started = Instant::now();
    let r: CallToolResult = match tool {
        "loopsy_status" => match status::status(ctx).await {
            Ok(s) => crate::tool_error::success(status::summary(&s), &s),
            Err(e) => e.into_result(),
        },
        "loopsy_list_peers" => peers::list(ctx).await,
        "loopsy_context_list" => run!(args, |a| context::list(ctx, caller, a)),
        "loopsy_check_inbox" => run!(args, |a| messages::inbox(ctx, caller, a)),
        "loopsy_session_kinds" => run!(args, |a| sessions::kinds(ctx, caller, a)),
        "loopsy_command_list" => commands::list(ctx).await,
        "loopsy_command_save" => run!(args, |a| commands::save(ctx, a)),
        "loopsy_command_remove" => run!(args, |a| commands::remove(ctx, a)),
        "loopsy_session_list" => run!(args, |a| sessions::list(ctx, caller, a)),
        "loopsy_session_start" => run!(args, |a| sessions::start(ctx, caller, a)),
        "loopsy_session_stop" => run!(args, |a| sessions::stop(ctx, caller, a)),
        "loopsy_session_remove" => run!(args, |a| sessions::remove(ctx, caller, a)),
        "loopsy_session_read" => run!(args, |a| sessions::read(ctx, caller, a)),
        "loopsy_session_write" => run!(args, |a| sessions::write(ctx, caller, a)),
        other => crate::ToolError::new(
            crate::ErrorCode::PermissionDenied,
            format!(
                "{other:?} is not available to phones; they may call {}",
                PHONE_TOOLS.join(", ")
            ),
        )
        .into_result(),
    };
    let ok = r.is_error != Some(true);
    let value = r.structured_content.unwrap_or(Value::Null);
    let outcome = if ok {
        "ok".to_string()
    } else {
        format!("error:{}", value["code"].as_str().unwrap_or("unknown"))
    };
    ctx.audit()
        .record(AuditRecord::now(
            caller.label(),
            tool.chars().take(64).collect(),
            outcome,
            started.elapsed(),
        ))
        .await;
    (ok, value)
}
