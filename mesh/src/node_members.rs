//! Membership on the `/loopsy/members/1` protocol. Introductions: each member vouches for
//! the machines it paired with itself, with what it grants each, so N machines need N-1
//! pairings; an introduced machine gets at most min(what its introducer grants it, what this
//! machine lets the introducer do, `[trust] introduced_caps`), and a later revoke or removal
//! on the introducer reaches here at once (see `Trust::effective`). Removals: signed by the
//! member that removed, applied by every member that accepts its authority, passed on, and
//! re-sent whenever two members meet, so offline members catch up.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use libp2p::identity::Keypair;
use libp2p::request_response;
use libp2p::{Multiaddr, PeerId};
use tracing::{info, warn};

use crate::membership::{RateLimit, Refusal, check_removal};
use crate::node_task::{MAX_ADDRS, MIN_REDIAL, NodeTask, now_unix};
use crate::trust::{Capability, MAX_PEERS, MAX_REMOVED, MAX_VOUCHERS, TrustedPeer};
use crate::wire::{
    Introduction, MAX_INTRODUCTIONS, MAX_PARTS, MembersRequest, MembersResponse, Parts, Removal,
};

/// Ticks (500 ms) to keep retrying an introduction the peer refused.
const INTRO_RETRIES: u8 = 10;

/// The node's membership state.
pub(crate) struct Members {
    /// This node's key (signs removals).
    key: Keypair,
    /// What each trusted peer may do here, introductions followed (`Trust::effective`).
    pub(crate) eff: BTreeMap<String, Vec<Capability>>,
    /// What this node last vouched for: its own pairings and their grants.
    vouched: BTreeMap<String, Vec<Capability>>,
    rate: RateLimit,
    /// Membership entries refused (limits, authority, signatures), for `status`.
    pub(crate) refused: u64,
    /// Peers that refused our introductions because they did not trust us yet (a newcomer
    /// that has not finished its side of pairing): how many more times to try, at each tick.
    retry: HashMap<PeerId, u8>,
    /// Bumped on every change to the trust list (the context replica's authors follow it).
    changed: tokio::sync::watch::Sender<u64>,
    /// Complete introduction lists arriving in parts.
    rounds: Rounds,
}

/// The parts of each member's complete introduction list received so far (one round per
/// member; a part of another round starts over).
#[derive(Default)]
struct Rounds(HashMap<PeerId, Round>);

struct Round {
    id: u64,
    count: u16,
    seen: BTreeSet<u16>,
    ids: HashSet<String>,
}

impl Rounds {
    /// Add one part; the whole list's PeerIds once every part has arrived. Parts out of
    /// range, and lists longer than a trust file can hold, never complete (nothing is
    /// withdrawn on their account).
    fn add(
        &mut self,
        from: PeerId,
        p: Parts,
        ids: impl Iterator<Item = String>,
    ) -> Option<HashSet<String>> {
        if p.count == 0 || p.count > MAX_PARTS || p.index >= p.count {
            return None;
        }
        let fresh = || Round {
            id: p.round,
            count: p.count,
            seen: BTreeSet::new(),
            ids: HashSet::new(),
        };
        let r = self.0.entry(from).or_insert_with(fresh);
        if r.id != p.round || r.count != p.count {
            *r = fresh();
        }
        r.seen.insert(p.index);
        r.ids.extend(ids.take(MAX_INTRODUCTIONS));
        if r.seen.len() < usize::from(r.count) {
            return None;
        }
        self.0.remove(&from).map(|r| r.ids)
    }
}

impl Members {
    pub(crate) fn new(
        key: Keypair,
        trust: &crate::trust::Trust,
        changed: tokio::sync::watch::Sender<u64>,
    ) -> Self {
        Self {
            key,
            eff: trust.effective(),
            vouched: own_pairings(trust),
            rate: RateLimit::default(),
            refused: 0,
            retry: HashMap::new(),
            rounds: Rounds::default(),
            changed,
        }
    }
}

/// The machines paired here and what each is granted: what this node vouches for.
fn own_pairings(trust: &crate::trust::Trust) -> BTreeMap<String, Vec<Capability>> {
    trust
        .peers
        .iter()
        .filter(|(_, p)| p.paired_here())
        .map(|(id, p)| (id.clone(), p.caps.clone()))
        .collect()
}

impl NodeTask {
    /// What `peer` may do here now.
    pub(crate) fn caps_of(&self, peer: &PeerId) -> Vec<Capability> {
        self.members
            .eff
            .get(&peer.to_string())
            .cloned()
            .unwrap_or_default()
    }

