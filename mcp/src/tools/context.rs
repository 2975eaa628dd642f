//! The context tools: set, get, list and delete keys in the context document here, or on a
//! `peer` (which needs the `context` capability there).

use loopsy_mesh::context::{ContextError, Entry, Lag, Page};
use loopsy_mesh::trust::Capability;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::local_or_return;
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
    /// The replica's document heads when it was read.
    #[serde(default)]
    pub heads: Vec<String>,
    /// With `peer`: how that replica differs from the one here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<PeerSync>,
}

/// A peer replica's sync lag, seen from here.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PeerSync {
    /// The peer read.
    pub peer: String,
    /// Heads compared.
    #[serde(flatten)]
    pub lag: Lag,
    /// Milliseconds since a sync session with it last completed (absent: none since start).
    pub last_sync_ms_ago: Option<u64>,
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

fn writer(ctx: &DaemonCtx, caller: &Caller) -> String {
    match caller {
        Caller::Peer { name, .. } => name.clone(),
        _ => ctx.name().to_string(),
    }
}

/// `loopsy_context_set`
pub async fn set(ctx: &DaemonCtx, caller: &Caller, a: SetArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_context_set", a, Capability::Context);
    match ctx
        .context()
        .set(&a.key, a.value, a.ttl_s, &writer(ctx, caller))
        .await
    {
        Ok(e) => success(format!("set {}", e.key), &e),
        Err(e) => err(e),
    }
}

fn get_text(key: &str, e: Option<&Entry>) -> String {
    match e {
        Some(e) => e
            .value
            .as_str()
            .map_or_else(|| e.value.to_string(), str::to_string),
        None => format!("{key} is not set"),
    }
}

/// `loopsy_context_get`; with `peer`, that peer's replica and how far it lags this one.
pub async fn get(ctx: &DaemonCtx, caller: &Caller, mut a: KeyArgs) -> CallToolResult {
    match super::target(ctx, caller, a.peer.as_deref()) {
        Err(e) => return e.into_result(),
        Ok(super::Target::Remote(p)) => {
            a.peer = None;
            return peer_get(ctx, &p, &a).await;
        }
        Ok(super::Target::Local) => {}
    }
    if let Err(e) = super::require(ctx, caller, Capability::Context).await {
        return e.into_result();
    }
    let heads = match ctx.context().heads().await {
        Ok(h) => h,
        Err(e) => return err(e),
    };
    match ctx.context().get(&a.key).await {
        Ok(entry) => success(
            get_text(&a.key, entry.as_ref()),
            &GetOut {
                found: entry.is_some(),
                entry,
                heads,
                sync: None,
            },
        ),
        Err(e) => err(e),
    }
}

async fn peer_get(ctx: &DaemonCtx, peer: &str, a: &KeyArgs) -> CallToolResult {
    let r = super::forward(ctx, peer, "loopsy_context_get", a).await;
    if r.is_error == Some(true) {
        return r;
    }
    let Some(mut out) = r
        .structured_content
        .as_ref()
        .and_then(|v| serde_json::from_value::<GetOut>(v.clone()).ok())
    else {
        return r;
    };
    let lag = match ctx.context().lag(out.heads.clone()).await {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let peers = ctx.node().peers().await.unwrap_or_default();
    let view = peers.iter().find(|p| p.name == peer || p.peer_id == peer);
    let last = view.and_then(|v| ctx.context().last_synced(&v.peer_id));
    let name = view.map_or_else(|| peer.to_string(), |v| v.name.clone());
    let state = if lag.in_sync {
        "in sync".to_string()
    } else {
        format!(
            "lags: {} change(s) here not there, {} head(s) there not here",
            lag.changes_they_lack, lag.heads_we_lack
        )
    };
    let text = format!(
        "{}\n(replica on {name}: {state})",
        get_text(&a.key, out.entry.as_ref())
    );
    out.sync = Some(PeerSync {
        peer: name,
        lag,
        last_sync_ms_ago: last.map(|t| now.saturating_sub(t)),
    });
    success(text, &out)
}

/// `loopsy_context_list`
pub async fn list(ctx: &DaemonCtx, caller: &Caller, a: ListArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_context_list", a, Capability::Context);
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
    let a = local_or_return!(ctx, caller, "loopsy_context_delete", a, Capability::Context);
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

/// `loopsy_broadcast_context` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastArgs {
    /// The key.
    pub key: String,
    /// The value: a string or any JSON.
    pub value: serde_json::Value,
    /// Expire after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// Wait up to this many seconds for every online peer to have it (default 10, max 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 60))]
    pub wait_s: Option<u64>,
}

/// Who has a broadcast write.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BroadcastOut {
    /// The entry as written here.
    pub entry: Entry,
    /// Online peers (holding `context`) whose copy shows this write.
    pub confirmed: Vec<String>,
    /// Online peers that did not show it within wait_s.
    pub pending: Vec<String>,
    /// Trusted peers that are offline or not sharing the context (they get it on reconnect).
    pub offline: Vec<String>,
}

