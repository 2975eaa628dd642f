//! The libp2p node: one task owns the Swarm and the trust list; everyone else holds a
//! cloneable [`NodeHandle`]. Inbound tool calls from trusted peers come out as [`InboundCall`]s.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::pair::PairError;
use crate::trust::{Capability, Trust, TrustError};
use crate::wire::{RpcRequest, RpcResponse};
use crate::{Identity, behaviour};

/// Commands queued to the node task before callers wait.
const COMMAND_CAPACITY: usize = 256;
/// Inbound calls queued before new ones are refused as unavailable.
pub const INBOUND_CAPACITY: usize = 256;
/// How long start-up waits for the first listen address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// How the node listens and what it knows.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's friendly name.
    pub name: String,
    /// TCP port (0 = any).
    pub port: u16,
    /// Loopback only.
    pub local_only: bool,
    /// LAN discovery.
    pub mdns: bool,
    /// Where the trust list lives.
    pub trust_path: PathBuf,
    /// Serve as a circuit relay for trusted peers, with these limits.
    pub relay_serve: Option<behaviour::RelayServe>,
    /// Relay nodes to reserve on when not publicly reachable (`relay.nodes`).
    pub relay_nodes: Vec<(PeerId, Multiaddr)>,
    /// Upgrade relayed connections by hole punching (DCUtR) (`relay.hole_punching`).
    pub hole_punching: bool,
    /// How far other members' introductions reach (`[trust]`).
    pub trust: crate::config::TrustConfig,
}

/// A snapshot of the node for status tools.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// This machine's PeerId.
    pub peer_id: PeerId,
    /// Where the mesh listens, as multiaddrs ending in `/p2p/<peer id>` (relayed ones too).
    pub listen_addrs: Vec<Multiaddr>,
    /// Reachability from outside, as AutoNAT last judged it: `public`, `private` or
    /// `unknown`.
    pub nat: String,
    /// Serving as a circuit relay for trusted peers.
    pub relay_serving: bool,
    /// Reservations or circuits this relay refused to untrusted peers.
    pub relay_refused: u64,
    /// The relay nodes this node knows and its reservation on each.
    pub relays: Vec<RelayView>,
    /// Peers disconnected for subscribing to another machine's inbox topic.
    pub inbox_snoops: u64,
    /// Gossip messages dropped because the message layer was behind (their senders retry).
    pub gossip_overflow: u64,
    /// Introductions and removals from members refused (limits, authority, signatures).
    pub members_refused: u64,
    /// Strangers' mDNS records dropped because the map of them was full.
    pub mdns_evicted: u64,
    /// Hole punching (DCUtR) since start: upgrades that succeeded here, and attempts that
    /// failed. `None` when it is off (`relay.hole_punching = false`).
    pub hole_punches: Option<HolePunches>,
}

/// DCUtR outcomes seen by this node (one side of a punch may see it: the one whose dial won).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct HolePunches {
    /// Relayed connections upgraded to direct ones.
    pub succeeded: u64,
    /// Attempts that failed (the connection stayed relayed).
    pub failed: u64,
}

/// A mesh relay node as status shows it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RelayView {
    /// Its name here, or its PeerId when it is not a trusted peer.
    pub name: String,
    /// PeerId.
    pub peer_id: String,
    /// Where it is dialled.
    pub address: String,
    /// From `relay.nodes` (else learned from a trusted peer that serves).
    pub configured: bool,
    /// Unix time the current reservation was accepted (none: not reserved).
    pub reserved_since: Option<u64>,
    /// Why the last reservation attempt failed.
    pub error: Option<String>,
}

