//! Moving messages: gossip messages on the recipient's inbox topic (see `node_gossip`),
//! signed by the sender's peer key. The sender's outbox is drained per peer, one batch in
//! flight at a time; the receiver verifies each envelope, stores the good ones (one fsync per
//! batch) and publishes an answer on the sender's inbox topic with one outcome per item — that
//! answer is the delivery ack. Read receipts ride the same way back. A batch without an answer
//! is sent again (the inbox keeps each message once); failed peers are retried with backoff,
//! and at once when they reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use super::store::{MsgHandle, Outcome, WireItem};
use crate::NodeHandle;
use crate::trust::Capability;

/// Largest gossip message either way.
pub const MAX_FRAME: usize = crate::behaviour::MAX_GOSSIP;
/// Most items in one batch.
pub const MAX_BATCH: usize = 256;
/// How long a batch may wait for its answer before it is sent again (storing a batch takes
/// milliseconds; the rest is the link), plus 1 ms per 64 bytes for a slow link.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One gossip message on an inbox topic.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    /// Messages and read receipts; `n` is the sender's batch number (random).
    Batch {
        /// Batch number, echoed in the answer.
        n: u64,
        /// The items.
        items: Vec<WireItem>,
    },
    /// The receiver's outcomes for batch `n`, one per item, in order.
    Answer {
        /// The batch answered.
        n: u64,
        /// The outcomes.
        outcomes: Vec<Outcome>,
    },
}

/// Encode a frame (CBOR).
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = ciborium::into_writer(frame, &mut buf);
    buf
}

/// A batch of `items` as batch `n`.
pub fn encode_batch(n: u64, items: &[WireItem]) -> Vec<u8> {
    #[derive(Serialize)]
    enum Out<'a> {
        Batch { n: u64, items: &'a [WireItem] },
    }
    let mut buf = Vec::new();
    let _ = ciborium::into_writer(&Out::Batch { n, items }, &mut buf);
    buf
}

/// Decode a frame from a peer; fuzzable. Size-capped by gossipsub (`MAX_GOSSIP`), and a
/// batch holds at most `MAX_BATCH` items.
pub fn decode(bytes: &[u8]) -> Result<Frame, String> {
    if bytes.len() > MAX_FRAME {
        return Err(format!(
            "frame of {} bytes exceeds {MAX_FRAME}",
            bytes.len()
        ));
    }
    let f: Frame = ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    match &f {
        Frame::Batch { items, .. } if items.len() > MAX_BATCH => Err(format!(
            "{} items in one batch (at most {MAX_BATCH})",
            items.len()
        )),
        Frame::Answer { outcomes, .. } if outcomes.len() > MAX_BATCH => Err(format!(
            "{} outcomes in one answer (at most {MAX_BATCH})",
            outcomes.len()
        )),
        _ => Ok(f),
    }
}

/// Batches waiting for their answers: (peer, batch number) → the waiting sender.
#[derive(Clone, Default)]
struct Waiting(Arc<Mutex<Waiters>>);

type Waiters = HashMap<(PeerId, u64), oneshot::Sender<Vec<Outcome>>>;

impl Waiting {
    fn add(&self, peer: PeerId, n: u64) -> oneshot::Receiver<Vec<Outcome>> {
        let (tx, rx) = oneshot::channel();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((peer, n), tx);
        rx
    }

    fn remove(&self, peer: PeerId, n: u64) -> Option<oneshot::Sender<Vec<Outcome>>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(peer, n))
    }
}

/// Start moving messages for the daemon's lifetime: receive what arrives on this node's
/// inbox topic, and deliver the outbox.
pub fn start(node: NodeHandle, msgs: MsgHandle) {
    let waiting = Waiting::default();
    tokio::spawn(serve(node.clone(), msgs.clone(), waiting.clone()));
    tokio::spawn(deliver(node, msgs, waiting));
}