/// `loopsy_context_wait` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// The key.
    pub key: String,
    /// The `written_at` you last saw (0: you saw no key). Without it, waits for the next
    /// change after the call begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_change_from: Option<u64>,
    /// Give up after this many seconds (default 30, max 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 300))]
    pub timeout_s: Option<u64>,
}

/// How a wait ended.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WaitOut {
    /// True if the key changed; false on timeout.
    pub changed: bool,
    /// The key's state now.
    pub found: bool,
    /// The entry, when found.
    pub entry: Option<Entry>,
}

fn same_write(a: &Entry, b: &Entry) -> bool {
    a.written_at == b.written_at && a.written_by == b.written_by && a.value == b.value
}

/// `loopsy_broadcast_context`: write, then wait until every online peer's copy shows it.
pub async fn broadcast(ctx: &DaemonCtx, caller: &Caller, a: BroadcastArgs) -> CallToolResult {
    if let Err(e) = super::require(ctx, caller, Capability::Context).await {
        return e.into_result();
    }
    let wait = a.wait_s.unwrap_or(10);
    if wait > 60 {
        return ToolError::new(ErrorCode::InvalidArguments, "wait_s must be at most 60")
            .into_result();
    }
    let entry = match ctx
        .context()
        .set(&a.key, a.value, a.ttl_s, &writer(ctx, caller))
        .await
    {
        Ok(e) => e,
        Err(e) => return err(e),
    };
    let peers = ctx.node().peers().await.unwrap_or_default();
    let (online, offline): (Vec<_>, Vec<_>) = peers
        .into_iter()
        .partition(|p| p.online && p.caps.contains(&Capability::Context));
    let mut pending: Vec<String> = online.into_iter().map(|p| p.name).collect();
    let mut confirmed = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for name in pending {
            let args = KeyArgs {
                peer: None,
                key: a.key.clone(),
            };
            // One slow peer must not hold the call past wait_s.
            let Ok(r) = tokio::time::timeout_at(
                deadline,
                super::forward(ctx, &name, "loopsy_context_get", &args),
            )
            .await
            else {
                still.push(name);
                continue;
            };
            let theirs = r
                .structured_content
                .as_ref()
                .and_then(|v| serde_json::from_value::<GetOut>(v.clone()).ok())
                .and_then(|g| g.entry);
            if theirs.is_some_and(|t| same_write(&t, &entry)) {
                confirmed.push(name);
            } else {
                still.push(name);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let out = BroadcastOut {
        entry,
        confirmed,
        pending,
        offline: offline.into_iter().map(|p| p.name).collect(),
    };
    success(
        format!(
            "{} has it on {} peer(s); pending: {}; offline: {}",
            out.entry.key,
            out.confirmed.len(),
            if out.pending.is_empty() {
                "none".into()
            } else {
                out.pending.join(", ")
            },
            if out.offline.is_empty() {
                "none".into()
            } else {
                out.offline.join(", ")
            }
        ),
        &out,
    )
}

/// `loopsy_context_wait`: block until a key changes (no polling by the agent).
pub async fn wait(ctx: &DaemonCtx, caller: &Caller, a: WaitArgs) -> CallToolResult {
    if let Err(e) = super::require(ctx, caller, Capability::Context).await {
        return e.into_result();
    }
    let timeout = a.timeout_s.unwrap_or(30);
    if timeout > 300 {
        return ToolError::new(ErrorCode::InvalidArguments, "timeout_s must be at most 300")
            .into_result();
    }
    let mut changes = ctx.context().changes();
    let start = match ctx.context().get(&a.key).await {
        Ok(e) => e,
        Err(e) => return err(e),
    };
    let from = a.until_change_from;
    let key_of = |e: &Option<Entry>| e.as_ref().map(|e| (e.written_at, e.written_by.clone()));
    let start_key = key_of(&start);
    let differs = |now: &Option<Entry>| match from {
        // Relative to the state when the call began.
        None => key_of(now) != start_key,
        // Relative to what the caller last saw (0: the key was absent).
        Some(f) => match now {
            Some(e) => e.written_at != f,
            None => f != 0,
        },
    };
    if from.is_some() && differs(&start) {
        return success(
            format!("{} changed", a.key),
            &WaitOut {
                changed: true,
                found: start.is_some(),
                entry: start,
            },
        );
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        // Also wake once a second: an expiry changes what readers see without a document change.
        let woke = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
            changes.changed(),
        )
        .await;
        if matches!(woke, Ok(Err(_))) {
            return ToolError::new(ErrorCode::Unavailable, "the context store stopped")
                .into_result();
        }
        let now = match ctx.context().get(&a.key).await {
            Ok(e) => e,
            Err(e) => return err(e),
        };
        if differs(&now) {
            return success(
                format!("{} changed", a.key),
                &WaitOut {
                    changed: true,
                    found: now.is_some(),
                    entry: now,
                },
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return success(
                format!("{} did not change within {timeout} s", a.key),
                &WaitOut {
                    changed: false,
                    found: now.is_some(),
                    entry: now,
                },
            );
        }
    }
}

/// Export and import formats.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{key: entry}` as JSON.
    Json,
    /// automerge's binary document, base64 (loads in any automerge library).
    Automerge,
}

/// `loopsy_context_export` arguments (admin session only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportArgs {
    /// json or automerge.
    pub format: Format,
}

