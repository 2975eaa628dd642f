//! Introductions: a trusted member vouches for the peers it trusts, so N machines need N-1
//! pairings. An introduced peer gets at most the introducer's own capabilities here, and a
//! peer removed here is never brought back this way.

use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use tracing::{info, warn};

use crate::node_task::{MAX_ADDRS, MIN_REDIAL, NodeTask, now_unix};
use crate::trust::TrustedPeer;
use crate::wire::{INTRODUCE, Introduction, MAX_INTRODUCTIONS, RpcRequest, RpcResponse};

/// Ticks (500 ms) to keep retrying an introduction the peer refused.
const INTRO_RETRIES: u8 = 10;

impl NodeTask {
    /// Send `to` an introduction of every other peer we trust.
    pub(crate) fn introduce_all_to(&mut self, to: PeerId) {
        let others = self.trusted_except(to);
        if !others.is_empty() {
            self.introduce(to, &others);
        }
    }

    /// A newly paired peer: introduce it to our peers and them to it.
    pub(crate) fn introduce_newcomer(&mut self, peer: PeerId) {
        self.introduce_all_to(peer);
        for other in self.trusted_except(peer) {
            self.introduce(other, &[peer]);
        }
    }

    /// Every trusted PeerId but `except`.
    fn trusted_except(&self, except: PeerId) -> Vec<PeerId> {
        self.trust
            .peers
            .keys()
            .filter_map(|k| k.parse().ok())
            .filter(|p| *p != except)
            .collect()
    }

    /// Vouch for `peers` to `to` (fire and forget; `to` re-learns on every reconnect).
    pub(crate) fn introduce(&mut self, to: PeerId, peers: &[PeerId]) {
        let intros: Vec<Introduction> = peers
            .iter()
            .filter_map(|p| {
                let t = self.trust.peers.get(&p.to_string())?;
                Some(Introduction {
                    peer_id: p.to_string(),
                    name: t.name.clone(),
                    addrs: t.addrs.clone(),
                })
            })
            .take(MAX_INTRODUCTIONS)
            .collect();
        let Ok(args) = serde_json::to_string(&intros) else {
            return;
        };
        for a in self.known_addrs(&to) {
            self.swarm.add_peer_address(to, a);
        }
        let req = RpcRequest {
            tool: INTRODUCE.into(),
            args,
        };
        let _ = self.swarm.behaviour_mut().rpc.send_request(&to, req);
    }

    /// `peer` refused an introduction. Right after pairing that is the newcomer, which may
    /// not have stored its side of the pairing when ours arrived: try again at the next ticks
    /// (10 times, 5 s), while we still trust it.
    pub(crate) fn intro_refused(&mut self, peer: PeerId) {
        if self.trust.peers.contains_key(&peer.to_string()) {
            self.intro_retry.entry(peer).or_insert(INTRO_RETRIES);
        }
    }

    /// Retry refused introductions (each tick), dropping peers out of tries or no longer
    /// trusted.
    pub(crate) fn intro_tick(&mut self) {
        let trusted = &self.trust.peers;
        self.intro_retry
            .retain(|p, left| *left > 0 && trusted.contains_key(&p.to_string()));
        let due: Vec<PeerId> = self
            .intro_retry
            .iter_mut()
            .map(|(p, left)| {
                *left -= 1;
                *p
            })
            .collect();
        for peer in due {
            self.introduce_all_to(peer);
        }
    }

    /// Accept a trusted member's introductions: new peers get at most the introducer's own
    /// capabilities here, and peers removed here are never brought back this way.
    pub(crate) fn on_introduce(&mut self, from: PeerId, args: &str) -> RpcResponse {
        let Ok(intros) = serde_json::from_str::<Vec<Introduction>>(args) else {
            return RpcResponse::Result(r#"{"accepted":0}"#.into());
        };
        let Some(by) = self.trust.peers.get(&from.to_string()).cloned() else {
            return RpcResponse::Denied;
        };
        let me = self.me().to_string();
        let mut accepted = 0;
        for i in intros.into_iter().take(MAX_INTRODUCTIONS) {
            let Ok(pid) = i.peer_id.parse::<PeerId>() else {
                continue;
            };
            if i.peer_id == me
                || self.trust.peers.contains_key(&i.peer_id)
                || self.trust.removed.contains(&i.peer_id)
                || crate::config::validate_name(&i.name).is_err()
            {
                continue;
            }
            let name = self.trust.unique_name(&i.name, &self.cfg.name, &i.peer_id);
            let addrs: Vec<String> = i
                .addrs
                .into_iter()
                .filter(|a| a.parse::<Multiaddr>().is_ok())
                .take(MAX_ADDRS)
                .collect();
            info!(peer = %pid, %name, introducer = %by.name, "trusting an introduced peer");
            self.trust.peers.insert(
                i.peer_id.clone(),
                TrustedPeer {
                    name,
                    caps: by.caps.clone(),
                    paired_at: now_unix(),
                    addrs,
                    introduced_by: Some(from.to_string()),
                },
            );
            self.redial.insert(pid, (Instant::now(), MIN_REDIAL));
            accepted += 1;
        }
        if accepted > 0
            && let Err(e) = self.save_trust()
        {
            warn!(error = %e, "cannot save introduced peers");
        }
        RpcResponse::Result(format!(r#"{{"accepted":{accepted}}}"#))
    }
}
