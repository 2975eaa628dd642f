//! What every tool can reach: the daemon's identity, its parts' handles, and who is calling.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use loopsy_mesh::{ApiToken, Home, NodeHandle};
pub use tokio_util::sync::CancellationToken;

use crate::AuditLog;

/// Who made a tool call, for policy and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A process on this machine through the control socket (`loopsy mcp`, the CLI).
    Local,
    /// A client of the Streamable HTTP endpoint on 127.0.0.1.
    Http,
    /// A trusted peer, by PeerId.
    Peer(String),
    /// A paired phone, by phone id.
    Phone(String),
}

impl Caller {
    /// Short form for logs: `local`, `http`, `peer:<id>`, `phone:<id>`.
    pub fn label(&self) -> String {
        match self {
            Caller::Local => "local".into(),
            Caller::Http => "http".into(),
            Caller::Peer(p) => format!("peer:{p}"),
            Caller::Phone(p) => format!("phone:{p}"),
        }
    }
}

/// Shared daemon state, cheap to clone (all handles).
#[derive(Clone, Debug)]
pub struct DaemonCtx {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    home: Home,
    node: NodeHandle,
    audit: AuditLog,
    token: ApiToken,
    started: Instant,
    started_unix: u64,
    http_addr: OnceLock<SocketAddr>,
    shutdown: CancellationToken,
}

impl DaemonCtx {
    /// Assemble the context.
    pub fn new(
        name: String,
        home: Home,
        node: NodeHandle,
        audit: AuditLog,
        token: ApiToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                home,
                node,
                audit,
                token,
                started: Instant::now(),
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                http_addr: OnceLock::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// This node's friendly name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// The data dir.
    pub fn home(&self) -> &Home {
        &self.inner.home
    }
    /// The mesh node.
    pub fn node(&self) -> &NodeHandle {
        &self.inner.node
    }
    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }
    /// The local API token (HTTP bearer).
    pub fn token(&self) -> &ApiToken {
        &self.inner.token
    }
    /// Seconds since the daemon started.
    pub fn uptime_s(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }
    /// Unix time the daemon started.
    pub fn started_unix(&self) -> u64 {
        self.inner.started_unix
    }
    /// Where the HTTP endpoint listens, once it does.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.inner.http_addr.get().copied()
    }
    /// Record the HTTP endpoint's address (once).
    pub fn set_http_addr(&self, addr: SocketAddr) {
        let _ = self.inner.http_addr.set(addr);
    }
    /// Cancelled when the daemon begins to shut down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
