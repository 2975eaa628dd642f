//! Beyond the LAN: reservations on relay nodes (circuit relay v2), the paths each peer is
//! reached by (direct, hole-punched, relayed) and the upgrade from relayed to direct
//! (DCUtR), reachability (AutoNAT), and the relay node's trust gate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, autonat, dcutr, identify, relay};
use tracing::{debug, info, warn};

use crate::behaviour::Allowed;
use crate::node::RelayView;
use crate::node_task::{NodeTask, now_unix};

/// First retry of a failed reservation; doubles up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between reservation attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A relayed connection is closed this long after a direct one to the same peer is up
/// (calls already on it finish; new ones take the direct path).
const RELAYED_GRACE: Duration = Duration::from_secs(3);
/// Relay nodes remembered (configured and learned).
const MAX_RELAYS: usize = 8;

/// One connection to a peer.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) id: ConnectionId,
    pub(crate) addr: Multiaddr,
    /// The relay node carrying it, when relayed.
    pub(crate) relay: Option<PeerId>,
    pub(crate) relayed: bool,
    pub(crate) opened: Instant,
}

/// A relay node and this node's reservation on it.
#[derive(Debug)]
pub(crate) struct RelaySlot {
    /// `/…/p2p/<relay>`.
    addr: Multiaddr,
    configured: bool,
    listener: Option<ListenerId>,
    reserved_since: Option<u64>,
    error: Option<String>,
    next_try: Instant,
    backoff: Duration,
}

/// NAT traversal state kept by the node task.
pub(crate) struct Nat {
    allowed: Allowed,
    refused: Arc<AtomicU64>,
    relays: HashMap<PeerId, RelaySlot>,
    status: autonat::NatStatus,
    /// Connections that DCUtR opened (direct after a relayed start): only these are called
    /// hole-punched (a direct connection may also form beside a relayed one without it).
    punched: HashSet<ConnectionId>,
    /// DCUtR outcomes since start.
    pub(crate) punches: crate::node::HolePunches,
    /// Every connection per peer.
    pub(crate) links: HashMap<PeerId, Vec<Link>>,
    /// When each peer's path (direct / hole-punched / relayed / offline) last changed.
    path_since: HashMap<PeerId, (String, u64)>,
    /// Whether each connected peer serves as a relay, and where (from identify), until it
    /// is looked at as a trusted peer.
    identified: HashMap<PeerId, identify::Info>,
}

impl Nat {
    pub(crate) fn new(allowed: Allowed, refused: Arc<AtomicU64>) -> Self {
        Self {
            allowed,
            refused,
            relays: HashMap::new(),
            status: autonat::NatStatus::Unknown,
            punched: HashSet::new(),
            punches: Default::default(),
            links: HashMap::new(),
            path_since: HashMap::new(),
            identified: HashMap::new(),
        }
    }
}

/// The relay a circuit address goes through: the `/p2p/<id>` just before `/p2p-circuit`.
pub(crate) fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

impl NodeTask {
    /// Start-up: the configured relay nodes, the trust gate, AutoNAT's servers.
    pub(crate) fn nat_init(&mut self) {
        self.sync_allowed();
        // Start-up consumed the first listen addresses before this task ran.
        let listening: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        for a in &listening {
            self.on_new_listen_addr(a);
        }
        let now = Instant::now();
        for (peer, addr) in self.cfg.relay_nodes.clone() {
            if peer == self.me() {
                continue;
            }
            self.nat.relays.insert(
                peer,
                RelaySlot {
                    addr: addr.clone(),
                    configured: true,
                    listener: None,
                    reserved_since: None,
                    error: None,
                    next_try: now,
                    backoff: MIN_RETRY,
                },
            );
            self.swarm
                .behaviour_mut()
                .autonat
                .add_server(peer, Some(addr.clone()));
            self.swarm.add_peer_address(peer, addr);
        }
    }

    /// The relay's gate follows the trust list.
    pub(crate) fn sync_allowed(&self) {
        let set: HashSet<PeerId> = self
            .trust
            .peers
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect();
        if let Ok(mut a) = self.nat.allowed.write() {
            *a = set;
        }
    }

