//! The node's event loop: owns the Swarm, the trust list and every connection's state.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn};

use crate::behaviour::{MeshBehaviour, MeshBehaviourEvent};
use crate::node::{Command, InboundCall, NodeConfig, NodeError, NodeInfo, PeerView, Reply};
use crate::node_pair::PairState;
use crate::trust::Trust;
use crate::wire::{RpcRequest, RpcResponse};

/// First redial delay for a trusted peer; doubles up to [`MAX_REDIAL`].
pub(crate) const MIN_REDIAL: Duration = Duration::from_secs(1);
/// Longest redial delay.
const MAX_REDIAL: Duration = Duration::from_secs(60);
/// Addresses remembered per peer.
pub(crate) const MAX_ADDRS: usize = 8;
/// Strangers found by mDNS kept for `loopsy pair <peer id>`.
const MAX_DISCOVERED: usize = 256;
/// Shortest time between two ticks. The loop only ticks when some state waits on time
/// ([`NodeTask::next_tick`]): an idle node wakes for nothing.
const TICK: Duration = Duration::from_millis(500);
/// Consecutive ping failures after which a connection is considered dead.
const MAX_PING_FAILURES: u32 = 2;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The other transport's address for `a`: `/ip4/X/tcp/P[/p2p/Id]` ↔ `/ip4/X/udp/P/quic-v1[/p2p/Id]`.
pub(crate) fn sibling(a: &Multiaddr) -> Option<Multiaddr> {
    let mut out = Multiaddr::empty();
    let mut it = a.iter();
    let ip = it.next()?;
    if !matches!(ip, Protocol::Ip4(_) | Protocol::Ip6(_)) {
        return None;
    }
    out.push(ip);
    match it.next()? {
        Protocol::Tcp(port) => {
            out.push(Protocol::Udp(port));
            out.push(Protocol::QuicV1);
        }
        Protocol::Udp(port) => {
            if !matches!(it.next()?, Protocol::QuicV1) {
                return None;
            }
            out.push(Protocol::Tcp(port));
        }
        _ => return None,
    }
    for rest in it {
        match rest {
            Protocol::P2p(_) => out.push(rest),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
#[test]
fn siblings_pair_tcp_and_quic_on_one_port() {
    let t: Multiaddr = "/ip4/10.0.0.1/tcp/19532"
        .parse()
        .unwrap_or_else(|_| Multiaddr::empty());
    let q: Multiaddr = "/ip4/10.0.0.1/udp/19532/quic-v1"
        .parse()
        .unwrap_or_else(|_| Multiaddr::empty());
    assert_eq!(sibling(&t).as_ref(), Some(&q));
    assert_eq!(sibling(&q).as_ref(), Some(&t));
    let dns: Multiaddr = "/dns4/example.com/tcp/1"
        .parse()
        .unwrap_or_else(|_| Multiaddr::empty());
    assert_eq!(sibling(&dns), None);
}

type Pending = BoxFuture<'static, (ResponseChannel<RpcResponse>, RpcResponse)>;

/// The node task's state.
pub(crate) struct NodeTask {
    pub(crate) swarm: Swarm<MeshBehaviour>,
    rx: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<InboundCall>,
    pub(crate) cfg: NodeConfig,
    pub(crate) trust: Trust,
    rtt: HashMap<PeerId, Duration>,
    ping_failures: HashMap<libp2p::swarm::ConnectionId, u32>,
    last_seen: HashMap<PeerId, u64>,
    pub(crate) redial: HashMap<PeerId, (Instant, Duration)>,
    calls: HashMap<OutboundRequestId, (String, Reply<String>)>,
    pending: FuturesUnordered<Pending>,
    pub(crate) pairing: PairState,
    /// Untrusted peers allowed to stay connected: we are pairing with them.
    pub(crate) pair_peers: HashSet<PeerId>,
    discovered: HashMap<PeerId, Vec<Multiaddr>>,
    /// Strangers' mDNS records dropped because the map was full.
    discovered_evicted: u64,
    connect_waiters: HashMap<PeerId, Vec<Reply<PeerId>>>,
    /// When a reconnect last brought every backed-off redial forward.
    last_wake: Option<Instant>,
    /// Introductions, removals and the rights they give.
    pub(crate) members: crate::node_members::Members,
    /// Bumped when a trusted peer comes online.
    connected: tokio::sync::watch::Sender<(u64, Option<PeerId>)>,
    /// Relays, paths, reachability.
    pub(crate) nat: crate::node_nat::Nat,
    /// Inbox topics (agent messages).
    pub(crate) gossip: crate::node_gossip::Gossip,
}

impl NodeTask {
    pub(crate) fn new(
        swarm: Swarm<MeshBehaviour>,
        (rx, inbound): (mpsc::Receiver<Command>, mpsc::Sender<InboundCall>),
        cfg: NodeConfig,
        (trust, key, trust_tx): (
            Trust,
            libp2p::identity::Keypair,
            tokio::sync::watch::Sender<u64>,
        ),
        connected: tokio::sync::watch::Sender<(u64, Option<PeerId>)>,
        nat: crate::node_nat::Nat,
        gossip: crate::node_gossip::Gossip,
    ) -> Self {
        let now = Instant::now();
        let members = crate::node_members::Members::new(key, &trust, trust_tx);
        let redial = trust
            .peers
            .keys()
            .filter_map(|k| k.parse().ok())
            .map(|p| (p, (now, MIN_REDIAL)))
            .collect();
        Self {
            swarm,
            rx,
            inbound,
            cfg,
            trust,
            rtt: HashMap::new(),
            ping_failures: HashMap::new(),
            last_seen: HashMap::new(),
            redial,
            calls: HashMap::new(),
            pending: FuturesUnordered::new(),
            pairing: PairState::default(),
            pair_peers: HashSet::new(),
            discovered: HashMap::new(),
            discovered_evicted: 0,
            connect_waiters: HashMap::new(),
            last_wake: None,
            members,
            connected,
            nat,
            gossip,
        }
    }

    pub(crate) fn me(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    pub(crate) fn trusted(&self, p: &PeerId) -> bool {
        self.trust.peers.contains_key(&p.to_string())
    }

    /// Persist the trust list after a change (and pass the change on: `trust_changed`).
    pub(crate) fn save_trust(&mut self) -> Result<(), NodeError> {
        self.trust.trim();
        self.trust_changed();
        self.sync_allowed();
        self.trust
            .save(&self.cfg.trust_path)
            .map_err(NodeError::from)
    }

    /// Resolve a name or PeerId to a trusted peer.
    pub(crate) fn resolve(&self, who: &str) -> Result<PeerId, NodeError> {
        let Some((id, _)) = self.trust.find(who) else {
            let candidates = self.trust.similar(who);
            return Err(if candidates.is_empty() {
                NodeError::UnknownPeer(who.to_string())
            } else {
                NodeError::AmbiguousPeer {
                    who: who.to_string(),
                    candidates,
                }
            });
        };
        id.parse()
            .map_err(|_| NodeError::UnknownPeer(who.to_string()))
    }

    /// Addresses mDNS found for an untrusted peer.
    pub(crate) fn discovered(&self, p: &PeerId) -> Option<Vec<Multiaddr>> {
        self.discovered.get(p).filter(|v| !v.is_empty()).cloned()
    }

    pub(crate) fn view(&self, p: &PeerId) -> Option<PeerView> {
        let t = self.trust.peers.get(&p.to_string())?;
        let conn = self.best_link(p);
        Some(PeerView {
            name: t.name.clone(),
            peer_id: p.to_string(),
            online: conn.is_some(),
            path: conn.map(|_| self.path_of(p).to_string()),
            via: self.via(p),
            path_since: self.path_since(p),
            transport: conn.map(|c| {
                if c.addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
                    "quic"
                } else {
                    "tcp"
                }
                .to_string()
            }),
            address: conn.map(|c| c.addr.to_string()),
            rtt_ms: self.rtt.get(p).map(|d| d.as_secs_f64() * 1000.0),
            last_seen: self.last_seen.get(p).copied(),
            caps: self.caps_of(p),
            paired_at: t.paired_at,
            introduced_by: t
                .vouchers
                .keys()
                .map(|v| {
                    self.trust
                        .peers
                        .get(v)
                        .map_or_else(|| v.clone(), |b| b.name.clone())
                })
                .collect(),
        })
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = self.me();
        self.swarm
            .listeners()
            .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
            .collect()
    }

    pub(crate) fn listen_addr_strings(&self) -> Vec<String> {
        self.listen_addrs().iter().map(|a| a.to_string()).collect()
    }

    /// Remember a dialable address for a trusted peer (persisted when new).
    fn remember_addr(&mut self, p: &PeerId, addr: &Multiaddr) {
        let a = addr.clone().with_p2p(*p).unwrap_or_else(|a| a).to_string();
        let Some(t) = self.trust.peers.get_mut(&p.to_string()) else {
            return;
        };
        if t.addrs.first() == Some(&a) {
            return;
        }
        t.addrs.retain(|x| x != &a);
        t.addrs.insert(0, a);
        t.addrs.truncate(MAX_ADDRS);
        if let Err(e) = self.save_trust() {
            warn!(error = %e, "cannot save peer addresses");
        }
    }

    pub(crate) fn known_addrs(&self, p: &PeerId) -> Vec<Multiaddr> {
        let known: Vec<Multiaddr> = self
            .trust
            .peers
            .get(&p.to_string())
            .map(|t| t.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        // Daemons listen on TCP and QUIC with one port number: dial both (concurrently), so a
        // path that is slow to recover (a restarted peer's QUIC, a UDP-hostile network) does
        // not hold up the other.
        let mut out = known.clone();
        for a in &known {
            if let Some(s) = sibling(a)
                && !out.contains(&s)
            {
                out.push(s);
            }
        }
        out
    }

    /// Handle `early` (events seen while start-up waited for the listeners), then loop.
    pub(crate) async fn run(mut self, early: Vec<SwarmEvent<MeshBehaviourEvent>>) {
        self.nat_init();
        self.gossip_init();
        self.warn_untrusted_relays();
        for e in early {
            self.event(e);
        }
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut armed = None;
        let mut last_tick = Instant::now();
        loop {
            let due = self.next_tick().map(|t| t.max(last_tick + TICK));
            if due != armed {
                if let Some(t) = due {
                    timer.as_mut().reset(tokio::time::Instant::from_std(t));
                }
                armed = due;
            }
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        info!("mesh node stopping");
                        self.close_all().await;
                        drop(self.swarm);
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c),
                    None => return,
                },
                event = self.swarm.select_next_some() => self.event(event),
                Some((channel, resp)) = self.pending.next(), if !self.pending.is_empty() => {
                    let _ = self.swarm.behaviour_mut().rpc.send_response(channel, resp);
                }
                () = &mut timer, if armed.is_some() => {
                    last_tick = Instant::now();
                    armed = None;
                    self.tick();
                }
            }
        }
    }

    /// Close every connection and drive the swarm until they are closed (a second at most),
    /// so peers hear of it now. Only dropped, a QUIC connection would go without its close
    /// packet when the process exits, and linger at the peer until its idle timeout (30 s):
    /// the peer would show this machine online, and gossipsub there would take a restarted
    /// machine's new connection for a second one and not tell it its subscriptions.
    async fn close_all(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in peers {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        let closed = tokio::time::timeout(Duration::from_secs(1), async {
            while self.swarm.connected_peers().next().is_some() {
                let _ = self.swarm.select_next_some().await;
            }
        })
        .await;
        if closed.is_err() {
            debug!("connections still open after 1 s; stopping anyway");
        }
    }

    /// A trusted peer came back: the network most likely did too (a cable, Wi-Fi or a
    /// partition healed), so every trusted peer still down is redialled at the next tick
    /// instead of waiting out its backoff (up to a minute). At most once per 2 s.
    fn network_is_back(&mut self) {
        let now = Instant::now();
        if self
            .last_wake
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2))
        {
            return;
        }
        self.last_wake = Some(now);
        let mut woken = 0;
        for (p, (at, _)) in self.redial.iter_mut() {
            if *at > now && !self.nat.links.contains_key(p) {
                *at = now;
                woken += 1;
            }
        }
        if woken > 0 {
            debug!(
                woken,
                "a trusted peer reconnected: redialling the others now"
            );
        }
    }

    /// When [`Self::tick`] next has work (`None`: nothing waits on time): a trusted peer to
    /// redial, an introduction to retry, a pairing window to close, a relay to reserve on or
    /// a relayed link to retire, a peer whose inbox subscription is overdue.
    fn next_tick(&self) -> Option<Instant> {
        let redial = self
            .redial
            .iter()
            .filter(|(p, _)| !self.online(p))
            .map(|(_, (at, _))| *at)
            .min();
        [
            redial,
            self.intro_due(),
            self.pair_due(),
            self.nat_due(),
            self.gossip_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn tick(&mut self) {
        self.intro_tick();
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(p, (at, _))| *at <= now && !self.online(p))
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            let addrs = self.known_addrs(&p);
            if let Some((at, delay)) = self.redial.get_mut(&p) {
                *at = now + *delay;
                *delay = (*delay * 2).min(MAX_REDIAL);
            }
            // Through the relays too, as a dial of its own: a direct address behind a NAT
            // can hang for seconds, and must not hold up the relayed path.
            self.dial_via_relays(p);
            if addrs.is_empty() {
                continue;
            }
            debug!(peer = %p, "redialling trusted peer");
            // A fresh local port: a redial of a NATed address can hang in SYN_SENT for
            // seconds, and on the listen port it would hold the very 4-tuple that hole
            // punching needs (whose dials must use the listen port).
            let opts = DialOpts::peer_id(p)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .allocate_new_port()
                .build();
            let _ = self.swarm.dial(opts);
        }
        self.pair_tick();
        self.nat_tick();
        self.gossip_watch();
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(r) => {
                let _ = r.send(NodeInfo {
                    peer_id: self.me(),
                    listen_addrs: self.listen_addrs(),
                    nat: self.nat_status(),
                    relay_serving: self.cfg.relay_serve.is_some(),
                    relay_refused: self.relay_refused(),
                    relays: self.relay_views(),
                    inbox_snoops: self.gossip.snoops,
                    gossip_overflow: self.gossip.overflow,
                    members_refused: self.members.refused,
                    mdns_evicted: self.discovered_evicted,
                    hole_punches: self.cfg.hole_punching.then_some(self.nat.punches),
                });
            }
            Command::Peers(r) => {
                let mut v: Vec<PeerView> = self
                    .trust
                    .peers
                    .keys()
                    .filter_map(|k| k.parse().ok())
                    .filter_map(|p| self.view(&p))
                    .collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = r.send(v);
            }
            Command::Dial(addr, r) => {
                let _ = r.send(
                    self.swarm
                        .dial(addr)
                        .map_err(|e| NodeError::BadAddress(e.to_string())),
                );
            }
            Command::PairOpen(ttl, r) => {
                let _ = r.send(Ok(self.pair_open(ttl)));
            }
            Command::PairWait(r) => self.pair_wait(r),
            Command::PairClose => self.pair_close(),
            Command::PairWith(addr, code, r) => self.pair_with(addr, code, r),
            Command::Remove(who, here_only, r) => {
                let res = self.resolve(&who).and_then(|p| {
                    let view = self
                        .view(&p)
                        .ok_or_else(|| NodeError::UnknownPeer(who.clone()))?;
                    self.remove_member(p, here_only);
                    self.save_trust()?;
                    info!(peer = %p, name = %view.name, here_only, "peer removed and disconnected");
                    Ok(view)
                });
                let _ = r.send(res);
            }
            Command::Rename(who, new_name, r) => {
                let res = self.resolve(&who).and_then(|p| {
                    crate::config::validate_name(&new_name).map_err(NodeError::BadName)?;
                    if new_name == self.cfg.name
                        || self
                            .trust
                            .find(&new_name)
                            .is_some_and(|(id, _)| *id != p.to_string())
                    {
                        return Err(NodeError::BadName(format!(
                            "the name {new_name:?} is taken"
                        )));
                    }
                    if let Some(t) = self.trust.peers.get_mut(&p.to_string()) {
                        t.name = new_name.clone();
                    }
                    self.save_trust()?;
                    self.view(&p)
                        .ok_or_else(|| NodeError::UnknownPeer(who.clone()))
                });
                let _ = r.send(res);
            }
            Command::SetCaps(who, caps, grant, r) => {
                let res = self.resolve(&who).and_then(|p| {
                    if let Some(t) = self.trust.peers.get_mut(&p.to_string()) {
                        // An introduced peer's ceiling set by hand no longer follows
                        // `[trust] introduced_caps`.
                        t.ceiling_set_here |= !t.paired_here();
                        if grant {
                            t.caps.extend(caps.iter().copied());
                            t.caps.sort();
                            t.caps.dedup();
                        } else {
                            t.caps.retain(|c| !caps.contains(c));
                        }
                    }
                    self.save_trust()?;
                    self.view(&p)
                        .ok_or_else(|| NodeError::UnknownPeer(who.clone()))
                });
                let _ = r.send(res);
            }
            Command::Call(who, req, r) => match self.resolve(&who) {
                Err(e) => {
                    let _ = r.send(Err(e));
                }
                Ok(p) => {
                    for a in self.known_addrs(&p) {
                        self.swarm.add_peer_address(p, a);
                    }
                    if !self.online(&p) {
                        self.dial_via_relays(p);
                    }
                    let id = self.swarm.behaviour_mut().rpc.send_request(&p, req);
                    self.calls.insert(id, (who, r));
                }
            },
            Command::Connect(who, r) => match self.resolve(&who) {
                Err(e) => {
                    let _ = r.send(Err(e));
                }
                Ok(p) if self.online(&p) => {
                    let _ = r.send(Ok(p));
                }
                Ok(p) => {
                    let addrs = self.known_addrs(&p);
                    let opts = DialOpts::peer_id(p)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .allocate_new_port()
                        .build();
                    let _ = self.swarm.dial(opts);
                    self.dial_via_relays(p);
                    self.connect_waiters.entry(p).or_default().push(r);
                }
            },
            Command::PeerCaps(p, r) => {
                let _ = r.send(
                    self.trust
                        .peers
                        .get(&p.to_string())
                        .map(|t| (t.name.clone(), self.caps_of(&p))),
                );
            }
            Command::Refusal(p, cap, r) => {
                let _ = r.send(self.trust.refusal(&p.to_string(), cap, &self.cfg.name));
            }
            Command::Publish(to, data, r) => {
                let _ = r.send(self.publish(to, data));
            }
            Command::Shutdown(_) => {}
        }
    }

    fn event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "mesh listening");
                self.on_new_listen_addr(&address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let why = match reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                self.on_listener_closed(listener_id, why);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                debug!(?listener_id, %error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.ping_failures.remove(&connection_id);
                self.link_down(peer_id, connection_id);
                if num_established == 0 {
                    self.gossip_gone(&peer_id);
                }
                if num_established == 0 && self.trusted(&peer_id) {
                    debug!(peer = %peer_id, ?cause, "trusted peer disconnected");
                    self.redial
                        .insert(peer_id, (Instant::now() + MIN_REDIAL, MIN_REDIAL * 2));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(p),
                error,
                ..
            } => {
                debug!(peer = %p, %error, "dial failed");
                if !self.online(&p) {
                    for w in self.connect_waiters.remove(&p).unwrap_or_default() {
                        let _ = w.send(Err(NodeError::Unreachable {
                            peer: p.to_string(),
                            reason: error.to_string(),
                        }));
                    }
                }
            }
            SwarmEvent::Behaviour(ev) => self.behaviour_event(ev),
            _ => {}
        }
    }

    fn on_connected(
        &mut self,
        peer: PeerId,
        id: libp2p::swarm::ConnectionId,
        endpoint: &ConnectedPoint,
        count: u32,
    ) {
        let trusted = self.trusted(&peer);
        if !trusted && !self.pairing.is_open() && !self.pair_peers.contains(&peer) {
            // Untrusted peers get nothing but pairing, and only while a window is open.
            debug!(%peer, "refusing connection from untrusted peer");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        let addr = endpoint.get_remote_address().clone();
        self.link_up(peer, id, endpoint);
        self.last_seen.insert(peer, now_unix());
        for w in self.connect_waiters.remove(&peer).unwrap_or_default() {
            let _ = w.send(Ok(peer));
        }
        if trusted {
            let _span = info_span!("peer", %peer).entered();
            info!(%addr, "trusted peer connected");
            self.redial
                .insert(peer, (Instant::now() + MAX_REDIAL, MIN_REDIAL));
            if endpoint.is_dialer() && !endpoint.is_relayed() {
                self.remember_addr(&peer, &addr);
            }
            if count == 1 {
                self.introduce_all_to(peer);
                self.network_is_back();
            }
            // Every new connection counts: a peer that restarted reconnects while its old
            // connection may still look alive, and work stuck on that one should move over.
            self.connected.send_modify(|(g, p)| {
                *g = g.wrapping_add(1);
                *p = Some(peer);
            });
        }
    }

    fn behaviour_event(&mut self, ev: MeshBehaviourEvent) {
        match ev {
            MeshBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => match result {
                Ok(rtt) => {
                    self.rtt.insert(peer, rtt);
                    self.last_seen.insert(peer, now_unix());
                    self.ping_failures.remove(&connection);
                }
                Err(e) => {
                    // A pulled cable sends no RST: without this the connection would look
                    // alive until TCP gives up, many minutes later.
                    let n = self.ping_failures.entry(connection).or_insert(0);
                    *n += 1;
                    if *n >= MAX_PING_FAILURES {
                        debug!(%peer, error = %e, "ping failed repeatedly; closing the connection");
                        self.ping_failures.remove(&connection);
                        self.swarm.close_connection(connection);
                    }
                }
            },
            MeshBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                // Kept while connected: a peer that is paired after it identified (the usual
                // order) is looked at again then.
                self.remember_identify(peer_id, &info);
                if self.gossip_boot(peer_id, &info.agent_version) || !self.trusted(&peer_id) {
                    return;
                }
                self.on_identify(peer_id, &info);
                self.gossip_identified(peer_id, &info.protocols);
                for a in info.listen_addrs.into_iter().take(MAX_ADDRS) {
                    self.swarm.add_peer_address(peer_id, a);
                }
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (p, addr) in list {
                    if self.trusted(&p) {
                        // Dialled, not remembered: anyone on the LAN can announce any PeerId
                        // at any address. An address is kept (trust.json) only once a
                        // connection to it proved the peer's key (`on_connected`).
                        self.swarm.add_peer_address(p, addr.clone());
                        if !self.online(&p) {
                            let opts = DialOpts::peer_id(p)
                                .addresses(vec![addr])
                                .condition(PeerCondition::DisconnectedAndNotDialing)
                                .allocate_new_port()
                                .build();
                            let _ = self.swarm.dial(opts);
                        }
                    } else {
                        // Strangers on the LAN, for `loopsy pair <peer id>`: a bounded map
                        // (a flood of made-up records evicts old entries, counted).
                        if !self.discovered.contains_key(&p)
                            && self.discovered.len() >= MAX_DISCOVERED
                        {
                            if let Some(old) = self.discovered.keys().next().copied() {
                                self.discovered.remove(&old);
                            }
                            self.discovered_evicted += 1;
                        }
                        let known = self.discovered.entry(p).or_default();
                        if !known.contains(&addr) {
                            known.push(addr);
                            known.truncate(MAX_ADDRS);
                        }
                    }
                }
            }
            MeshBehaviourEvent::Mdns(mdns::Event::Expired(list)) => {
                for (p, addr) in list {
                    if let Some(known) = self.discovered.get_mut(&p) {
                        known.retain(|a| *a != addr);
                        if known.is_empty() {
                            self.discovered.remove(&p);
                        }
                    }
                }
            }
            MeshBehaviourEvent::Pair(e) => self.pair_event(e),
            MeshBehaviourEvent::Rpc(e) => self.rpc_event(e),
            MeshBehaviourEvent::Members(e) => self.members_event(e),
            MeshBehaviourEvent::RelayClient(e) => self.relay_client_event(e),
            MeshBehaviourEvent::RelayServer(e) => self.relay_server_event(e),
            MeshBehaviourEvent::Dcutr(e) => self.dcutr_event(e),
            MeshBehaviourEvent::Autonat(e) => self.autonat_event(e),
            MeshBehaviourEvent::Gossip(e) => self.gossip_event(e),
            _ => {}
        }
    }

    fn rpc_event(&mut self, e: request_response::Event<RpcRequest, RpcResponse>) {
        use request_response::{Event, Message};
        match e {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(t) = self.trust.peers.get(&peer.to_string()) else {
                    warn!(%peer, tool = %request.tool, "denied RPC from untrusted peer");
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .rpc
                        .send_response(channel, RpcResponse::Denied);
                    return;
                };
                self.last_seen.insert(peer, now_unix());
                let (tx, rx) = oneshot::channel();
                let call = InboundCall {
                    peer,
                    peer_name: t.name.clone(),
                    caps: self.caps_of(&peer),
                    request,
                    reply: tx,
                };
                if self.inbound.try_send(call).is_err() {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .rpc
                        .send_response(channel, RpcResponse::Unavailable);
                    return;
                }
                self.pending.push(Box::pin(async move {
                    let resp = rx.await.unwrap_or(RpcResponse::Unavailable);
                    (channel, resp)
                }));
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((who, reply)) = self.calls.remove(&request_id) {
                    let _ = reply.send(match response {
                        RpcResponse::Result(json) => Ok(json),
                        RpcResponse::Denied => Err(NodeError::Denied(who)),
                        RpcResponse::Unavailable => Err(NodeError::PeerUnavailable(who)),
                    });
                }
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((who, reply)) = self.calls.remove(&request_id) {
                    let _ = reply.send(Err(NodeError::Unreachable {
                        peer: who,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound RPC failed")
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
