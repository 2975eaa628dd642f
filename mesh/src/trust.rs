//! `trust.json`: the peers this machine trusts, what each may do, and where it was last seen.
//! Owned by the node task (revocation must reach live connections at once); persisted
//! atomically on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Largest trust file we read.
const MAX_TRUST_BYTES: u64 = 4 << 20;

/// What a trusted peer may do on this machine.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Run commands (`loopsy_execute`).
    Exec,
    /// Open terminal sessions.
    Pty,
    /// Read files (pull, list).
    FilesRead,
    /// Write files (push).
    FilesWrite,
    /// Read and write the replicated context.
    Context,
    /// Send messages and tasks.
    Messages,
    /// Vouch for other machines (introduce them here) and remove machines from the mesh.
    Introduce,
}

impl Capability {
    /// Every capability: the default grant for a paired machine.
    pub const ALL: [Capability; 7] = [
        Self::Exec,
        Self::Pty,
        Self::FilesRead,
        Self::FilesWrite,
        Self::Context,
        Self::Messages,
        Self::Introduce,
    ];

    /// The name used in the CLI and config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Pty => "pty",
            Self::FilesRead => "files-read",
            Self::FilesWrite => "files-write",
            Self::Context => "context",
            Self::Messages => "messages",
            Self::Introduce => "introduce",
        }
    }

    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One trusted peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPeer {
    /// Its friendly name (unique among our peers).
    pub name: String,
    /// What it may do here.
    pub caps: Vec<Capability>,
    /// Unix time of pairing.
    pub paired_at: u64,
    /// Addresses it was last reached at (multiaddrs), newest first.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The member that introduced it first (PeerId), when it was not paired here. Its
    /// `caps` are then only a ceiling: see [`Trust::effective`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced_by: Option<String>,
    /// Members vouching for it now (PeerId → what each grants it), when introduced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vouchers: BTreeMap<String, Vec<Capability>>,
    /// For an introduced peer: its ceiling (`caps`) was set here by hand (`peers grant` or
    /// `revoke`). Otherwise the ceiling follows `[trust] introduced_caps` as configured now,
    /// so lowering that setting reaches machines introduced before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ceiling_set_here: bool,
}

impl TrustedPeer {
    /// Was it paired with this machine (rather than introduced by a member)?
    pub fn paired_here(&self) -> bool {
        self.introduced_by.is_none()
    }
}

/// The trust file's contents: PeerId (base58) → peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trust {
    /// Format version.
    #[serde(default = "one")]
    pub version: u32,
    /// Trusted peers by PeerId.
    #[serde(default)]
    pub peers: BTreeMap<String, TrustedPeer>,
    /// Peers removed here: introductions from other members never bring them back (only a
    /// new pairing does).
    #[serde(default)]
    pub removed: BTreeSet<String>,
    /// Signed mesh-wide removals this machine knows, passed on to every member it meets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removals: Vec<crate::wire::Removal>,
}

/// Most peers one trust file holds (paired and introduced).
pub const MAX_PEERS: usize = 1024;
/// Most removed PeerIds and signed removals remembered (the oldest are forgotten first).
pub const MAX_REMOVED: usize = 1024;
/// Most members vouching for one introduced peer.
pub const MAX_VOUCHERS: usize = 8;

/// The trust file version from which introduced peers' hand-set ceilings are marked
/// ([`TrustedPeer::ceiling_set_here`]).
pub const CEILING_VERSION: u32 = 2;

fn one() -> u32 {
    1
}

