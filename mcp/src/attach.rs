//! Attaching to a session on a peer: the `/loopsy/attach/1` mesh stream carries the session
//! host protocol unchanged. Inbound, a trusted peer holding `pty` is spliced to the local host
//! socket; locally, the CLI's `attach` control connection is spliced to a peer's stream.

use std::time::Duration;

use futures::StreamExt;
use loopsy_mesh::libp2p_stream_protocol;
use loopsy_mesh::trust::Capability;
use loopsy_term::proto::{Kind, Reply, read_frame, write_frame, write_json};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::DaemonCtx;
use crate::control::read_request;

/// The mesh protocol id.
pub const ATTACH_PROTOCOL: &str = "/loopsy/attach/1";

/// Which session a stream is for (the first frame on it, a `Request` frame).
#[derive(Debug, Serialize, Deserialize)]
struct Target {
    session: String,
}

/// What the CLI asks for on the control socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct LocalRequest {
    /// Peer name or PeerId.
    pub peer: String,
    /// Session id or name on that peer.
    pub session: String,
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, code: &str, message: String) {
    use tokio::io::AsyncWriteExt;
    let _ = write_json(w, Kind::Reply, &Reply::error(code, message)).await;
    // Close our side cleanly so the reason is delivered, not reset away.
    let _ = w.shutdown().await;
}

/// Refuse an inbound stream and linger briefly until the other side has read it and closed.
async fn refuse_inbound<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, code: &str, message: String) {
    use tokio::io::AsyncReadExt;
    refuse(s, code, message).await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Serve inbound attach streams until the node stops.
pub async fn serve(ctx: DaemonCtx) {
    let mut control = ctx.node().streams();
    let mut incoming = match control.accept(libp2p_stream_protocol(ATTACH_PROTOCOL)) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "attach protocol already registered");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        let ctx = ctx.clone();
        tokio::spawn(
            async move {
                let mut s = stream.compat();
                let Some((_, caps)) = ctx.node().peer_caps(peer).await else {
                    warn!("attach stream from an untrusted peer refused");
                    refuse_inbound(
                        &mut s,
                        "permission_denied",
                        "this machine does not trust you".into(),
                    )
                    .await;
                    return;
                };
                if !caps.contains(&Capability::Pty) {
                    refuse_inbound(
                        &mut s,
                        "permission_denied",
                        ctx.node().refusal(peer, Capability::Pty).await,
                    )
                    .await;
                    return;
                }
                let target =
                    match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s)).await {
                        Ok(Ok(Some(f))) if f.kind == Kind::Request => {
                            serde_json::from_slice::<Target>(&f.data).ok()
                        }
                        _ => None,
                    };
                let Some(t) = target else {
                    refuse_inbound(
                        &mut s,
                        "invalid_arguments",
                        "expected the session to attach to".into(),
                    )
                    .await;
                    return;
                };
                let sock = match ctx.sessions().socket(&t.session).await {
                    Ok((_, sock)) => sock,
                    Err(e) => {
                        refuse_inbound(&mut s, e.code(), e.to_string()).await;
                        return;
                    }
                };
                let host = match loopsy_sys::ipc::connect(&sock).await {
                    Ok(h) => h,
                    Err(e) => {
                        refuse_inbound(&mut s, "unavailable", format!("the session host: {e}"))
                            .await;
                        return;
                    }
                };
                info!(session = %t.session, "peer attached");
                let me = ctx.name().to_string();
                // Revoking pty (or removing the peer) ends a live attach within seconds.
                let still_allowed = async {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        match ctx.node().peer_caps(peer).await {
                            Some((_, caps)) if caps.contains(&Capability::Pty) => {}
                            Some(_) => {
                                break format!(
                                    "{me} revoked this machine's pty capability: the attach ended"
                                );
                            }
                            None => {
                                break format!(
                                    "{me} no longer trusts this machine: the attach ended"
                                );
                            }
                        }
                    }
                };
                tokio::pin!(still_allowed);
                let (mut hr, mut hw) = tokio::io::split(host);
                let (mut sr, mut sw) = tokio::io::split(s);
                // Input goes to the host as bytes; output comes back frame by frame, so a
                // revocation's reason is sent between two frames, never inside one.
                let down = async {
                    loop {
                        tokio::select! {
                            f = read_frame(&mut hr) => match f {
                                Ok(Some(f)) => {
                                    if write_frame(&mut sw, f.kind, &f.data).await.is_err() {
                                        return;
                                    }
                                }
                                _ => return,
                            },
                            why = &mut still_allowed => {
                                info!("{why}");
                                refuse(&mut sw, "permission_denied", why).await;
                                return;
                            }
                        }
                    }
                };
                tokio::select! {
                    r = tokio::io::copy(&mut sr, &mut hw) => debug!(?r, "peer detached"),
                    () = down => debug!("attach ended"),
                }
            }
            .instrument(info_span!("attach", %peer)),
        );
    }
}

/// The CLI's `attach` verb: read which peer and session, open the mesh stream, splice.
pub async fn splice_local<R, W>(ctx: &DaemonCtx, mut r: R, mut w: W)
where
    R: tokio::io::AsyncBufRead + AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let req: Option<LocalRequest> = read_request(&mut r).await;
    let Some(req) = req else {
        refuse(
            &mut w,
            "invalid_arguments",
            "expected {\"peer\", \"session\"}".into(),
        )
        .await;
        return;
    };
    let peer = match ctx.node().connect(&req.peer).await {
        Ok(p) => p,
        Err(e) => {
            let e = crate::tools::node_err(e);
            refuse(&mut w, e.code.as_str(), e.message).await;
            return;
        }
    };
    let mut control = ctx.node().streams();
    let opening = control.open_stream(peer, libp2p_stream_protocol(ATTACH_PROTOCOL));
    let stream = match tokio::time::timeout(Duration::from_secs(15), opening).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            refuse(
                &mut w,
                "unavailable",
                format!("cannot reach {}: {e}", req.peer),
            )
            .await;
            return;
        }
        Err(_) => {
            refuse(
                &mut w,
                "unavailable",
                format!("no answer from {} within 15 s", req.peer),
            )
            .await;
            return;
        }
    };
    let mut s = stream.compat();
    if write_json(
        &mut s,
        Kind::Request,
        &Target {
            session: req.session,
        },
    )
    .await
    .is_err()
    {
        // The peer may have refused (and closed) before reading: pass its reason on.
        match tokio::time::timeout(Duration::from_secs(5), read_frame(&mut s)).await {
            Ok(Ok(Some(f))) if f.kind == Kind::Reply => {
                let _ = loopsy_term::proto::write_frame(&mut w, Kind::Reply, &f.data).await;
            }
            _ => {
                refuse(
                    &mut w,
                    "unavailable",
                    format!("{} closed the stream", req.peer),
                )
                .await
            }
        }
        return;
    }
    let mut local = tokio::io::join(r, w);
    let r = tokio::io::copy_bidirectional(&mut local, &mut s).await;
    debug!(?r, "remote attach ended");
}
