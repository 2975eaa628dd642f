//! The message store's owner task and its cloneable handle. Every change is journalled and
//! fsynced (one record per batch) before it is applied or acknowledged: a message in the
//! outbox, a message accepted into the inbox, a delivery ack, a read receipt.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::envelope::{Envelope, Invalid, MsgType, Signed, TO_ALL, new_id};
use super::state::{InboxItem, Op, SentItem, State, Status};
use crate::journal::{ChangeLog, LogError};

/// Limits.
#[derive(Debug, Clone)]
pub struct MsgConfig {
    /// Largest body, in bytes.
    pub max_body_bytes: usize,
    /// Most messages waiting in the outbox (all recipients).
    pub outbox_max: usize,
    /// Most messages kept in the inbox.
    pub inbox_max: usize,
    /// Most messages from one peer kept in the inbox.
    pub inbox_max_per_peer: usize,
    /// Named groups of peers (by name).
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Default for MsgConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            outbox_max: 10_000,
            inbox_max: 100_000,
            inbox_max_per_peer: 25_000,
            groups: BTreeMap::new(),
        }
    }
}

/// Why a message call failed.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// The outbox is full: nothing was queued.
    #[error(
        "the outbox is full ({0} messages waiting for offline or slow peers); nothing was sent. \
         Wait for peers to come back, or raise messages.outbox_max"
    )]
    OutboxFull(usize),
    /// No such message.
    #[error("no message {0}")]
    NotFound(String),
    /// Disk failure.
    #[error(transparent)]
    Store(#[from] LogError),
    /// The store task has stopped.
    #[error("the message store has stopped")]
    Stopped,
}

/// What a receiver says about one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Stored (or already there): delivered.
    Ok,
    /// Refused for now (no permission, inbox full): retry later.
    Later(String),
    /// Refused for good (malformed, bad signature, oversize).
    Rejected(String),
}

/// A received message as agents see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct InboxMessage {
    /// The envelope (`from`/`to` are PeerIds).
    #[serde(flatten)]
    pub env: Envelope,
    /// The sender's name here.
    pub from_name: String,
    /// When it arrived (Unix ms).
    pub received_at: u64,
    /// Whether it was acknowledged as read here.
    pub read: bool,
}

/// A sent message's state with one recipient.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SentStatus {
    /// The message id.
    pub id: String,
    /// The recipient's PeerId.
    pub peer: String,
    /// Where it stands.
    pub status: Status,
    /// Sent at (Unix ms).
    pub ts: u64,
    /// Delivery ack time.
    pub delivered_at: Option<u64>,
    /// Read receipt time.
    pub read_at: Option<u64>,
    /// The last delivery error, while pending or after a rejection.
    pub last_error: Option<String>,
}

impl From<&SentItem> for SentStatus {
    fn from(s: &SentItem) -> Self {
        Self {
            id: s.id.clone(),
            peer: s.peer.clone(),
            status: s.status,
            ts: s.ts,
            delivered_at: s.delivered_at,
            read_at: s.read_at,
            last_error: s.last_error.clone(),
        }
    }
}

/// One item on the wire: a message, or a read receipt for a message the peer sent us.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireItem {
    /// A signed message.
    Msg(Signed),
    /// "I read your message `id` at `at`".
    Read(String, u64),
}

/// Inbox filter.
#[derive(Debug, Clone, Default)]
pub struct InboxQuery {
    /// Only unread.
    pub unread_only: bool,
    /// Only from this PeerId.
    pub from: Option<String>,
    /// Only in this thread.
    pub thread: Option<String>,
    /// Only messages after this id (paging).
    pub after: Option<String>,
    /// At most this many (oldest first).
    pub limit: usize,
}

/// Message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Recipients (PeerIds); one entry for a direct message.
    pub to: Vec<PeerId>,
    /// Broadcast (`to` = `*` in the envelope).
    pub all: bool,
    /// Type.
    pub kind: MsgType,
    /// Body.
    pub body: String,
    /// ttl.
    pub ttl_s: u64,
    /// Answering.
    pub reply_to: Option<String>,
    /// Thread.
    pub thread: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, MsgError>>;

/// About how many bytes of messages go in one batch (well under the receiver's frame limit).
const BATCH_BYTES: usize = 2 << 20;

