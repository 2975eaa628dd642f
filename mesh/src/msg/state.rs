//! The message store's state and the operations that change it. Pure: the owner task
//! journals each [`Op`] (fsync) before applying it here, and replays the journal on start, so
//! whatever was acknowledged is what comes back after a crash.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::envelope::{Envelope, Signed};

/// A received message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxItem {
    /// The envelope as verified.
    pub env: Envelope,
    /// When it arrived here (Unix ms).
    pub received_at: u64,
    /// When it was marked read here.
    pub read_at: Option<u64>,
}

/// Where a sent message stands with one recipient.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the outbox, not yet acknowledged by the recipient.
    Pending,
    /// In the recipient's inbox (delivery ack).
    Delivered,
    /// The recipient's agent acknowledged reading it (read receipt).
    Read,
    /// Not delivered before its ttl ran out.
    Expired,
    /// The recipient refused it for good (see `last_error`).
    Rejected,
}

/// A sent message, per recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentItem {
    /// As signed (re-sent as is; our own key is added back when it goes out).
    pub signed: Signed,
    /// The message id.
    pub id: String,
    /// Sent at (Unix ms).
    pub ts: u64,
    /// Retried this long after `ts`.
    pub ttl_s: u64,
    /// The recipient's PeerId.
    pub peer: String,
    /// Where it stands.
    pub status: Status,
    /// Delivery ack time.
    pub delivered_at: Option<u64>,
    /// Read receipt time.
    pub read_at: Option<u64>,
    /// Why the last attempt failed (kept while pending).
    #[serde(default)]
    pub last_error: Option<String>,
}

impl SentItem {
    /// Once a message will not be sent again, only its state is kept, not its body.
    fn forget_payload(&mut self) {
        self.signed.env = String::new();
        self.signed.sig = Vec::new();
        self.signed.key = Vec::new();
    }

    /// When it stops being retried (Unix ms).
    pub fn expires_at(&self) -> u64 {
        self.ts.saturating_add(self.ttl_s.saturating_mul(1000))
    }
}

/// One journal record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// Messages accepted into the inbox.
    In(Vec<InboxItem>),
    /// Marked read here (id, from), and a receipt queued for the sender.
    Read(String, String, u64),
    /// Messages queued for sending.
    Out(Vec<SentItem>),
    /// Delivery acks (id, peer).
    Delivered(Vec<(String, String)>, u64),
    /// Read receipts from recipients (id, peer, at).
    PeerRead(Vec<(String, String, u64)>),
    /// Refused for good (id, peer, why).
    Rejected(String, String, String),
    /// Expired before delivery (id, peer).
    Expired(Vec<(String, String)>),
    /// Read receipts the sender acknowledged (id, sender).
    ReceiptsSent(Vec<(String, String)>),
}

/// Everything, keyed by (id, peer): inbox by sender, sent by recipient.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Received messages by (id, from).
    #[serde(with = "pairs")]
    pub inbox: BTreeMap<(String, String), InboxItem>,
    /// Sent messages by (id, recipient).
    #[serde(with = "pairs")]
    pub sent: BTreeMap<(String, String), SentItem>,
    /// Read receipts still to send, by (id, sender) → read at.
    #[serde(with = "pairs")]
    pub receipts: BTreeMap<(String, String), u64>,
    /// Index: recipient → ids still pending (rebuilt on load; kept in step by `apply`).
    #[serde(skip)]
    pub pending_idx: BTreeMap<String, BTreeSet<String>>,
}

