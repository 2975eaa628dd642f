//! The message store's state and the operations that change it. Pure: the owner task
//! journals each [`Op`] (fsync) before applying it here, and replays the journal on start, so
//! whatever was acknowledged is what comes back after a crash.

use std::collections::BTreeMap;

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
    /// As signed (re-sent as is).
    pub signed: Signed,
    /// The envelope.
    pub env: Envelope,
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
    /// A read receipt from a recipient (id, peer, at).
    PeerRead(String, String, u64),
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
                    self.sent.insert((i.env.id.clone(), i.peer.clone()), i);
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
                    }
                }
            }
            Op::PeerRead(id, peer, at) => {
                if let Some(s) = self.sent.get_mut(&(id, peer)) {
                    // A receipt implies delivery (the ack may have been lost).
                    s.delivered_at.get_or_insert(at);
                    s.read_at.get_or_insert(at);
                    s.status = Status::Read;
                }
            }
            Op::Rejected(id, peer, why) => {
                if let Some(s) = self.sent.get_mut(&(id, peer))
                    && s.status == Status::Pending
                {
                    s.status = Status::Rejected;
                    s.last_error = Some(why);
                }
            }
            Op::Expired(keys) => {
                for k in keys {
                    if let Some(s) = self.sent.get_mut(&k)
                        && s.status == Status::Pending
                    {
                        s.status = Status::Expired;
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
        self.sent
            .values()
            .filter(|s| s.status == Status::Pending)
            .count()
    }

    /// Drop what no one needs any more: inbox messages and sent records a day past their
    /// expiry (the sender has stopped retrying by then, so dedup no longer needs them).
    /// True if anything went.
    pub fn gc(&mut self, now: u64) -> bool {
        const GRACE: u64 = 24 * 3600 * 1000;
        let before = self.inbox.len() + self.sent.len();
        self.inbox
            .retain(|_, i| i.env.expires_at().saturating_add(GRACE) > now);
        self.sent
            .retain(|_, s| s.env.expires_at().saturating_add(GRACE) > now);
        let inbox = &self.inbox;
        self.receipts.retain(|k, _| inbox.contains_key(k));
        before != self.inbox.len() + self.sent.len()
    }
}
