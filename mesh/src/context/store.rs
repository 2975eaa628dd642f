//! The context document and its owner task. Each key maps to one entry, stored as a JSON
//! string scalar (`{"value", "written_by", "written_at", "expires_at"}`), so concurrent
//! writes to a key are whole-entry conflicts: automerge picks the same winner on every
//! replica and the others stay visible until the next write.

use std::collections::HashMap;
use std::path::Path;

use automerge::transaction::Transactable;

use super::guard::{check_chunks, no_panic};
use automerge::{AutoCommit, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::journal::{ChangeLog, LogError};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Compact the log into the snapshot past this many bytes.
const COMPACT_AT: u64 = 8 << 20;

/// Limits, and who this replica is.
#[derive(Debug, Clone)]
pub struct ContextConfig {
    /// Largest value, as JSON text.
    pub max_value_bytes: usize,
    /// This machine's PeerId as bytes: the actor id of its changes. With it, the replica
    /// shows only entries whose author (the actor of the change) is this machine or a peer
    /// holding `context` here (see [`ContextHandle::set_authors`]); without it (tests of the
    /// bare document), every entry.
    pub actor: Option<Vec<u8>>,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            max_value_bytes: 256 * 1024,
            actor: None,
        }
    }
}

/// A key's entry as readers see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value (a string or any JSON).
    pub value: serde_json::Value,
    /// Who wrote it (peer name).
    pub written_by: String,
    /// When (Unix ms).
    pub written_at: u64,
    /// When it expires (Unix ms), if it has a TTL.
    pub expires_at: Option<u64>,
    /// Values written concurrently that lost (visible until the next write).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<serde_json::Value>,
    /// Whom the writing machine says it wrote for (a peer calling its tools), as it reports
    /// it; `written_by` is the machine whose change it is, checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    value: serde_json::Value,
    written_by: String,
    written_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Page {
    /// Entries in key order.
    pub entries: Vec<Entry>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Why a context call failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Bad key or value.
    #[error("{0}")]
    Invalid(String),
    /// Disk or document failure.
    #[error(transparent)]
    Store(#[from] LogError),
    /// The document refused (a bug or corrupt data).
    #[error("context document: {0}")]
    Doc(String),
    /// The store task has stopped.
    #[error("the context store has stopped")]
    Stopped,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Check a key: non-empty UTF-8 (guaranteed by `&str`), at most [`MAX_KEY_BYTES`], no control
/// characters.
pub fn check_key(key: &str) -> Result<(), ContextError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(ContextError::Invalid(format!(
            "keys are 1-{MAX_KEY_BYTES} bytes of UTF-8 without control characters"
        )));
    }
    Ok(())
}

/// Largest sync message accepted from a peer.
pub const MAX_SYNC_MESSAGE: usize = 32 << 20;

enum Cmd {
    SyncGen(String, oneshot::Sender<Option<Vec<u8>>>),
    SyncRecv(String, Vec<u8>, oneshot::Sender<Result<(), ContextError>>),
    SyncForget(String),
    SyncBegin(String),
    ExportAutomerge(oneshot::Sender<Vec<u8>>),
    ImportAutomerge(Vec<u8>, oneshot::Sender<Result<(), ContextError>>),
    Set(
        String,
        serde_json::Value,
        Option<u64>,
        String,
        oneshot::Sender<Result<Entry, ContextError>>,
    ),
    Get(String, oneshot::Sender<Option<Entry>>),
    List(String, usize, Option<String>, oneshot::Sender<Page>),
    Delete(String, oneshot::Sender<Result<bool, ContextError>>),
    Heads(oneshot::Sender<Vec<String>>),
    Lag(Vec<String>, oneshot::Sender<Lag>),
}

/// How one replica differs from this one, by their document heads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Lag {
    /// Same heads: the replicas hold the same changes.
    pub in_sync: bool,
    /// Changes here that the other replica does not have yet.
    pub changes_they_lack: usize,
    /// Heads of the other replica that this one does not know (it has changes not yet here).
    pub heads_we_lack: usize,
}

