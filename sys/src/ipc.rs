//! Local sockets: the daemon's control socket and each session host's socket. On Unix these
//! are Unix domain sockets (mode 0600, and the peer's uid checked on accept); on Windows,
//! named pipes with an owner-only ACL, named after the socket path the Unix build would use
//! (so one `Path` names the endpoint on every platform).

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::imp::ipc as imp;

pub use imp::{Listener, ReadHalf, Stream, WriteHalf};

/// Connect to the listener at `path`. `NotFound` or `ConnectionRefused` mean nothing listens.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    imp::connect(path).await
}

/// Connect without an async runtime (the CLI's liveness probe).
pub fn connect_blocking(path: &Path) -> io::Result<BlockingStream> {
    imp::connect_blocking(path).map(BlockingStream)
}

/// A connected local socket for blocking use (a Unix stream, or a pipe opened as a file).
#[derive(Debug)]
pub struct BlockingStream(imp::BlockingInner);

/// Split a stream into halves that can be used from two tasks.
pub fn split(s: Stream) -> (ReadHalf, WriteHalf) {
    imp::split(s)
}

/// Is the process at the other end of `s` the owner of `owner_of` (or the administrator)?
/// On Windows the pipe's ACL already admits only the owner, so this holds for any stream a
/// listener accepted.
pub fn peer_is_owner(s: &Stream, owner_of: &Path) -> bool {
    imp::peer_is_owner(s, owner_of)
}

/// Can a listener be bound at `path`? (Unix socket addresses hold about 100 bytes.)
pub fn check_path(path: &Path) -> Result<(), String> {
    imp::check_path(path)
}

/// Remove what a dropped listener left at `path` (the socket file on Unix; nothing on
/// Windows, where a pipe goes with its last handle).
pub fn remove(path: &Path) -> io::Result<()> {
    imp::remove(path)
}

impl BlockingStream {
    /// A second handle to the same stream (one to read, one to write).
    pub fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(Self)
    }

    /// Bound how long a read may block (no bound with `None`). Windows pipes opened as files
    /// have no read timeout; there this is a no-op.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        imp::set_read_timeout(&self.0, t)
    }

    /// Tell the other end nothing more will be written (it reads end-of-file). Named pipes
    /// cannot half-close: on Windows this fails with `Unsupported`, and the caller closes the
    /// whole stream instead.
    pub fn shutdown_write(&self) -> io::Result<()> {
        imp::shutdown_write(&self.0)
    }
}

impl io::Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bind_connect_exchange_and_refuse_a_second_listener() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.sock");
        check_path(&path).map_err(io::Error::other)?;
        let mut l = Listener::bind(&path).await?;
        let owner = dir.path().to_path_buf();
        let server = tokio::spawn(async move {
            let s = l.accept().await?;
            assert!(peer_is_owner(&s, &owner));
            let (r, mut w) = split(s);
            let mut line = String::new();
            tokio::io::BufReader::new(r).read_line(&mut line).await?;
            w.write_all(format!("echo {line}").as_bytes()).await?;
            // A second client, blocking.
            let s = l.accept().await?;
            let (mut r, mut w) = split(s);
            let mut b = [0u8; 5];
            r.read_exact(&mut b).await?;
            w.write_all(b"pong\n").await?;
            w.flush().await?;
            io::Result::Ok(l)
        });
        let (r, mut w) = split(connect(&path).await?);
        w.write_all(b"hi\n").await?;
        let mut back = String::new();
        tokio::io::BufReader::new(r).read_line(&mut back).await?;
        assert_eq!(back, "echo hi\n");

        let p = path.clone();
        let got = tokio::task::spawn_blocking(move || -> io::Result<String> {
            let s = connect_blocking(&p)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut w = s.try_clone()?;
            w.write_all(b"ping\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        })
        .await??;
        assert_eq!(got, "pong\n");
        let l = server.await??;
        // A live listener is not replaced (on Unix the check connects, so it comes after the
        // exchanges: its connection would be the listener's next client).
        let second = Listener::bind(&path).await.err().map(|e| e.kind());
        assert_eq!(second, Some(io::ErrorKind::AddrInUse));
        drop(l);
        remove(&path)?;
        let gone = connect(&path).await.err().map(|e| e.kind());
        assert!(
            matches!(
                gone,
                Some(io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
            ),
            "{gone:?}"
        );
        Ok(())
    }
}
