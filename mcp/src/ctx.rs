//! What every tool can reach: the daemon's identity, its parts' handles, and who is calling.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use loopsy_mesh::exec::JobManager;
use loopsy_mesh::files::PathPolicy;
use loopsy_mesh::trust::Capability;
use loopsy_mesh::{ApiToken, Home, NodeHandle};
pub use tokio_util::sync::CancellationToken;

use crate::AuditLog;

/// Who made a tool call, for policy and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An agent on this machine through the control socket (`loopsy mcp`).
    Local,
    /// The `loopsy` CLI's admin session: the agent tools plus pairing and trust management.
    Admin,
    /// A client of the Streamable HTTP endpoint on 127.0.0.1.
    Http,
    /// A trusted peer running a tool here under this machine's policy.
    Peer {
        /// Its PeerId.
        id: String,
        /// Its name here.
        name: String,
        /// What it may do here.
        caps: Vec<Capability>,
    },
    /// A paired phone, by phone id.
    Phone(String),
}

impl Caller {
    /// Short form for logs: `local`, `admin`, `http`, `peer:<name>`, `phone:<id>`.
    pub fn label(&self) -> String {
        match self {
            Caller::Local => "local".into(),
            Caller::Admin => "admin".into(),
            Caller::Http => "http".into(),
            Caller::Peer { name, .. } => format!("peer:{name}"),
            Caller::Phone(p) => format!("phone:{p}"),
        }
    }

    /// The owner key for jobs and other per-caller state: everyone on this machine is
    /// `local`; each peer is itself.
    pub fn owner(&self) -> String {
        match self {
            Caller::Local | Caller::Admin | Caller::Http => "local".into(),
            Caller::Peer { id, .. } => format!("peer:{id}"),
            Caller::Phone(p) => format!("phone:{p}"),
        }
    }

    /// Whether the caller may use `cap` (callers on this machine may use everything).
    pub fn may(&self, cap: Capability) -> bool {
        match self {
            Caller::Peer { caps, .. } => caps.contains(&cap),
            _ => true,
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
    jobs: JobManager,
    files: PathPolicy,
    audit: AuditLog,
    token: ApiToken,
    sessions: loopsy_term::Manager,
    context: loopsy_mesh::context::ContextHandle,
    messages: loopsy_mesh::msg::MsgHandle,
    tasks: loopsy_mesh::task::TaskHandle,
    started: Instant,
    started_unix: u64,
    http_addr: OnceLock<SocketAddr>,
    phones: OnceLock<crate::phone::PhoneHub>,
    shutdown: CancellationToken,
}

impl DaemonCtx {
    /// Assemble the context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        home: Home,
        node: NodeHandle,
        jobs: JobManager,
        files: PathPolicy,
        audit: AuditLog,
        token: ApiToken,
        sessions: loopsy_term::Manager,
        context: loopsy_mesh::context::ContextHandle,
        messages: loopsy_mesh::msg::MsgHandle,
        tasks: loopsy_mesh::task::TaskHandle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                home,
                node,
                jobs,
                files,
                audit,
                token,
                sessions,
                context,
                messages,
                tasks,
                started: Instant::now(),
                started_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                http_addr: OnceLock::new(),
                phones: OnceLock::new(),
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
    /// The job table.
    pub fn jobs(&self) -> &JobManager {
        &self.inner.jobs
    }
    /// The file path policy.
    pub fn files(&self) -> &PathPolicy {
        &self.inner.files
    }
    /// Is `who` this node (by name or PeerId)?
    pub fn is_me(&self, who: &str) -> bool {
        who == self.inner.name || who == self.inner.node.peer_id().to_string()
    }
    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }
    /// The local API token (HTTP bearer).
    pub fn token(&self) -> &ApiToken {
        &self.inner.token
    }
    /// This machine's terminal sessions.
    pub fn sessions(&self) -> &loopsy_term::Manager {
        &self.inner.sessions
    }
    /// The replicated context store.
    pub fn context(&self) -> &loopsy_mesh::context::ContextHandle {
        &self.inner.context
    }
    /// The message store.
    pub fn messages(&self) -> &loopsy_mesh::msg::MsgHandle {
        &self.inner.messages
    }
    /// The task store.
    pub fn tasks(&self) -> &loopsy_mesh::task::TaskHandle {
        &self.inner.tasks
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
    /// The phone relay side, once the daemon has set it up.
    pub fn phones(&self) -> Option<&crate::phone::PhoneHub> {
        self.inner.phones.get()
    }
    /// Set the phone relay side (once).
    pub fn set_phones(&self, hub: crate::phone::PhoneHub) {
        let _ = self.inner.phones.set(hub);
    }
    /// Cancelled when the daemon begins to shut down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