/// A cloneable handle to the context store.
#[derive(Debug, Clone)]
pub struct ContextHandle {
    tx: mpsc::Sender<Cmd>,
    cfg: ContextConfig,
    changed: tokio::sync::watch::Receiver<u64>,
    /// Peer (PeerId text) → when a sync session with it last completed (Unix ms).
    synced: std::sync::Arc<std::sync::Mutex<HashMap<String, u64>>>,
    /// Who may author what is shown here.
    authors: SharedAuthors,
    /// Changes received that are not shown here (see `Doc::audit_changes`).
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

struct Doc {
    doc: AutoCommit,
    log: ChangeLog,
    /// Sync state per peer session (automerge's protocol needs one per ordered stream).
    sync: std::collections::HashMap<String, automerge::sync::State>,
    /// Bumped on every change, local or merged (replication listens).
    changed: tokio::sync::watch::Sender<u64>,
    /// An append failed: the next persist must write a full snapshot.
    dirty: bool,
    /// The last local write's `written_at`.
    last_write: u64,
    /// Who may author what is shown.
    authors: SharedAuthors,
    /// Largest value shown, as JSON text.
    max_value_bytes: usize,
    /// Changes received from authors without `context` here or breaking the rules.
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Doc {
    fn lag(&mut self, theirs: &[String]) -> Lag {
        let ours: Vec<String> = self.doc.get_heads().iter().map(|h| h.to_string()).collect();
        let mut known = Vec::new();
        let mut unknown = 0;
        for h in theirs {
            match h.parse::<automerge::ChangeHash>() {
                Ok(c) if self.doc.get_change_meta_by_hash(&c).is_some() => known.push(c),
                _ => unknown += 1,
            }
        }
        let mut a = ours.clone();
        let mut b = theirs.to_vec();
        a.sort();
        b.sort();
        Lag {
            in_sync: a == b,
            changes_they_lack: if a == b {
                0
            } else {
                self.doc.get_changes_meta(&known).len()
            },
            heads_we_lack: unknown,
        }
    }
}

impl Doc {
    fn view(&self) -> View<'_> {
        View {
            doc: &self.doc,
            authors: &self.authors,
            max_value_bytes: self.max_value_bytes,
        }
    }

    fn entry(&self, key: &str, now: u64) -> Option<Entry> {
        self.view().entry(key, now)
    }

