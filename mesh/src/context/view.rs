//! Who authored what a replica shows, and what it may show: the authorship and limit checks
//! on every received change and every entry read (a child of `store`, which owns the
//! document).

use std::collections::HashMap;

use automerge::{AutoCommit, ROOT, ReadDoc};

use super::{Entry, Stored, check_key};

/// How far in the future a write's time may be (clock skew between machines).
const MAX_SKEW_MS: u64 = 10 * 60 * 1000;

/// Who may author what this replica shows: this machine, and the peers holding `context`
/// here (actor id = PeerId bytes → name here).
#[derive(Debug, Default)]
pub(super) struct Authors {
    pub(super) enforce: bool,
    pub(super) me: Vec<u8>,
    pub(super) peers: HashMap<Vec<u8>, String>,
}

/// What a replica holds, shared between the store's owner and its handles.
pub(super) type SharedAuthors = std::sync::Arc<std::sync::RwLock<Authors>>;

/// Does one operation of a peer's change follow the rules the tools apply? Whole entries
/// (JSON strings) put on or deleted from the top level, a valid key, a value within
/// `max_value_bytes`, `written_by` naming the author, a time not in the future.
pub(super) fn change_op_ok(op: &automerge::legacy::Op, max_value_bytes: usize, now: u64) -> bool {
    use automerge::legacy::{Key, ObjectId};
    let (ObjectId::Root, Key::Map(key)) = (&op.obj, &op.key) else {
        return false;
    };
    if check_key(key).is_err() {
        return false;
    }
    match &op.action {
        automerge::legacy::OpType::Delete => true,
        automerge::legacy::OpType::Put(automerge::ScalarValue::Str(s)) => {
            serde_json::from_str::<Stored>(s).is_ok_and(|st| {
                st.written_at <= now.saturating_add(MAX_SKEW_MS)
                    && serde_json::to_string(&st.value).map_or(usize::MAX, |j| j.len())
                        <= max_value_bytes
            })
        }
        _ => false,
    }
}

/// A read-only look at a document, under a replica's rules.
pub(super) struct View<'a> {
    pub(super) doc: &'a AutoCommit,
    pub(super) authors: &'a SharedAuthors,
    pub(super) max_value_bytes: usize,
}

impl View<'_> {
    /// One value of a key: ours (a JSON entry), or what another automerge client wrote — a
    /// plain string, a text object (what a JS string assignment makes), a number or a bool.
    fn decode(&self, v: &automerge::Value<'_>, id: &automerge::ObjId) -> Option<Stored> {
        use automerge::{ObjType, ScalarValue, Value};
        let bare = |value: serde_json::Value| Stored {
            value,
            written_by: String::new(),
            written_at: 0,
            expires_at: None,
        };
        match v {
            Value::Scalar(sv) => match sv.as_ref() {
                ScalarValue::Str(s) => Some(
                    serde_json::from_str::<Stored>(s)
                        .unwrap_or_else(|_| bare(serde_json::Value::String(s.to_string()))),
                ),
                ScalarValue::Int(i) => Some(bare(serde_json::json!(i))),
                ScalarValue::Uint(u) => Some(bare(serde_json::json!(u))),
                ScalarValue::F64(f) => Some(bare(serde_json::json!(f))),
                ScalarValue::Boolean(b) => Some(bare(serde_json::json!(b))),
                _ => None,
            },
            Value::Object(ObjType::Text) => self
                .doc
                .text(id)
                .ok()
                .map(|t| bare(serde_json::Value::String(t))),
            Value::Object(_) => None,
        }
    }

    /// The author of a value: its name here, when it may author entries shown here.
    /// `None`: not shown (an author without `context` here, or not a PeerId).
    fn author(&self, id: &automerge::ObjId, stored_by: &str) -> Option<(String, Option<String>)> {
        let a = self.authors.read().unwrap_or_else(|p| p.into_inner());
        if !a.enforce {
            return Some((stored_by.to_string(), None));
        }
        let automerge::ObjId::Id(_, actor, _) = id else {
            return None;
        };
        let actor = actor.to_bytes();
        if actor == a.me.as_slice() {
            return Some((stored_by.to_string(), None));
        }
        let name = a.peers.get(actor)?;
        let claim = Some(stored_by.to_string()).filter(|c| !c.is_empty() && c != name);
        Some((name.clone(), claim))
    }

    /// A value of `key` as this replica may show it: by an allowed author, within the limits,
    /// not from the future.
    fn valid(
        &self,
        key: &str,
        v: &automerge::Value<'_>,
        id: &automerge::ObjId,
        now: u64,
    ) -> Option<(Stored, Option<String>)> {
        let mut s = self.decode(v, id)?;
        let (by, claim) = self.author(id, &s.written_by)?;
        if check_key(key).is_err()
            || s.written_at > now.saturating_add(MAX_SKEW_MS)
            || serde_json::to_string(&s.value).map_or(usize::MAX, |j| j.len())
                > self.max_value_bytes
        {
            return None;
        }
        s.written_by = by;
        Some((s, claim))
    }

    pub(super) fn entry(&self, key: &str, now: u64) -> Option<Entry> {
        let all = self.doc.get_all(ROOT, key).ok()?;
        // `get` is automerge's deterministic winner; the rest are conflicts. A winner this
        // replica may not show gives way to the next value it may.
        let (winner, wid) = self.doc.get(ROOT, key).ok()??;
        let mut candidates = vec![(winner, wid.clone())];
        candidates.extend(all.into_iter().filter(|(_, id)| *id != wid));
        let mut shown = candidates
            .iter()
            .filter_map(|(v, id)| self.valid(key, v, id, now));
        let (win, requested_by) = shown.next()?;
        if win.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        let conflicts = shown
            .filter(|(s, _)| {
                s.written_at != win.written_at
                    || s.value != win.value
                    || s.written_by != win.written_by
            })
            .map(|(s, _)| s.value)
            .collect();
        Some(Entry {
            key: key.to_string(),
            value: win.value,
            written_by: win.written_by,
            written_at: win.written_at,
            expires_at: win.expires_at,
            conflicts,
            requested_by,
        })
    }
}
