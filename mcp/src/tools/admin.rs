//! Pairing and trust management. Served only on the CLI's admin session (`loopsy pair`,
//! `loopsy peers …`): never to agents, HTTP clients or peers, so a prompt-injected agent
//! cannot open a pairing window or change who is trusted.

use std::time::Duration;

use loopsy_mesh::PeerView;
use loopsy_mesh::trust::Capability;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node_err;
use crate::DaemonCtx;
use crate::tool_error::{ErrorCode, ToolError, success};

/// Longest pairing window.
pub const MAX_PAIR_TTL_S: u64 = 3600;

/// `loopsy_pair_open` arguments.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairOpenArgs {
    /// Seconds the code stays valid (default 300, max 3600).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// No arguments.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `loopsy_pair_with` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairWithArgs {
    /// The other machine's address as `loopsy pair` printed it (ends in /p2p/<peer id>), or
    /// just its PeerId when mDNS has seen it on the LAN.
    pub addr: String,
    /// The code `loopsy pair` shows on the other machine.
    pub code: String,
}

/// `loopsy_peer_add` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerAddArgs {
    /// A multiaddr (`/ip4/10.0.0.2/tcp/19532[/p2p/…]`) or `host:port`.
    pub addr: String,
}

/// `loopsy_peer_remove` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// Peer name or PeerId.
    pub peer: String,
    /// Only forget it on this machine (default: remove it from every member of the mesh
    /// with a signed removal that members pass on, also to those offline now).
    #[serde(default)]
    pub here_only: bool,
}

/// `loopsy_peer_rename` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameArgs {
    /// Peer name or PeerId.
    pub peer: String,
    /// The new name.
    pub name: String,
}

/// `loopsy_peer_grant` / `loopsy_peer_revoke` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapsArgs {
    /// Peer name or PeerId.
    pub peer: String,
    /// Capabilities to grant or revoke.
    pub caps: Vec<Capability>,
}

fn peer_result(r: Result<PeerView, loopsy_mesh::node::NodeError>, verb: &str) -> CallToolResult {
    match r {
        Ok(v) => success(format!("{verb} {} ({})", v.name, v.peer_id), &v),
        Err(e) => node_err(e).into_result(),
    }
}