/// Maps with pair keys as lists of `[[a, b], v]` (JSON object keys must be strings).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type K = (String, String);

    pub fn serialize<V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl State {
    /// Rebuild the pending index (after loading a snapshot).
    pub fn reindex(&mut self) {
        self.pending_idx.clear();
        for ((id, peer), s) in &self.sent {
            if s.status == Status::Pending {
                self.pending_idx
                    .entry(peer.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
    }

    fn unpend(&mut self, id: &str, peer: &str) {
        if let Some(set) = self.pending_idx.get_mut(peer) {
            set.remove(id);
            if set.is_empty() {
                self.pending_idx.remove(peer);
            }
        }
    }

    /// Apply one journalled operation.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::In(items) => {
                for i in items {
                    self.inbox.insert((i.env.id.clone(), i.env.from.clone()), i);
                }
            }
            Op::Read(id, from, at) => {
                if let Some(i) = self.inbox.get_mut(&(id.clone(), from.clone()))
                    && i.read_at.is_none()
                {
                    i.read_at = Some(at);
                    self.receipts.insert((id, from), at);
                }
            }
            Op::Out(items) => {
                for i in items {
                    if i.status == Status::Pending {
                        self.pending_idx
                            .entry(i.peer.clone())
                            .or_default()
                            .insert(i.id.clone());
                    }
                    self.sent.insert((i.id.clone(), i.peer.clone()), i);
                }
            }
            Op::Delivered(keys, at) => {
                for k in keys {
                    if let Some(s) = self.sent.get_mut(&k)
                        && s.status == Status::Pending
                    {
                        s.status = Status::Delivered;
                        s.delivered_at = Some(at);
                        s.last_error = None;
                        s.forget_payload();
                    }
                    self.unpend(&k.0, &k.1);
                }
            }
            Op::PeerRead(reads) => {
                for (id, peer, at) in reads {
                    self.unpend(&id, &peer);
                    if let Some(s) = self.sent.get_mut(&(id, peer)) {
                        // A receipt implies delivery (the ack may have been lost).
                        s.delivered_at.get_or_insert(at);
                        s.read_at.get_or_insert(at);
                        s.status = Status::Read;
                        s.forget_payload();
                    }
                }
            }
            Op::Rejected(id, peer, why) => {
                self.unpend(&id, &peer);
                if let Some(s) = self.sent.get_mut(&(id, peer))
                    && s.status == Status::Pending
                {
                    s.status = Status::Rejected;
                    s.last_error = Some(why);
                    s.forget_payload();
                }
            }
            Op::Expired(keys) => {
                for k in keys {
                    self.unpend(&k.0, &k.1);
                    if let Some(s) = self.sent.get_mut(&k)
                        && s.status == Status::Pending
                    {
                        s.status = Status::Expired;
                        s.forget_payload();
                    }
                }
            }
            Op::ReceiptsSent(keys) => {
                for k in keys {
                    self.receipts.remove(&k);
                }
            }
        }
    }

    /// Messages still waiting to be delivered.
    pub fn pending(&self) -> usize {
        self.pending_idx.values().map(BTreeSet::len).sum()
    }

    /// Pending messages past their ttl, for any peer (online or not).
    pub fn expired(&self, now: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (peer, ids) in &self.pending_idx {
            for id in ids {
                let k = (id.clone(), peer.clone());
                if self.sent.get(&k).is_some_and(|s| s.expires_at() <= now) {
                    out.push(k);
                }
            }
        }
        out
    }

    /// Drop what no one needs any more: inbox messages a day past their ttl counted from
    /// when they arrived here (this machine's clock: the sender stopped retrying by then, so
    /// dedup no longer needs them), and sent records a day past their expiry. True if
    /// anything went.
    pub fn gc(&mut self, now: u64) -> bool {
        const GRACE: u64 = 24 * 3600 * 1000;
        let before = self.inbox.len() + self.sent.len();
        self.inbox.retain(|_, i| {
            i.received_at
                .saturating_add(i.env.ttl_s.saturating_mul(1000))
                .saturating_add(GRACE)
                > now
        });
        self.sent
            .retain(|_, s| s.expires_at().saturating_add(GRACE) > now);
        let inbox = &self.inbox;
        self.receipts.retain(|k, _| inbox.contains_key(k));
        let changed = before != self.inbox.len() + self.sent.len();
        if changed {
            self.reindex();
        }
        changed
    }
}
