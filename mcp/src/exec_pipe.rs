//! `loopsy exec` as a pipe: the `/loopsy/exec/1` mesh stream carries the exec frames
//! ([`loopsy_mesh::exec::wire`]) unchanged. Inbound, a trusted peer holding `exec` runs its
//! command here under this machine's policy; locally, the CLI's `exec` control connection runs
//! here (its own name) or is spliced to the peer's stream.

use std::time::{Duration, Instant};

use futures::StreamExt;
use loopsy_mesh::exec::pipe::{self, Outcome};
use loopsy_mesh::exec::wire::EXEC_PROTOCOL;
use loopsy_mesh::libp2p_stream_protocol;
use loopsy_mesh::trust::Capability;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{Instrument, debug, info_span, warn};

use crate::DaemonCtx;
use crate::audit::AuditRecord;
use crate::control::read_line;

/// How often a running pipe checks that its peer still holds `exec` here.
const RECHECK: Duration = Duration::from_secs(1);
/// How long opening the stream to a connected peer may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the CLI sends first on its `exec` control connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRequest {
    /// Peer name or PeerId; this machine's own name runs the command here.
    pub peer: String,
}

fn outcome_label(o: &Outcome) -> String {
    match o {
        Outcome::Refused(code) => format!("error:{code}"),
        Outcome::Ran(_) => "ok".into(),
    }
}

/// Serve inbound exec streams until the node stops.
pub async fn serve(ctx: DaemonCtx) {
    let mut control = ctx.node().streams();
    let mut incoming = match control.accept(libp2p_stream_protocol(EXEC_PROTOCOL)) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "exec protocol already registered");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        let ctx = ctx.clone();
        tokio::spawn(
            async move {
                let began = Instant::now();
                let mut s = stream.compat();
                let me = ctx.name().to_string();
                let Some((name, caps)) = ctx.node().peer_caps(peer).await else {
                    warn!("exec stream from an untrusted peer refused");
                    pipe::refuse(
                        &mut s,
                        "permission_denied",
                        format!("{me} does not trust this machine (pair with it first)"),
                    )
                    .await;
                    return;
                };
                let outcome = if !caps.contains(&Capability::Exec) {
                    pipe::refuse(
                        &mut s,
                        "permission_denied",
                        format!(
                            "{me}'s policy: it has not granted {name} the exec capability (on {me}, run `loopsy peers grant {name} exec`)"
                        ),
                    )
                    .await;
                    Outcome::Refused("permission_denied")
                } else {
                    let revoked = async {
                        loop {
                            tokio::time::sleep(RECHECK).await;
                            match ctx.node().peer_caps(peer).await {
                                Some((_, caps)) if caps.contains(&Capability::Exec) => {}
                                Some(_) => break format!("exec revoked on {me}"),
                                None => break format!("{me} no longer trusts this machine"),
                            }
                        }
                    };
                    pipe::serve(ctx.jobs(), &format!("peer:{peer}"), s, revoked).await
                };
                ctx.audit()
                    .record(AuditRecord::now(
                        format!("peer:{name}"),
                        "exec_pipe".into(),
                        outcome_label(&outcome),
                        began.elapsed(),
                    ))
                    .await;
            }
            .instrument(info_span!("exec", %peer)),
        );
    }
}

/// The CLI's `exec` verb: read which peer, then run here or splice to the peer's stream.
pub async fn splice_local<R, W>(ctx: &DaemonCtx, mut r: R, mut w: W)
where
    R: tokio::io::AsyncBufRead + AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let req = match read_line(&mut r, Duration::from_secs(10)).await {
        Ok(l) => serde_json::from_str::<LocalRequest>(&l).ok(),
        Err(_) => None,
    };
    let Some(req) = req else {
        pipe::refuse(&mut w, "invalid_arguments", "expected {\"peer\"}".into()).await;
        return;
    };
    let peer = req.peer.trim().to_string();
    if peer.is_empty() {
        pipe::refuse(&mut w, "invalid_arguments", "the peer name is empty".into()).await;
        return;
    }
    let began = Instant::now();
    if ctx.is_me(&peer) {
        let outcome = pipe::serve(
            ctx.jobs(),
            "local",
            tokio::io::join(r, w),
            std::future::pending(),
        )
        .await;
        ctx.audit()
            .record(AuditRecord::now(
                "local".into(),
                "exec_pipe".into(),
                outcome_label(&outcome),
                began.elapsed(),
            ))
            .await;
        return;
    }
    let id = match crate::tools::reach(ctx, &peer).await {
        Ok(p) => p,
        Err(e) => {
            pipe::refuse(&mut w, e.code.as_str(), e.message).await;
            return;
        }
    };
    let mut control = ctx.node().streams();
    let opening = control.open_stream(id, libp2p_stream_protocol(EXEC_PROTOCOL));
    let stream = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "cannot open the exec stream");
            let why = match e {
                loopsy_mesh::OpenStreamError::UnsupportedProtocol(_) => format!(
                    "{peer} runs a loopsy without `exec` pipes: upgrade it (`loopsy status` there shows its version)"
                ),
                _ => format!(
                    "{peer} closed the connection: it may no longer trust this machine (`loopsy peers list` on {peer} tells)"
                ),
            };
            pipe::refuse(&mut w, "unavailable", why).await;
            return;
        }
        Err(_) => {
            pipe::refuse(
                &mut w,
                "unavailable",
                format!("{peer} did not answer within {} s", OPEN_TIMEOUT.as_secs()),
            )
            .await;
            return;
        }
    };
    let mut s = stream.compat();
    let mut local = tokio::io::join(r, w);
    let r = tokio::io::copy_bidirectional(&mut local, &mut s).await;
    debug!(?r, %peer, "exec pipe ended");
}