/// Parse `host:port` or a multiaddr.
pub fn parse_addr(s: &str) -> Result<loopsy_mesh::Multiaddr, ToolError> {
    let s = s.trim();
    if s.starts_with("12D3Koo") || s.starts_with("Qm") {
        // A bare PeerId: the node looks it up among peers mDNS found on the LAN.
        return format!("/p2p/{s}").parse().map_err(|e| {
            ToolError::new(
                ErrorCode::InvalidArguments,
                format!("bad peer id {s:?}: {e}"),
            )
        });
    }
    if s.starts_with('/') {
        return s.parse().map_err(|e| {
            ToolError::new(
                ErrorCode::InvalidArguments,
                format!("bad multiaddr {s:?}: {e}"),
            )
        });
    }
    let bad = || {
        ToolError::new(
            ErrorCode::InvalidArguments,
            format!("{s:?} is neither a multiaddr nor host:port"),
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_matches(['[', ']']);
    let proto = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "ip4",
        Ok(std::net::IpAddr::V6(_)) => "ip6",
        Err(_) => "dns",
    };
    format!("/{proto}/{host}/tcp/{port}")
        .parse()
        .map_err(|_| bad())
}

/// `loopsy_pair_open`
pub async fn pair_open(ctx: &DaemonCtx, a: PairOpenArgs) -> CallToolResult {
    let ttl = a.ttl_s.unwrap_or(300);
    if ttl == 0 || ttl > MAX_PAIR_TTL_S {
        return ToolError::new(
            ErrorCode::InvalidArguments,
            format!("ttl_s must be 1..={MAX_PAIR_TTL_S}"),
        )
        .into_result();
    }
    match ctx.node().pair_open(Duration::from_secs(ttl)).await {
        Ok(t) => success(
            format!("pairing code {} (valid {} s)", t.code, t.expires_in_s),
            &t,
        ),
        Err(e) => node_err(e).into_result(),
    }
}

/// `loopsy_pair_wait`
pub async fn pair_wait(ctx: &DaemonCtx) -> CallToolResult {
    peer_result(ctx.node().pair_wait().await, "paired with")
}

/// `loopsy_pair_close`
pub async fn pair_close(ctx: &DaemonCtx) -> CallToolResult {
    ctx.node().pair_close().await;
    success(
        "pairing window closed",
        &serde_json::json!({ "closed": true }),
    )
}

/// `loopsy_pair_with`
pub async fn pair_with(ctx: &DaemonCtx, a: PairWithArgs) -> CallToolResult {
    let addr = match parse_addr(&a.addr) {
        Ok(x) => x,
        Err(e) => return e.into_result(),
    };
    peer_result(ctx.node().pair_with(addr, a.code).await, "paired with")
}

/// `loopsy_peer_add`
pub async fn peer_add(ctx: &DaemonCtx, a: PeerAddArgs) -> CallToolResult {
    let addr = match parse_addr(&a.addr) {
        Ok(x) => x,
        Err(e) => return e.into_result(),
    };
    // Which trusted peer the address names, if it says (`…/p2p/<id>`).
    let named = addr.iter().find_map(|p| match p {
        loopsy_mesh::MultiaddrProtocol::P2p(id) => Some(id),
        _ => None,
    });
    let mut connected = ctx.node().connected();
    connected.borrow_and_update();
    if let Err(e) = ctx.node().dial(addr.clone()).await {
        return node_err(e).into_result();
    }
    // Say whether it worked: wait (briefly) for the trusted peer to come online.
    let came = tokio::time::timeout(super::REACH_TIMEOUT, async {
        loop {
            if let Some(id) = named
                && ctx.node().peer_caps(id).await.is_some()
                && ctx
                    .node()
                    .peers()
                    .await
                    .is_ok_and(|v| v.iter().any(|p| p.peer_id == id.to_string() && p.online))
            {
                return Some(id);
            }
            if connected.changed().await.is_err() {
                return None;
            }
            let last = connected.borrow_and_update().1;
            if named.is_none() || last == named {
                return last;
            }
        }
    })
    .await;
    match came {
        Ok(Some(id)) => {
            let name = ctx
                .node()
                .peer_caps(id)
                .await
                .map(|(n, _)| n)
                .unwrap_or_else(|| id.to_string());
            success(
                format!("connected to {name} at {addr}"),
                &serde_json::json!({ "dialing": addr.to_string(), "connected": name }),
            )
        }
        _ => ToolError::new(
            ErrorCode::Unavailable,
            format!(
                "no trusted peer answered at {addr} within {} s (is loopsy running there and the port reachable? a machine not paired yet needs `loopsy pair {addr}`)",
                super::REACH_TIMEOUT.as_secs()
            ),
        )
        .into_result(),
    }
}

/// `loopsy_peer_remove`
pub async fn peer_remove(ctx: &DaemonCtx, a: RemoveArgs) -> CallToolResult {
    let verb = if a.here_only {
        "removed here only:"
    } else {
        "removed from the mesh:"
    };
    peer_result(ctx.node().remove(&a.peer, a.here_only).await, verb)
}

/// `loopsy_peer_rename`
pub async fn peer_rename(ctx: &DaemonCtx, a: RenameArgs) -> CallToolResult {
    peer_result(ctx.node().rename(&a.peer, &a.name).await, "renamed")
}

/// `loopsy_peer_grant` (`grant = true`) / `loopsy_peer_revoke`
pub async fn peer_caps(ctx: &DaemonCtx, a: CapsArgs, grant: bool) -> CallToolResult {
    let verb = if grant { "granted to" } else { "revoked from" };
    peer_result(ctx.node().set_caps(&a.peer, a.caps, grant).await, verb)
}
