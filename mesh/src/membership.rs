//! Mesh membership without the swarm: signed removals, who may remove whom, and the rate
//! limit on membership messages. The node task (`node_members`) applies these.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

use crate::trust::{Capability, Trust};
use crate::wire::Removal;

/// Membership messages one member may send per [`RATE_WINDOW`].
pub const RATE_MAX: u32 = 60;
/// The window of [`RATE_MAX`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a removal is not applied here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The signature does not check out, or the ids do not parse.
    BadSignature,
    /// The remover may not remove here (not trusted, no `introduce`, or an introduced member
    /// removing a machine paired here).
    NoAuthority,
    /// It names this machine.
    Me,
    /// This machine paired the peer again after the removal.
    RepairedSince,
    /// This machine's own removal, come back.
    Own,
}

impl Removal {
    /// The bytes the remover signs.
    fn signed_bytes(peer: &str, by: &str, at: u64) -> Vec<u8> {
        let mut m = b"loopsy-removal-v1\0".to_vec();
        m.extend_from_slice(peer.as_bytes());
        m.push(0);
        m.extend_from_slice(by.as_bytes());
        m.push(0);
        m.extend_from_slice(&at.to_be_bytes());
        m
    }

    /// `key` removes `peer` at `at`.
    pub fn sign(key: &Keypair, peer: &PeerId, at: u64) -> Option<Self> {
        let by = key.public().to_peer_id().to_string();
        let peer = peer.to_string();
        let sig = key.sign(&Self::signed_bytes(&peer, &by, at)).ok()?;
        Some(Self { peer, by, at, sig })
    }

    /// Did `by` sign it? (An Ed25519 PeerId carries its public key.)
    pub fn verify(&self) -> bool {
        let Ok(by) = self.by.parse::<PeerId>() else {
            return false;
        };
        if self.peer.parse::<PeerId>().is_err() || self.sig.len() > 128 {
            return false;
        }
        let mh: &libp2p::multihash::Multihash<64> = by.as_ref();
        if mh.code() != 0 {
            return false;
        }
        let Ok(key) = PublicKey::try_decode_protobuf(mh.digest()) else {
            return false;
        };
        key.verify(
            &Self::signed_bytes(&self.peer, &self.by, self.at),
            &self.sig,
        )
    }

    /// Is it the same removal as `other` (same peer, remover and time)?
    pub fn same(&self, other: &Removal) -> bool {
        self.peer == other.peer && self.by == other.by && self.at == other.at
    }
}

/// May this machine (`me`, with `trust` and its effective rights `eff`) apply `r`? A member
/// holding `introduce` here may remove an introduced peer; only a member paired here may
/// remove a machine paired here; nobody removes this machine; a pairing made here after the
/// removal wins over it.
pub fn check_removal(
    r: &Removal,
    me: &str,
    trust: &Trust,
    eff: &std::collections::BTreeMap<String, Vec<Capability>>,
) -> Result<(), Refusal> {
    if !r.verify() {
        return Err(Refusal::BadSignature);
    }
    if r.peer == me {
        return Err(Refusal::Me);
    }
    // This machine's own removal was applied when it was made: passed back by a member later
    // (after a re-pairing here, say), it changes nothing.
    if r.by == me {
        return Err(Refusal::Own);
    }
    // A pairing made here after the removal wins over it.
    if let Some(target) = trust.peers.get(&r.peer)
        && target.paired_here()
        && target.paired_at > r.at
    {
        return Err(Refusal::RepairedSince);
    }
    let Some(by) = trust.peers.get(&r.by) else {
        return Err(Refusal::NoAuthority);
    };
    let may = eff
        .get(&r.by)
        .is_some_and(|c| c.contains(&Capability::Introduce));
    if !may {
        return Err(Refusal::NoAuthority);
    }
    if let Some(target) = trust.peers.get(&r.peer)
        && target.paired_here()
        && !by.paired_here()
    {
        return Err(Refusal::NoAuthority);
    }
    Ok(())
}

/// A fixed-window counter of membership messages per member.
#[derive(Default)]
pub struct RateLimit {
    seen: HashMap<PeerId, (Instant, u32)>,
}

