//! `loopsy_transfer_file` and `loopsy_list_remote_files`: move files to and from a peer over
//! a raw libp2p stream, checked by the path policy on both ends, resumed after a cut.

use std::time::{Duration, Instant};

use loopsy_mesh::files::{
    self, Entry, FILE_PROTOCOL, FileError, PathError, Progress, TransferOutcome,
};
use loopsy_mesh::libp2p_stream_protocol;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::progress::Reporter;
use crate::DaemonCtx;
use crate::tool_error::{ErrorCode, ToolError, success};
use std::sync::atomic::Ordering;

/// Attempts per transfer (each resumes where the last stopped).
const ATTEMPTS: u32 = 6;

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From this machine to the peer.
    Push,
    /// From the peer to this machine.
    Pull,
}

/// `loopsy_transfer_file` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferArgs {
    /// `push` (this machine → peer) or `pull` (peer → this machine).
    pub direction: Direction,
    /// Peer name or PeerId.
    pub peer: String,
    /// Path of the file to send (on this machine for push, on the peer for pull); `~` = home.
    pub source: String,
    /// Path to write (on the peer for push, on this machine for pull); its directory must exist.
    pub dest: String,
    /// Replace an existing destination file (default false).
    #[serde(default)]
    pub overwrite: bool,
    /// Keep the source's permission bits and modification time (default true, as `scp -p`);
    /// false gives the copy an ordinary file's mode (or that of the file it replaces) and
    /// the time of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve: Option<bool>,
}

/// A finished transfer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TransferOut {
    /// `push` or `pull`.
    pub direction: Direction,
    /// The peer.
    pub peer: String,
    /// Bytes in the file.
    pub bytes: u64,
    /// Bytes reused from an interrupted attempt.
    pub resumed_from: u64,
    /// BLAKE3 of the file (verified by the receiver before it was renamed into place).
    pub blake3: String,
    /// Connection attempts it took.
    pub attempts: u32,
    /// Wall time.
    pub seconds: f64,
    /// How the peer was reached: `direct`, `hole-punched` or `relayed`.
    pub path: String,
    /// Set when the bytes went through a relay node (no direct path to the peer).
    pub warning: Option<String>,
}

/// `loopsy_list_remote_files` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Peer name or PeerId.
    pub peer: String,
    /// Directory (or file) on the peer; `~` = its user's home.
    pub path: String,
}

/// A listing.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ListOut {
    /// Entries, by name.
    pub entries: Vec<Entry>,
    /// More than 10,000 entries existed; the rest were left out.
    pub truncated: bool,
}

/// A transfer's failure, saying which machine's rule refused it.
fn file_err(peer: &str, e: FileError) -> ToolError {
    let whose = match &e {
        FileError::Remote { .. } => format!("{peer} refused: "),
        FileError::Path(
            PathError::NotAllowed(_) | PathError::Denied(_) | PathError::WriteDenied(..),
        ) => "this machine's policy: ".to_string(),
        _ => String::new(),
    };
    let e0 = plain_file_err(e);
    ToolError::new(e0.code, format!("{whose}{}", e0.message))
}

fn plain_file_err(e: FileError) -> ToolError {
    let code = match &e {
        FileError::Path(PathError::NotFound(_)) => ErrorCode::NotFound,
        FileError::Path(PathError::Invalid(_)) | FileError::Exists(_) => {
            ErrorCode::InvalidArguments
        }
        FileError::Path(_) => ErrorCode::PermissionDenied,
        FileError::Remote { code, .. } => match code.as_str() {
            "not_found" => ErrorCode::NotFound,
            "exists" | "invalid" => ErrorCode::InvalidArguments,
            "not_allowed" | "denied" | "permission_denied" => ErrorCode::PermissionDenied,
            _ => ErrorCode::Internal,
        },
        FileError::Checksum | FileError::Io(_) => ErrorCode::Unavailable,
    };
    ToolError::new(code, e.to_string())
}

