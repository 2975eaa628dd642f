//! Replicating the context between trusted peers: automerge's sync protocol over an ordered
//! `/loopsy/ctx-sync/1` stream, run when a peer comes online, when the document changes
//! (local writes and merged ones, so changes travel on through the mesh), and every few
//! seconds as a safety net. Only peers this machine granted `context` take part, both ways.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use tracing::{Instrument, debug, info, info_span, warn};

use super::store::{ContextHandle, MAX_SYNC_MESSAGE};
use crate::trust::Capability;
use crate::{NodeHandle, libp2p_stream_protocol};

/// The protocol id.
pub const SYNC_PROTOCOL: &str = "/loopsy/ctx-sync/1";
/// One sync session may take this long in all.
const SESSION_TIMEOUT: Duration = Duration::from_secs(600);
/// A peer that sends nothing for this long mid-session is treated as gone (a pulled cable
/// can keep a connection looking alive for much longer).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every online peer is synced anyway, whether or not anything changed (belt and
/// braces: in-sync peers exchange only their heads). Changes, grants and peers coming
/// online start a sync at once; a failed one is retried after [`RETRY_AFTER`].
const FULL_PASS: Duration = Duration::from_secs(300);
/// A failed sync with a peer is tried again after each of these; past them, the next change,
/// reconnection or full pass tries again.
const RETRY_AFTER: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

static NEXT_INBOUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn send<S: futures::AsyncWrite + Unpin>(
    s: &mut S,
    msg: Option<&[u8]>,
) -> std::io::Result<()> {
    match msg {
        None => s.write_all(&[0]).await?,
        Some(m) => {
            let len = u32::try_from(m.len()).map_err(std::io::Error::other)?;
            s.write_all(&[1]).await?;
            s.write_all(&len.to_le_bytes()).await?;
            s.write_all(m).await?;
        }
    }
    s.flush().await
}

/// Read one message; `Ok(None)` is the peer's "nothing more", `Err` on EOF or bad framing.
pub(crate) async fn recv<S: futures::AsyncRead + Unpin>(
    s: &mut S,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut tag = [0u8; 1];
    s.read_exact(&mut tag).await?;
    match tag[0] {
        0 => Ok(None),
        1 => {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_SYNC_MESSAGE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("sync message of {len} bytes exceeds {MAX_SYNC_MESSAGE}"),
                ));
            }
            let mut buf = vec![0u8; len];
            s.read_exact(&mut buf).await?;
            Ok(Some(buf))
        }
        t => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown sync frame {t}"),
        )),
    }
}

/// Run the sync protocol on an open stream until both sides have nothing to say. The
/// initiator speaks first; then each side answers every message it receives. Returns the
/// bytes of sync messages this side sent.
pub async fn session<S>(
    s: &mut S,
    ctx: &ContextHandle,
    key: &str,
    initiator: bool,
) -> Result<u64, String>
where
    S: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    ctx.sync_begin(key).await;
    let mut sent = 0u64;
    // The other side may close only right after we told it we have nothing more.
    let mut said_done = false;
    if initiator {
        let m = ctx.sync_generate(key).await.map_err(|e| e.to_string())?;
        sent += m.as_ref().map_or(1, |m| 5 + m.len() as u64);
        said_done = m.is_none();
        send(s, m.as_deref()).await.map_err(|e| e.to_string())?;
    }
    loop {
        let got = match tokio::time::timeout(STEP_TIMEOUT, recv(s)).await {
            Err(_) => return Err("the peer stopped answering".into()),
            Ok(Ok(m)) => m,
            // The other side finished and closed.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && said_done => {
                return Ok(sent);
            }
            Ok(Err(e)) => return Err(e.to_string()),
        };
        let got_some = got.is_some();
        if let Some(m) = got {
            ctx.sync_receive(key, m).await.map_err(|e| e.to_string())?;
        }
        let out = ctx.sync_generate(key).await.map_err(|e| e.to_string())?;
        if !got_some && out.is_none() {
            let _ = s.close().await;
            return Ok(sent);
        }
        sent += out.as_ref().map_or(1, |m| 5 + m.len() as u64);
        said_done = out.is_none();
        send(s, out.as_deref()).await.map_err(|e| e.to_string())?;
    }
}

/// Accept sync sessions from trusted peers holding `context` here.
pub async fn serve(node: NodeHandle, ctx: ContextHandle) {
    let mut control = node.streams();
    let mut incoming = match control.accept(libp2p_stream_protocol(SYNC_PROTOCOL)) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "context sync protocol already registered");
            return;
        }
    };
    while let Some((peer, mut stream)) = incoming.next().await {
        let (node, ctx) = (node.clone(), ctx.clone());
        tokio::spawn(
            async move {
                match node.peer_caps(peer).await {
                    Some((_, caps)) if caps.contains(&Capability::Context) => {}
                    _ => {
                        debug!("context sync refused: not trusted with context");
                        return;
                    }
                }
                // One state per inbound stream: concurrent sessions from one peer must not
                // share (or wipe) each other's state.
                let key = format!(
                    "in:{peer}:{}",
                    NEXT_INBOUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                // A session ends with the peer's `context` here: nothing more of it is
                // taken in once that is revoked (what it wrote is already shown as from an
                // author without `context`, so hidden; see `set_authors`).
                let r = tokio::select! {
                    r = tokio::time::timeout(SESSION_TIMEOUT, session(&mut stream, &ctx, &key, false)) => r,
                    lost = node.revoked(peer, &[Capability::Context]) => {
                        info!(?lost, "inbound context sync ended: context revoked");
                        ctx.sync_forget(&key).await;
                        return;
                    }
                };
                if matches!(r, Ok(Ok(_))) {
                    ctx.mark_synced(&peer.to_string());
                } else {
                    warn!(?r, "inbound context sync failed");
                }
                ctx.sync_forget(&key).await;
            }
            .instrument(info_span!("ctx_sync_in", %peer)),
        );
    }
}