/// A trusted peer as tools show it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PeerView {
    /// Friendly name.
    pub name: String,
    /// PeerId.
    pub peer_id: String,
    /// Connected right now.
    pub online: bool,
    /// How it is reached (when online): `direct` (LAN or a public address),
    /// `hole-punched` (direct after a relayed start) or `relayed`.
    pub path: Option<String>,
    /// The relay node carrying the connection, when `relayed`.
    pub via: Option<String>,
    /// Unix time the path last changed (connected, upgraded, fell back).
    pub path_since: Option<u64>,
    /// `tcp` (when online).
    pub transport: Option<String>,
    /// The remote address of the connection (when online).
    pub address: Option<String>,
    /// Last measured round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Unix time it was last heard from.
    pub last_seen: Option<u64>,
    /// What it may do on this machine.
    pub caps: Vec<Capability>,
    /// Unix time it was paired (or introduced).
    pub paired_at: u64,
    /// The members vouching for it, by name: empty when it was paired here.
    pub introduced_by: Vec<String>,
}

/// What `loopsy pair` shows while it waits.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct PairTicket {
    /// The one-time code to type on the other machine.
    pub code: String,
    /// Seconds until it expires.
    pub expires_in_s: u64,
    /// This node's PeerId.
    pub peer_id: String,
    /// Addresses to give `loopsy pair <addr>` on the other machine.
    pub addrs: Vec<String>,
}

/// A tool call from a trusted peer, to be run under this machine's policy.
#[derive(Debug)]
pub struct InboundCall {
    /// The caller.
    pub peer: PeerId,
    /// Its name here.
    pub peer_name: String,
    /// What it may do here (at the time of the call).
    pub caps: Vec<Capability>,
    /// Tool and arguments.
    pub request: RpcRequest,
    /// Where the answer goes.
    pub reply: oneshot::Sender<RpcResponse>,
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The transport stack could not be built.
    #[error("cannot build the mesh transport: {0}")]
    Build(String),
    /// The listen port is taken or not allowed.
    #[error(
        "cannot listen on mesh port {port}: {reason}. Another loopsy daemon (other LOOPSY_HOME) may use it; \
         set mesh.listen_port in config.toml or LOOPSY_MESH_PORT (0 picks a free port)"
    )]
    Listen {
        /// The port asked for.
        port: u16,
        /// The OS's answer.
        reason: String,
    },
    /// The node task is gone (daemon shutting down).
    #[error("the mesh node has stopped")]
    Stopped,
    /// No trusted peer by that name or id.
    #[error(
        "no trusted peer {0:?}; `loopsy peers list` shows them (pair new machines with `loopsy pair`)"
    )]
    UnknownPeer(String),
    /// No peer by exactly that name, but some by a similar one: never guessed.
    #[error(
        "no trusted peer {who:?}; did you mean {}? (names are exact: `loopsy peers list` shows them)",
        candidates.join(" or ")
    )]
    AmbiguousPeer {
        /// What was asked for.
        who: String,
        /// Names it could have meant.
        candidates: Vec<String>,
    },
    /// The peer could not be reached.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// Name or id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer no longer trusts us.
    #[error("peer {0} refused: it does not trust this machine (was it removed there?); pair again")]
    Denied(String),
    /// The peer is shutting down.
    #[error("peer {0} is not serving calls right now (shutting down?)")]
    PeerUnavailable(String),
    /// A bad address.
    #[error("{0}")]
    BadAddress(String),
    /// Pairing failed.
    #[error(transparent)]
    Pair(#[from] PairError),
    /// Already paired.
    #[error(
        "already paired with {0}; if {0} removed this machine, forget it here too (`loopsy peers remove {0}`) and pair again"
    )]
    AlreadyPaired(String),
    /// A name clash or a bad name.
    #[error("{0}")]
    BadName(String),
    /// The trust file.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// Requests to the node task.
