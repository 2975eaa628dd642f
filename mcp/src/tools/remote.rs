//! Inbound calls from trusted peers: the same tool functions, under this machine's policy,
//! for the tools a peer may call. A call that arrived from a peer is never forwarded again.

use loopsy_mesh::InboundCall;
use loopsy_mesh::wire::RpcResponse;
use rmcp::model::CallToolResult;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

use super::{context, exec, sessions, status, tasks};
use crate::audit::AuditRecord;
use crate::tool_error::{ErrorCode, ToolError, success};
use crate::{Caller, DaemonCtx};

fn parse<T: DeserializeOwned>(args: &str) -> Result<T, ToolError> {
    serde_json::from_str(args)
        .map_err(|e| ToolError::new(ErrorCode::InvalidArguments, e.to_string()))
}

/// Run one peer call.
pub async fn dispatch(ctx: &DaemonCtx, caller: &Caller, tool: &str, args: &str) -> CallToolResult {
    macro_rules! run {
        ($f:path) => {
            match parse(args) {
                Ok(a) => $f(ctx, caller, a).await,
                Err(e) => e.into_result(),
            }
        };
    }
    match tool {
        "loopsy_status" => match status::status(ctx).await {
            Ok(s) => success(status::summary(&s), &s),
            Err(e) => e.into_result(),
        },
        "loopsy_execute" => run!(exec::execute),
        "loopsy_job_status" => run!(exec::status),
        "loopsy_job_wait" => run!(exec::wait),
        "loopsy_job_output" => run!(exec::output),
        "loopsy_job_kill" => run!(exec::kill),
        "loopsy_job_list" => run!(exec::list),
        "loopsy_context_set" => run!(context::set),
        "loopsy_context_get" => run!(context::get),
        "loopsy_context_list" => run!(context::list),
        "loopsy_context_delete" => run!(context::delete),
        "loopsy_session_start" => run!(sessions::start),
        "loopsy_session_list" => run!(sessions::list),
        "loopsy_session_stop" => run!(sessions::stop),
        "loopsy_session_remove" => run!(sessions::remove),
        "loopsy_session_read" => run!(sessions::read),
        "loopsy_session_write" => run!(sessions::write),
        "loopsy_session_wait" => run!(sessions::wait),
        "loopsy_task_claim" => run!(tasks::claim),
        "loopsy_task_update" => run!(tasks::update),
        "loopsy_task_list" => run!(tasks::list),
        "loopsy_task_wait" => run!(tasks::wait),
        other => ToolError::new(
            ErrorCode::NotFound,
            format!("{other:?} cannot be called by peers"),
        )
        .into_result(),
    }
}

/// Serve inbound peer calls until the node stops.
pub async fn serve(ctx: DaemonCtx, mut rx: mpsc::Receiver<InboundCall>) {
    while let Some(call) = rx.recv().await {
        let ctx = ctx.clone();
        let span = info_span!("peer_call", peer = %call.peer_name, tool = %call.request.tool);
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let caller = Caller::Peer {
                    id: call.peer.to_string(),
                    name: call.peer_name,
                    caps: call.caps,
                };
                let result = dispatch(&ctx, &caller, &call.request.tool, &call.request.args).await;
                let outcome = if result.is_error == Some(true) {
                    format!(
                        "error:{}",
                        result
                            .structured_content
                            .as_ref()
                            .and_then(|v| v["code"].as_str())
                            .unwrap_or("unknown")
                    )
                } else {
                    "ok".into()
                };
                ctx.audit()
                    .record(AuditRecord::now(
                        caller.label(),
                        call.request.tool.clone(),
                        outcome,
                        started.elapsed(),
                    ))
                    .await;
                let json = serde_json::to_string(&result).unwrap_or_else(|_| "{}".into());
                let _ = call.reply.send(RpcResponse::Result(json));
            }
            .instrument(span),
        );
    }
}