    /// Reserve on every known relay unless this node is one (or loopback-only). AutoNAT's
    /// verdict is shown, not obeyed: a relay that probes us over QUIC reaches us through the
    /// NAT mapping our own connection to it opened, so a node behind an address-restricted
    /// NAT looks "public" to it while everyone else is filtered. A reservation is one idle
    /// stream; losing reachability would cost far more.
    fn wants_reservations(&self) -> bool {
        !self.cfg.local_only && self.cfg.relay_serve.is_none()
    }

    /// When [`Self::nat_tick`] has work: a relay learnt late, a reservation to (re)try, or a
    /// relayed link whose direct replacement has passed its grace.
    pub(crate) fn nat_due(&self) -> Option<Instant> {
        let now = Instant::now();
        let late = self
            .nat
            .identified
            .keys()
            .any(|p| self.trusted(p) && !self.nat.relays.contains_key(p))
            .then_some(now);
        let reserve = self
            .wants_reservations()
            .then(|| {
                self.nat
                    .relays
                    .iter()
                    .filter(|(p, s)| s.listener.is_none() && self.trusted(p))
                    .map(|(_, s)| s.next_try)
                    .min()
            })
            .flatten();
        let retire = self
            .nat
            .links
            .values()
            .filter(|links| links.iter().any(|l| l.relayed))
            .filter_map(|links| links.iter().filter(|l| !l.relayed).map(|l| l.opened).min())
            .map(|t| t + RELAYED_GRACE)
            .min();
        [late, reserve, retire].into_iter().flatten().min()
    }

    /// Once per tick: (re)reserve where due, retire relayed links a direct one replaced.
    pub(crate) fn nat_tick(&mut self) {
        self.learn_late_relays();
        let now = Instant::now();
        if self.wants_reservations() {
            let due: Vec<PeerId> = self
                .nat
                .relays
                .iter()
                .filter(|(p, s)| s.listener.is_none() && s.next_try <= now && self.trusted(p))
                .map(|(p, _)| *p)
                .collect();
            for p in due {
                let connected = self.has_direct_link(&p);
                let Some(slot) = self.nat.relays.get_mut(&p) else {
                    continue;
                };
                slot.next_try = now + slot.backoff;
                slot.backoff = (slot.backoff * 2).min(MAX_RETRY);
                if !connected {
                    // Reach it first; connecting brings the reservation forward.
                    let opts = DialOpts::peer_id(p)
                        .addresses(vec![slot.addr.clone()])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let _ = self.swarm.dial(opts);
                    continue;
                }
                let circuit = slot.addr.clone().with(Protocol::P2pCircuit);
                match self.swarm.listen_on(circuit) {
                    Ok(id) => {
                        debug!(relay = %p, "asking the relay for a reservation");
                        slot.listener = Some(id);
                    }
                    Err(e) => slot.error = Some(e.to_string()),
                }
            }
        }
        // A direct connection is up: the relayed ones to the same peer go.
        let mut close = Vec::new();
        for links in self.nat.links.values() {
            let direct_since = links.iter().filter(|l| !l.relayed).map(|l| l.opened).min();
            if let Some(t) = direct_since
                && now.duration_since(t) >= RELAYED_GRACE
            {
                close.extend(links.iter().filter(|l| l.relayed).map(|l| l.id));
            }
        }
        for id in close {
            debug!(
                ?id,
                "closing a relayed connection: a direct one replaced it"
            );
            self.swarm.close_connection(id);
        }
    }

