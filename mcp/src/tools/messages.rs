//! The messaging tools: send (durable, retried until the recipient acknowledges), read the
//! inbox, block until mail arrives, acknowledge (a read receipt to the sender) and check what
//! became of sent messages. Local only: peers reach this inbox by gossip on its inbox topic
//! (`msg::deliver`).

use std::collections::HashMap;
use std::time::Duration;

use loopsy_mesh::PeerView;
use loopsy_mesh::msg::{
    InboxMessage, InboxQuery, MsgError, MsgType, Outgoing, SentStatus, Status, envelope,
};
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tool_error::{ErrorCode, ToolError, success};
use crate::{Caller, DaemonCtx};

/// `loopsy_send_message` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    /// A peer's name or PeerId, `*` for every trusted peer, or `group:NAME` for the peers in
    /// a group from `messages.groups`.
    pub to: String,
    /// The text (JSON is fine; loopsy never interprets it).
    pub body: String,
    /// chat (default), request, response, broadcast (default for `*`), or task.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<MsgType>,
    /// The id of the message this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A conversation id; the recipient can wait for this thread only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Seconds to keep retrying (default 604800, 7 days; at most 2592000, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = loopsy_mesh::msg::envelope::MAX_TTL_S))]
    pub ttl_s: Option<u64>,
    /// Wait up to this many seconds for the delivery ack from online recipients (default 5,
    /// max 60; 0: return once queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 60))]
    pub wait_s: Option<u64>,
}

/// A sent message's state with one recipient, with the recipient's name here.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// Recipient name.
    pub to: String,
    /// The state.
    #[serde(flatten)]
    pub status: SentStatus,
}

/// What `loopsy_send_message` did.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SendOut {
    /// The message id (for `reply_to`, `loopsy_check_ack`).
    pub id: String,
    /// One per recipient: pending (queued, retried until acked), delivered, read…
    pub recipients: Vec<Receipt>,
}

/// `loopsy_check_inbox` arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxArgs {
    /// Only messages not yet acknowledged (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_only: Option<bool>,
    /// Only from this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only in this thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Only messages after this id (to page through: the last id of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many, oldest first (default 50, max 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The inbox.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct InboxOut {
    /// Messages, oldest first.
    pub messages: Vec<InboxMessage>,
    /// Messages refused since the daemon started, by reason (bad_signature, malformed,
    /// oversize, not_permitted, untrusted, misaddressed, bad_timestamp).
    pub dropped: std::collections::BTreeMap<String, u64>,
}

/// `loopsy_wait_for_message` arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    /// Only from this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only in this thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Give up after this many seconds (default 60, max 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 300))]
    pub timeout_s: Option<u64>,
}

/// How a wait ended.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WaitOut {
    /// The oldest unread matching message; absent on timeout.
    pub message: Option<InboxMessage>,
}

/// `loopsy_ack_message` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AckArgs {
    /// The message id.
    pub id: String,
    /// Its sender (name or PeerId): only needed if two peers sent messages with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// `loopsy_check_ack` arguments: a message id, a peer, or both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckAckArgs {
    /// A message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A recipient (name or PeerId): its last 100 messages. With neither `id` nor `peer`:
    /// the last 100 messages sent to anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Sent messages' states.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CheckAckOut {
    /// Per message and recipient, oldest first (for a peer: the last 100).
    pub messages: Vec<Receipt>,
    /// How many of all the matching messages are in each state.
    pub counts: std::collections::BTreeMap<String, usize>,
}

fn err(e: MsgError) -> CallToolResult {
    let code = match &e {
        MsgError::Invalid(_) => ErrorCode::InvalidArguments,
        MsgError::OutboxFull(_) => ErrorCode::Unavailable,
        MsgError::NotFound(_) => ErrorCode::NotFound,
        MsgError::Stopped => ErrorCode::Unavailable,
        MsgError::Store(_) => ErrorCode::Internal,
    };
    ToolError::new(code, e.to_string()).into_result()
}

fn local_only(caller: &Caller) -> Result<(), CallToolResult> {
    if matches!(caller, Caller::Peer { .. }) {
        return Err(ToolError::new(
            ErrorCode::PermissionDenied,
            "messages reach this machine's inbox through loopsy_send_message on yours",
        )
        .into_result());
    }
    Ok(())
}

/// The trusted peers, and PeerId → name.
async fn directory(ctx: &DaemonCtx) -> (Vec<PeerView>, HashMap<String, String>) {
    let peers = ctx.node().peers().await.unwrap_or_default();
    let names = peers
        .iter()
        .map(|p| (p.peer_id.clone(), p.name.clone()))
        .collect();
    (peers, names)
}