    /// After any change to the trust list: recompute rights, and tell the connected members
    /// about every pairing of ours that was made, changed or undone.
    pub(crate) fn trust_changed(&mut self) {
        // Introduced machines no member here vouches for any more are forgotten (they had no
        // rights left; they would still count, be redialled and be relayed for).
        loop {
            let orphans: Vec<String> = self
                .trust
                .peers
                .iter()
                .filter(|(_, p)| {
                    !p.paired_here() && !p.vouchers.keys().any(|v| self.trust.peers.contains_key(v))
                })
                .map(|(id, _)| id.clone())
                .collect();
            if orphans.is_empty() {
                break;
            }
            for o in orphans {
                self.trust.peers.remove(&o);
                if let Ok(pid) = o.parse::<PeerId>() {
                    info!(peer = %pid, "its introducers are gone: forgotten");
                    self.redial.remove(&pid);
                    let _ = self.swarm.disconnect_peer_id(pid);
                }
            }
        }
        self.members.eff = self.trust.effective();
        self.members.changed.send_modify(|g| *g = g.wrapping_add(1));
        let now = own_pairings(&self.trust);
        let old = std::mem::replace(&mut self.members.vouched, now);
        let mut changed: Vec<String> = self
            .members
            .vouched
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            old.keys()
                .filter(|k| !self.members.vouched.contains_key(*k))
                .cloned(),
        );
        if changed.is_empty() {
            return;
        }
        let online: Vec<PeerId> = self
            .trust
            .peers
            .keys()
            .filter_map(|k| k.parse().ok())
            .filter(|p| self.online(p))
            .collect();
        for to in online {
            let intros: Vec<Introduction> = changed
                .iter()
                .filter(|p| **p != to.to_string())
                .map(|p| self.introduction_of(p))
                .collect();
            self.send_members(
                to,
                MembersRequest::Introduce {
                    intros,
                    complete: false,
                    parts: None,
                },
            );
        }
    }

    /// How we vouch for `peer`: our grant when we paired with it, nothing otherwise.
    fn introduction_of(&self, peer: &str) -> Introduction {
        match self.trust.peers.get(peer).filter(|t| t.paired_here()) {
            Some(t) => Introduction {
                peer_id: peer.to_string(),
                name: t.name.clone(),
                addrs: t.addrs.clone(),
                caps: t.caps.clone(),
            },
            None => Introduction {
                peer_id: peer.to_string(),
                name: String::new(),
                addrs: Vec::new(),
                caps: Vec::new(),
            },
        }
    }

    fn send_members(&mut self, to: PeerId, req: MembersRequest) {
        let empty = match &req {
            MembersRequest::Introduce {
                intros, complete, ..
            } => intros.is_empty() && !complete,
            MembersRequest::Remove(v) => v.is_empty(),
        };
        if !empty {
            let _ = self.swarm.behaviour_mut().members.send_request(&to, req);
        }
    }

    /// A member came online: vouch for our pairings to it, and tell it every removal we know.
    pub(crate) fn introduce_all_to(&mut self, to: PeerId) {
        let me = to.to_string();
        let mine: Vec<String> = self
            .members
            .vouched
            .keys()
            .filter(|k| **k != me)
            .cloned()
            .collect();
        for a in self.known_addrs(&to) {
            self.swarm.add_peer_address(to, a);
        }
        // The list says "this is all" (in numbered parts when it takes several messages): the
        // member drops our vouches for anything else.
        let count = mine.len().div_ceil(MAX_INTRODUCTIONS);
        let round = rand::random::<u64>();
        for (index, chunk) in mine.chunks(MAX_INTRODUCTIONS).enumerate() {
            let intros = chunk.iter().map(|p| self.introduction_of(p)).collect();
            let parts = (count > 1).then(|| Parts {
                round,
                index: u16::try_from(index).unwrap_or(u16::MAX),
                count: u16::try_from(count).unwrap_or(u16::MAX),
            });
            self.send_members(
                to,
                MembersRequest::Introduce {
                    intros,
                    complete: true,
                    parts,
                },
            );
        }
        if mine.is_empty() {
            self.send_members(
                to,
                MembersRequest::Introduce {
                    intros: Vec::new(),
                    complete: true,
                    parts: None,
                },
            );
        }
        let removals: Vec<Removal> = self.trust.removals.clone();
        for chunk in removals.chunks(MAX_INTRODUCTIONS) {
            self.send_members(to, MembersRequest::Remove(chunk.to_vec()));
        }
    }

    /// Remove `peer` here and, unless `here_only`, from the whole mesh with a signed removal.
    pub(crate) fn remove_member(&mut self, peer: PeerId, here_only: bool) {
        self.trust.peers.remove(&peer.to_string());
        self.trust.removed.insert(peer.to_string());
        if !here_only && let Some(r) = Removal::sign(&self.members.key, &peer, now_unix()) {
            self.trust.removals.push(r.clone());
            self.pass_on(&[r], None);
        }
        self.redial.remove(&peer);
        // Revocation is immediate: cut every connection now.
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Send `removals` to every connected member but `except`.
    fn pass_on(&mut self, removals: &[Removal], except: Option<PeerId>) {
        let online: Vec<PeerId> = self
            .trust
            .peers
            .keys()
            .filter_map(|k| k.parse().ok())
            .filter(|p| Some(*p) != except && self.online(p))
            .collect();
        for to in online {
            self.send_members(to, MembersRequest::Remove(removals.to_vec()));
        }
    }

    pub(crate) fn members_event(
        &mut self,
        e: request_response::Event<MembersRequest, MembersResponse>,
    ) {
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
                let resp = self.on_members(peer, request);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .members
                    .send_response(channel, resp);
            }
            Event::Message {
                peer,
                message: Message::Response { response, .. },
                ..
            } => match response {
                MembersResponse::Denied => self.intro_refused(peer),
                _ => {
                    self.members.retry.remove(&peer);
                }
            },
            _ => {}
        }
    }

    /// A trusted member's membership message.
    fn on_members(&mut self, from: PeerId, req: MembersRequest) -> MembersResponse {
        if !self.trusted(&from) {
            return MembersResponse::Denied;
        }
        if !self.members.rate.allow(from, Instant::now()) {
            self.members.refused += 1;
            warn!(peer = %from, "membership messages over the rate limit");
            return MembersResponse::Limited;
        }
        let (applied, refused) = match req {
            MembersRequest::Introduce {
                intros,
                complete,
                parts,
            } => {
                if !self.caps_of(&from).contains(&Capability::Introduce) {
                    self.members.refused += intros.len() as u64;
                    return MembersResponse::NotAllowed;
                }
                let mut intros = intros;
                intros.truncate(MAX_INTRODUCTIONS);
                if complete {
                    let ids = intros.iter().map(|i| i.peer_id.clone());
                    let whole = match parts {
                        None => Some(ids.collect()),
                        Some(p) => self.members.rounds.add(from, p, ids),
                    };
                    if let Some(all) = whole {
                        intros.extend(self.no_longer_vouched(from, &all));
                    }
                }
                self.on_introduce(from, intros)
            }
            MembersRequest::Remove(v) => self.on_removals(from, v),
        };
        self.members.refused += u64::from(refused);
        if applied > 0
            && let Err(e) = self.save_trust()
        {
            warn!(error = %e, "cannot save the trust list");
        }
        MembersResponse::Done { applied, refused }
    }

    /// `peer` refused an introduction. Right after pairing that is the newcomer, which may
    /// not have stored its side of the pairing when ours arrived: try again at the next ticks
    /// (10 times, 5 s), while we still trust it.
    fn intro_refused(&mut self, peer: PeerId) {
        if self.trusted(&peer) {
            self.members.retry.entry(peer).or_insert(INTRO_RETRIES);
        }
    }

    /// When [`Self::intro_tick`] has work: every tick while an introduction waits for a retry.
    pub(crate) fn intro_due(&self) -> Option<Instant> {
        (!self.members.retry.is_empty()).then(Instant::now)
    }

    /// Retry refused introductions (each tick), dropping peers out of tries or no longer
    /// trusted.
    pub(crate) fn intro_tick(&mut self) {
        let trusted = &self.trust.peers;
        self.members
            .retry
            .retain(|p, left| *left > 0 && trusted.contains_key(&p.to_string()));
        let due: Vec<PeerId> = self
            .members
            .retry
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

    /// The peers `from` vouched for here that `all` (everything it vouches for now) leaves
    /// out, as withdrawals.
    fn no_longer_vouched(&self, from: PeerId, all: &HashSet<String>) -> Vec<Introduction> {
        let by = from.to_string();
        self.trust
            .peers
            .iter()
            .filter(|(id, p)| p.vouchers.contains_key(&by) && !all.contains(*id))
            .map(|(id, _)| Introduction {
                peer_id: id.clone(),
                name: String::new(),
                addrs: Vec::new(),
                caps: Vec::new(),
            })
            .collect()
    }

    /// Apply a member's introductions; returns (applied, refused).
    fn on_introduce(&mut self, from: PeerId, intros: Vec<Introduction>) -> (u32, u32) {
        let me = self.me().to_string();
        let by = from.to_string();
        let (mut applied, mut refused) = (0u32, 0u32);
        let limit = self.cfg.trust.max_introduced_per_member;
        for i in intros.into_iter().take(MAX_INTRODUCTIONS + MAX_PEERS) {
            let Ok(pid) = i.peer_id.parse::<PeerId>() else {
                refused += 1;
                continue;
            };
            if i.peer_id == me || pid == from {
                continue;
            }
            let mut caps = i.caps;
            caps.sort();
            caps.dedup();
            if let Some(t) = self.trust.peers.get_mut(&i.peer_id) {
                // Known: a pairing made here stands on its own; an introduced machine's
                // vouchers follow what each member says now.
                if t.paired_here() {
                    continue;
                }
                let before = t.vouchers.get(&by).cloned();
                if caps.is_empty() {
                    t.vouchers.remove(&by);
                } else if before.is_some() || t.vouchers.len() < MAX_VOUCHERS {
                    t.vouchers.insert(by.clone(), caps);
                } else {
                    refused += 1;
                    continue;
                }
                if t.vouchers.get(&by) != before.as_ref() {
                    applied += 1;
                }
                if t.vouchers.is_empty() {
                    info!(peer = %pid, name = %t.name, "no member vouches for it any more: forgotten");
                    self.trust.peers.remove(&i.peer_id);
                    self.redial.remove(&pid);
                    let _ = self.swarm.disconnect_peer_id(pid);
                }
                continue;
            }
            if caps.is_empty() {
                continue;
            }
            let vouched_by_from = self
                .trust
                .peers
                .values()
                .filter(|p| p.vouchers.contains_key(&by))
                .count();
            if self.trust.removed.contains(&i.peer_id)
                || crate::config::validate_name(&i.name).is_err()
                || vouched_by_from >= limit
                || self.trust.peers.len() >= MAX_PEERS
            {
                refused += 1;
                continue;
            }
            let name = self.trust.unique_name(&i.name, &self.cfg.name, &i.peer_id);
            let addrs: Vec<String> = i
                .addrs
                .into_iter()
                .filter(|a| a.len() <= 512 && a.parse::<Multiaddr>().is_ok())
                .take(MAX_ADDRS)
                .collect();
            let introducer = self
                .trust
                .peers
                .get(&by)
                .map(|t| t.name.clone())
                .unwrap_or_default();
            info!(peer = %pid, %name, %introducer, "trusting an introduced peer");
            self.trust.peers.insert(
                i.peer_id.clone(),
                TrustedPeer {
                    name,
                    caps: self.cfg.trust.introduced_caps.clone(),
                    paired_at: now_unix(),
                    addrs,
                    introduced_by: Some(by.clone()),
                    vouchers: [(by.clone(), caps)].into(),
                    ceiling_set_here: false,
                },
            );
            self.redial.insert(pid, (Instant::now(), MIN_REDIAL));
            applied += 1;
        }
        (applied, refused)
    }

    /// Apply signed removals a member passed on; the new ones go on to our other members.
    fn on_removals(&mut self, from: PeerId, removals: Vec<Removal>) -> (u32, u32) {
        let me = self.me().to_string();
        let (mut fresh, mut refused) = (Vec::new(), 0u32);
        let now = now_unix();
        // When the list is full, what is older than everything kept would be forgotten again
        // at once, then come back as new from the next member, for ever: ignore it.
        let oldest_kept = (self.trust.removals.len() >= MAX_REMOVED)
            .then(|| self.trust.removals.iter().map(|x| x.at).min())
            .flatten();
        for r in removals.into_iter().take(MAX_INTRODUCTIONS) {
            if self.trust.removals.iter().any(|x| x.same(&r))
                || oldest_kept.is_some_and(|o| r.at <= o)
            {
                continue;
            }
            // A time far ahead would stay "newest" for ever.
            if r.at > now.saturating_add(24 * 3600) {
                refused += 1;
                continue;
            }
            // One member's removals take at most a quarter of the list.
            if self.trust.removals.iter().filter(|x| x.by == r.by).count() >= MAX_REMOVED / 4 {
                refused += 1;
                continue;
            }
            match check_removal(&r, &me, &self.trust, &self.members.eff) {
                Ok(()) => {}
                // Not for us to apply, but not an attack either.
                Err(Refusal::Me | Refusal::RepairedSince | Refusal::Own) => continue,
                Err(why) => {
                    info!(peer = %r.peer, by = %r.by, ?why, "removal not applied here");
                    refused += 1;
                    continue;
                }
            }
            let Ok(pid) = r.peer.parse::<PeerId>() else {
                refused += 1;
                continue;
            };
            if let Some(t) = self.trust.peers.get(&r.peer) {
                info!(peer = %pid, name = %t.name, by = %r.by, "removed from the mesh by a member");
            }
            self.trust.peers.remove(&r.peer);
            self.trust.removed.insert(r.peer.clone());
            self.trust.removals.push(r.clone());
            self.redial.remove(&pid);
            let _ = self.swarm.disconnect_peer_id(pid);
            fresh.push(r);
        }
        if !fresh.is_empty() {
            self.pass_on(&fresh, Some(from));
        }
        (fresh.len() as u32, refused)
    }
}