    /// Count the changes since `before` that this replica will not show: by an author
    /// without `context` here, or breaking the rules the tools apply (keys, value size, a
    /// `written_by` that is not the author's, a time in the future, anything but whole
    /// entries at the top level). They stay in the document (later changes, honest ones
    /// included, are built on them: automerge's changes are hash-chained, so dropping one
    /// would strand every change after it) but no read here ever returns them.
    fn audit_changes(&mut self, before: &[automerge::ChangeHash], now: u64) {
        let bad = {
            let a = self.authors.read().unwrap_or_else(|p| p.into_inner());
            if !a.enforce {
                return;
            }
            let changes = self.doc.get_changes(before);
            changes
                .iter()
                .filter(|c| {
                    let actor = c.actor_id().to_bytes();
                    if actor == a.me.as_slice() {
                        return false;
                    }
                    if !a.peers.contains_key(actor) {
                        return true;
                    }
                    c.decode()
                        .operations
                        .iter()
                        .any(|op| !change_op_ok(op, self.max_value_bytes, now))
                })
                .count() as u64
        };
        if bad > 0 {
            tracing::warn!(changes = bad, "context changes refused (not shown here)");
            self.refused
                .fetch_add(bad, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Take in another automerge document's entries as this machine's own writes (its
    /// changes are not merged: their authors are no machine of the mesh). A key absent
    /// here is added; one present here is replaced only by a newer entry.
    fn import(&mut self, other: AutoCommit, now: u64) -> Result<(), ContextError> {
        let anyone: SharedAuthors = Default::default();
        let foreign = View {
            doc: &other,
            authors: &anyone,
            max_value_bytes: self.max_value_bytes,
        };
        let keys: Vec<String> = foreign.doc.keys(ROOT).collect();
        for key in keys {
            let Some(e) = foreign.entry(&key, now) else {
                continue;
            };
            if check_key(&key).is_err() {
                continue;
            }
            if self
                .entry(&key, now)
                .is_some_and(|here| here.written_at >= e.written_at)
            {
                continue;
            }
            let written_at = now.max(self.last_write + 1);
            self.last_write = written_at;
            let stored = Stored {
                value: e.value,
                written_by: e.written_by,
                written_at,
                expires_at: e.expires_at,
            };
            let json =
                serde_json::to_string(&stored).map_err(|e| ContextError::Doc(e.to_string()))?;
            self.doc
                .put(ROOT, key.as_str(), json)
                .map_err(|e| ContextError::Doc(e.to_string()))?;
        }
        self.persist()
    }

    /// Once, when a store written before changes carried PeerIds is first opened with
    /// authorship checked: every entry visible then whose author is not a PeerId is written
    /// again as this machine's own, so what the user had stays visible here (and replicates
    /// under this machine's name).
    fn adopt_legacy(&mut self, dir: &Path) -> Result<(), ContextError> {
        let marker = dir.join("actors-v1");
        if marker.exists() {
            return Ok(());
        }
        let now = now_ms();
        let anyone: SharedAuthors = Default::default();
        let legacy: Vec<(String, Stored)> = {
            let view = View {
                doc: &self.doc,
                authors: &anyone,
                max_value_bytes: self.max_value_bytes,
            };
            self.doc
                .keys(ROOT)
                .filter(|k| {
                    let by_peer = self.doc.get(ROOT, k.as_str()).ok().flatten().is_some_and(
                        |(_, id)| match id {
                            automerge::ObjId::Id(_, actor, _) => {
                                libp2p::PeerId::from_bytes(actor.to_bytes()).is_ok()
                            }
                            automerge::ObjId::Root => false,
                        },
                    );
                    !by_peer
                })
                .filter_map(|k| {
                    let e = view.entry(&k, now)?;
                    Some((
                        k,
                        Stored {
                            value: e.value,
                            written_by: e.written_by,
                            // Not the same JSON as before (automerge skips a put of the
                            // value a key already holds): the same time, one ms on.
                            written_at: e.written_at + 1,
                            expires_at: e.expires_at,
                        },
                    ))
                })
                .collect()
        };
        for (k, st) in &legacy {
            let json = serde_json::to_string(st).map_err(|e| ContextError::Doc(e.to_string()))?;
            self.doc
                .put(ROOT, k.as_str(), json)
                .map_err(|e| ContextError::Doc(e.to_string()))?;
        }
        if !legacy.is_empty() {
            tracing::info!(
                keys = legacy.len(),
                "context entries from before authorship checks adopted as this machine's"
            );
            self.persist()?;
        }
        crate::fsutil::atomic_write(&marker, b"1\n", crate::fsutil::PRIVATE_FILE)
            .map_err(|e| ContextError::Doc(format!("{}: {e}", marker.display())))
    }

    fn persist(&mut self) -> Result<(), ContextError> {
        // After a failed append the log is missing changes that later ones depend on: only a
        // full snapshot makes the store whole again, so take one before anything else.
        if self.dirty {
            let full = self.doc.save();
            self.log.compact(&full)?;
            self.dirty = false;
            self.changed.send_modify(|n| *n += 1);
            return Ok(());
        }
        let changes = self.doc.save_incremental();
        if changes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.log.append(&changes) {
            self.dirty = true;
            return Err(e.into());
        }
        self.changed.send_modify(|n| *n += 1);
        if self.log.log_len() > COMPACT_AT {
            let full = self.doc.save();
            // The write is already durable in the log; a failed compaction is retried later.
            if let Err(e) = self.log.compact(&full) {
                tracing::warn!(error = %e, "context compaction failed; will retry");
            }
        }
        Ok(())
    }

    /// Remove expired keys (deterministic: every replica deletes the same ones).
    /// Delete the expired entries; returns when the next one left expires (Unix ms).
    fn sweep(&mut self, now: u64) -> Result<Option<u64>, ContextError> {
        let mut next: Option<u64> = None;
        let expired: Vec<String> = self
            .doc
            .keys(ROOT)
            .filter(|k| {
                // Only entries of ours whose winner has expired: a key some other automerge
                // client wrote in another shape is left alone, never swept away.
                let at = self
                    .doc
                    .get(ROOT, k.as_str())
                    .ok()
                    .flatten()
                    .and_then(|(v, _)| {
                        v.as_str()
                            .and_then(|s| serde_json::from_str::<Stored>(s).ok())
                    })
                    .and_then(|s| s.expires_at);
                match at {
                    Some(e) if e <= now => true,
                    Some(e) => {
                        next = Some(next.map_or(e, |n| n.min(e)));
                        false
                    }
                    None => false,
                }
            })
            .collect();
        if expired.is_empty() {
            return Ok(next);
        }
        for k in &expired {
            self.doc
                .delete(ROOT, k.as_str())
                .map_err(|e| ContextError::Doc(e.to_string()))?;
        }
        self.persist().map(|()| next)
    }
}

impl ContextHandle {
    /// Open the store in `dir` and start its owner task.
    pub fn open(dir: &Path, cfg: ContextConfig) -> Result<Self, ContextError> {
        let (log, loaded) = ChangeLog::open(dir)?;
        if loaded.dropped_bytes > 0 {
            tracing::warn!(
                bytes = loaded.dropped_bytes,
                "context log had a torn tail; cut it off"
            );
        }
        let mut doc = match &loaded.snapshot {
            Some(s) => no_panic("the context snapshot", || {
                AutoCommit::load(s).map_err(|e| ContextError::Doc(format!("snapshot: {e}")))
            })?,
            None => AutoCommit::new(),
        };
        // This machine's changes carry its PeerId as their actor: that is how every replica
        // knows whose change each is.
        let authors = Authors {
            enforce: cfg.actor.is_some(),
            me: cfg.actor.clone().unwrap_or_default(),
            peers: HashMap::new(),
        };
        if let Some(a) = &cfg.actor {
            doc.set_actor(automerge::ActorId::from(a.as_slice()));
        }
        let authors: SharedAuthors = std::sync::Arc::new(std::sync::RwLock::new(authors));
        let refused: std::sync::Arc<std::sync::atomic::AtomicU64> = Default::default();
        for r in &loaded.records {
            let loaded = no_panic("a context log record", || {
                doc.load_incremental(r)
                    .map_err(|e| ContextError::Doc(e.to_string()))
            });
            if let Err(e) = loaded {
                tracing::warn!(error = %e, "context log record refused; ignoring the rest");
                break;
            }
        }
        // Loaded changes are already on disk: start the incremental point here.
        let _ = doc.save_incremental();
        let (tx, rx) = mpsc::channel(256);
        let (changed_tx, changed) = tokio::sync::watch::channel(0u64);
        let mut d = Doc {
            doc,
            log,
            sync: Default::default(),
            changed: changed_tx,
            dirty: false,
            last_write: 0,
            authors: authors.clone(),
            max_value_bytes: cfg.max_value_bytes,
            refused: refused.clone(),
        };
        if cfg.actor.is_some() {
            d.adopt_legacy(dir)?;
        }
        // The owner does fsyncs, compactions and whole-document merges: it gets its own
        // thread so the daemon's runtime workers (and the mesh) never wait on the disk.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| ContextError::Doc(format!("cannot start the store thread: {e}")))?;
        std::thread::Builder::new()
            .name("loopsy-context".into())
            .spawn(move || rt.block_on(run(d, rx)))
            .map_err(|e| ContextError::Doc(format!("cannot start the store thread: {e}")))?;
        Ok(Self {
            tx,
            cfg,
            changed,
            synced: Default::default(),
            authors,
            refused,
        })
    }

    /// The peers holding `context` here, by PeerId (bytes) and name: the authors, besides
    /// this machine, whose entries this replica shows. Called whenever the trust list may
    /// have changed; a revoke hides that peer's entries from then on.
    pub fn set_authors(&self, peers: impl IntoIterator<Item = (Vec<u8>, String)>) {
        let mut a = self.authors.write().unwrap_or_else(|p| p.into_inner());
        a.peers = peers.into_iter().collect();
    }

    /// Changes received that this replica does not show (authors without `context` here,
    /// or breaking the rules), since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that changes whenever the document does.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.clone()
    }

    /// The next sync message for the session `session` (None: nothing more to say).
    pub async fn sync_generate(&self, session: &str) -> Result<Option<Vec<u8>>, ContextError> {
        let session = session.to_string();
        self.ask(|r| Cmd::SyncGen(session, r)).await
    }

    /// Apply a sync message from the session's peer (changes are made durable first).
    pub async fn sync_receive(&self, session: &str, msg: Vec<u8>) -> Result<(), ContextError> {
        if msg.len() > MAX_SYNC_MESSAGE {
            return Err(ContextError::Invalid("sync message too large".into()));
        }
        let session = session.to_string();
        self.ask(|r| Cmd::SyncRecv(session, msg, r)).await?
    }

    /// The whole document, as automerge's binary format (loads in any automerge library).
    pub async fn export_automerge(&self) -> Result<Vec<u8>, ContextError> {
        self.ask(Cmd::ExportAutomerge).await
    }

    /// Merge an automerge document into this one (keys it has win or conflict as usual;
    /// nothing here is removed).
    pub async fn import_automerge(&self, bytes: Vec<u8>) -> Result<(), ContextError> {
        self.ask(|r| Cmd::ImportAutomerge(bytes, r)).await?
    }

    /// This document's heads (change hashes, hex).
    pub async fn heads(&self) -> Result<Vec<String>, ContextError> {
        self.ask(Cmd::Heads).await
    }

    /// How a replica with `their_heads` differs from this one.
    pub async fn lag(&self, their_heads: Vec<String>) -> Result<Lag, ContextError> {
        if their_heads.len() > 10_000 {
            return Err(ContextError::Invalid("too many heads".into()));
        }
        self.ask(|r| Cmd::Lag(their_heads, r)).await
    }

    /// Note that a sync session with `peer` just completed.
    pub fn mark_synced(&self, peer: &str) {
        let mut m = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(peer.to_string(), now_ms());
    }

    /// When a sync session with `peer` last completed (Unix ms).
    pub fn last_synced(&self, peer: &str) -> Option<u64> {
        let m = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        m.get(peer).copied()
    }

    /// Start a new sync session over a fresh stream.
    pub async fn sync_begin(&self, session: &str) {
        let _ = self.tx.send(Cmd::SyncBegin(session.to_string())).await;
    }

    /// Drop a session's sync state (the peer went away or misbehaved).
    pub async fn sync_forget(&self, session: &str) {
        let _ = self.tx.send(Cmd::SyncForget(session.to_string())).await;
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, ContextError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(f(tx))
            .await
            .map_err(|_| ContextError::Stopped)?;
        rx.await.map_err(|_| ContextError::Stopped)
    }

    /// Write `key`, durable on this machine before it returns.
    pub async fn set(
        &self,
        key: &str,
        value: serde_json::Value,
        ttl_s: Option<u64>,
        by: &str,
    ) -> Result<Entry, ContextError> {
        check_key(key)?;
        if ttl_s == Some(0) {
            return Err(ContextError::Invalid("ttl_s must be at least 1".into()));
        }
        let len = serde_json::to_string(&value)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if len > self.cfg.max_value_bytes {
            return Err(ContextError::Invalid(format!(
                "value is {len} bytes as JSON; the limit is {} (context.max_value_bytes)",
                self.cfg.max_value_bytes
            )));
        }
        let key = key.to_string();
        let by = by.to_string();
        self.ask(|r| Cmd::Set(key, value, ttl_s, by, r)).await?
    }

    /// Read `key` (None if absent or expired).
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, ContextError> {
        check_key(key)?;
        let key = key.to_string();
        self.ask(|r| Cmd::Get(key, r)).await
    }

    /// Keys starting with `prefix`, in order, at most `limit`, after `cursor`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, ContextError> {
        let prefix = prefix.to_string();
        self.ask(|r| Cmd::List(prefix, limit.clamp(1, 1000), cursor, r))
            .await
    }

    /// Delete `key`; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ContextError> {
        check_key(key)?;
        let key = key.to_string();
        self.ask(|r| Cmd::Delete(key, r)).await?
    }
}

/// How long a document with nothing to expire goes between sweeps (a safety net: changes wake
/// the sweep sooner).
const SWEEP_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

async fn run(mut d: Doc, mut rx: mpsc::Receiver<Cmd>) {
    // Expired keys already vanish from reads; the sweep deletes them from the document. It
    // scans every key, so it runs at most every 50 scan-times (≤ 2 % of a core) and at least
    // a second apart; it wakes when the next entry expires, or within that pace after any
    // command (a write, or a sync that may bring entries with a TTL). A document with nothing
    // to expire is not swept at all until something changes: an idle daemon sleeps.
    let mut pace = std::time::Duration::from_secs(1);
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        let cmd = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => break },
            _ = tokio::time::sleep_until(next_sweep) => {
                let t0 = std::time::Instant::now();
                let next = match d.sweep(now_ms()) {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(error = %e, "context expiry sweep failed");
                        Some(now_ms())
                    }
                };
                pace = (t0.elapsed() * 50).max(std::time::Duration::from_secs(1));
                let until = next.map_or(SWEEP_IDLE, |at| {
                    std::time::Duration::from_millis(at.saturating_sub(now_ms()))
                });
                next_sweep = tokio::time::Instant::now() + until.max(pace);
                continue;
            }
        };
        next_sweep = next_sweep.min(tokio::time::Instant::now() + pace);
        let now = now_ms();
        match cmd {
            Cmd::SyncGen(session, reply) => {
                use automerge::sync::SyncDoc;
                let st = d.sync.entry(session).or_default();
                let msg = d.doc.sync().generate_sync_message(st).map(|m| m.encode());
                let _ = reply.send(msg);
            }
            Cmd::SyncRecv(session, bytes, reply) => {
                use automerge::sync::SyncDoc;
                let before = d.doc.get_heads();
                let r = no_panic("a sync message", || {
                    automerge::sync::Message::decode(&bytes)
                        .map_err(|e| ContextError::Invalid(format!("malformed sync message: {e}")))
                        .and_then(|m| {
                            m.changes.iter().try_for_each(check_chunks)?;
                            let st = d.sync.entry(session).or_default();
                            d.doc.sync().receive_sync_message(st, m).map_err(|e| {
                                ContextError::Invalid(format!("sync message refused: {e}"))
                            })
                        })
                })
                .and_then(|()| d.persist());
                d.audit_changes(&before, now);
                let _ = reply.send(r);
            }
            Cmd::ExportAutomerge(reply) => {
                let _ = reply.send(d.doc.save());
            }
            Cmd::ImportAutomerge(bytes, reply) => {
                let r = no_panic("the document", || {
                    check_chunks(&bytes)?;
                    AutoCommit::load(&bytes).map_err(|e| {
                        ContextError::Invalid(format!("not an automerge document: {e}"))
                    })
                })
                .and_then(|other| d.import(other, now));
                let _ = reply.send(r);
            }
            Cmd::SyncForget(session) => {
                d.sync.remove(&session);
            }
            Cmd::SyncBegin(session) => {
                // A new stream: keep what we know the peer has, drop what was in flight.
                if let Some(st) = d.sync.get_mut(&session) {
                    *st = automerge::sync::State::decode(&st.encode()).unwrap_or_default();
                }
            }
            Cmd::Set(key, value, ttl, by, reply) => {
                // Strictly increasing here, so two writes in one millisecond still differ
                // (a waiter comparing written_at never misses the second).
                let written_at = now.max(d.last_write + 1);
                d.last_write = written_at;
                let stored = Stored {
                    value,
                    written_by: by,
                    written_at,
                    expires_at: ttl.map(|t| now.saturating_add(t.saturating_mul(1000))),
                };
                let r = serde_json::to_string(&stored)
                    .map_err(|e| ContextError::Doc(e.to_string()))
                    .and_then(|json| {
                        d.doc
                            .put(ROOT, key.as_str(), json)
                            .map_err(|e| ContextError::Doc(e.to_string()))
                    })
                    .and_then(|()| d.persist())
                    .map(|()| Entry {
                        key: key.clone(),
                        value: stored.value.clone(),
                        written_by: stored.written_by.clone(),
                        written_at: stored.written_at,
                        expires_at: stored.expires_at,
                        conflicts: Vec::new(),
                        requested_by: None,
                    });
                let _ = reply.send(r);
            }
            Cmd::Get(key, reply) => {
                let _ = reply.send(d.entry(&key, now));
            }
            Cmd::Heads(reply) => {
                let _ = reply.send(d.doc.get_heads().iter().map(|h| h.to_string()).collect());
            }
            Cmd::Lag(theirs, reply) => {
                let _ = reply.send(d.lag(&theirs));
            }
            Cmd::List(prefix, limit, cursor, reply) => {
                let mut entries = Vec::new();
                let mut next = None;
                for k in d.doc.keys(ROOT) {
                    if !k.starts_with(&prefix)
                        || cursor.as_ref().is_some_and(|c| k.as_str() <= c.as_str())
                    {
                        continue;
                    }
                    if let Some(e) = d.entry(&k, now) {
                        if entries.len() == limit {
                            next = entries.last().map(|e: &Entry| e.key.clone());
                            break;
                        }
                        entries.push(e);
                    }
                }
                let _ = reply.send(Page {
                    entries,
                    next_cursor: next,
                });
            }
            Cmd::Delete(key, reply) => {
                let existed = d.entry(&key, now).is_some();
                let r = if d.doc.get(ROOT, key.as_str()).ok().flatten().is_some() {
                    d.doc
                        .delete(ROOT, key.as_str())
                        .map_err(|e| ContextError::Doc(e.to_string()))
                        .and_then(|()| d.persist())
                        .map(|()| existed)
                } else {
                    Ok(false)
                };
                let _ = reply.send(r);
            }
        }
    }
}

#[path = "view.rs"]
mod view;
use view::{Authors, SharedAuthors, View, change_op_ok};

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