enum Cmd {
    Send(Outgoing, Reply<Envelope>),
    Receive(
        PeerId,
        Vec<Result<Envelope, Invalid>>,
        oneshot::Sender<Vec<Outcome>>,
    ),
    Receipt(PeerId, Vec<(String, u64)>, oneshot::Sender<Vec<Outcome>>),
    Pending(PeerId, usize, oneshot::Sender<Vec<(WireItem, String)>>),
    Results(PeerId, Vec<(WireItem, String, Outcome)>, Reply<()>),
    Inbox(InboxQuery, oneshot::Sender<Vec<(InboxItem, bool)>>),
    Ack(String, Option<String>, Reply<InboxItem>),
    Status(
        Option<String>,
        Option<String>,
        oneshot::Sender<Vec<SentStatus>>,
    ),
    PendingPeers(oneshot::Sender<Vec<PeerId>>),
    Counts(oneshot::Sender<(usize, usize, usize)>),
}

/// A cloneable handle to the message store.
#[derive(Clone)]
pub struct MsgHandle {
    tx: mpsc::Sender<Cmd>,
    cfg: MsgConfig,
    inbox: watch::Receiver<u64>,
    outbox: watch::Receiver<u64>,
    sent: watch::Receiver<u64>,
    dropped: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl std::fmt::Debug for MsgHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgHandle").finish_non_exhaustive()
    }
}