fn find<'a>(peers: &'a [PeerView], who: &str) -> Result<&'a PeerView, CallToolResult> {
    peers
        .iter()
        .find(|p| p.name == who || p.peer_id == who)
        .ok_or_else(|| {
            let known: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
            ToolError::new(
                ErrorCode::NotFound,
                format!(
                    "no trusted peer {who:?}; known: {} (pair first with `loopsy pair`)",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            )
            .into_result()
        })
}

fn view(item: loopsy_mesh::msg::InboxItem, names: &HashMap<String, String>) -> InboxMessage {
    InboxMessage {
        from_name: names
            .get(&item.env.from)
            .cloned()
            .unwrap_or_else(|| item.env.from.clone()),
        read: item.read_at.is_some(),
        received_at: item.received_at,
        env: item.env,
    }
}

fn receipts(list: Vec<SentStatus>, names: &HashMap<String, String>) -> Vec<Receipt> {
    list.into_iter()
        .map(|s| Receipt {
            to: names
                .get(&s.peer)
                .cloned()
                .unwrap_or_else(|| s.peer.clone()),
            status: s,
        })
        .collect()
}

/// `loopsy_send_message`
pub async fn send(ctx: &DaemonCtx, caller: &Caller, a: SendArgs) -> CallToolResult {
    if let Err(r) = local_only(caller) {
        return r;
    }
    let wait = a.wait_s.unwrap_or(5);
    if wait > 60 {
        return ToolError::new(ErrorCode::InvalidArguments, "wait_s must be at most 60")
            .into_result();
    }
    let ttl_s = a.ttl_s.unwrap_or(envelope::DEFAULT_TTL_S);
    if ttl_s == 0 || ttl_s > envelope::MAX_TTL_S {
        return ToolError::new(
            ErrorCode::InvalidArguments,
            format!("ttl_s must be between 1 and {}", envelope::MAX_TTL_S),
        )
        .into_result();
    }
    let (peers, names) = directory(ctx).await;
    let group = a.to.trim().strip_prefix("group:");
    let all = matches!(a.to.trim(), "*" | "all") || group.is_some();
    let targets: Vec<&PeerView> = if let Some(g) = group {
        let Some(members) = ctx.messages().config().groups.get(g) else {
            let known: Vec<&str> = ctx
                .messages()
                .config()
                .groups
                .keys()
                .map(String::as_str)
                .collect();
            return ToolError::new(
                ErrorCode::NotFound,
                format!(
                    "no group {g:?} in messages.groups; known: {}",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            )
            .into_result();
        };
        let mut v = Vec::new();
        for m in members {
            match find(&peers, m) {
                Ok(p) => v.push(p),
                Err(r) => return r,
            }
        }
        v
    } else if all {
        peers.iter().collect()
    } else {
        match find(&peers, a.to.trim()) {
            Ok(p) => vec![p],
            Err(r) => return r,
        }
    };
    if targets.is_empty() {
        return ToolError::new(
            ErrorCode::NotFound,
            "no trusted peers to broadcast to (pair first with `loopsy pair`)",
        )
        .into_result();
    }
    let to = targets
        .iter()
        .filter_map(|p| p.peer_id.parse().ok())
        .collect();
    let online = targets.iter().any(|p| p.online);
    let kind = a.kind.unwrap_or(if all {
        MsgType::Broadcast
    } else {
        MsgType::Chat
    });
    let env = match ctx
        .messages()
        .send(Outgoing {
            to,
            all,
            kind,
            body: a.body,
            ttl_s,
            reply_to: a.reply_to,
            thread: a.thread,
        })
        .await
    {
        Ok(e) => e,
        Err(e) => return err(e),
    };
    // Wait for the delivery acks from online recipients (offline ones get it on reconnect).
    let mut changes = ctx.messages().sent_changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(if online { wait } else { 0 });
    let list = loop {
        let list = match ctx.messages().status(Some(env.id.clone()), None).await {
            Ok(l) => l,
            Err(e) => return err(e),
        };
        let waiting = list.iter().any(|s| {
            s.status == Status::Pending && targets.iter().any(|p| p.online && p.peer_id == s.peer)
        });
        if !waiting
            || tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
        {
            break list;
        }
    };
    let recipients = receipts(list, &names);
    let summary = recipients
        .iter()
        .map(|r| format!("{}: {}", r.to, status_word(r.status.status)))
        .collect::<Vec<_>>()
        .join(", ");
    success(
        format!("sent {} ({summary})", env.id),
        &SendOut {
            id: env.id,
            recipients,
        },
    )
}

fn status_key(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Delivered => "delivered",
        Status::Read => "read",
        Status::Expired => "expired",
        Status::Rejected => "rejected",
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "queued (retried until acknowledged)",
        Status::Delivered => "delivered",
        Status::Read => "read",
        Status::Expired => "expired",
        Status::Rejected => "rejected",
    }
}