pub(crate) enum Command {
    Info(oneshot::Sender<NodeInfo>),
    Peers(oneshot::Sender<Vec<PeerView>>),
    Dial(Multiaddr, Reply<()>),
    PairOpen(Duration, Reply<PairTicket>),
    PairWait(Reply<PeerView>),
    PairClose,
    PairWith(Multiaddr, String, Reply<PeerView>),
    Remove(String, bool, Reply<PeerView>),
    Rename(String, String, Reply<PeerView>),
    SetCaps(String, Vec<Capability>, bool, Reply<PeerView>),
    Call(String, RpcRequest, Reply<String>),
    Connect(String, Reply<PeerId>),
    PeerCaps(PeerId, oneshot::Sender<Option<(String, Vec<Capability>)>>),
    Refusal(PeerId, Capability, oneshot::Sender<String>),
    Publish(PeerId, Vec<u8>, Reply<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle to the node task.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    streams: libp2p_stream::Control,
    connected: tokio::sync::watch::Receiver<(u64, Option<PeerId>)>,
    inbox_ready: tokio::sync::watch::Receiver<(u64, Option<PeerId>)>,
    trust_changed: tokio::sync::watch::Receiver<u64>,
    gossip_in: GossipIn,
}

/// Gossip messages that arrived (signer, bytes); taken once, by the message layer.
type GossipIn =
    std::sync::Arc<std::sync::Mutex<Option<mpsc::Receiver<crate::node_gossip::Incoming>>>>;

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// How long [`NodeHandle::connect`] waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl NodeHandle {
    /// A control for opening and accepting raw streams.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// Make sure a trusted peer is connected (dialling its known addresses); its PeerId.
    pub async fn connect(&self, who: &str) -> Result<PeerId, NodeError> {
        let fut = self.ask(|r| Command::Connect(who.to_string(), r));
        match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
            Ok(r) => r?,
            Err(_) => Err(NodeError::Unreachable {
                peer: who.to_string(),
                reason: format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    /// A trusted peer's name and capabilities here, or `None` for a stranger.
    pub async fn peer_caps(&self, peer: PeerId) -> Option<(String, Vec<Capability>)> {
        self.ask(|r| Command::PeerCaps(peer, r))
            .await
            .ok()
            .flatten()
    }

    /// The refusal `peer` gets for lacking `cap` here: this machine's policy, and where the
    /// right can be granted (here, or on its introducer: [`crate::trust::Trust::refusal`]).
    pub async fn refusal(&self, peer: PeerId, cap: Capability) -> String {
        self.ask(|r| Command::Refusal(peer, cap, r))
            .await
            .unwrap_or_else(|_| {
                format!("this machine has not granted the {} capability", cap.name())
            })
    }

    /// Resolves once `peer` no longer holds every capability in `needed` here (revoked,
    /// removed, or its introduction withdrawn): `Some(cap)` for the first one missing, `None`
    /// when it is not trusted at all. For streams that must end with their permission, at
    /// the trust change that takes it away (no polling). Never resolves once the node stops.
    pub async fn revoked(&self, peer: PeerId, needed: &[Capability]) -> Option<Capability> {
        let mut changed = self.trust_changed();
        changed.borrow_and_update();
        loop {
            match self.peer_caps(peer).await {
                None => return None,
                Some((_, caps)) => {
                    if let Some(c) = needed.iter().find(|c| !caps.contains(c)) {
                        return Some(*c);
                    }
                }
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Changes whenever the trust list does (a pairing, grant, revoke, removal, introduction).
    pub fn trust_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.trust_changed.clone()
    }

    /// Changes whenever a trusted peer connects (a first or an additional connection).
    /// The value is a counter and the peer that connected last.
    pub fn connected(&self) -> tokio::sync::watch::Receiver<(u64, Option<PeerId>)> {
        self.connected.clone()
    }

    /// Changes whenever a trusted peer subscribes to its inbox topic: from then on it can
    /// be sent messages. The value is a counter and that peer.
    pub fn inbox_ready(&self) -> tokio::sync::watch::Receiver<(u64, Option<PeerId>)> {
        self.inbox_ready.clone()
    }

    /// The gossip messages that arrive on this node's inbox topic, with their verified
    /// signers. Only the first caller gets them (`None` after).
    pub fn take_gossip(&self) -> Option<mpsc::Receiver<crate::node_gossip::Incoming>> {
        self.gossip_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Publish `data` as a gossip message on `to`'s inbox topic (signed with this node's
    /// key). Fails when `to` is not connected or has not yet said it reads its inbox.
    pub async fn publish(&self, to: PeerId, data: Vec<u8>) -> Result<(), NodeError> {
        self.ask(|r| Command::Publish(to, data, r)).await?
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Current listen addresses and identity.
    pub async fn info(&self) -> Result<NodeInfo, NodeError> {
        self.ask(Command::Info).await
    }

    /// Every trusted peer with its connection state.
    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Dial an address (`loopsy peers add`): useful where mDNS cannot see the peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|r| Command::Dial(addr, r)).await?
    }

    /// Open a pairing window for `ttl`; returns the code and addresses.
    pub async fn pair_open(&self, ttl: Duration) -> Result<PairTicket, NodeError> {
        self.ask(|r| Command::PairOpen(ttl, r)).await?
    }

    /// Wait for the open window to pair someone (or fail).
    pub async fn pair_wait(&self) -> Result<PeerView, NodeError> {
        self.ask(Command::PairWait).await?
    }

    /// Close the pairing window.
    pub async fn pair_close(&self) {
        let _ = self.tx.send(Command::PairClose).await;
    }

    /// Pair with the machine at `addr` (which ends in `/p2p/<id>`) using its code.
    pub async fn pair_with(&self, addr: Multiaddr, code: String) -> Result<PeerView, NodeError> {
        self.ask(|r| Command::PairWith(addr, code, r)).await?
    }

    /// Forget a peer and cut it off now; unless `here_only`, remove it from every member of
    /// the mesh too (a signed removal, passed on).
    pub async fn remove(&self, who: &str, here_only: bool) -> Result<PeerView, NodeError> {
        self.ask(|r| Command::Remove(who.to_string(), here_only, r))
            .await?
    }

    /// Rename a peer.
    pub async fn rename(&self, who: &str, new_name: &str) -> Result<PeerView, NodeError> {
        self.ask(|r| Command::Rename(who.to_string(), new_name.to_string(), r))
            .await?
    }

    /// Grant (`true`) or revoke (`false`) capabilities; takes effect on the next call.
    pub async fn set_caps(
        &self,
        who: &str,
        caps: Vec<Capability>,
        grant: bool,
    ) -> Result<PeerView, NodeError> {
        self.ask(|r| Command::SetCaps(who.to_string(), caps, grant, r))
            .await?
    }

    /// Run `tool` on peer `who` (name or PeerId); returns the peer's `CallToolResult` JSON.
    pub async fn call(&self, who: &str, tool: &str, args: String) -> Result<String, NodeError> {
        let req = RpcRequest {
            tool: tool.to_string(),
            args,
        };
        self.ask(|r| Command::Call(who.to_string(), req, r)).await?
    }

    /// Stop the node and wait until its listeners are closed.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

/// Build the swarm, start listening, and spawn the owner task. Returns once the first
/// listen address is known, so status is right from the first call.
pub async fn spawn(
    identity: &Identity,
    cfg: NodeConfig,
) -> Result<(NodeHandle, mpsc::Receiver<InboundCall>), NodeError> {
    let mut trust = Trust::load(&cfg.trust_path)?;
    // `[trust] introduced_caps` as configured now bounds machines introduced before too.
    if trust.follow_introduced_caps(&cfg.trust.introduced_caps) {
        trust.save(&cfg.trust_path)?;
    }
    let allowed: behaviour::Allowed = Default::default();
    let refused: std::sync::Arc<std::sync::atomic::AtomicU64> = Default::default();
    let mut swarm = behaviour::build(
        identity,
        cfg.mdns && !cfg.local_only,
        cfg.hole_punching,
        cfg.relay_serve.clone(),
        allowed.clone(),
        refused.clone(),
    )?;
    let ip = if cfg.local_only {
        "127.0.0.1"
    } else {
        "0.0.0.0"
    };
    let listen_err = |reason: String| NodeError::Listen {
        port: cfg.port,
        reason,
    };
    if cfg.port != 0 {
        // libp2p listens with SO_REUSEPORT, so a second daemon on the same port would bind
        // "successfully" and steal half the connections. A plain bind (no SO_REUSEPORT)
        // fails while anyone holds the port: that tells us the truth.
        std::net::TcpListener::bind((ip, cfg.port)).map_err(|e| listen_err(e.to_string()))?;
        std::net::UdpSocket::bind((ip, cfg.port))
            .map_err(|e| listen_err(format!("UDP (QUIC): {e}")))?;
    }
    // TCP (noise + yamux) and QUIC on the same port number. TCP is required; a system whose
    // UDP sockets lack what QUIC needs (wine's, for one) runs on TCP alone.
    let mut listening = 0;
    for (proto, required) in [
        (format!("/ip4/{ip}/tcp/{}", cfg.port), true),
        (format!("/ip4/{ip}/udp/{}/quic-v1", cfg.port), false),
    ] {
        let addr: Multiaddr = proto
            .parse()
            .map_err(|e: libp2p::multiaddr::Error| NodeError::Build(e.to_string()))?;
        match swarm.listen_on(addr.clone()) {
            Ok(_) => listening += 1,
            Err(e) if !required => {
                tracing::warn!("not listening on {addr} (TCP only): {}", describe(&e));
            }
            Err(e) => return Err(listen_err(format!("{addr}: {}", describe(&e)))),
        }
    }

    // Wait until every listener reports an address (or one fails).
    // Everything else that happens meanwhile (an mDNS discovery, an inbound connection) is
    // kept for the node task: mDNS reports a record only once per TTL, so a dropped
    // `Discovered` would hide a neighbour for minutes.
    let mut early = Vec::new();
    let first = tokio::time::timeout(LISTEN_TIMEOUT, async {
        let mut up = std::collections::HashSet::new();
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    up.insert(listener_id);
                    if up.len() >= listening {
                        return Ok(());
                    }
                }
                SwarmEvent::ListenerError { error, .. } => return Err(describe(&error)),
                SwarmEvent::ListenerClosed { reason: Err(e), .. } => return Err(describe(&e)),
                other => early.push(other),
            }
        }
    })
    .await;
    match first {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err(listen_err(reason)),
        Err(_) => return Err(listen_err("no listen address within 5 s".into())),
    }

    let peer_id = *swarm.local_peer_id();
    let streams = swarm.behaviour().streams.new_control();
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (connected_tx, connected) = tokio::sync::watch::channel((0u64, None));
    let (ready_tx, inbox_ready) = tokio::sync::watch::channel((0u64, None));
    let (trust_tx, trust_changed) = tokio::sync::watch::channel(0u64);
    let (gossip_tx, gossip_rx) = mpsc::channel(crate::node_gossip::GOSSIP_IN_CAPACITY);
    let task = crate::node_task::NodeTask::new(
        swarm,
        (rx, in_tx),
        cfg,
        (trust, identity.keypair().clone(), trust_tx),
        connected_tx,
        crate::node_nat::Nat::new(allowed, refused),
        crate::node_gossip::Gossip {
            inbox: gossip_tx,
            queued: Default::default(),
            ready: ready_tx,
            snoops: 0,
            overflow: 0,
            unheard: Default::default(),
            boots: Default::default(),
        },
    );
    tokio::spawn(task.run(early));
    Ok((
        NodeHandle {
            tx,
            peer_id,
            streams,
            connected,
            inbox_ready,
            trust_changed,
            gossip_in: std::sync::Arc::new(std::sync::Mutex::new(Some(gossip_rx))),
        },
        in_rx,
    ))
}

/// An error's text, or its debug form when the text is empty (some transport errors have none).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    match e.to_string() {
        s if s.trim().is_empty() => format!("{e:?}"),
        s => s,
    }
}
