//! Gossipsub in the node task: agent messages travel as gossip messages on per-machine inbox
//! topics. Each node subscribes to its own inbox topic only. A message for B is published on
//! B's topic, signed with the sender's peer key (gossipsub, strict mode); B reads it and
//! reports it `Ignore`, so it is never forwarded. The message layer (`msg::deliver`) gets
//! every message that arrives, with its verified signer, and publishes batches and answers
//! through [`NodeHandle::publish`](crate::NodeHandle::publish).
//!
//! Gossipsub sends a message to every connected peer that says it subscribes to the topic.
//! A peer that subscribes to an inbox topic not its own is trying to read someone else's
//! mail: it is disconnected and counted, and nothing is published on that topic while it is
//! still connected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::node::NodeError;
use crate::node_task::NodeTask;

/// Gossip messages queued for the message layer before new ones are dropped (their senders
/// retry: nothing is acknowledged until it is stored).
pub const GOSSIP_IN_CAPACITY: usize = 1024;
/// Bytes of gossip queued or being handled by the message layer, all peers together (a
/// message is up to 8 MiB: without this, 1024 of them would be 8 GiB).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// The same, per peer: one member cannot take the whole budget from the others.
pub const MAX_QUEUED_BYTES_PER_PEER: usize = 16 << 20;

/// What is queued, shared by the node task (which admits) and the message layer (whose
/// [`Ticket`]s give it back when a message is handled).
#[derive(Clone, Default)]
pub struct Queued(std::sync::Arc<std::sync::Mutex<QueuedState>>);

#[derive(Default)]
struct QueuedState {
    total: usize,
    per_peer: HashMap<PeerId, usize>,
}

/// A message's share of the queue; dropping it gives the bytes back.
pub struct Ticket {
    q: Queued,
    peer: PeerId,
    bytes: usize,
}

