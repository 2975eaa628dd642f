//! Talking to a session host over its socket: one request and reply, or an attach.

use std::path::Path;
use std::time::Duration;

use crate::proto::{Kind, Reply, Request, read_frame, write_json};
use crate::record::SessionInfo;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the session host did not answer",
    )
}

/// Send `req` to the host at `sock` and return its reply.
pub async fn request(sock: &Path, req: &Request) -> std::io::Result<Reply> {
    let run = async {
        let mut s = loopsy_sys::ipc::connect(sock).await?;
        write_json(&mut s, Kind::Request, req).await?;
        match read_frame(&mut s).await? {
            Some(f) if f.kind == Kind::Reply => {
                serde_json::from_slice(&f.data).map_err(std::io::Error::other)
            }
            _ => Err(std::io::Error::other(
                "the session host closed without a reply",
            )),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// Boxed halves of whatever carries the host protocol (a Unix socket, a spliced mesh stream).
pub type Rx = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
/// The writing half.
pub type Tx = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// A live attachment: read output frames from `rx`, send input and resize frames on `tx`.
pub struct Attached {
    /// The session as it was when attached.
    pub info: SessionInfo,
    /// Output side.
    pub rx: Rx,
    /// Input side.
    pub tx: Tx,
}

/// Attach to the host at `sock` at `cols`×`rows`.
pub async fn attach(sock: &Path, cols: u16, rows: u16) -> std::io::Result<Attached> {
    let (rx, tx) = loopsy_sys::ipc::split(loopsy_sys::ipc::connect(sock).await?);
    attach_on(Box::new(rx), Box::new(tx), cols, rows).await
}

/// Attach over an already open carrier of the host protocol.
pub async fn attach_on(mut rx: Rx, mut tx: Tx, cols: u16, rows: u16) -> std::io::Result<Attached> {
    write_json(&mut tx, Kind::Request, &Request::Attach { cols, rows }).await?;
    let first = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut rx))
        .await
        .map_err(|_| timed_out())??;
    match first {
        Some(f) if f.kind == Kind::Reply => {
            match serde_json::from_slice::<Reply>(&f.data).map_err(std::io::Error::other)? {
                Reply::Info(info) => Ok(Attached { info, rx, tx }),
                Reply::Error { message, .. } => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    message,
                )),
                other => Err(std::io::Error::other(format!("unexpected reply {other:?}"))),
            }
        }
        _ => Err(std::io::Error::other(
            "the session host closed without a reply",
        )),
    }
}
