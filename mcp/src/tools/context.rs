//! The context tools: set, get, list and delete keys in the context document here, or on a
//! `peer` (which needs the `context` capability there).

use loopsy_mesh::context::{ContextError, Entry, Page};
use loopsy_mesh::trust::Capability;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::exec::route_with;
use crate::tool_error::{ErrorCode, ToolError, success};
use crate::{Caller, DaemonCtx};

/// `loopsy_context_set` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetArgs {
    /// Write on this peer instead of here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The key (1-512 bytes of UTF-8).
    pub key: String,
    /// The value: a string or any JSON.
    pub value: serde_json::Value,
    /// Expire after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyArgs {
    /// Read (or delete) on this peer instead of here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The key.
    pub key: String,
}

/// `loopsy_context_list` arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// List this peer's keys instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Only keys starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// At most this many (default 100, max 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

crate::routed!(SetArgs, KeyArgs, ListArgs);

/// A key's value, or its absence.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct GetOut {
    /// Whether the key exists (and has not expired).
    pub found: bool,
    /// The entry, when found.
    pub entry: Option<Entry>,
}

/// A delete's result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DeleteOut {
    /// Whether the key existed.
    pub deleted: bool,
}

fn err(e: ContextError) -> CallToolResult {
    let code = match e {
        ContextError::Invalid(_) => ErrorCode::InvalidArguments,
        ContextError::Stopped => ErrorCode::Unavailable,
        ContextError::Store(_) | ContextError::Doc(_) => ErrorCode::Internal,
    };
    ToolError::new(code, e.to_string()).into_result()
}

macro_rules! routed_or_return {
    ($ctx:expr, $caller:expr, $tool:literal, $a:expr) => {
        match route_with($ctx, $caller, $tool, $a, Capability::Context).await {
            Ok(a) => a,
            Err(r) => return r,
        }
    };
}

fn writer(ctx: &DaemonCtx, caller: &Caller) -> String {
    match caller {
        Caller::Peer { name, .. } => name.clone(),
        _ => ctx.name().to_string(),
    }
}

/// `loopsy_context_set`
pub async fn set(ctx: &DaemonCtx, caller: &Caller, a: SetArgs) -> CallToolResult {
    let a = routed_or_return!(ctx, caller, "loopsy_context_set", a);
    match ctx
        .context()
        .set(&a.key, a.value, a.ttl_s, &writer(ctx, caller))
        .await
    {
        Ok(e) => success(format!("set {}", e.key), &e),
        Err(e) => err(e),
    }
}

/// `loopsy_context_get`
pub async fn get(ctx: &DaemonCtx, caller: &Caller, a: KeyArgs) -> CallToolResult {
    let a = routed_or_return!(ctx, caller, "loopsy_context_get", a);
    match ctx.context().get(&a.key).await {
        Ok(Some(e)) => success(
            e.value
                .as_str()
                .map_or_else(|| e.value.to_string(), str::to_string),
            &GetOut {
                found: true,
                entry: Some(e),
            },
        ),
        Ok(None) => success(
            format!("{} is not set", a.key),
            &GetOut {
                found: false,
                entry: None,
            },
        ),
        Err(e) => err(e),
    }
}

/// `loopsy_context_list`
pub async fn list(ctx: &DaemonCtx, caller: &Caller, a: ListArgs) -> CallToolResult {
    let a = routed_or_return!(ctx, caller, "loopsy_context_list", a);
    match ctx
        .context()
        .list(
            a.prefix.as_deref().unwrap_or(""),
            a.limit.unwrap_or(100),
            a.cursor,
        )
        .await
    {
        Ok(p) => {
            let p: Page = p;
            let text = p
                .entries
                .iter()
                .map(|e| e.key.clone())
                .collect::<Vec<_>>()
                .join("\n");
            success(
                if text.is_empty() {
                    "no keys".into()
                } else {
                    text
                },
                &p,
            )
        }
        Err(e) => err(e),
    }
}

/// `loopsy_context_delete`
pub async fn delete(ctx: &DaemonCtx, caller: &Caller, a: KeyArgs) -> CallToolResult {
    let a = routed_or_return!(ctx, caller, "loopsy_context_delete", a);
    match ctx.context().delete(&a.key).await {
        Ok(deleted) => success(
            if deleted {
                format!("deleted {}", a.key)
            } else {
                format!("{} was not set", a.key)
            },
            &DeleteOut { deleted },
        ),
        Err(e) => err(e),
    }
}
