//! Unix domain sockets, mode 0600, with the peer's uid checked on accept.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

/// A connected local socket.
pub type Stream = UnixStream;
/// The reading half of a [`Stream`].
pub type ReadHalf = tokio::net::unix::OwnedReadHalf;
/// The writing half of a [`Stream`].
pub type WriteHalf = tokio::net::unix::OwnedWriteHalf;

/// Longest path a socket address holds (`sun_path` is 108 bytes on Linux, 104 on macOS).
const MAX_SOCKET_PATH: usize = 100;

/// A bound socket.
#[derive(Debug)]
pub struct Listener(UnixListener);

impl Listener {
    /// Bind at `path` (mode 0600). A socket file left by a dead process is removed, but only
    /// after a connect to it was refused; a live one gives `AddrInUse`.
    pub async fn bind(path: &Path) -> io::Result<Self> {
        if std::fs::symlink_metadata(path).is_ok() {
            match UnixStream::connect(path).await {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(e),
            }
        }
        let l = UnixListener::bind(path)?;
        crate::fs::set_mode(path, crate::fs::PRIVATE_FILE)?;
        Ok(Self(l))
    }

    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        self.0.accept().await.map(|(s, _)| s)
    }
}

pub(crate) async fn connect(path: &Path) -> io::Result<Stream> {
    UnixStream::connect(path).await
}

pub(crate) fn split(s: Stream) -> (ReadHalf, WriteHalf) {
    s.into_split()
}

/// The peer's uid (`SO_PEERCRED` on Linux, `getpeereid` on macOS) must be the owner of
/// `owner_of`, or root.
pub(crate) fn peer_is_owner(s: &Stream, owner_of: &Path) -> bool {
    let owner = std::fs::metadata(owner_of).map(|m| m.uid()).ok();
    match s.peer_cred().map(|c| c.uid()) {
        Ok(uid) => Some(uid) == owner || uid == 0,
        Err(_) => false,
    }
}

pub(crate) fn check_path(path: &Path) -> Result<(), String> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "{} is too long for a Unix socket (at most {MAX_SOCKET_PATH} bytes); use a shorter LOOPSY_HOME",
            path.display()
        ));
    }
    Ok(())
}

pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What a blocking stream is here.
pub(crate) type BlockingInner = std::os::unix::net::UnixStream;

pub(crate) fn connect_blocking(path: &Path) -> io::Result<BlockingInner> {
    BlockingInner::connect(path)
}

pub(crate) fn set_read_timeout(s: &BlockingInner, t: Option<Duration>) -> io::Result<()> {
    s.set_read_timeout(t)
}

pub(crate) fn shutdown_write(s: &BlockingInner) -> io::Result<()> {
    s.shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_the_socket_is_private() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.sock");
        // A socket file nobody listens on (its listener is gone).
        drop(std::os::unix::net::UnixListener::bind(&path)?);
        let _l = Listener::bind(&path).await?;
        assert_eq!(crate::fs::mode_of(&path)?, 0o600);
        Ok(())
    }

    #[test]
    fn long_paths_are_refused() {
        let long = Path::new("/tmp").join("x".repeat(120));
        assert!(check_path(&long).is_err());
        assert!(check_path(Path::new("/tmp/loopsy.sock")).is_ok());
    }
}