/// Handle one batch from `peer`; the outcomes, in order.
async fn accept_batch(
    node: &NodeHandle,
    msgs: &MsgHandle,
    peer: PeerId,
    items: Vec<WireItem>,
) -> Vec<Outcome> {
    // Messages need the `messages` capability; a read receipt is about a message we sent
    // that peer, which the store checks, so any trusted peer may send one.
    let permitted = matches!(node.peer_caps(peer).await, Some((_, caps)) if caps.contains(&Capability::Messages));
    if !permitted && items.iter().any(|i| matches!(i, WireItem::Msg(_))) {
        let why = "this machine has not granted you the \"messages\" capability".to_string();
        let mut out = Vec::with_capacity(items.len());
        let mut reads = Vec::new();
        for it in &items {
            match it {
                WireItem::Msg(_) => {
                    msgs.count_dropped("not_permitted");
                    out.push(Some(Outcome::Later(why.clone())));
                }
                WireItem::Read(id, at) => {
                    out.push(None);
                    reads.push((id.clone(), *at));
                }
            }
        }
        let n = reads.len();
        let mut r = if n == 0 {
            Vec::new()
        } else {
            msgs.receipts(peer, reads).await.unwrap_or_else(|_| {
                vec![Outcome::Later("the recipient is shutting down".into()); n]
            })
        }
        .into_iter();
        return out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| r.next().unwrap_or(Outcome::Later("lost".into()))))
            .collect();
    }
    let max_body = msgs.config().max_body_bytes;
    let mut envs = Vec::new();
    let mut reads = Vec::new();
    // Where each item's outcome comes from: (is a message, index in its list).
    let mut order = Vec::with_capacity(items.len());
    for it in items {
        match it {
            WireItem::Msg(s) => {
                let r = s.open(&peer, max_body);
                if let Err(e) = &r {
                    msgs.count_dropped(e.counter());
                    debug!(error = %e, "message dropped");
                }
                order.push((true, envs.len()));
                envs.push(r);
            }
            WireItem::Read(id, at) => {
                order.push((false, reads.len()));
                reads.push((id, at));
            }
        }
    }
    let unavailable = |n: usize| vec![Outcome::Later("the recipient is shutting down".into()); n];
    let m = if envs.is_empty() {
        Vec::new()
    } else {
        let n = envs.len();
        msgs.receive(peer, envs)
            .await
            .unwrap_or_else(|_| unavailable(n))
    };
    let r = if reads.is_empty() {
        Vec::new()
    } else {
        let n = reads.len();
        msgs.receipts(peer, reads)
            .await
            .unwrap_or_else(|_| unavailable(n))
    };
    order
        .into_iter()
        .map(|(is_msg, i)| {
            let list = if is_msg { &m } else { &r };
            list.get(i)
                .cloned()
                .unwrap_or_else(|| Outcome::Later("lost".into()))
        })
        .collect()
}

/// Batches handled at once, all peers together.
const MAX_BATCHES: usize = 16;
/// Batches of one peer handled at once.
const MAX_BATCHES_PER_PEER: usize = 4;

/// Gives a peer's batch slot back when its handling ends.
struct Done(Arc<Mutex<HashMap<PeerId, usize>>>, PeerId);

impl Drop for Done {
    fn drop(&mut self) {
        let mut b = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = b.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                b.remove(&self.1);
            }
        }
    }
}

/// Read what arrives on this node's inbox topic: batches are stored and answered, answers
/// go to the batches waiting for them.
async fn serve(node: NodeHandle, msgs: MsgHandle, waiting: Waiting) {
    let Some(mut incoming) = node.take_gossip() else {
        warn!("the inbox topic is already being read");
        return;
    };
    // Batches handled at once: all peers together, and per peer (a member flooding batches
    // waits its turn; the others' go on).
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_BATCHES));
    let busy: Arc<Mutex<HashMap<PeerId, usize>>> = Default::default();
    while let Some((peer, bytes, ticket)) = incoming.recv().await {
        let frame = match decode(&bytes) {
            Ok(f) => f,
            Err(e) => {
                msgs.count_dropped("malformed");
                debug!(%peer, error = %e, "undecodable message frame");
                continue;
            }
        };
        match frame {
            Frame::Answer { n, outcomes } => match waiting.remove(peer, n) {
                Some(w) => {
                    let _ = w.send(outcomes);
                }
                None => debug!(%peer, n, "an answer nobody waits for (late, or a retry's)"),
            },
            Frame::Batch { n, items } => {
                {
                    let mut b = busy.lock().unwrap_or_else(|p| p.into_inner());
                    let mine = b.entry(peer).or_insert(0);
                    if *mine >= MAX_BATCHES_PER_PEER {
                        msgs.count_dropped("busy");
                        debug!(%peer, "a batch while this peer's others are handled: dropped (it retries)");
                        continue;
                    }
                    *mine += 1;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (node, msgs, busy) = (node.clone(), msgs.clone(), busy.clone());
                tokio::spawn(
                    async move {
                        let _held = (slot, ticket, Done(busy, peer));
                        if node.peer_caps(peer).await.is_none() {
                            msgs.count_dropped("untrusted");
                            debug!("messages from an untrusted peer dropped");
                            return;
                        }
                        let outcomes = accept_batch(&node, &msgs, peer, items).await;
                        // Not answered: the sender sends the batch again, and is answered then.
                        if let Err(e) = node
                            .publish(peer, encode(&Frame::Answer { n, outcomes }))
                            .await
                        {
                            debug!(error = %e, "cannot answer a batch");
                        }
                    }
                    .instrument(info_span!("msg_in", %peer)),
                );
            }
        }
    }
}