async fn sync_with(node: &NodeHandle, ctx: &ContextHandle, peer: PeerId) -> Result<(), String> {
    let mut control = node.streams();
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        control.open_stream(peer, libp2p_stream_protocol(SYNC_PROTOCOL)),
    )
    .await
    .map_err(|_| "no stream within 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    let key = format!("out:{peer}");
    let r = tokio::time::timeout(SESSION_TIMEOUT, session(&mut s, ctx, &key, true))
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    match r {
        Ok(_) => {
            ctx.mark_synced(&peer.to_string());
            Ok(())
        }
        Err(e) => {
            ctx.sync_forget(&key).await;
            Err(e)
        }
    }
}

/// The peers whose entries this replica shows: those holding `context` here.
fn set_authors(ctx: &ContextHandle, peers: &[crate::node::PeerView]) {
    ctx.set_authors(
        peers
            .iter()
            .filter(|p| p.caps.contains(&Capability::Context))
            .filter_map(|p| {
                let id: PeerId = p.peer_id.parse().ok()?;
                Some((id.to_bytes(), p.name.clone()))
            }),
    );
}

/// Keep every online peer that holds `context` in sync with this document.
pub async fn replicate(node: NodeHandle, ctx: ContextHandle) {
    let mut changes = ctx.changes();
    let mut connected = node.connected();
    let mut trust = node.trust_changed();
    // Full passes only while some peer is online: with none there is nobody to sync with,
    // and a connection (or a change) wakes the loop anyway.
    let mut tick = tokio::time::interval(FULL_PASS);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut anyone = true;
    // Per peer: a sync is running; another was asked for while it ran.
    let running: std::sync::Arc<std::sync::Mutex<HashMap<PeerId, bool>>> = Default::default();
    let mut known_online: HashSet<PeerId> = HashSet::new();
    if let Ok(peers) = node.peers().await {
        set_authors(&ctx, &peers);
    }
    loop {
        let changed = tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                true
            }
            _ = tick.tick(), if anyone => true,
            // Grants and revokes: who may author what is shown here follows at once.
            r = trust.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            // A peer came online: sync with it now, not at the next sweep.
            r = connected.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
        };
        let Ok(peers) = node.peers().await else {
            return;
        };
        set_authors(&ctx, &peers);
        anyone = peers.iter().any(|p| p.online);
        let online: Vec<PeerId> = peers
            .iter()
            .filter(|p| p.online && p.caps.contains(&Capability::Context))
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        for peer in &online {
            // On a change or a full pass every peer syncs; otherwise only the ones that
            // just came online.
            if !changed && known_online.contains(peer) {
                continue;
            }
            let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = r.get_mut(peer) {
                *again = true;
                continue;
            }
            r.insert(*peer, false);
            drop(r);
            let (node, ctx, running, peer) = (node.clone(), ctx.clone(), running.clone(), *peer);
            tokio::spawn(
                async move {
                    let mut failed = 0;
                    loop {
                        if let Err(e) = sync_with(&node, &ctx, peer).await {
                            debug!(error = %e, "context sync did not complete");
                            if let Some(wait) = RETRY_AFTER.get(failed) {
                                failed += 1;
                                tokio::time::sleep(*wait).await;
                                continue;
                            }
                        }
                        failed = 0;
                        let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
                        match r.get_mut(&peer) {
                            Some(again) if *again => *again = false,
                            _ => {
                                r.remove(&peer);
                                break;
                            }
                        }
                    }
                }
                .instrument(info_span!("ctx_sync_out", %peer)),
            );
        }
        known_online = online.into_iter().collect();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::context::ContextConfig;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    /// Sync `a` (initiator) with `b` over an in-memory pipe; bytes sent both ways.
    pub(crate) async fn sync_pair(a: &ContextHandle, b: &ContextHandle) -> u64 {
        let (x, y) = tokio::io::duplex(1 << 20);
        let (mut x, mut y) = (x.compat(), y.compat());
        let (ra, rb) = tokio::join!(
            session(&mut x, a, "out:b", true),
            session(&mut y, b, "in:a", false)
        );
        ra.unwrap() + rb.unwrap()
    }

    #[tokio::test]
    async fn one_small_write_costs_the_change_not_the_document() {
        let dir = tempfile::tempdir().unwrap();
        let a = ContextHandle::open(&dir.path().join("a"), ContextConfig::default()).unwrap();
        let b = ContextHandle::open(&dir.path().join("b"), ContextConfig::default()).unwrap();
        for i in 0..2000 {
            a.set(&format!("key/{i:05}"), serde_json::json!(i), None, "a")
                .await
                .unwrap();
        }
        let first = sync_pair(&a, &b).await;
        assert_eq!(b.list("", 1000, None).await.unwrap().entries.len(), 1000);
        a.set("key/00007", serde_json::json!("changed"), None, "a")
            .await
            .unwrap();
        let one = sync_pair(&a, &b).await;
        assert_eq!(b.get("key/00007").await.unwrap().unwrap().value, "changed");
        // The full document went over once; one write costs a small, fixed amount.
        assert!(
            one < 2048,
            "one write took {one} bytes (first sync {first})"
        );
        assert!(
            first > 20 * one,
            "first sync {first} bytes, one write {one}"
        );
    }
}