/// Why the trust file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Unreadable or unwritable.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid.
    #[error("{} is corrupt ({reason}); move it away to start with no trusted peers", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Trust {
    /// Load `path`; a missing file is an empty trust list.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let io = |source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |reason: String| TrustError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(e)),
            Ok(m) if m.len() > MAX_TRUST_BYTES => {
                return Err(corrupt(format!("{} bytes", m.len())));
            }
            Ok(_) => {}
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let mut t: Trust = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if t.peers.len() > MAX_PEERS {
            return Err(corrupt(format!(
                "{} peers (at most {MAX_PEERS})",
                t.peers.len()
            )));
        }
        for (id, p) in &mut t.peers {
            id.parse::<libp2p::PeerId>()
                .map_err(|e| corrupt(format!("peer id {id:?}: {e}")))?;
            crate::config::validate_name(&p.name).map_err(corrupt)?;
            // Files written before vouchers were kept: the introducer vouches for what it
            // may do here, until it re-introduces the peer with its live grant.
            if let Some(by) = &p.introduced_by
                && p.vouchers.is_empty()
            {
                p.vouchers.insert(by.clone(), Capability::ALL.to_vec());
            }
            p.vouchers
                .retain(|v, _| v.parse::<libp2p::PeerId>().is_ok());
        }
        t.trim();
        Ok(t)
    }

    /// Forget the oldest removals past [`MAX_REMOVED`].
    pub fn trim(&mut self) {
        if self.removals.len() > MAX_REMOVED {
            self.removals.sort_by_key(|r| std::cmp::Reverse(r.at));
            self.removals.truncate(MAX_REMOVED);
        }
        while self.removed.len() > MAX_REMOVED {
            let Some(first) = self.removed.iter().next().cloned() else {
                break;
            };
            self.removed.remove(&first);
        }
    }

    /// Introduced peers whose ceiling was not set here by hand get `introduced_caps` (the
    /// configuration as it is now) as their ceiling. Returns whether anything changed.
    ///
    /// Files from before the marker existed (version 1) cannot say which ceilings were set
    /// by hand, so they are read the safe way: each becomes what it was ∩ the configuration,
    /// and one that then differs from the configuration (a revoke by hand) is marked as set
    /// here, so raising the configuration later does not undo that revoke.
    pub fn follow_introduced_caps(&mut self, introduced_caps: &[Capability]) -> bool {
        let mut ceiling: Vec<Capability> = introduced_caps.to_vec();
        ceiling.sort();
        ceiling.dedup();
        let migrate = self.version < CEILING_VERSION;
        let mut changed = migrate;
        self.version = self.version.max(CEILING_VERSION);
        for p in self.peers.values_mut() {
            if p.paired_here() || p.ceiling_set_here {
                continue;
            }
            let next: Vec<Capability> = if migrate {
                ceiling
                    .iter()
                    .filter(|c| p.caps.contains(c))
                    .copied()
                    .collect()
            } else {
                ceiling.clone()
            };
            if migrate && next != ceiling {
                p.ceiling_set_here = true;
            }
            if p.caps != next {
                p.caps = next;
                changed = true;
            }
        }
        changed
    }

    /// What each peer may do here, introductions followed. A peer paired here holds its own
    /// grant. An introduced one holds at most its grant here (a ceiling) ∩ the union, over
    /// the members vouching for it that hold `introduce` here, of (what that member grants
    /// it ∩ what that member may do here). Computed as the least fixpoint, so every right
    /// rests on a pairing made on this machine: a ring of introduced peers vouching for each
    /// other gets nothing, and a revoke or removal anywhere up the chain takes effect here.
    pub fn effective(&self) -> BTreeMap<String, Vec<Capability>> {
        let mut eff: BTreeMap<&str, BTreeSet<Capability>> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let own = if p.paired_here() {
                    p.caps.iter().copied().collect()
                } else {
                    BTreeSet::new()
                };
                (id.as_str(), own)
            })
            .collect();
        // Each round only adds rights; at most one round per (peer, capability) pair.
        loop {
            let mut changed = false;
            for (id, p) in self.peers.iter().filter(|(_, p)| !p.paired_here()) {
                let mut via = BTreeSet::new();
                for (v, granted) in &p.vouchers {
                    let Some(ve) = eff.get(v.as_str()).filter(|_| v != id) else {
                        continue;
                    };
                    if ve.contains(&Capability::Introduce) {
                        via.extend(granted.iter().filter(|c| ve.contains(c)).copied());
                    }
                }
                via.retain(|c| p.caps.contains(c));
                if let Some(cur) = eff.get_mut(id.as_str())
                    && *cur != via
                {
                    *cur = via;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        eff.into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().collect()))
            .collect()
    }

    /// The refusal `peer_id` gets when it lacks `cap` here (`me` is this machine's name):
    /// whose policy it is and what to run where. For a machine paired here, a grant here;
    /// for an introduced one, the grant only its introducers can give (and, when the ceiling
    /// here or the introducer's own rights here are what is missing, the grant here).
    pub fn refusal(&self, peer_id: &str, cap: Capability, me: &str) -> String {
        let c = cap.name();
        let Some(p) = self.peers.get(peer_id) else {
            return format!("{me} does not trust this machine (pair with it first)");
        };
        let you = &p.name;
        if p.paired_here() {
            return format!(
                "{me}'s policy: it has not granted {you} the {c} capability (on {me}, run `loopsy peers grant {you} {c}`)"
            );
        }
        let eff = self.effective();
        let name = |id: &str| {
            self.peers
                .get(id)
                .map_or(id, |v| v.name.as_str())
                .to_string()
        };
        let holds = |id: &str, cap: Capability| eff.get(id).is_some_and(|e| e.contains(&cap));
        let mut steps = Vec::new();
        if !p.caps.contains(&cap) {
            steps.push(format!(
                "on {me}, run `loopsy peers grant {you} {c}` (what introduced machines may get there is capped)"
            ));
        }
        let granting: Vec<&String> = p
            .vouchers
            .iter()
            .filter(|(_, g)| g.contains(&cap))
            .map(|(v, _)| v)
            .collect();
        if granting.is_empty() {
            let by: Vec<String> = p.vouchers.keys().map(|v| name(v)).collect();
            if !by.is_empty() {
                steps.push(format!(
                    "on {}, run `loopsy peers grant {you} {c}`",
                    by.join(" or ")
                ));
            }
        } else if !granting
            .iter()
            .any(|v| holds(v, cap) && holds(v, Capability::Introduce))
        {
            for v in granting {
                let v = name(v);
                steps.push(format!(
                    "on {me}, run `loopsy peers grant {v} {c} introduce` ({v} introduced it and may pass on only what it holds there)"
                ));
            }
        }
        let by: Vec<String> = p.vouchers.keys().map(|v| name(v)).collect();
        let by = if by.is_empty() {
            "nobody now".to_string()
        } else {
            by.join(", ")
        };
        steps.push(format!("or pair {you} with {me} directly"));
        format!(
            "{me}'s policy: {you} was introduced (by {by}) and holds the {c} capability there only through its introducers ({})",
            steps.join("; ")
        )
    }

    /// Write atomically (0600).
    pub fn save(&self, path: &Path) -> Result<(), TrustError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| TrustError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        fsutil::atomic_write(path, &bytes, fsutil::PRIVATE_FILE).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Find a peer by PeerId or name.
    pub fn find(&self, who: &str) -> Option<(&String, &TrustedPeer)> {
        self.peers
            .get_key_value(who)
            .or_else(|| self.peers.iter().find(|(_, p)| p.name == who))
    }

    /// Names like `who` (the same but for case, or `who-2`, `who-introduced`): what a user
    /// may have meant, never resolved on their behalf.
    pub fn similar(&self, who: &str) -> Vec<String> {
        let low = who.to_lowercase();
        let mut v: Vec<String> = self
            .peers
            .values()
            .map(|p| p.name.clone())
            .filter(|n| {
                let l = n.to_lowercase();
                l == low
                    || l.strip_prefix(&low)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .collect();
        v.sort();
        v.truncate(8);
        v
    }

    /// A name for a new peer that does not clash with ours or another peer's.
    pub fn unique_name(&self, wanted: &str, own_name: &str, peer_id: &str) -> String {
        let taken = |n: &str| {
            n == own_name
                || self
                    .peers
                    .iter()
                    .any(|(id, p)| p.name == n && id != peer_id)
        };
        if !taken(wanted) {
            return wanted.to_string();
        }
        (2..)
            .map(|i| format!("{wanted}-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| peer_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_find_and_names() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("trust.json");
        let mut t = Trust::load(&path)?;
        assert!(t.peers.is_empty());
        let id = libp2p::PeerId::random().to_string();
        t.peers.insert(
            id.clone(),
            TrustedPeer {
                name: "kai".into(),
                caps: Capability::ALL.to_vec(),
                paired_at: 1,
                addrs: vec![],
                introduced_by: None,
                vouchers: BTreeMap::new(),
                ceiling_set_here: false,
            },
        );
        t.save(&path)?;
        let back = Trust::load(&path)?;
        assert_eq!(back, t);
        assert_eq!(fsutil::mode_of(&path)?, 0o600);
        assert_eq!(back.find("kai").map(|(k, _)| k.clone()), Some(id.clone()));
        assert_eq!(
            back.find(&id).map(|(_, p)| p.name.clone()),
            Some("kai".into())
        );
        assert_eq!(back.unique_name("kai", "me", "other"), "kai-2");
        assert_eq!(back.unique_name("kai", "me", &id), "kai");
        assert_eq!(back.unique_name("me", "me", "x"), "me-2");
        assert_eq!(back.similar("KAI"), vec!["kai".to_string()]);
        assert!(back.similar("ka").is_empty());
        assert_eq!(Capability::parse("files-read"), Some(Capability::FilesRead));
        std::fs::write(
            &path,
            b"{\"peers\":{\"nope\":{\"name\":\"a\",\"caps\":[],\"paired_at\":0}}}",
        )?;
        assert!(matches!(
            Trust::load(&path),
            Err(TrustError::Corrupt { .. })
        ));
        Ok(())
    }
    fn peer(name: &str, caps: &[Capability], by: Option<(&str, &[Capability])>) -> TrustedPeer {
        TrustedPeer {
            name: name.into(),
            caps: caps.to_vec(),
            paired_at: 1,
            addrs: vec![],
            introduced_by: by.map(|(v, _)| v.to_string()),
            vouchers: by
                .map(|(v, g)| BTreeMap::from([(v.to_string(), g.to_vec())]))
                .unwrap_or_default(),
            ceiling_set_here: false,
        }
    }

    /// Lowering `[trust] introduced_caps` lowers the ceiling of machines introduced before,
    /// except where the ceiling was set here by hand; paired machines are not touched.
    #[test]
    fn introduced_ceilings_follow_the_configuration() {
        use Capability::*;
        let mut t = Trust::default();
        t.peers
            .insert("A".into(), peer("alpha", &[Exec, Introduce], None));
        t.peers.insert(
            "M".into(),
            peer("mallory", &Capability::ALL, Some(("A", &[Exec]))),
        );
        let mut kept = peer("kim", &[Exec, Pty], Some(("A", &[Exec])));
        kept.ceiling_set_here = true;
        t.peers.insert("K".into(), kept);
        assert!(t.effective()["M"].contains(&Exec));
        t.version = CEILING_VERSION;
        assert!(t.follow_introduced_caps(&[Context]));
        assert_eq!(t.peers["M"].caps, vec![Context]);
        assert!(t.effective()["M"].is_empty());
        assert_eq!(t.peers["K"].caps, vec![Exec, Pty]);
        assert_eq!(t.peers["A"].caps, vec![Exec, Introduce]);
        assert!(!t.follow_introduced_caps(&[Context]));
        // Raising it again gives the right back (alpha still grants exec).
        assert!(t.follow_introduced_caps(&Capability::ALL));
        assert!(t.effective()["M"].contains(&Exec));
    }

    /// A version-1 file cannot tell a revoke by hand from the old configuration: its
    /// ceilings are kept where lower (and marked, so a later raise does not undo them) and
    /// lowered to the configuration where higher.
    #[test]
    fn old_files_keep_ceilings_lowered_by_hand() {
        use Capability::*;
        let mut t = Trust::default();
        assert!(t.version < CEILING_VERSION);
        t.peers
            .insert("A".into(), peer("alpha", &[Exec, Introduce], None));
        let mut revoked: Vec<Capability> = Capability::ALL
            .iter()
            .copied()
            .filter(|c| *c != Exec)
            .collect();
        revoked.sort();
        t.peers
            .insert("M".into(), peer("mallory", &revoked, Some(("A", &[Exec]))));
        t.peers.insert(
            "N".into(),
            peer("nina", &Capability::ALL, Some(("A", &[Exec]))),
        );
        assert!(t.follow_introduced_caps(&Capability::ALL));
        assert_eq!(t.version, CEILING_VERSION);
        assert_eq!(t.peers["M"].caps, revoked);
        assert!(t.peers["M"].ceiling_set_here);
        assert!(!t.peers["N"].ceiling_set_here);
        assert!(!t.effective()["M"].contains(&Exec));
        // Lowered configuration, old file: the higher ceiling comes down, unmarked.
        let mut old = Trust::default();
        old.peers
            .insert("A".into(), peer("alpha", &[Exec, Introduce], None));
        old.peers.insert(
            "N".into(),
            peer("nina", &Capability::ALL, Some(("A", &[Exec]))),
        );
        assert!(old.follow_introduced_caps(&[Context]));
        assert_eq!(old.peers["N"].caps, vec![Context]);
        assert!(!old.peers["N"].ceiling_set_here);
    }

    /// A refusal says where the missing right can be granted: here for a machine paired
    /// here, on the introducer for an introduced one, and here again when it is this
    /// machine's ceiling or the introducer's own rights here that are missing.
    #[test]
    fn refusals_point_at_the_machine_that_can_grant() {
        use Capability::*;
        let mut t = Trust::default();
        t.peers
            .insert("A".into(), peer("alpha", &[Exec, Introduce, Context], None));
        t.peers.insert(
            "M".into(),
            peer("mallory", &Capability::ALL, Some(("A", &[Context]))),
        );
        t.peers.insert("P".into(), peer("pat", &[Context], None));
        let here = t.refusal("P", Exec, "gamma");
        assert!(
            here.contains("on gamma, run `loopsy peers grant pat exec`"),
            "{here}"
        );
        // alpha holds exec here but did not grant it to mallory: ask alpha.
        let via = t.refusal("M", Exec, "gamma");
        assert!(
            via.contains("introduced (by alpha)")
                && via.contains("on alpha, run `loopsy peers grant mallory exec`")
                && !via.contains("on gamma, run"),
            "{via}"
        );
        // alpha grants files-read but does not hold it here: grant alpha here.
        t.peers
            .get_mut("M")
            .unwrap()
            .vouchers
            .insert("A".into(), vec![FilesRead]);
        let up = t.refusal("M", FilesRead, "gamma");
        assert!(
            up.contains("on gamma, run `loopsy peers grant alpha files-read introduce`"),
            "{up}"
        );
        // The ceiling here lacks pty.
        t.peers.get_mut("M").unwrap().caps = vec![Context];
        let cap = t.refusal("M", Pty, "gamma");
        assert!(
            cap.contains("on gamma, run `loopsy peers grant mallory pty`")
                && cap.contains("on alpha, run `loopsy peers grant mallory pty`"),
            "{cap}"
        );
        assert!(t.refusal("Z", Exec, "gamma").contains("does not trust"));
    }
}