impl Queued {
    /// Room for `bytes` more from `peer`? Then the ticket for them.
    pub fn admit(&self, peer: PeerId, bytes: usize) -> Option<Ticket> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = s.per_peer.get(&peer).copied().unwrap_or(0);
        if s.total + bytes > MAX_QUEUED_BYTES || mine + bytes > MAX_QUEUED_BYTES_PER_PEER {
            return None;
        }
        s.total += bytes;
        *s.per_peer.entry(peer).or_insert(0) += bytes;
        Some(Ticket {
            q: self.clone(),
            peer,
            bytes,
        })
    }

    /// Bytes queued now, all peers together.
    pub fn total(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.q.0.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(self.bytes);
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

/// A gossip message for the message layer: its verified signer, its bytes, and its share
/// of the queue (hold it until the message is handled).
pub type Incoming = (PeerId, Vec<u8>, Ticket);

const INBOX_PREFIX: &str = "/loopsy/inbox/1/";

/// The inbox topic of `peer`.
pub fn inbox_topic(peer: &PeerId) -> IdentTopic {
    IdentTopic::new(format!("{INBOX_PREFIX}{peer}"))
}

/// The gossip state the node task keeps.
pub(crate) struct Gossip {
    /// Messages that arrived, with their verified signer.
    pub(crate) inbox: mpsc::Sender<Incoming>,
    /// Their bytes, until handled.
    pub(crate) queued: Queued,
    /// Bumped when a trusted peer subscribes to its inbox (it can now be sent mail).
    pub(crate) ready: watch::Sender<(u64, Option<PeerId>)>,
    /// Peers disconnected for subscribing to someone else's inbox.
    pub(crate) snoops: u64,
    /// Messages dropped because the message layer was behind.
    pub(crate) overflow: u64,
    /// Trusted peers that speak gossipsub but have not been seen to read their inbox, since
    /// when (see [`NodeTask::gossip_watch`]).
    pub(crate) unheard: HashMap<PeerId, Instant>,
    /// The boot id each connected peer identified with (see [`NodeTask::gossip_boot`]); an
    /// entry lives as long as the peer has a connection.
    pub(crate) boots: HashMap<PeerId, String>,
}

/// How long a connected peer that speaks gossipsub may go without our seeing its inbox
/// subscription before its connections are reset.
const UNHEARD: Duration = Duration::from_secs(5);

impl NodeTask {
    /// Subscribe to this node's own inbox.
    pub(crate) fn gossip_init(&mut self) {
        let topic = inbox_topic(&self.me());
        if let Err(e) = self.swarm.behaviour_mut().gossip.subscribe(&topic) {
            warn!(error = %e, "cannot subscribe to the inbox topic");
        }
    }

    /// Whose inbox `topic` is, if it is one.
    fn inbox_owner(topic: &TopicHash) -> Option<PeerId> {
        topic.as_str().strip_prefix(INBOX_PREFIX)?.parse().ok()
    }

    pub(crate) fn gossip_event(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                // Never forwarded: an inbox has one reader.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Ignore,
                    );
                let Some(source) = message.source else {
                    return;
                };
                if Self::inbox_owner(&message.topic) != Some(self.me()) {
                    return;
                }
                let Some(ticket) = self.gossip.queued.admit(source, message.data.len()) else {
                    self.gossip.overflow += 1;
                    debug!(peer = %source, "gossip queue full (bytes): message dropped (the sender retries)");
                    return;
                };
                if self
                    .gossip
                    .inbox
                    .try_send((source, message.data, ticket))
                    .is_err()
                {
                    self.gossip.overflow += 1;
                    debug!(peer = %source, "message layer behind: gossip message dropped (the sender retries)");
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => match Self::inbox_owner(&topic) {
                Some(owner) if owner != peer_id => self.snooped(peer_id, owner),
                Some(_) if self.trusted(&peer_id) => {
                    self.inbox_open(peer_id);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// `peer` just became trusted: if it already said it reads its inbox (it subscribed
    /// while it was still a stranger, during pairing), it can be sent mail now.
    pub(crate) fn inbox_maybe_ready(&mut self, peer: PeerId) {
        if self.reads_inbox(peer) {
            self.inbox_open(peer);
        }
    }

    /// A trusted `peer` identified with these protocols: if it speaks gossipsub, its inbox
    /// subscription is expected shortly.
    pub(crate) fn gossip_identified(&mut self, peer: PeerId, protocols: &[libp2p::StreamProtocol]) {
        if protocols
            .iter()
            .any(|p| p.as_ref().starts_with("/meshsub/"))
            && !self.reads_inbox(peer)
        {
            self.gossip.unheard.entry(peer).or_insert_with(Instant::now);
        }
    }

    /// `peer` has no connection left.
    pub(crate) fn gossip_gone(&mut self, peer: &PeerId) {
        self.gossip.unheard.remove(peer);
        self.gossip.boots.remove(peer);
    }

    /// A peer identified on a connection with `agent`. If a trusted peer names another boot than
    /// the one it identified with before, while this node never lost it (some connection
    /// stayed up), the peer restarted and its old connection lingers here (a killed process
    /// sends no close). Gossipsub tells a peer our subscriptions only over its first
    /// connection: the restarted peer would never hear that we read our inbox, and its mail
    /// would wait. So every connection to it is closed at once, and both sides redial
    /// afresh (a second), instead of waiting out [`UNHEARD`] and the old connection's idle
    /// timeout (up to 20 s in tests before this).
    /// Returns whether it did.
    pub(crate) fn gossip_boot(&mut self, peer: PeerId, agent: &str) -> bool {
        let Some(boot) = crate::behaviour::boot_of(agent) else {
            return false;
        };
        match self.gossip.boots.insert(peer, boot.to_string()) {
            Some(old) if old != boot && self.trusted(&peer) => {
                info!(%peer, "the peer restarted while its old connection lingered here: reconnecting afresh");
                self.gossip.boots.remove(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
                true
            }
            _ => false,
        }
    }

    /// Gossipsub tells a peer our subscriptions only over its first connection. When a peer
    /// restarts and reconnects while its old connection still looks alive here (a QUIC
    /// connection of a killed process lingers until its idle timeout), it never hears that
    /// we read our inbox, and we never hear of its: mail to it would wait until every
    /// connection happened to close. So a trusted peer connected for a while without its
    /// inbox subscription is disconnected, and the redial starts afresh on both sides.
    /// When [`Self::gossip_watch`] has work: the first connected peer's [`UNHEARD`] is up.
    pub(crate) fn gossip_due(&self) -> Option<Instant> {
        self.gossip
            .unheard
            .values()
            .min()
            .map(|since| *since + UNHEARD)
    }

    pub(crate) fn gossip_watch(&mut self) {
        let now = Instant::now();
        let overdue: Vec<PeerId> = self
            .gossip
            .unheard
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= UNHEARD)
            .map(|(p, _)| *p)
            .collect();
        for p in overdue {
            self.gossip.unheard.remove(&p);
            if self.reads_inbox(p) || !self.trusted(&p) {
                continue;
            }
            info!(peer = %p, "connected {UNHEARD:?} without hearing that it reads its inbox: reconnecting");
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    /// Whether `peer` is known to read its inbox.
    fn reads_inbox(&self, peer: PeerId) -> bool {
        let hash = inbox_topic(&peer).hash();
        self.swarm
            .behaviour()
            .gossip
            .all_peers()
            .any(|(p, topics)| *p == peer && topics.contains(&&hash))
    }

    /// Tell the message layer that `peer` (trusted) reads its inbox: mail can go now.
    fn inbox_open(&mut self, peer: PeerId) {
        self.gossip.unheard.remove(&peer);
        self.gossip.ready.send_modify(|(g, p)| {
            *g = g.wrapping_add(1);
            *p = Some(peer);
        });
    }

    fn snooped(&mut self, peer: PeerId, owner: PeerId) {
        self.gossip.snoops += 1;
        warn!(%peer, inbox = %owner, "a peer subscribed to another machine's inbox: disconnected");
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Publish `data` on `to`'s inbox topic. Refused while anyone but `to` claims to read it.
    pub(crate) fn publish(&mut self, to: PeerId, data: Vec<u8>) -> Result<(), NodeError> {
        let topic = inbox_topic(&to);
        let hash = topic.hash();
        let snoops: Vec<PeerId> = self
            .swarm
            .behaviour()
            .gossip
            .all_peers()
            .filter(|(p, topics)| **p != to && topics.contains(&&hash))
            .map(|(p, _)| *p)
            .collect();
        if !snoops.is_empty() {
            for p in snoops {
                self.snooped(p, to);
            }
            return Err(NodeError::Unreachable {
                peer: to.to_string(),
                reason: "another peer claims to read its inbox (disconnected; retrying)".into(),
            });
        }
        self.swarm
            .behaviour_mut()
            .gossip
            .publish(topic, data)
            .map(|_| ())
            .map_err(|e| NodeError::Unreachable {
                peer: to.to_string(),
                reason: match e {
                    gossipsub::PublishError::NoPeersSubscribedToTopic => {
                        "not connected (or its inbox is not open yet)".into()
                    }
                    e => format!("cannot send: {e}"),
                },
            })
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn queued_bytes_are_bounded_per_peer_and_in_all_and_given_back() {
        let q = Queued::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let eight = 8 << 20;
        let a1 = q.admit(a, eight).unwrap_or_else(|| panic!("first"));
        let a2 = q.admit(a, eight).unwrap_or_else(|| panic!("second"));
        assert!(q.admit(a, 1).is_none(), "16 MiB per peer");
        let held: Vec<Ticket> = (0..6)
            .map(|_| {
                let p = PeerId::random();
                q.admit(p, eight).unwrap_or_else(|| panic!("others"))
            })
            .collect();
        assert_eq!(q.total(), MAX_QUEUED_BYTES);
        assert!(q.admit(b, 1).is_none(), "64 MiB in all");
        drop(a1);
        assert!(q.admit(b, eight).is_some(), "given back when handled");
        drop((a2, held));
        assert_eq!(q.total(), 0);
    }
}
