//! Moving messages: `/loopsy/msg/1` streams between trusted peers. The sender's outbox is
//! drained per peer in batches; the receiver verifies each envelope, stores the good ones
//! (one fsync per batch) and answers with one outcome per item — that answer is the delivery
//! ack. Read receipts ride the same streams the other way. Failed peers are retried with
//! backoff, and at once when they reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use super::store::{MsgHandle, Outcome, WireItem};
use crate::trust::Capability;
use crate::{NodeHandle, libp2p_stream_protocol};

/// The protocol id.
pub const MSG_PROTOCOL: &str = "/loopsy/msg/1";
/// Largest frame either way.
pub const MAX_FRAME: usize = 8 << 20;
/// Most items in one batch.
pub const MAX_BATCH: usize = 256;
/// A stream that says nothing for this long is closed (and an answer that takes this long
/// counts as lost: storing a batch takes milliseconds).
const IDLE: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

async fn write_frame<S: futures::AsyncWrite + Unpin, T: serde::Serialize>(
    s: &mut S,
    v: &T,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    ciborium::into_writer(v, &mut buf).map_err(std::io::Error::other)?;
    let len = u32::try_from(buf.len()).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(&buf).await?;
    s.flush().await
}

/// Read one frame's bytes; `Ok(None)` on a clean end of stream.
async fn read_frame<S: futures::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Option<Vec<u8>>> {
    read_frame_within(s, None).await
}

/// Read one frame, waiting at most `idle` for it to start and then as long as its size
/// needs at 64 KiB/s (a slow link still gets a big frame through).
async fn read_frame_within<S: futures::AsyncRead + Unpin>(
    s: &mut S,
    idle: Option<Duration>,
) -> std::io::Result<Option<Vec<u8>>> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer went quiet");
    let mut len = [0u8; 4];
    let head = match idle {
        Some(d) => tokio::time::timeout(d, s.read_exact(&mut len))
            .await
            .map_err(|_| timed_out())?,
        None => s.read_exact(&mut len).await,
    };
    match head {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; len];
    match idle {
        Some(d) => {
            let d = d + Duration::from_millis((len / 64) as u64);
            tokio::time::timeout(d, s.read_exact(&mut buf))
                .await
                .map_err(|_| timed_out())??;
        }
        None => s.read_exact(&mut buf).await?,
    }
    Ok(Some(buf))
}

/// A batch as one frame (length prefix included), as a sender writes it.
pub fn encode_batch(items: &[WireItem]) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = ciborium::into_writer(&items, &mut buf);
    let mut frame = (buf.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

/// Decode a receiver's answer (one frame body).
pub fn decode_outcomes(bytes: &[u8]) -> Result<Vec<Outcome>, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

/// Decode a batch (what a peer sends); fuzzable.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<WireItem>, String> {
    let items: Vec<WireItem> = ciborium::from_reader(bytes).map_err(|e| e.to_string())?;
    if items.len() > MAX_BATCH {
        return Err(format!(
            "{} items in one batch (at most {MAX_BATCH})",
            items.len()
        ));
    }
    Ok(items)
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

/// Accept message streams from trusted peers.
pub async fn serve(node: NodeHandle, msgs: MsgHandle) {
    let mut control = node.streams();
    let mut incoming = match control.accept(libp2p_stream_protocol(MSG_PROTOCOL)) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "message protocol already registered");
            return;
        }
    };
    while let Some((peer, mut stream)) = incoming.next().await {
        let (node, msgs) = (node.clone(), msgs.clone());
        tokio::spawn(
            async move {
                if node.peer_caps(peer).await.is_none() {
                    msgs.count_dropped("untrusted");
                    debug!("message stream from an untrusted peer refused");
                    return;
                }
                loop {
                    let bytes = match read_frame_within(&mut stream, Some(IDLE)).await {
                        Ok(Some(b)) => b,
                        Ok(None) => return,
                        // An oversize frame is the peer's fault; a cut connection is not.
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            msgs.count_dropped("malformed");
                            debug!(error = %e, "bad message frame");
                            return;
                        }
                        Err(_) => return,
                    };
                    let items = match decode_batch(&bytes) {
                        Ok(i) => i,
                        Err(e) => {
                            msgs.count_dropped("malformed");
                            debug!(error = %e, "undecodable message batch");
                            return;
                        }
                    };
                    let out = accept_batch(&node, &msgs, peer, items).await;
                    match tokio::time::timeout(IDLE, write_frame(&mut stream, &out)).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
            }
            .instrument(info_span!("msg_in", %peer)),
        );
    }
}

/// Drain everything pending for `peer` over one stream. Ok(true): all done; Ok(false): the
/// peer asked us to come back later.
async fn drain(node: &NodeHandle, msgs: &MsgHandle, peer: PeerId) -> Result<bool, String> {
    // One item first: a peer that is going to say "later" (no permission, inbox full) costs
    // one message, not a 2 MiB batch, every retry.
    let mut batch = msgs.pending_for(peer, 1).await.map_err(|e| e.to_string())?;
    if batch.is_empty() {
        return Ok(true);
    }
    let mut control = node.streams();
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        control.open_stream(peer, libp2p_stream_protocol(MSG_PROTOCOL)),
    )
    .await
    .map_err(|_| "no stream within 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    loop {
        let (items, ids): (Vec<WireItem>, Vec<String>) = batch.into_iter().unzip();
        // One deadline for the whole exchange, so a half-open connection cannot hold the
        // worker for minutes; it grows with the batch (at least 64 KiB/s), so a slow link
        // still gets a big batch through.
        let size: usize = items
            .iter()
            .map(|i| match i {
                WireItem::Msg(s) => s.env.len() + s.sig.len() + s.key.len(),
                WireItem::Read(id, _) => id.len() + 16,
            })
            .sum();
        let deadline = IDLE + Duration::from_millis((size / 64) as u64);
        let bytes = tokio::time::timeout(deadline, async {
            write_frame(&mut s, &items).await?;
            read_frame(&mut s).await
        })
        .await
        .map_err(|_| format!("no answer within {} s", deadline.as_secs()))?
        .map_err(|e| e.to_string())?
        .ok_or("the peer closed the stream")?;
        let outcomes: Vec<Outcome> =
            ciborium::from_reader(&bytes[..]).map_err(|e| format!("bad answer: {e}"))?;
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
            let _ = s.close().await;
            return Ok(false);
        }
        batch = msgs
            .pending_for(peer, MAX_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            let _ = s.close().await;
            return Ok(true);
        }
    }
}

/// Keep delivering the outbox to online peers, for the daemon's lifetime.
pub async fn deliver(node: NodeHandle, msgs: MsgHandle) {
    let mut outbox = msgs.outbox_changes();
    let mut connected = node.connected();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
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
            _ = tick.tick() => {}
        }
        let Ok(pending) = msgs.pending_peers().await else {
            return;
        };
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
            let (node, msgs, running, backoff) =
                (node.clone(), msgs.clone(), running.clone(), backoff.clone());
            tokio::spawn(
                async move {
                    loop {
                        // A (re)connection while an exchange hangs: the old connection is
                        // probably dead (a killed peer's QUIC connection looks alive for
                        // seconds). Give it a second, then start over on the new one.
                        let mut conn = node.connected();
                        conn.borrow_and_update();
                        let r = tokio::select! {
                            r = drain(&node, &msgs, peer) => r,
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
