//! `loopsy_status`: this node at a glance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{DaemonCtx, ToolError, tool_error::ErrorCode};

/// `loopsy_status` takes no arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {}

/// This node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StatusOut {
    /// Friendly name (unique in the mesh).
    pub name: String,
    /// libp2p PeerId: the machine's identity.
    pub peer_id: String,
    /// Daemon version.
    pub version: String,
    /// Control-socket protocol version.
    pub control_protocol: u32,
    /// Daemon process id.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Unix time the daemon started.
    pub started_at: u64,
    /// Where the mesh listens, as multiaddrs.
    pub listen_addrs: Vec<String>,
    /// The Streamable HTTP MCP endpoint, when enabled.
    pub http_url: Option<String>,
    /// The data dir.
    pub data_dir: String,
    /// The message store.
    pub messages: MessageCounts,
    /// The phone relay link.
    pub relay: RelayBrief,
    /// Reachability and mesh relay nodes.
    pub mesh: MeshBrief,
}

/// Beyond the LAN: reachability and relay nodes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MeshBrief {
    /// `public`, `private` or `unknown` (AutoNAT, asked of relay nodes).
    pub nat: String,
    /// This node serves as a circuit relay for trusted peers (`relay.serve`).
    pub relay_serving: bool,
    /// Reservations and circuits refused to untrusted peers (when serving).
    pub relay_refused: u64,
    /// Relay nodes known here and this node's reservation on each.
    pub relays: Vec<loopsy_mesh::node::RelayView>,
    /// Peers disconnected for subscribing to another machine's inbox topic (trying to read
    /// mail that is not theirs).
    pub inbox_snoops: u64,
    /// Gossip messages dropped because this daemon's message layer was behind (their senders
    /// send them again; nothing is lost).
    pub gossip_overflow: u64,
    /// Introductions and removals from members refused here (over a limit, without the
    /// authority, or badly signed).
    pub members_refused: u64,
    /// Context changes received that this replica does not show: by a peer without
    /// `context` here, or breaking the rules the tools apply (key, value size, time).
    pub context_refused: u64,
    /// Strangers' mDNS records dropped because the map of them (256) was full.
    pub mdns_evicted: u64,
    /// Hole punching (DCUtR) since start: relayed connections upgraded to direct here, and
    /// attempts that failed. Absent when `relay.hole_punching` is off.
    pub hole_punches: Option<loopsy_mesh::node::HolePunches>,
}

/// The phone relay link in brief.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RelayBrief {
    /// `unconfigured`, `connecting`, `connected` or `offline`.
    pub state: String,
    /// The relay's URL, when one is configured.
    pub url: Option<String>,
    /// Phone connections open now.
    pub phones_connected: usize,
    /// Why the link is down, when it is.
    pub last_error: Option<String>,
}

/// How many messages wait where.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct MessageCounts {
    /// Sent, not yet acknowledged by their recipients (retried until they are).
    pub outbox: usize,
    /// In the inbox.
    pub inbox: usize,
    /// In the inbox and not yet acknowledged as read.
    pub unread: usize,
}

/// Gather the status.
pub async fn status(ctx: &DaemonCtx) -> Result<StatusOut, ToolError> {
    let info = ctx
        .node()
        .info()
        .await
        .map_err(|e| ToolError::new(ErrorCode::Unavailable, e.to_string()))?;
    let messages = ctx
        .messages()
        .counts()
        .await
        .map(|(outbox, inbox, unread)| MessageCounts {
            outbox,
            inbox,
            unread,
        })
        .unwrap_or_default();
    Ok(StatusOut {
        name: ctx.name().to_string(),
        peer_id: info.peer_id.to_string(),
        version: loopsy_mesh::VERSION.to_string(),
        control_protocol: crate::control::PROTOCOL,
        pid: std::process::id(),
        uptime_s: ctx.uptime_s(),
        started_at: ctx.started_unix(),
        listen_addrs: info.listen_addrs.iter().map(|a| a.to_string()).collect(),
        http_url: ctx.http_addr().map(|a| format!("http://{a}/mcp")),
        data_dir: ctx.home().root().display().to_string(),
        messages,
        mesh: MeshBrief {
            nat: info.nat.clone(),
            relay_serving: info.relay_serving,
            relay_refused: info.relay_refused,
            relays: info.relays.clone(),
            inbox_snoops: info.inbox_snoops,
            gossip_overflow: info.gossip_overflow,
            members_refused: info.members_refused,
            context_refused: ctx.context().refused(),
            mdns_evicted: info.mdns_evicted,
            hole_punches: info.hole_punches,
        },
        relay: ctx
            .phones()
            .map(|h| {
                let l = h.status();
                RelayBrief {
                    state: l.state,
                    url: l.url,
                    phones_connected: l.channels,
                    last_error: l.last_error,
                }
            })
            .unwrap_or_default(),
    })
}

/// One line for people.
pub fn summary(s: &StatusOut) -> String {
    format!(
        "{} ({}) loopsy {} up {}s, listening on {}",
        s.name,
        s.peer_id,
        s.version,
        s.uptime_s,
        s.listen_addrs.join(", ")
    )
}