struct Owner {
    state: State,
    log: ChangeLog,
    cfg: MsgConfig,
    key: Keypair,
    me: String,
    inbox: watch::Sender<u64>,
    outbox: watch::Sender<u64>,
    sent: watch::Sender<u64>,
    /// Journal size that triggers compaction.
    compact_at: u64,
    /// An append failed: the journal must be rewritten as a snapshot before the next one.
    dirty: bool,
    /// Our public key (protobuf), for messages as they go out.
    pubkey: Vec<u8>,
    dropped: Arc<Mutex<BTreeMap<String, u64>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn bump(w: &watch::Sender<u64>) {
    w.send_modify(|g| *g = g.wrapping_add(1));
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, MsgError> {
    let mut b = Vec::new();
    ciborium::into_writer(v, &mut b).map_err(|e| MsgError::Invalid(e.to_string()))?;
    Ok(b)
}

impl Owner {
    fn count(&self, reason: &str) {
        let mut m = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason.to_string()).or_default() += 1;
    }

    /// Journal `op` (fsync), then apply it. Nothing is applied if it could not be made durable.
    fn commit(&mut self, op: Op) -> Result<(), MsgError> {
        if self.dirty {
            // The last append failed part-way: start over from a full snapshot first.
            self.compact()?;
        }
        let bytes = encode(&op)?;
        if let Err(e) = self.log.append(&bytes) {
            self.dirty = true;
            return Err(e.into());
        }
        self.state.apply(op);
        if self.log.log_len() > self.compact_at
            && let Err(e) = self.compact()
        {
            tracing::warn!(error = %e, "message store compaction failed");
        }
        Ok(())
    }

    /// Rewrite the journal as one snapshot of the state.
    fn compact(&mut self) -> Result<(), MsgError> {
        let full = encode(&self.state)?;
        if let Err(e) = self.log.compact(&full) {
            self.dirty = true;
            return Err(e.into());
        }
        self.dirty = false;
        // Next compaction once the log has grown as much again as the snapshot.
        self.compact_at = (full.len() as u64).max(4 << 20);
        Ok(())
    }

    fn send(&mut self, o: Outgoing) -> Result<Envelope, MsgError> {
        if o.body.len() > self.cfg.max_body_bytes {
            return Err(MsgError::Invalid(format!(
                "body is {} bytes; the limit is {} (messages.max_body_bytes)",
                o.body.len(),
                self.cfg.max_body_bytes
            )));
        }
        if o.to.is_empty() {
            return Err(MsgError::Invalid("no recipients".into()));
        }
        let pending = self.state.pending();
        if pending + o.to.len() > self.cfg.outbox_max {
            return Err(MsgError::OutboxFull(pending));
        }
        let ts = now_ms();
        let env = Envelope {
            id: new_id(ts),
            from: self.me.clone(),
            to: if o.all {
                TO_ALL.to_string()
            } else {
                o.to[0].to_string()
            },
            ts,
            kind: o.kind,
            body: o.body,
            ttl_s: o.ttl_s,
            reply_to: o.reply_to,
            thread: o.thread,
        };
        env.check(self.cfg.max_body_bytes)
            .map_err(|e| MsgError::Invalid(e.to_string()))?;
        let signed = Signed::sign(&env, &self.key).map_err(|e| MsgError::Invalid(e.to_string()))?;
        if signed.env.len() > super::envelope::MAX_ENVELOPE {
            return Err(MsgError::Invalid("the message is too large".into()));
        }
        // The outbox keeps the signed text and a few fields; our own public key is added back
        // when the message goes out.
        let mut kept = signed.clone();
        kept.key = Vec::new();
        let items =
            o.to.iter()
                .map(|p| SentItem {
                    signed: kept.clone(),
                    id: env.id.clone(),
                    ts: env.ts,
                    ttl_s: env.ttl_s,
                    peer: p.to_string(),
                    status: Status::Pending,
                    delivered_at: None,
                    read_at: None,
                    last_error: None,
                })
                .collect();
        self.commit(Op::Out(items))?;
        bump(&self.outbox);
        bump(&self.sent);
        Ok(env)
    }

    fn receive(&mut self, from: PeerId, items: Vec<Result<Envelope, Invalid>>) -> Vec<Outcome> {
        let sender = from.to_string();
        let now = now_ms();
        let mut out = Vec::with_capacity(items.len());
        let mut fresh = Vec::new();
        let mut in_batch = HashSet::new();
        let mut room = self.cfg.inbox_max.saturating_sub(self.state.inbox.len());
        let theirs = self
            .state
            .inbox
            .keys()
            .filter(|(_, s)| *s == sender)
            .count();
        let mut their_room = self.cfg.inbox_max_per_peer.saturating_sub(theirs);
        for r in items {
            let env = match r {
                Ok(e) => e,
                Err(e) => {
                    out.push(Outcome::Rejected(e.to_string()));
                    continue;
                }
            };
            let addressed = env.to == TO_ALL || env.to == self.me;
            if !addressed || env.from != sender {
                self.count("misaddressed");
                out.push(Outcome::Rejected("not addressed to this peer".into()));
                continue;
            }
            if env.ts > now.saturating_add(24 * 3600 * 1000) {
                self.count("bad_timestamp");
                out.push(Outcome::Rejected(
                    "ts is more than a day ahead of the recipient's clock".into(),
                ));
                continue;
            }
            let k = (env.id.clone(), sender.clone());
            if self.state.inbox.contains_key(&k) || in_batch.contains(&k) {
                out.push(Outcome::Ok); // a retry: already here, exactly once
                continue;
            }
            if room == 0 {
                out.push(Outcome::Later(format!(
                    "the recipient's inbox is full ({} messages)",
                    self.cfg.inbox_max
                )));
                continue;
            }
            if their_room == 0 {
                self.count("sender_over_share");
                out.push(Outcome::Later(format!(
                    "the recipient keeps at most {} messages from one peer and has that many of yours",
                    self.cfg.inbox_max_per_peer
                )));
                continue;
            }
            in_batch.insert(k);
            room -= 1;
            their_room -= 1;
            out.push(Outcome::Ok);
            fresh.push(InboxItem {
                env,
                received_at: now,
                read_at: None,
            });
        }
        if !fresh.is_empty() {
            if let Err(e) = self.commit(Op::In(fresh)) {
                // Nothing was stored: the sender must retry every new one.
                tracing::warn!(error = %e, "cannot store received messages");
                return out
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Ok => Outcome::Later("the recipient's disk failed".into()),
                        other => other,
                    })
                    .collect();
            }
            bump(&self.inbox);
        }
        out
    }

    fn receipts(&mut self, from: PeerId, reads: Vec<(String, u64)>) -> Vec<Outcome> {
        let peer = from.to_string();
        let mut out = Vec::new();
        let mut fresh = Vec::new();
        for (id, at) in reads {
            let k = (id.clone(), peer.clone());
            match self.state.sent.get(&k) {
                None => out.push(Outcome::Rejected(format!(
                    "no message {id} was sent to you"
                ))),
                Some(s) if s.status == Status::Read => out.push(Outcome::Ok),
                Some(_) => {
                    out.push(Outcome::Ok);
                    fresh.push((id, peer.clone(), at));
                }
            }
        }
        if !fresh.is_empty() {
            if let Err(e) = self.commit(Op::PeerRead(fresh)) {
                let why = e.to_string();
                return out
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Ok => Outcome::Later(why.clone()),
                        other => other,
                    })
                    .collect();
            }
            bump(&self.sent);
        }
        out
    }

    /// Read receipts, then pending messages (oldest first) for `peer`: at most `limit`
    /// items and about [`BATCH_BYTES`] bytes (always at least one item).
    fn pending_for(&mut self, peer: PeerId, limit: usize) -> Vec<(WireItem, String)> {
        let p = peer.to_string();
        let now = now_ms();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for ((id, from), at) in &self.state.receipts {
            if *from == p && out.len() < limit {
                bytes += id.len() + 16;
                out.push((WireItem::Read(id.clone(), *at), id.clone()));
            }
        }
        let ids = self.state.pending_idx.get(&p).into_iter().flatten();
        for id in ids {
            if out.len() >= limit || (bytes >= BATCH_BYTES && !out.is_empty()) {
                break;
            }
            let Some(s) = self.state.sent.get(&(id.clone(), p.clone())) else {
                continue;
            };
            if s.status != Status::Pending || s.expires_at() <= now {
                continue;
            }
            let size = s.signed.env.len() + s.signed.sig.len() + s.signed.key.len() + 16;
            if bytes + size > BATCH_BYTES && !out.is_empty() {
                break;
            }
            bytes += size;
            let mut signed = s.signed.clone();
            if signed.key.is_empty() {
                signed.key.clone_from(&self.pubkey);
            }
            out.push((WireItem::Msg(signed), id.clone()));
        }
        out
    }

    /// Mark every pending message past its ttl as expired (whether its peer is online or not).
    fn expire(&mut self) {
        let expired = self.state.expired(now_ms());
        if !expired.is_empty() && self.commit(Op::Expired(expired)).is_ok() {
            bump(&self.sent);
        }
    }

    fn results(
        &mut self,
        peer: PeerId,
        results: Vec<(WireItem, String, Outcome)>,
    ) -> Result<(), MsgError> {
        let p = peer.to_string();
        let mut delivered = Vec::new();
        let mut receipts = Vec::new();
        for (item, id, o) in results {
            let k = (id.clone(), p.clone());
            match (item, o) {
                (WireItem::Msg(_), Outcome::Ok) => delivered.push(k),
                (WireItem::Msg(_), Outcome::Rejected(why)) => {
                    self.commit(Op::Rejected(id, p.clone(), why))?;
                }
                (WireItem::Msg(_), Outcome::Later(why)) => {
                    if let Some(s) = self.state.sent.get_mut(&k) {
                        s.last_error = Some(why);
                    }
                }
                (WireItem::Read(..), Outcome::Ok | Outcome::Rejected(_)) => receipts.push(k),
                (WireItem::Read(..), Outcome::Later(_)) => {}
            }
        }
        if !delivered.is_empty() {
            self.commit(Op::Delivered(delivered, now_ms()))?;
        }
        if !receipts.is_empty() {
            self.commit(Op::ReceiptsSent(receipts))?;
        }
        bump(&self.sent);
        Ok(())
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Send(o, r) => {
                let _ = r.send(self.send(o));
            }
            Cmd::Receive(from, items, r) => {
                let _ = r.send(self.receive(from, items));
            }
            Cmd::Receipt(from, reads, r) => {
                let _ = r.send(self.receipts(from, reads));
            }
            Cmd::Pending(peer, limit, r) => {
                let _ = r.send(self.pending_for(peer, limit));
            }
            Cmd::Results(peer, results, r) => {
                let _ = r.send(self.results(peer, results));
            }
            Cmd::Inbox(q, r) => {
                let start = (q.after.clone().unwrap_or_default(), String::new());
                let _ = r.send(
                    self.state
                        .inbox
                        .range(start..)
                        .filter(|((id, _), _)| q.after.as_ref().is_none_or(|a| id > a))
                        .map(|(_, i)| i)
                        .filter(|i| !q.unread_only || i.read_at.is_none())
                        .filter(|i| q.from.as_ref().is_none_or(|f| *f == i.env.from))
                        .filter(|i| q.thread.is_none() || q.thread == i.env.thread)
                        .take(q.limit)
                        .map(|i| (i.clone(), i.read_at.is_some()))
                        .collect(),
                );
            }
            Cmd::Ack(id, from, r) => {
                // Ids are chosen by senders: with one from two peers, `from` picks (else the
                // unread one, else the first).
                let matches: Vec<_> = self
                    .state
                    .inbox
                    .range((id.clone(), String::new())..)
                    .take_while(|((i, _), _)| *i == id)
                    .filter(|((_, f), _)| from.as_ref().is_none_or(|x| x == f))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let found = matches
                    .iter()
                    .find(|(_, v)| v.read_at.is_none())
                    .or(matches.first())
                    .cloned();
                let res = match found {
                    None => Err(MsgError::NotFound(id)),
                    Some((_, item)) if item.read_at.is_some() => Ok(item),
                    Some(((id, from), mut item)) => {
                        let at = now_ms();
                        self.commit(Op::Read(id, from, at)).map(|()| {
                            item.read_at = Some(at);
                            bump(&self.inbox);
                            bump(&self.outbox);
                            item
                        })
                    }
                };
                let _ = r.send(res);
            }
            Cmd::Status(id, peer, r) => {
                let start = (id.clone().unwrap_or_default(), String::new());
                let _ = r.send(
                    self.state
                        .sent
                        .range(start..)
                        .take_while(|((i, _), _)| id.as_ref().is_none_or(|x| x == i))
                        .filter(|((_, p), _)| peer.as_ref().is_none_or(|x| x == p))
                        .map(|(_, s)| SentStatus::from(s))
                        .collect(),
                );
            }
            Cmd::PendingPeers(r) => {
                let mut peers: Vec<PeerId> = self
                    .state
                    .pending_idx
                    .keys()
                    .map(String::as_str)
                    .chain(self.state.receipts.keys().map(|(_, p)| p.as_str()))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                peers.sort();
                let _ = r.send(peers);
            }
            Cmd::Counts(r) => {
                let unread = self
                    .state
                    .inbox
                    .values()
                    .filter(|i| i.read_at.is_none())
                    .count();
                let _ = r.send((self.state.pending(), self.state.inbox.len(), unread));
            }
        }
    }
}

