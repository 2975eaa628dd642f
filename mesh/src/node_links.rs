//! One direct connection per peer. Duplicates happen (both sides redial at once after a
//! network blip, a dial races an incoming connection) and each costs pings, gossip streams
//! and wake-ups for as long as it lives, which may be for good: gossipsub keeps a stream open
//! on every connection it has used. Once a new connection has identified itself, the peer
//! with the smaller PeerId (only it, so the two sides never close different ones) keeps the
//! oldest direct connection to the same run of the other and closes the rest. Relayed links
//! are left to `nat_tick` (closed once a direct one has lasted a grace).

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;
use tracing::debug;

use crate::node_nat::Link;
use crate::node_task::NodeTask;

/// The direct connections in `links` to run `boot` that the oldest of them makes redundant.
pub(crate) fn redundant(links: &[Link], boot: &str) -> Vec<ConnectionId> {
    let mut same: Vec<&Link> = links
        .iter()
        .filter(|l| !l.relayed && l.boot.as_deref() == Some(boot))
        .collect();
    same.sort_by_key(|l| l.opened);
    same.iter().skip(1).map(|l| l.id).collect()
}

impl NodeTask {
    /// Connection `id` to `peer` identified itself as run `boot` of it: close what that
    /// makes redundant, if this node is the one that decides.
    pub(crate) fn dedupe_links(&mut self, peer: PeerId, id: ConnectionId, boot: &str) {
        let me = self.me();
        let Some(links) = self.nat.links.get_mut(&peer) else {
            return;
        };
        if let Some(l) = links.iter_mut().find(|l| l.id == id) {
            l.boot = Some(boot.to_string());
        }
        if me > peer {
            return;
        }
        for extra in redundant(links, boot) {
            debug!(%peer, ?extra, "closing a second direct connection to the same peer");
            self.swarm.close_connection(extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn link(id: usize, relayed: bool, boot: Option<&str>, age_s: u64) -> Link {
        Link {
            id: ConnectionId::new_unchecked(id),
            addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            relay: None,
            relayed,
            opened: Instant::now() - Duration::from_secs(age_s),
            boot: boot.map(str::to_string),
        }
    }

    #[test]
    fn the_oldest_direct_link_to_the_same_run_stays() {
        let links = [
            link(1, false, Some("b1"), 5),
            link(2, false, Some("b1"), 50),
            link(3, false, Some("b1"), 1),
        ];
        let mut r = redundant(&links, "b1");
        r.sort();
        assert_eq!(
            r,
            vec![
                ConnectionId::new_unchecked(1),
                ConnectionId::new_unchecked(3)
            ]
        );
    }

    #[test]
    fn relayed_unidentified_and_other_runs_are_left_alone() {
        let links = [
            link(1, false, Some("b1"), 50),
            link(2, true, Some("b1"), 5),
            link(3, false, None, 5),
            link(4, false, Some("b0"), 100),
        ];
        assert!(redundant(&links, "b1").is_empty());
        assert!(redundant(&links, "b0").is_empty());
    }
}