    /// Dial `p` through every relay node we are connected to (directly), as a dial of its
    /// own beside the direct one. Nothing to do while no relay is up: connecting to one
    /// dials every peer that is still offline through it.
    pub(crate) fn dial_via_relays(&mut self, p: PeerId) {
        let addrs: Vec<Multiaddr> = self
            .nat
            .relays
            .iter()
            .filter(|(r, _)| **r != p && self.has_direct_link(r))
            .map(|(_, s)| {
                s.addr
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(p))
            })
            .collect();
        if addrs.is_empty() {
            return;
        }
        debug!(peer = %p, "dialling through the relays");
        // `Disconnected`, not `…AndNotDialing`: a direct dial may be hanging already.
        let opts = DialOpts::peer_id(p)
            .addresses(addrs)
            .condition(PeerCondition::Disconnected)
            .build();
        let _ = self.swarm.dial(opts);
    }

    /// Connect to `relay` over the transport we have no connection on yet (TCP or QUIC,
    /// on the same port): identify on each connection tells us how the NAT maps that
    /// transport, and hole punching needs both peers to try the same one. Without this,
    /// one side may know only its TCP mapping and the other only its QUIC one.
    fn second_transport_to(&mut self, relay: PeerId) {
        let Some(links) = self.nat.links.get(&relay) else {
            return;
        };
        let quic = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::QuicV1));
        let direct: Vec<&Link> = links.iter().filter(|l| !l.relayed).collect();
        let (has_quic, has_tcp) = (
            direct.iter().any(|l| quic(&l.addr)),
            direct.iter().any(|l| !quic(&l.addr)),
        );
        if has_quic && has_tcp {
            return;
        }
        let Some(slot) = self.nat.relays.get(&relay) else {
            return;
        };
        // The slot's address, or its sibling on the other transport.
        let want_quic = !has_quic;
        let addr = if quic(&slot.addr) == want_quic {
            Some(slot.addr.clone())
        } else {
            crate::node_task::sibling(&slot.addr)
        };
        if let Some(addr) = addr {
            debug!(%relay, %addr, "second connection to the relay, on the other transport");
            let opts = DialOpts::peer_id(relay)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            let _ = self.swarm.dial(opts);
        }
    }

    fn has_direct_link(&self, p: &PeerId) -> bool {
        self.nat
            .links
            .get(p)
            .is_some_and(|v| v.iter().any(|l| !l.relayed))
    }

    /// A relay node came up: reserve on it now, and reach every trusted peer still offline
    /// through it.
    fn relay_up(&mut self, relay: PeerId) {
        self.second_transport_to(relay);
        self.nat_tick();
        let offline: Vec<PeerId> = self
            .trust
            .peers
            .keys()
            .filter_map(|k| k.parse().ok())
            .filter(|p| *p != relay && !self.online(p))
            .collect();
        for p in offline {
            self.dial_via_relays(p);
        }
    }

    /// A connection opened: record it; say so when the path changed.
    pub(crate) fn link_up(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        // A relayed connection we accepted has only `/p2p/<peer>` as its remote address; the
        // relay shows in our local (circuit listen) address.
        let relayed = endpoint.is_relayed();
        let relay = match endpoint {
            ConnectedPoint::Dialer { address, .. } => relay_of(address),
            ConnectedPoint::Listener { local_addr, .. } => relay_of(local_addr),
        };
        self.nat.links.entry(peer).or_default().push(Link {
            id,
            addr: match endpoint {
                ConnectedPoint::Listener { local_addr, .. } if relayed => {
                    local_addr.clone().with_p2p(peer).unwrap_or_else(|a| a)
                }
                _ => endpoint.get_remote_address().clone(),
            },
            relay: relay.filter(|_| relayed),
            relayed,
            opened: Instant::now(),
        });
        let first_direct = !relayed
            && self
                .nat
                .links
                .get(&peer)
                .is_some_and(|v| v.iter().filter(|l| !l.relayed).count() == 1);
        if let Some(slot) = self.nat.relays.get_mut(&peer)
            && first_direct
        {
            // The relay is (back) up: reserve now, not after the backoff, and use it.
            if slot.listener.is_none() {
                slot.next_try = Instant::now();
                slot.backoff = MIN_RETRY;
            }
            self.path_changed(peer);
            if self.trusted(&peer) {
                self.relay_up(peer);
            }
            return;
        }
        self.path_changed(peer);
    }

    /// A connection closed.
    pub(crate) fn link_down(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(v) = self.nat.links.get_mut(&peer) {
            v.retain(|l| l.id != id);
            if v.is_empty() {
                self.nat.links.remove(&peer);
                self.nat.identified.remove(&peer);
            }
        }
        self.nat.punched.remove(&id);
        self.path_changed(peer);
    }

    /// Is any connection to `peer` open?
    pub(crate) fn online(&self, peer: &PeerId) -> bool {
        self.nat.links.contains_key(peer)
    }

    /// The best connection to `peer`: direct before relayed, then the oldest.
    pub(crate) fn best_link(&self, peer: &PeerId) -> Option<&Link> {
        self.nat
            .links
            .get(peer)?
            .iter()
            .min_by_key(|l| (l.relayed, l.opened))
    }

    /// `direct`, `hole-punched`, `relayed` or `offline`.
    pub(crate) fn path_of(&self, peer: &PeerId) -> &'static str {
        match self.best_link(peer) {
            None => "offline",
            Some(l) if l.relayed => "relayed",
            Some(l) if self.nat.punched.contains(&l.id) => "hole-punched",
            Some(_) => "direct",
        }
    }

    /// When `peer`'s path last changed. A peer paired over the connection it still uses
    /// was a stranger when that opened (no change recorded then): its opening counts.
    pub(crate) fn path_since(&self, peer: &PeerId) -> Option<u64> {
        self.nat.path_since.get(peer).map(|(_, t)| *t).or_else(|| {
            let age = self.best_link(peer)?.opened.elapsed().as_secs();
            Some(now_unix().saturating_sub(age))
        })
    }

    /// The name of the relay carrying `peer`'s connection, when relayed.
    pub(crate) fn via(&self, peer: &PeerId) -> Option<String> {
        let r = self.best_link(peer).filter(|l| l.relayed)?.relay?;
        Some(
            self.trust
                .peers
                .get(&r.to_string())
                .map(|t| t.name.clone())
                .unwrap_or_else(|| r.to_string()),
        )
    }

    fn path_changed(&mut self, peer: PeerId) {
        if !self.trusted(&peer) {
            return;
        }
        let now = self.path_of(&peer).to_string();
        let changed = self
            .nat
            .path_since
            .get(&peer)
            .is_none_or(|(old, _)| *old != now);
        if changed {
            info!(%peer, path = %now, via = ?self.via(&peer), "path to peer");
            self.nat.path_since.insert(peer, (now, now_unix()));
        }
    }

    /// This node's NAT view for status.
    pub(crate) fn relay_views(&self) -> Vec<RelayView> {
        let mut v: Vec<RelayView> = self
            .nat
            .relays
            .iter()
            .map(|(p, s)| RelayView {
                name: self
                    .trust
                    .peers
                    .get(&p.to_string())
                    .map(|t| t.name.clone())
                    .unwrap_or_else(|| p.to_string()),
                peer_id: p.to_string(),
                address: s.addr.to_string(),
                configured: s.configured,
                reserved_since: s.reserved_since,
                error: s.error.clone().or_else(|| {
                    (!self.trusted(p)).then(|| {
                        "not a trusted peer: pair with the relay node first (`loopsy pair`)".into()
                    })
                }),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub(crate) fn nat_status(&self) -> String {
        match self.nat.status {
            autonat::NatStatus::Public(_) => "public",
            autonat::NatStatus::Private => "private",
            autonat::NatStatus::Unknown => "unknown",
        }
        .into()
    }

    pub(crate) fn relay_refused(&self) -> u64 {
        self.nat.refused.load(Ordering::Relaxed)
    }

    /// A listen address appeared: a relay node confirms its own non-loopback addresses (all,
    /// when it listens on loopback only) as external: the relay protocol is only offered
    /// once some are.
    pub(crate) fn on_new_listen_addr(&mut self, addr: &Multiaddr) {
        if self.cfg.relay_serve.is_some()
            && !is_relayed(addr)
            && (self.cfg.local_only || !is_loopback(addr))
        {
            self.swarm.add_external_address(addr.clone());
        }
    }

    /// A listener ended: a reservation is gone; retry after the backoff.
    pub(crate) fn on_listener_closed(&mut self, id: ListenerId, reason: String) {
        for (p, s) in self.nat.relays.iter_mut() {
            if s.listener == Some(id) {
                info!(relay = %p, %reason, "relay reservation ended");
                s.listener = None;
                s.reserved_since = None;
                s.error = Some(reason.clone());
            }
        }
    }

    /// Keep what a connected relay-serving peer said about itself, for when it is trusted.
    pub(crate) fn remember_identify(&mut self, peer: PeerId, info: &identify::Info) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) && self.nat.identified.len() < 256 {
            self.nat.identified.insert(peer, info.clone());
        }
    }

    /// Peers that became trusted after they identified as relays: use them now.
    fn learn_late_relays(&mut self) {
        let late: Vec<(PeerId, identify::Info)> = self
            .nat
            .identified
            .iter()
            .filter(|(p, _)| self.trusted(p) && !self.nat.relays.contains_key(p))
            .map(|(p, i)| (*p, i.clone()))
            .collect();
        for (p, info) in late {
            self.on_identify(p, &info);
            self.nat.identified.remove(&p);
        }
    }

    /// A trusted peer identified itself: a peer that serves as a relay joins the relay list.
    pub(crate) fn on_identify(&mut self, peer: PeerId, info: &identify::Info) {
        if !info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
            || self.nat.relays.contains_key(&peer)
            || self.nat.relays.len() >= MAX_RELAYS
        {
            return;
        }
        let remote_ip = self.best_link(&peer).filter(|l| !l.relayed).and_then(|l| {
            l.addr
                .iter()
                .find(|p| matches!(p, Protocol::Ip4(_) | Protocol::Ip6(_)))
        });
        let Some(remote_ip) = remote_ip else {
            return;
        };
        // Its listen address on the IP we reached it at, TCP first.
        let mut cands: Vec<&Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| !is_relayed(a) && a.iter().next() == Some(remote_ip.clone()))
            .collect();
        cands.sort_by_key(|a| !a.iter().any(|p| matches!(p, Protocol::Tcp(_))));
        let Some(addr) = cands.first() else {
            return;
        };
        let addr = (*addr).clone().with_p2p(peer).unwrap_or_else(|a| a);
        info!(relay = %peer, %addr, "a trusted peer serves as a relay");
        self.swarm
            .behaviour_mut()
            .autonat
            .add_server(peer, Some(addr.clone()));
        self.nat.relays.insert(
            peer,
            RelaySlot {
                addr,
                configured: false,
                listener: None,
                reserved_since: None,
                error: None,
                next_try: Instant::now(),
                backoff: MIN_RETRY,
            },
        );
        self.relay_up(peer);
    }

    pub(crate) fn relay_client_event(&mut self, e: relay::client::Event) {
        match e {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if let Some(s) = self.nat.relays.get_mut(&relay_peer_id) {
                    if !renewal {
                        info!(relay = %relay_peer_id, "reserved on the relay");
                    }
                    s.reserved_since.get_or_insert_with(now_unix);
                    s.error = None;
                    s.backoff = MIN_RETRY;
                }
            }
            other => debug!(?other, "relay client"),
        }
    }

    pub(crate) fn relay_server_event(&mut self, e: relay::Event) {
        match e {
            relay::Event::ReservationReqDenied { src_peer_id, .. } => {
                info!(peer = %src_peer_id, "relay: reservation denied")
            }
            relay::Event::CircuitReqDenied {
                src_peer_id,
                dst_peer_id,
                ..
            } => info!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit denied"),
            other => debug!(?other, "relay server"),
        }
    }

    pub(crate) fn dcutr_event(&mut self, e: dcutr::Event) {
        match e.result {
            Ok(id) => {
                info!(peer = %e.remote_peer_id, "hole punched: direct connection");
                self.nat.punched.insert(id);
                self.nat.punches.succeeded += 1;
                self.path_changed(e.remote_peer_id);
            }
            Err(err) => {
                self.nat.punches.failed += 1;
                info!(peer = %e.remote_peer_id, error = %err, "hole punching failed; staying relayed")
            }
        }
    }

    pub(crate) fn autonat_event(&mut self, e: autonat::Event) {
        if let autonat::Event::StatusChanged { old, new } = e {
            info!(?old, ?new, "reachability changed");
            self.nat.status = new;
        }
    }

    /// Warn once at start when a configured relay node is not a trusted peer.
    pub(crate) fn warn_untrusted_relays(&self) {
        for p in self.nat.relays.keys() {
            if !self.trusted(p) {
                warn!(relay = %p, "relay.nodes names a peer this machine has not paired with: pair with it first");
            }
        }
    }
}
