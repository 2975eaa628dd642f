//! MCP progress notifications for long tools (transfers, jobs): sent only when the client
//! asked for them with a progress token.

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RequestContext, RoleServer};

/// Where a tool reports progress.
#[derive(Clone)]
pub struct Reporter {
    peer: Peer<RoleServer>,
    token: ProgressToken,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl Reporter {
    /// A reporter for this request, if the client sent a progress token.
    pub fn from_ctx(ctx: &RequestContext<RoleServer>) -> Option<Self> {
        ctx.meta.get_progress_token().map(|token| Self {
            peer: ctx.peer.clone(),
            token,
        })
    }

    /// Send one notification (best effort: a gone client is not an error).
    pub async fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let mut p = ProgressNotificationParam::new(self.token.clone(), progress);
        if let Some(t) = total {
            p = p.with_total(t);
        }
        if let Some(m) = message {
            p = p.with_message(m);
        }
        let _ = self.peer.notify_progress(p).await;
    }
}
