//! The MCP server: the `loopsy_*` tools, typed inputs, structured outputs, audited calls.

use std::time::Instant;

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ErrorCode as RpcCode, Implementation,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, tool, tool_handler, tool_router};

use crate::audit::AuditRecord;
use crate::tool_error::{ErrorCode, ToolError, success};
use crate::tools::status::{self, StatusArgs, StatusOut};
use crate::{Caller, DaemonCtx};

const INSTRUCTIONS: &str = "loopsy connects this machine to the user's other machines (a mesh of \
daemons). Tools are named loopsy_*. Peers are named by friendly name or PeerId; never pass keys. \
Failed calls return isError with structuredContent {code, message}: read the message, it says \
what to do next.";

/// One MCP session's server (one per connection); clones share the daemon context.
#[derive(Clone)]
pub struct LoopsyServer {
    ctx: DaemonCtx,
    caller: Caller,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for LoopsyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopsyServer")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

#[tool_router]
impl LoopsyServer {
    /// A server for one connection from `caller`.
    pub fn new(ctx: DaemonCtx, caller: Caller) -> Self {
        Self {
            ctx,
            caller,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "This loopsy node: name, PeerId, version, pid, uptime and the mesh's listen addresses (multiaddrs).",
        output_schema = schema_for_output::<StatusOut>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn loopsy_status(&self, Parameters(_): Parameters<StatusArgs>) -> CallToolResult {
        match status::status(&self.ctx).await {
            Ok(s) => success(status::summary(&s), &s),
            Err(e) => e.into_result(),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for LoopsyServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("loopsy", loopsy_mesh::VERSION))
            .with_instructions(INSTRUCTIONS.to_string())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let started = Instant::now();
        let tool = request.name.to_string();
        if !self.tool_router.has_route(&tool) {
            // As the MCP spec has it: an unknown tool is a protocol error (-32602).
            return Err(McpError::invalid_params(
                format!("unknown tool {tool:?}; tools/list shows the loopsy_* tools"),
                None,
            ));
        }
        let tcc = ToolCallContext::new(self, request, context);
        let result = match self.tool_router.call(tcc).await {
            // Arguments that do not fit the schema are the model's to fix: a tool error.
            Err(e) if e.code == RpcCode::INVALID_PARAMS => Ok(CallToolResponse::Complete(
                ToolError::new(ErrorCode::InvalidArguments, e.message.to_string()).into_result(),
            )),
            // rmcp reports arguments that fail to deserialize as an unstructured tool error;
            // every loopsy tool's own errors are structured, so give these the stable code.
            Ok(CallToolResponse::Complete(r))
                if r.is_error == Some(true) && r.structured_content.is_none() =>
            {
                let text = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(CallToolResponse::Complete(
                    ToolError::new(ErrorCode::InvalidArguments, text).into_result(),
                ))
            }
            other => other,
        };
        let outcome = match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => format!(
                "error:{}",
                r.structured_content
                    .as_ref()
                    .and_then(|v| v["code"].as_str())
                    .unwrap_or("unknown")
            ),
            Ok(_) => "ok".to_string(),
            Err(e) => format!("rpc_error:{}", e.code.0),
        };
        self.ctx
            .audit()
            .record(AuditRecord::now(
                self.caller.label(),
                tool,
                outcome,
                started.elapsed(),
            ))
            .await;
        result
    }
}