async fn run(mut o: Owner, mut rx: mpsc::Receiver<Cmd>) {
    let mut gc = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            c = rx.recv() => match c {
                Some(c) => o.handle(c),
                None => break,
            },
            _ = gc.tick() => {
                o.expire();
                if o.state.gc(now_ms())
                    && let Err(e) = o.compact()
                {
                    tracing::warn!(error = %e, "message store compaction failed");
                }
            }
        }
    }
}

impl MsgHandle {
    /// Open the store in `dir` (replaying its journal) and start its owner thread.
    pub fn open(dir: &Path, cfg: MsgConfig, key: Keypair) -> Result<Self, MsgError> {
        let (log, loaded) = ChangeLog::open(dir)?;
        if loaded.dropped_bytes > 0 {
            tracing::warn!(
                bytes = loaded.dropped_bytes,
                "message journal had a torn tail; cut it off"
            );
        }
        let mut state: State = match &loaded.snapshot {
            Some(s) => ciborium::from_reader(&s[..])
                .map_err(|e| MsgError::Invalid(format!("message store snapshot: {e}")))?,
            None => State::default(),
        };
        state.reindex();
        let mut refused = false;
        for r in &loaded.records {
            match ciborium::from_reader::<Op, _>(&r[..]) {
                Ok(op) => state.apply(op),
                Err(e) => {
                    tracing::warn!(error = %e, "message journal record refused; ignoring the rest");
                    refused = true;
                    break;
                }
            }
        }
        let me = key.public().to_peer_id().to_string();
        let (inbox_tx, inbox) = watch::channel(0);
        let (outbox_tx, outbox) = watch::channel(0);
        let (sent_tx, sent) = watch::channel(0);
        let dropped: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
        let mut owner = Owner {
            state,
            log,
            cfg: cfg.clone(),
            key,
            me,
            inbox: inbox_tx,
            outbox: outbox_tx,
            sent: sent_tx,
            compact_at: 4 << 20,
            dirty: false,
            pubkey: Vec::new(),
            dropped: dropped.clone(),
        };
        owner.pubkey = owner.key.public().encode_protobuf();
        if refused {
            // Records after the refused one would be ignored again at every start: rewrite
            // the journal as what was loaded.
            owner.compact()?;
        }
        let (tx, rx) = mpsc::channel(1024);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| MsgError::Invalid(format!("cannot start the message store: {e}")))?;
        std::thread::Builder::new()
            .name("loopsy-messages".into())
            .spawn(move || rt.block_on(run(owner, rx)))
            .map_err(|e| MsgError::Invalid(format!("cannot start the message store: {e}")))?;
        Ok(Self {
            tx,
            cfg,
            inbox,
            outbox,
            sent,
            dropped,
        })
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, MsgError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(|_| MsgError::Stopped)?;
        rx.await.map_err(|_| MsgError::Stopped)
    }

    /// The limits.
    pub fn config(&self) -> &MsgConfig {
        &self.cfg
    }

    /// Changes when a message arrives or is marked read.
    pub fn inbox_changes(&self) -> watch::Receiver<u64> {
        self.inbox.clone()
    }

    /// Changes when something is queued to send.
    pub fn outbox_changes(&self) -> watch::Receiver<u64> {
        self.outbox.clone()
    }

    /// Changes when a sent message's status does.
    pub fn sent_changes(&self) -> watch::Receiver<u64> {
        self.sent.clone()
    }

    /// Queue a message (durable before this returns); the envelope.
    pub async fn send(&self, o: Outgoing) -> Result<Envelope, MsgError> {
        self.ask(|r| Cmd::Send(o, r)).await?
    }

    /// Store verified messages from `from`; one outcome per item.
    pub async fn receive(
        &self,
        from: PeerId,
        items: Vec<Result<Envelope, Invalid>>,
    ) -> Result<Vec<Outcome>, MsgError> {
        self.ask(|r| Cmd::Receive(from, items, r)).await
    }

    /// Apply read receipts from `from`.
    pub async fn receipts(
        &self,
        from: PeerId,
        reads: Vec<(String, u64)>,
    ) -> Result<Vec<Outcome>, MsgError> {
        self.ask(|r| Cmd::Receipt(from, reads, r)).await
    }

    /// Up to `limit` items to send to `peer`, each with its id.
    pub async fn pending_for(
        &self,
        peer: PeerId,
        limit: usize,
    ) -> Result<Vec<(WireItem, String)>, MsgError> {
        self.ask(|r| Cmd::Pending(peer, limit, r)).await
    }

    /// What `peer` said about items we sent (item, id, outcome).
    pub async fn results(
        &self,
        peer: PeerId,
        results: Vec<(WireItem, String, Outcome)>,
    ) -> Result<(), MsgError> {
        self.ask(|r| Cmd::Results(peer, results, r)).await?
    }

    /// Inbox messages, oldest first, with whether each was read.
    pub async fn inbox(&self, q: InboxQuery) -> Result<Vec<InboxItem>, MsgError> {
        Ok(self
            .ask(|r| Cmd::Inbox(q, r))
            .await?
            .into_iter()
            .map(|(i, _)| i)
            .collect())
    }

    /// Mark a message read and queue a read receipt for its sender (`from`: its PeerId, when
    /// two senders used the same id).
    pub async fn ack(&self, id: &str, from: Option<String>) -> Result<InboxItem, MsgError> {
        let id = id.to_string();
        self.ask(|r| Cmd::Ack(id, from, r)).await?
    }

    /// Sent messages by id and/or recipient.
    pub async fn status(
        &self,
        id: Option<String>,
        peer: Option<String>,
    ) -> Result<Vec<SentStatus>, MsgError> {
        self.ask(|r| Cmd::Status(id, peer, r)).await
    }

    /// Peers with something to send.
    pub async fn pending_peers(&self) -> Result<Vec<PeerId>, MsgError> {
        self.ask(Cmd::PendingPeers).await
    }

    /// (messages waiting in the outbox, messages in the inbox, unread ones).
    pub async fn counts(&self) -> Result<(usize, usize, usize), MsgError> {
        self.ask(Cmd::Counts).await
    }

    /// Count a dropped message by reason.
    pub fn count_dropped(&self, reason: &str) {
        let mut m = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason.to_string()).or_default() += 1;
    }

    /// Dropped messages by reason, since start.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
