//! `loopsy_list_peers`, `loopsy_peer_status`: who is in the mesh and how each is reached.

use loopsy_mesh::PeerView;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::node_err;
use crate::DaemonCtx;
use crate::tool_error::{ErrorCode, ToolError, success};

/// `loopsy_list_peers` takes no arguments.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPeersArgs {}

/// Every trusted peer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PeersOut {
    /// The peers, by name.
    pub peers: Vec<PeerView>,
}

/// `loopsy_peer_status` arguments.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerStatusArgs {
    /// Peer name or PeerId.
    pub peer: String,
}

/// List peers.
pub async fn list(ctx: &DaemonCtx) -> CallToolResult {
    match ctx.node().peers().await {
        Ok(peers) => {
            let online = peers.iter().filter(|p| p.online).count();
            let summary = format!("{} peers, {online} online", peers.len());
            success(summary, &PeersOut { peers })
        }
        Err(e) => node_err(e).into_result(),
    }
}

/// One peer.
pub async fn status(ctx: &DaemonCtx, a: PeerStatusArgs) -> CallToolResult {
    match ctx.node().peers().await {
        Ok(peers) => match peers
            .into_iter()
            .find(|p| p.name == a.peer || p.peer_id == a.peer)
        {
            Some(p) => {
                let state = if p.online { "online" } else { "offline" };
                success(format!("{} is {state}", p.name), &p)
            }
            None => ToolError::new(
                ErrorCode::NotFound,
                format!("no trusted peer {:?}; loopsy_list_peers shows them", a.peer),
            )
            .into_result(),
        },
        Err(e) => node_err(e).into_result(),
    }
}