fn resolve_from(peers: &[PeerView], from: Option<&str>) -> Result<Option<String>, CallToolResult> {
    match from {
        None => Ok(None),
        Some(f) => find(peers, f).map(|p| Some(p.peer_id.clone())),
    }
}

/// `loopsy_check_inbox`
pub async fn inbox(ctx: &DaemonCtx, caller: &Caller, a: InboxArgs) -> CallToolResult {
    if let Err(r) = local_only(caller) {
        return r;
    }
    let (peers, names) = directory(ctx).await;
    let from = match resolve_from(&peers, a.from.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let q = InboxQuery {
        unread_only: a.unread_only.unwrap_or(true),
        from,
        thread: a.thread,
        after: a.after,
        limit: a.limit.unwrap_or(50).clamp(1, 1000),
    };
    let items = match ctx.messages().inbox(q).await {
        Ok(i) => i,
        Err(e) => return err(e),
    };
    let messages: Vec<InboxMessage> = items.into_iter().map(|i| view(i, &names)).collect();
    let text = if messages.is_empty() {
        "no messages".to_string()
    } else {
        messages
            .iter()
            .map(|m| {
                format!(
                    "[{}] {} from {}: {}",
                    serde_json::to_value(m.env.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    m.env.id,
                    m.from_name,
                    m.env.body
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    success(
        text,
        &InboxOut {
            messages,
            dropped: ctx.messages().dropped(),
        },
    )
}

/// `loopsy_wait_for_message`: the oldest unread matching message, waiting for one to arrive.
pub async fn wait(ctx: &DaemonCtx, caller: &Caller, a: WaitArgs) -> CallToolResult {
    if let Err(r) = local_only(caller) {
        return r;
    }
    let timeout = a.timeout_s.unwrap_or(60);
    if timeout > 300 {
        return ToolError::new(ErrorCode::InvalidArguments, "timeout_s must be at most 300")
            .into_result();
    }
    let (peers, names) = directory(ctx).await;
    let from = match resolve_from(&peers, a.from.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut changes = ctx.messages().inbox_changes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let q = InboxQuery {
            unread_only: true,
            from: from.clone(),
            thread: a.thread.clone(),
            after: None,
            limit: 1,
        };
        match ctx.messages().inbox(q).await {
            Ok(mut v) if !v.is_empty() => {
                let m = view(v.remove(0), &names);
                return success(
                    format!("{} from {}: {}", m.env.id, m.from_name, m.env.body),
                    &WaitOut { message: Some(m) },
                );
            }
            Ok(_) => {}
            Err(e) => return err(e),
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return err(MsgError::Stopped),
            Err(_) => {
                return success(
                    format!("no message within {timeout} s"),
                    &WaitOut { message: None },
                );
            }
        }
    }
}

/// `loopsy_ack_message`: mark read here; the sender gets a read receipt.
pub async fn ack(ctx: &DaemonCtx, caller: &Caller, a: AckArgs) -> CallToolResult {
    if let Err(r) = local_only(caller) {
        return r;
    }
    let (peers, names) = directory(ctx).await;
    let from = match resolve_from(&peers, a.from.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match ctx.messages().ack(&a.id, from).await {
        Ok(item) => {
            let m = view(item, &names);
            success(
                format!(
                    "{} marked read; {} gets a read receipt",
                    m.env.id, m.from_name
                ),
                &m,
            )
        }
        Err(e) => err(e),
    }
}

/// `loopsy_check_ack`: delivery and read state of sent messages.
pub async fn check_ack(ctx: &DaemonCtx, caller: &Caller, a: CheckAckArgs) -> CallToolResult {
    if let Err(r) = local_only(caller) {
        return r;
    }
    let (peers, names) = directory(ctx).await;
    let peer = match a.peer.as_deref() {
        None => None,
        Some(p) => match find(&peers, p) {
            Ok(v) => Some(v.peer_id.clone()),
            Err(r) => return r,
        },
    };
    let mut list = match ctx.messages().status(a.id.clone(), peer).await {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let mut counts = std::collections::BTreeMap::new();
    for s in &list {
        *counts.entry(status_key(s.status).to_string()).or_insert(0) += 1;
    }
    if a.id.is_none() && list.len() > 100 {
        list.drain(..list.len() - 100);
    }
    if list.is_empty() && a.id.is_some() {
        return ToolError::new(ErrorCode::NotFound, "no such sent message").into_result();
    }
    let messages = receipts(list, &names);
    let text = messages
        .iter()
        .map(|r| {
            format!(
                "{} → {}: {}",
                r.status.id,
                r.to,
                status_word(r.status.status)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    success(text, &CheckAckOut { messages, counts })
}