/// An exported document.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExportOut {
    /// The format.
    pub format: Format,
    /// JSON object (json) or base64 text (automerge).
    pub data: serde_json::Value,
    /// Keys in it.
    pub keys: usize,
}

/// `loopsy_context_import` arguments (admin session only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportArgs {
    /// json or automerge.
    pub format: Format,
    /// As `loopsy_context_export` gives it.
    pub data: serde_json::Value,
}

/// An import's result.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ImportOut {
    /// Keys present afterwards.
    pub keys: usize,
}

async fn all_entries(ctx: &DaemonCtx) -> Result<Vec<Entry>, ContextError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = ctx.context().list("", 1000, cursor).await?;
        out.extend(p.entries);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// `loopsy_context_export`
pub async fn export(ctx: &DaemonCtx, a: ExportArgs) -> CallToolResult {
    use base64::Engine;
    let entries = match all_entries(ctx).await {
        Ok(e) => e,
        Err(e) => return err(e),
    };
    let keys = entries.len();
    let data = match a.format {
        Format::Json => serde_json::Value::Object(
            entries
                .into_iter()
                .map(|e| (e.key.clone(), serde_json::to_value(&e).unwrap_or_default()))
                .collect(),
        ),
        Format::Automerge => match ctx.context().export_automerge().await {
            Ok(b) => serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            Err(e) => return err(e),
        },
    };
    success(
        format!("{keys} keys"),
        &ExportOut {
            format: a.format,
            data,
            keys,
        },
    )
}

/// `loopsy_context_import`: taken in as this machine's own writes (newer entries win; nothing is removed).
pub async fn import(ctx: &DaemonCtx, a: ImportArgs) -> CallToolResult {
    use base64::Engine;
    let bad = |m: String| ToolError::new(ErrorCode::InvalidArguments, m).into_result();
    match a.format {
        Format::Automerge => {
            let Some(text) = a.data.as_str() else {
                return bad("automerge data must be a base64 string".into());
            };
            let bytes = match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                Ok(b) => b,
                Err(e) => return bad(format!("not base64: {e}")),
            };
            if let Err(e) = ctx.context().import_automerge(bytes).await {
                return err(e);
            }
        }
        Format::Json => {
            let Some(obj) = a.data.as_object() else {
                return bad("json data must be an object of key: entry".into());
            };
            for (key, e) in obj {
                // An exported entry, or a bare value.
                let (value, by) =
                    match (e.get("value"), e.get("written_by").and_then(|b| b.as_str())) {
                        (Some(v), Some(by)) => (v.clone(), by.to_string()),
                        _ => (e.clone(), ctx.name().to_string()),
                    };
                // A TTL carries over as what is left of it; an entry already expired is skipped.
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let ttl_s = match e.get("expires_at").and_then(serde_json::Value::as_u64) {
                    None => None,
                    Some(at) if at <= now_ms => continue,
                    Some(at) => Some((at - now_ms).div_ceil(1000)),
                };
                if let Err(e) = ctx.context().set(key, value, ttl_s, &by).await {
                    return err(e);
                }
            }
        }
    }
    match all_entries(ctx).await {
        Ok(e) => success(
            format!("{} keys now", e.len()),
            &ImportOut { keys: e.len() },
        ),
        Err(e) => err(e),
    }
}
