//! The control socket (`loopsy.sock`, 0600): accepts local connections and dispatches each by
//! its hello line — MCP sessions, the liveness probe, shutdown, key reload.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rmcp::ServiceExt;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::control::{self, Verb};
use crate::{Caller, DaemonCtx, LoopsyServer};

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live daemon answers on it.
    #[error("{0} is in use by a running daemon")]
    InUse(String),
    /// The OS refused.
    #[error("cannot bind {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Bind the socket at `path`, removing a stale one only after a connect to it was refused.
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.display().to_string(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok() {
        match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::InUse(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                info!(path = %path.display(), "removing stale control socket");
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    loopsy_mesh::fsutil::set_mode(path, loopsy_mesh::fsutil::PRIVATE_FILE).map_err(io)?;
    Ok(listener)
}

/// Accept connections until the daemon shuts down.
pub async fn serve(listener: UnixListener, ctx: DaemonCtx) {
    // Only the data dir's owner (or root) may talk to the daemon, whatever the file modes say.
    let owner = std::fs::metadata(ctx.home().root()).map(|m| m.uid()).ok();
    let stop = ctx.shutdown_token().clone();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid.is_none() || (uid != owner && uid != Some(0)) {
            warn!(?uid, "refusing control connection from another user");
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move { handle(stream, ctx).await }.instrument(info_span!("control")));
    }
}

async fn handle(stream: UnixStream, ctx: DaemonCtx) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let line = match control::read_line(&mut r, control::HELLO_TIMEOUT).await {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "bad hello");
            return;
        }
    };
    let verb = match control::parse_hello(&line) {
        Ok(v) => v,
        Err(reply) => {
            let _ = w.write_all(reply.as_bytes()).await;
            return;
        }
    };
    if verb == Verb::ReloadKey {
        let reply = match ctx.token().reload(&ctx.home().token()) {
            Ok(()) => {
                info!("API token reloaded");
                control::ok_line()
            }
            Err(e) => format!("ERR reload-failed {e}\n"),
        };
        let _ = w.write_all(reply.as_bytes()).await;
        return;
    }
    if w.write_all(control::ok_line().as_bytes()).await.is_err() {
        return;
    }
    match verb {
        Verb::Ping | Verb::ReloadKey => {}
        Verb::Shutdown => {
            info!("shutdown requested over the control socket");
            ctx.shutdown_token().cancel();
        }
        Verb::Attach => crate::attach::splice_local(&ctx, r, w).await,
        Verb::Mcp | Verb::Admin => {
            let caller = if verb == Verb::Admin {
                Caller::Admin
            } else {
                Caller::Local
            };
            let server = LoopsyServer::new(ctx.clone(), caller);
            match server.clone().serve((r, w)).await {
                Ok(running) => {
                    let stop = ctx.shutdown_token().clone();
                    tokio::select! {
                        _ = running.waiting() => {}
                        _ = stop.cancelled() => {}
                    }
                }
                Err(e) => debug!(error = %e, "MCP session ended during initialization"),
            }
            server.session_ended().await;
        }
    }
}
