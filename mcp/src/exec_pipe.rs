//! `loopsy exec` as a pipe: the `/loopsy/exec/1` mesh stream carries the exec frames
//! ([`loopsy_mesh::exec::wire`]) unchanged. Inbound, a trusted peer holding `exec` runs its
//! command here under this machine's policy; locally, the CLI's `exec` control connection runs
//! here (its own name) or is spliced to the peer's stream.

use std::time::{Duration, Instant};

use futures::StreamExt;
use loopsy_mesh::exec::pipe::{self, Outcome};
use loopsy_mesh::exec::wire::{self, EXEC_PROTOCOL, Kind};
use loopsy_mesh::libp2p_stream_protocol;
use loopsy_mesh::trust::Capability;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{Instrument, debug, info_span, warn};

use crate::DaemonCtx;
use crate::audit::AuditRecord;
use crate::control::read_request;

/// How long opening the stream to a connected peer may take (a lost open is tried again).
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the runner may take to answer a Start (it starts the program first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

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
                    pipe::refuse_after_start(
                        &mut s,
                        "permission_denied",
                        format!("{me} does not trust this machine (pair with it first)"),
                    )
                    .await;
                    return;
                };
                let outcome = if !caps.contains(&Capability::Exec) {
                    pipe::refuse_after_start(
                        &mut s,
                        "permission_denied",
                        ctx.node().refusal(peer, Capability::Exec).await,
                    )
                    .await;
                    Outcome::Refused("permission_denied")
                } else {
                    let revoked = async {
                        match ctx.node().revoked(peer, &[Capability::Exec]).await {
                            Some(_) => format!("exec revoked on {me}"),
                            None => format!("{me} no longer trusts this machine"),
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
    let req: Option<LocalRequest> = read_request(&mut r).await;
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
    // The client's Start, held so that it can be sent again on a fresh stream.
    let start = match tokio::time::timeout(Duration::from_secs(10), wire::read_frame(&mut r)).await
    {
        Ok(Ok(Some(f))) if f.kind == Kind::Start => f,
        _ => {
            pipe::refuse(
                &mut w,
                "invalid_arguments",
                "expected the command to run".into(),
            )
            .await;
            return;
        }
    };
    let mut attempt = 0;
    let (s, first) = loop {
        attempt += 1;
        match open_and_start(ctx, id, &start).await {
            Ok(opened) => break opened,
            // libp2p-stream drops streams when several open at once (its queues hold one,
            // both ways): the runner never saw them, so opening another is safe.
            Err(Opening::Dropped(_)) if attempt < OPEN_ATTEMPTS => {
                debug!(%peer, attempt, "the exec stream was lost before an answer; again");
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(Opening::Dropped(why) | Opening::Failed(why)) => {
                pipe::refuse(&mut w, "unavailable", why(&peer)).await;
                return;
            }
        }
    };
    if wire::write_frame(&mut w, first.kind, &first.data)
        .await
        .is_err()
    {
        return;
    }
    splice(r, w, s).await;
    debug!(%peer, "exec pipe ended");
}

/// Buffer for the runner's output on its way to the client.
const SPLICE_BUF: usize = 256 * 1024;
/// Tries at opening the stream to the runner when it is dropped before answering.
const OPEN_ATTEMPTS: u64 = 5;

/// The reason a stream failed, given the peer's name.
type Why = Box<dyn FnOnce(&str) -> String + Send>;

/// Why a stream to the runner did not get as far as its first answer.
enum Opening {
    /// Lost before any answer (the runner never started anything): worth another try.
    Dropped(Why),
    /// Not worth another try.
    Failed(Why),
}

/// Open an exec stream to `id`, send `start`, and read the runner's first frame.
async fn open_and_start(
    ctx: &DaemonCtx,
    id: loopsy_mesh::PeerId,
    start: &wire::Frame,
) -> Result<(impl AsyncRead + AsyncWrite + Unpin + use<>, wire::Frame), Opening> {
    let mut control = ctx.node().streams();
    let opening = control.open_stream(id, libp2p_stream_protocol(EXEC_PROTOCOL));
    let stream = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(error = %e, "cannot open the exec stream");
            if matches!(e, loopsy_mesh::OpenStreamError::UnsupportedProtocol(_)) {
                return Err(Opening::Failed(Box::new(|peer| {
                    format!(
                        "{peer} runs a loopsy without `exec` pipes: upgrade it (`loopsy status` there shows its version)"
                    )
                })));
            }
            return Err(Opening::Dropped(Box::new(|peer| {
                format!(
                    "{peer} closed the connection: it may no longer trust this machine (`loopsy peers list` on {peer} tells)"
                )
            })));
        }
        Err(_) => {
            return Err(Opening::Dropped(Box::new(|peer| {
                format!("{peer} did not answer within {} s", OPEN_TIMEOUT.as_secs())
            })));
        }
    };
    let mut s = stream.compat();
    let closed = || -> Why {
        Box::new(|peer| {
            format!(
                "{peer} closed the stream before answering: it may no longer trust this machine (`loopsy peers list` on {peer} tells)"
            )
        })
    };
    // A refusal may already be on its way (the runner answers before reading): read it
    // even when the write failed.
    let _ = wire::write_frame(&mut s, Kind::Start, &start.data).await;
    match tokio::time::timeout(ANSWER_TIMEOUT, wire::read_frame(&mut s)).await {
        Ok(Ok(Some(f))) => Ok((s, f)),
        Ok(_) => Err(Opening::Dropped(closed())),
        Err(_) => Err(Opening::Failed(Box::new(|peer| {
            format!(
                "{peer} did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            )
        }))),
    }
}

/// Carry the client's bytes to the runner and the runner's back, until the runner's side
/// ends. Unlike `copy_bidirectional`, a failed write towards the runner (it finished and
/// closed while the client still wrote) does not drop what the runner sent last: its
/// `Exit` gets through.
async fn splice<R, W, S>(r: R, mut w: W, s: S)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (sr, mut sw) = tokio::io::split(s);
    // Large buffers: output comes in frames of up to 256 KiB.
    let mut sr = tokio::io::BufReader::with_capacity(SPLICE_BUF, sr);
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
    let up = async {
        let _ = tokio::io::copy_buf(&mut r, &mut sw).await;
        // The client is done (or gone): the runner sees the end and stops its job.
        let _ = sw.shutdown().await;
        std::future::pending::<()>().await;
    };
    let down = async {
        let _ = tokio::io::copy_buf(&mut sr, &mut w).await;
        let _ = w.shutdown().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