fn transfer_id(ctx: &DaemonCtx, a: &TransferArgs) -> String {
    let mut h = blake3::Hasher::new();
    h.update(ctx.node().peer_id().to_bytes().as_slice());
    for part in [a.peer.as_str(), a.source.as_str(), a.dest.as_str()] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(&[a.direction as u8]);
    if a.direction == Direction::Push
        && let Ok(p) = ctx.files().readable(&a.source)
        && let Ok(m) = std::fs::metadata(p)
    {
        h.update(&m.len().to_be_bytes());
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(&mtime.map(|d| d.as_nanos()).unwrap_or(0).to_be_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

async fn open(
    ctx: &DaemonCtx,
    peer: &str,
) -> Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, ToolError> {
    let pid = super::reach(ctx, peer).await?;
    let mut control = ctx.node().streams();
    let opening = control.open_stream(pid, libp2p_stream_protocol(FILE_PROTOCOL));
    let stream = match tokio::time::timeout(super::REACH_TIMEOUT, opening).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "cannot open a file stream");
            return Err(ToolError::new(
                ErrorCode::Unavailable,
                format!(
                    "{peer} closed the connection: it may no longer trust this machine (`loopsy peers list` on {peer} tells)"
                ),
            ));
        }
        Err(_) => {
            return Err(ToolError::new(
                ErrorCode::Unavailable,
                format!(
                    "{peer} did not answer within {} s",
                    super::REACH_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    Ok(stream.compat())
}

/// Report a transfer's bytes every [`TICK`] until dropped.
const TICK: Duration = Duration::from_millis(250);

fn ticker(progress: &Progress, reporter: Option<Reporter>) -> Option<tokio::task::JoinHandle<()>> {
    let r = reporter?;
    let p = progress.clone();
    Some(tokio::spawn(async move {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(TICK).await;
            let (done, total) = (
                p.done.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed),
            );
            if done != last {
                last = done;
                let msg = format!(
                    "{:.1} / {:.1} MiB",
                    done as f64 / 1048576.0,
                    total as f64 / 1048576.0
                );
                r.report(done as f64, (total > 0).then_some(total as f64), Some(msg))
                    .await;
            }
        }
    }))
}

/// How long a transfer waits for a relayed peer's hole punching to give it a direct path.
const DIRECT_GRACE: Duration = Duration::from_secs(3);

/// The peer's path, after giving a relayed one [`DIRECT_GRACE`] to become direct: files
/// prefer a direct path.
async fn path_to(ctx: &DaemonCtx, peer: &str) -> (String, Option<String>) {
    let deadline = Instant::now() + DIRECT_GRACE;
    loop {
        let view = ctx
            .node()
            .peers()
            .await
            .ok()
            .and_then(|v| v.into_iter().find(|p| p.name == peer || p.peer_id == peer));
        let Some(v) = view else {
            return ("unknown".into(), None);
        };
        match v.path.as_deref() {
            Some("relayed") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some("relayed") => {
                let via = v.via.unwrap_or_else(|| "a relay node".into());
                return (
                    "relayed".into(),
                    Some(format!(
                        "no direct path to {peer}: the file goes through {via}, at its speed and \
                         within its limits (hole punching did not succeed; see `loopsy mesh status`)"
                    )),
                );
            }
            other => return (other.unwrap_or("unknown").to_string(), None),
        }
    }
}

/// `loopsy_transfer_file`
pub async fn transfer(
    ctx: &DaemonCtx,
    a: TransferArgs,
    reporter: Option<Reporter>,
) -> CallToolResult {
    let started = Instant::now();
    let id = transfer_id(ctx, &a);
    let mut last: Option<ToolError> = None;
    let opts = files::CopyOpts {
        overwrite: a.overwrite,
        preserve: a.preserve.unwrap_or(true),
    };
    for attempt in 1..=ATTEMPTS {
        let opened = match open(ctx, &a.peer).await {
            Ok(s) => Ok((s, path_to(ctx, &a.peer).await)),
            Err(e) => Err(e),
        };
        let (mut s, (path, warning)) = match opened {
            Ok(s) => s,
            // An offline or unknown peer fails at once; only a transfer that was cut
            // is retried (the peer may come back and it resumes).
            Err(e) if attempt == 1 => return e.into_result(),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
                continue;
            }
        };
        let progress = Progress::default();
        let tick = ticker(&progress, reporter.clone());
        let r: Result<TransferOutcome, FileError> = match a.direction {
            Direction::Push => {
                files::push(
                    &mut s,
                    ctx.files(),
                    &a.source,
                    &a.dest,
                    &id,
                    opts,
                    &progress,
                )
                .await
            }
            Direction::Pull => {
                files::pull(
                    &mut s,
                    ctx.files(),
                    &a.source,
                    &a.dest,
                    &id,
                    opts,
                    &progress,
                )
                .await
            }
        };
        if let Some(t) = tick {
            t.abort();
        }
        match r {
            Ok(o) => {
                let secs = started.elapsed().as_secs_f64();
                let out = TransferOut {
                    direction: a.direction,
                    peer: a.peer.clone(),
                    bytes: o.bytes,
                    resumed_from: o.resumed_from,
                    blake3: o.blake3,
                    attempts: attempt,
                    seconds: secs,
                    path,
                    warning,
                };
                let rate = o.bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-6);
                return success(
                    format!(
                        "{} bytes in {secs:.2}s ({rate:.1} MiB/s), blake3 verified{}",
                        o.bytes,
                        out.warning
                            .as_deref()
                            .map(|w| format!("; warning: {w}"))
                            .unwrap_or_default()
                    ),
                    &out,
                );
            }
            Err(e) if e.retryable() => {
                tracing::info!(attempt, error = %e, "transfer interrupted; resuming");
                last = Some(file_err(&a.peer, e));
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
            }
            Err(e) => return file_err(&a.peer, e).into_result(),
        }
    }
    last.unwrap_or_else(|| ToolError::new(ErrorCode::Unavailable, "transfer failed"))
        .into_result()
}

/// `loopsy_list_remote_files`
pub async fn list(ctx: &DaemonCtx, a: ListArgs) -> CallToolResult {
    let mut s = match open(ctx, &a.peer).await {
        Ok(s) => s,
        Err(e) => return e.into_result(),
    };
    match files::list(&mut s, &a.path).await {
        Ok((entries, truncated)) => success(
            format!("{} entries", entries.len()),
            &ListOut { entries, truncated },
        ),
        Err(e) => file_err(&a.peer, e).into_result(),
    }
}