impl RateLimit {
    /// Count one message from `peer`; false when it is over the limit.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.seen.len() > 4096 {
            self.seen
                .retain(|_, (start, _)| now.duration_since(*start) < RATE_WINDOW);
        }
        let e = self.seen.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) >= RATE_WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= RATE_MAX
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::trust::TrustedPeer;

    fn peer(caps: &[Capability], by: Option<&str>, at: u64) -> TrustedPeer {
        TrustedPeer {
            name: format!("p{at}"),
            caps: caps.to_vec(),
            paired_at: at,
            addrs: vec![],
            introduced_by: by.map(str::to_string),
            vouchers: by
                .map(|b| [(b.to_string(), Capability::ALL.to_vec())].into())
                .unwrap_or_default(),
            ceiling_set_here: false,
        }
    }

    #[test]
    fn removals_are_signed_and_checked() {
        let a = Keypair::generate_ed25519();
        let m = PeerId::random();
        let r = Removal::sign(&a, &m, 100).unwrap_or_else(|| panic!("sign"));
        assert!(r.verify());
        let mut forged = r.clone();
        forged.at = 101;
        assert!(!forged.verify(), "the time is signed");
        let mut other = r.clone();
        other.by = Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_string();
        assert!(!other.verify(), "another member's name on A's signature");
        let mut junk = r.clone();
        junk.sig = vec![0; 4096];
        assert!(!junk.verify());
    }

    #[test]
    fn who_may_remove_whom() {
        let a = Keypair::generate_ed25519();
        let ai = a.public().to_peer_id().to_string();
        let g = Keypair::generate_ed25519();
        let gi = g.public().to_peer_id().to_string();
        let direct = PeerId::random();
        let intro = PeerId::random();
        let me = PeerId::random().to_string();
        let mut t = Trust::default();
        t.peers.insert(ai.clone(), peer(&Capability::ALL, None, 10));
        t.peers
            .insert(gi.clone(), peer(&Capability::ALL, Some(&ai), 10));
        t.peers
            .insert(direct.to_string(), peer(&Capability::ALL, None, 50));
        t.peers
            .insert(intro.to_string(), peer(&Capability::ALL, Some(&ai), 50));
        let eff = t.effective();
        let check = |k: &Keypair, p: &PeerId, at| {
            let r = Removal::sign(k, p, at).unwrap_or_else(|| panic!("sign"));
            check_removal(&r, &me, &t, &eff)
        };
        assert_eq!(check(&a, &intro, 60), Ok(()));
        assert_eq!(check(&a, &direct, 60), Ok(()));
        assert_eq!(check(&a, &direct, 40), Err(Refusal::RepairedSince));
        assert_eq!(
            check(&a, &direct, 50),
            Ok(()),
            "a removal in the pairing's second"
        );
        // This machine's own old removal, passed back after a re-pairing: nothing happens.
        let mine = Keypair::generate_ed25519();
        let mine_id = mine.public().to_peer_id().to_string();
        let r = Removal::sign(&mine, &direct, 40).unwrap_or_else(|| panic!("sign"));
        assert_eq!(check_removal(&r, &mine_id, &t, &eff), Err(Refusal::Own));
        let stranger = Keypair::generate_ed25519();
        assert_eq!(check(&stranger, &intro, 60), Err(Refusal::NoAuthority));
        let me_id: PeerId = me.parse().unwrap_or_else(|_| panic!("id"));
        assert_eq!(check(&a, &me_id, 60), Err(Refusal::Me));
        // A member without `introduce` here cannot remove anyone.
        if let Some(p) = t.peers.get_mut(&ai) {
            p.caps.retain(|c| *c != Capability::Introduce);
        }
        let eff = t.effective();
        let r = Removal::sign(&a, &intro, 60).unwrap_or_else(|| panic!("sign"));
        assert_eq!(check_removal(&r, &me, &t, &eff), Err(Refusal::NoAuthority));
    }

    #[test]
    fn introduced_rights_follow_the_chain() {
        use Capability::*;
        let a = PeerId::random().to_string();
        let b = PeerId::random().to_string();
        let c = PeerId::random().to_string();
        let mut t = Trust::default();
        t.peers
            .insert(a.clone(), peer(&[Exec, Introduce, Context], None, 1));
        // B: introduced by A with exec + pty + introduce; ceiling everything.
        let mut pb = peer(&Capability::ALL, Some(&a), 1);
        pb.vouchers = [(a.clone(), vec![Exec, Pty, Introduce])].into();
        t.peers.insert(b.clone(), pb);
        // C: vouched for by B (exec, context) and by itself (ignored).
        let mut pc = peer(&Capability::ALL, Some(&b), 1);
        pc.vouchers = [(b.clone(), vec![Exec, Context]), (c.clone(), vec![Pty])].into();
        t.peers.insert(c.clone(), pc);
        let eff = t.effective();
        assert_eq!(
            eff[&b],
            vec![Exec, Introduce],
            "min(A grants B, A may do here)"
        );
        assert_eq!(eff[&c], vec![Exec], "min down the chain; no self-vouching");
        // A loses `introduce` here: everything it vouched for goes.
        if let Some(p) = t.peers.get_mut(&a) {
            p.caps = vec![Exec];
        }
        let eff = t.effective();
        assert!(eff[&b].is_empty() && eff[&c].is_empty(), "{eff:?}");
        // A ring of introduced peers vouching for each other gets nothing.
        let mut t = Trust::default();
        let mut px = peer(&Capability::ALL, Some(&b), 1);
        px.vouchers = [(b.clone(), Capability::ALL.to_vec())].into();
        let mut py = peer(&Capability::ALL, Some(&a), 1);
        py.vouchers = [(a.clone(), Capability::ALL.to_vec())].into();
        t.peers.insert(a.clone(), px);
        t.peers.insert(b.clone(), py);
        let eff = t.effective();
        assert!(eff.values().all(Vec::is_empty), "{eff:?}");
        // The local ceiling holds.
        let mut t = Trust::default();
        t.peers.insert(a.clone(), peer(&Capability::ALL, None, 1));
        let mut pb = peer(&[Messages], Some(&a), 1);
        pb.vouchers = BTreeMap::from([(a.clone(), Capability::ALL.to_vec())]);
        t.peers.insert(b.clone(), pb);
        assert_eq!(t.effective()[&b], vec![Messages]);
    }

    #[test]
    fn rate_limit_per_member() {
        let mut r = RateLimit::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!((0..RATE_MAX).all(|_| r.allow(p, t0)));
        assert!(!r.allow(p, t0));
        assert!(r.allow(q, t0), "limits are per member");
        assert!(r.allow(p, t0 + RATE_WINDOW), "a new window");
    }
}
