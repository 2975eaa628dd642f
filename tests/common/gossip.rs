//! A raw libp2p node (loopsy's own behaviour stack, no daemon) that speaks the message
//! transport by hand: it reads its own inbox topic, publishes frames on a daemon's inbox
//! topic and collects the answers. Tests use it to play a misbehaving trusted peer, a
//! stranger, or a peer that subscribes to someone else's inbox.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use loopsy_mesh::behaviour::{MeshBehaviour, MeshBehaviourEvent};
use loopsy_mesh::msg::Outcome;
use loopsy_mesh::msg::deliver::{Frame, decode};

/// What a [`RawPeer`] saw.
#[derive(Debug)]
pub enum Seen {
    /// A frame on a topic this node reads, from `source`.
    Frame(PeerId, gossipsub::TopicHash, Vec<u8>),
    /// The daemon closed every connection to this node.
    Disconnected,
}

/// A raw node connected to one daemon.
pub struct RawPeer {
    pub swarm: Swarm<MeshBehaviour>,
    pub daemon: PeerId,
}

impl RawPeer {
    /// Connect to the daemon at `addr` (ending in `/p2p/<id>`) as `identity`, reading the
    /// inbox topics of `read` (its own: `identity`'s PeerId), and wait until the daemon has
    /// said it reads its own inbox (so a publish reaches it).
    pub async fn connect(identity: &loopsy_mesh::Identity, addr: &str, read: &[PeerId]) -> Self {
        let mut p = Self::dial(identity, addr, read);
        p.ready().await;
        p
    }

    /// Dial the daemon at `addr` as `identity`, reading the inbox topics of `read`; does not
    /// wait for anything.
    pub fn dial(identity: &loopsy_mesh::Identity, addr: &str, read: &[PeerId]) -> Self {
        let mut swarm = crate::common::test_swarm(identity);
        for p in read {
            swarm
                .behaviour_mut()
                .gossip
                .subscribe(&loopsy_mesh::inbox_topic(p))
                .unwrap();
        }
        let addr: Multiaddr = addr.parse().unwrap();
        let Some(libp2p::multiaddr::Protocol::P2p(daemon)) = addr.iter().last() else {
            panic!("no /p2p in {addr}")
        };
        swarm.dial(addr).unwrap();
        Self { swarm, daemon }
    }

    /// Wait until the daemon has said it reads its own inbox.
    pub async fn ready(&mut self) {
        let want = loopsy_mesh::inbox_topic(&self.daemon).hash();
        let daemon = self.daemon;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let SwarmEvent::Behaviour(MeshBehaviourEvent::Gossip(
                    gossipsub::Event::Subscribed { peer_id, topic },
                )) = self.swarm.select_next_some().await
                    && peer_id == daemon
                    && topic == want
                {
                    return;
                }
            }
        })
        .await
        .expect("the daemon never said it reads its inbox");
    }

    /// Publish `frame` on the daemon's inbox topic.
    pub fn publish(&mut self, frame: Vec<u8>) {
        self.swarm
            .behaviour_mut()
            .gossip
            .publish(loopsy_mesh::inbox_topic(&self.daemon), frame)
            .unwrap();
    }

    /// The next frame on a topic this node reads, or the end of its connection; `None` when
    /// `within` passes with neither.
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        tokio::time::timeout(within, async {
            loop {
                match self.swarm.select_next_some().await {
                    SwarmEvent::Behaviour(MeshBehaviourEvent::Gossip(
                        gossipsub::Event::Message { message, .. },
                    )) => {
                        return Seen::Frame(message.source.unwrap(), message.topic, message.data);
                    }
                    SwarmEvent::ConnectionClosed {
                        peer_id,
                        num_established: 0,
                        ..
                    } if peer_id == self.daemon => return Seen::Disconnected,
                    _ => {}
                }
            }
        })
        .await
        .ok()
    }

    /// Publish each frame in turn and wait for its answer; frames in `unanswered` (by index)
    /// expect none and are not waited for. The outcomes per frame (`None`: not answered).
    pub async fn exchange(
        &mut self,
        frames: Vec<(u64, Vec<u8>)>,
        unanswered: &[usize],
    ) -> Vec<Option<Vec<Outcome>>> {
        let mut out = Vec::new();
        for (i, (n, frame)) in frames.into_iter().enumerate() {
            self.publish(frame);
            if unanswered.contains(&i) {
                out.push(None);
                continue;
            }
            let answer = loop {
                match self.next(Duration::from_secs(20)).await {
                    Some(Seen::Frame(src, _, data)) if src == self.daemon => {
                        if let Ok(Frame::Answer { n: got, outcomes }) = decode(&data)
                            && got == n
                        {
                            break outcomes;
                        }
                    }
                    Some(Seen::Frame(..)) => {}
                    other => panic!("frame {i}: no answer from the daemon ({other:?})"),
                }
            };
            out.push(Some(answer));
        }
        out
    }
}
