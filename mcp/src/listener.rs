//! The control socket (`loopsy.sock`, 0600; a named pipe for the user alone on Windows):
//! accepts local connections and dispatches each by its hello line — MCP sessions, the
//! liveness probe, shutdown, key reload.

use std::path::Path;

use loopsy_sys::ipc::{Listener, Stream};

use rmcp::ServiceExt;
use tokio::io::{AsyncWriteExt, BufReader};
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
pub async fn bind(path: &Path) -> Result<Listener, BindError> {
    match Listener::bind(path).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BindError::InUse(path.display().to_string()))
        }
        Err(source) => Err(BindError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Accept connections until the daemon shuts down.
pub async fn serve(mut listener: Listener, ctx: DaemonCtx) {
    let stop = ctx.shutdown_token().clone();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
        };
        // Only the data dir's owner (or root) may talk to the daemon, whatever the file
        // modes say.
        if !loopsy_sys::ipc::peer_is_owner(&stream, ctx.home().root()) {
            warn!("refusing control connection from another user");
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move { handle(stream, ctx).await }.instrument(info_span!("control")));
    }
}

async fn handle(stream: Stream, ctx: DaemonCtx) {
    let (r, mut w) = loopsy_sys::ipc::split(stream);
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
        Verb::Exec => crate::exec_pipe::splice_local(&ctx, r, w).await,
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