/// Drain everything pending for `peer`, one batch in flight. Ok(true): all done; Ok(false):
/// the peer asked us to come back later.
async fn drain(
    node: &NodeHandle,
    msgs: &MsgHandle,
    waiting: &Waiting,
    peer: PeerId,
) -> Result<bool, String> {
    // One item first: a peer that is going to say "later" (no permission, inbox full) costs
    // one message, not a 2 MiB batch, every retry.
    let mut batch = msgs.pending_for(peer, 1).await.map_err(|e| e.to_string())?;
    loop {
        if batch.is_empty() {
            return Ok(true);
        }
        let (items, ids): (Vec<WireItem>, Vec<String>) = batch.into_iter().unzip();
        let n: u64 = rand::random();
        let frame = encode_batch(n, &items);
        // A deadline that grows with the batch (at least 64 KiB/s), so a slow link still
        // gets a big batch through, and a half-open connection cannot hold the worker.
        let deadline = ANSWER_WITHIN + Duration::from_millis((frame.len() / 64) as u64);
        let answer = waiting.add(peer, n);
        if let Err(e) = node.publish(peer, frame).await {
            waiting.remove(peer, n);
            return Err(e.to_string());
        }
        let outcomes = match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => return Err("stopped".into()),
            Err(_) => {
                waiting.remove(peer, n);
                return Err(format!("no answer within {} s", deadline.as_secs()));
            }
        };
        if outcomes.len() != ids.len() {
            return Err("the peer answered a different number of items".into());
        }
        let later = outcomes.iter().any(|o| matches!(o, Outcome::Later(_)));
        msgs.results(
            peer,
            items
                .into_iter()
                .zip(ids)
                .zip(outcomes)
                .map(|((i, id), o)| (i, id, o))
                .collect(),
        )
        .await
        .map_err(|e| e.to_string())?;
        if later {
            return Ok(false);
        }
        batch = msgs
            .pending_for(peer, MAX_BATCH)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Keep delivering the outbox to online peers, for the daemon's lifetime.
async fn deliver(node: NodeHandle, msgs: MsgHandle, waiting: Waiting) {
    let mut outbox = msgs.outbox_changes();
    let mut connected = node.connected();
    let mut ready = node.inbox_ready();
    // Retries and backoffs: only while something waits in the outbox (an idle daemon does
    // not wake for nothing; a new message, a connection or an open inbox wakes the loop).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut waiting_mail = true;
    // Per peer: a worker runs; another pass was asked for while it ran.
    let running: Arc<Mutex<HashMap<PeerId, bool>>> = Default::default();
    let backoff: Arc<Mutex<HashMap<PeerId, (Instant, Duration)>>> = Default::default();
    loop {
        tokio::select! {
            r = outbox.changed() => if r.is_err() { return },
            r = connected.changed() => {
                if r.is_err() {
                    return;
                }
                // Someone came back: try everyone now.
                backoff.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
            r = ready.changed() => {
                if r.is_err() {
                    return;
                }
                // A peer's inbox is open (it connected and subscribed): send now.
                if let Some(p) = ready.borrow_and_update().1 {
                    backoff.lock().unwrap_or_else(|b| b.into_inner()).remove(&p);
                }
            }
            _ = tick.tick(), if waiting_mail => {}
        }
        let Ok(pending) = msgs.pending_peers().await else {
            return;
        };
        waiting_mail = !pending.is_empty();
        if pending.is_empty() {
            continue;
        }
        let Ok(peers) = node.peers().await else {
            return;
        };
        let online: HashSet<PeerId> = peers
            .iter()
            .filter(|p| p.online)
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        let now = Instant::now();
        for peer in pending.into_iter().filter(|p| online.contains(p)) {
            if backoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&peer)
                .is_some_and(|(due, _)| *due > now)
            {
                continue;
            }
            {
                let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(again) = r.get_mut(&peer) {
                    *again = true;
                    continue;
                }
                r.insert(peer, false);
            }
            let (node, msgs, running, backoff, waiting) = (
                node.clone(),
                msgs.clone(),
                running.clone(),
                backoff.clone(),
                waiting.clone(),
            );
            tokio::spawn(
                async move {
                    loop {
                        // A (re)connection while an exchange hangs: the old connection is
                        // probably dead (a killed peer's QUIC connection looks alive for
                        // seconds). Give it a second, then start over on the new one.
                        let mut conn = node.connected();
                        conn.borrow_and_update();
                        let r = tokio::select! {
                            r = drain(&node, &msgs, &waiting, peer) => r,
                            _ = async {
                                // Only this peer's new connections count.
                                loop {
                                    if conn.changed().await.is_err() {
                                        std::future::pending::<()>().await;
                                    }
                                    if conn.borrow_and_update().1 == Some(peer) {
                                        break;
                                    }
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            } => {
                                debug!("a connection came up mid-delivery: retrying on it");
                                continue;
                            }
                        };
                        {
                            let mut b = backoff.lock().unwrap_or_else(|p| p.into_inner());
                            match &r {
                                Ok(true) => {
                                    b.remove(&peer);
                                }
                                Ok(false) | Err(_) => {
                                    let d = b
                                        .get(&peer)
                                        .map_or(MIN_BACKOFF, |(_, d)| (*d * 2).min(MAX_BACKOFF));
                                    b.insert(peer, (Instant::now() + d, d));
                                }
                            }
                        }
                        if let Err(e) = &r {
                            debug!(error = %e, "message delivery did not complete");
                        }
                        let mut run = running.lock().unwrap_or_else(|p| p.into_inner());
                        match run.get_mut(&peer) {
                            Some(again) if *again && matches!(r, Ok(true)) => *again = false,
                            _ => {
                                run.remove(&peer);
                                break;
                            }
                        }
                    }
                }
                .instrument(info_span!("msg_out", %peer)),
            );
        }
    }
}
