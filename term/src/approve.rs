//! Auto-approve confirmations: an agent may ask for a session whose agent skips its permission
//! prompts, but only the user on this machine can allow it — by a config allow-list, or by
//! `loopsy approve <id>` for one request. Nothing secret crosses the network for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::SessionKind;

/// How long a request waits for the user.
pub const REQUEST_TTL: Duration = Duration::from_secs(600);
/// Most requests pending at once (older ones are dropped first).
const MAX_PENDING: usize = 64;

/// A request waiting for (or holding) the user's confirmation.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct ApprovalView {
    /// Its id (what `loopsy approve` takes).
    pub id: String,
    /// The agent kind.
    pub kind: String,
    /// The flag that would be passed.
    pub flag: String,
    /// Who asked (`local`, `peer:<name>`, …).
    pub requested_by: String,
    /// Whether the user approved it.
    pub approved: bool,
    /// Seconds until it expires.
    pub expires_in_s: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    kind: SessionKind,
    requested_by: String,
    created: Instant,
    approved: bool,
}

/// What a start request with auto-approve gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Pass this flag.
    Allowed(&'static str),
    /// The user must confirm: `loopsy approve <id>` on this machine.
    NeedsConfirmation {
        /// The request id.
        id: String,
        /// The flag that would be passed.
        flag: &'static str,
    },
    /// This kind has no such flag.
    NoFlag,
}

/// Pending and granted confirmations (one per daemon; clones share it).
#[derive(Debug, Clone, Default)]
pub struct Approvals {
    allow: Vec<String>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Approvals {
    /// With the kinds the config allows without asking (`sessions.auto_approve`).
    pub fn new(allow: Vec<String>) -> Self {
        Self {
            allow,
            pending: Default::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        let mut t = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, p| p.created.elapsed() < REQUEST_TTL);
        t
    }

    /// Decide a start request for `kind` with auto-approve, by `who`, presenting `approval`
    /// (the id from an earlier refusal, once the user approved it). An approval is used once.
    pub fn decide(&self, kind: SessionKind, who: &str, approval: Option<&str>) -> Decision {
        let Some(flag) = kind.auto_approve_flag() else {
            return Decision::NoFlag;
        };
        if self.allow.iter().any(|k| k == kind.name()) {
            return Decision::Allowed(flag);
        }
        let mut t = self.table();
        if let Some(id) = approval
            && let Some(p) = t.get(id)
            && p.kind == kind
            && p.requested_by == who
        {
            if p.approved {
                t.remove(id);
                return Decision::Allowed(flag);
            }
            return Decision::NeedsConfirmation {
                id: id.to_string(),
                flag,
            };
        }
        if t.len() >= MAX_PENDING
            && let Some(oldest) = t
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
        {
            t.remove(&oldest);
        }
        let id = hex::encode(rand::random::<[u8; 3]>());
        t.insert(
            id.clone(),
            Pending {
                kind,
                requested_by: who.to_string(),
                created: Instant::now(),
                approved: false,
            },
        );
        Decision::NeedsConfirmation { id, flag }
    }

    /// The user approves request `id`.
    pub fn approve(&self, id: &str) -> Option<ApprovalView> {
        let mut t = self.table();
        let p = t.get_mut(id)?;
        p.approved = true;
        Some(view(id, p))
    }

    /// What is pending.
    pub fn list(&self) -> Vec<ApprovalView> {
        let t = self.table();
        let mut v: Vec<ApprovalView> = t.iter().map(|(id, p)| view(id, p)).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

fn view(id: &str, p: &Pending) -> ApprovalView {
    ApprovalView {
        id: id.to_string(),
        kind: p.kind.name().to_string(),
        flag: p.kind.auto_approve_flag().unwrap_or_default().to_string(),
        requested_by: p.requested_by.clone(),
        approved: p.approved,
        expires_in_s: REQUEST_TTL.saturating_sub(p.created.elapsed()).as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_user_can_approve_and_an_approval_is_used_once() {
        let a = Approvals::new(vec![]);
        assert_eq!(
            a.decide(SessionKind::Shell, "local", None),
            Decision::NoFlag
        );
        let Decision::NeedsConfirmation { id, flag } = a.decide(SessionKind::Claude, "local", None)
        else {
            panic!("must ask")
        };
        assert_eq!(flag, "--dangerously-skip-permissions");
        // Presenting the id before the user approved: still asking, same id.
        assert_eq!(
            a.decide(SessionKind::Claude, "local", Some(&id)),
            Decision::NeedsConfirmation {
                id: id.clone(),
                flag
            }
        );
        assert!(a.approve(&id).is_some());
        // Another caller or another kind cannot use it.
        assert!(matches!(
            a.decide(SessionKind::Claude, "peer:x", Some(&id)),
            Decision::NeedsConfirmation { .. }
        ));
        assert!(matches!(
            a.decide(SessionKind::Codex, "local", Some(&id)),
            Decision::NeedsConfirmation { .. }
        ));
        assert_eq!(
            a.decide(SessionKind::Claude, "local", Some(&id)),
            Decision::Allowed(flag)
        );
        // Used once.
        assert!(matches!(
            a.decide(SessionKind::Claude, "local", Some(&id)),
            Decision::NeedsConfirmation { .. }
        ));
        assert!(a.approve("nope").is_none());
    }

    #[test]
    fn the_allow_list_needs_no_confirmation() {
        let a = Approvals::new(vec!["gemini".into()]);
        assert_eq!(
            a.decide(SessionKind::Gemini, "peer:x", None),
            Decision::Allowed("--yolo")
        );
        assert!(matches!(
            a.decide(SessionKind::Claude, "local", None),
            Decision::NeedsConfirmation { .. }
        ));
    }
}
