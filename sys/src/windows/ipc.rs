//! Named pipes that admit only the current user, named after the socket path the Unix build
//! would use: `\\.\pipe\loopsy-<user>-<hash of the path>`. Remote clients are refused.

use std::ffi::c_void;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
};
use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_PIPE_BUSY};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::System::Pipes::WaitNamedPipeW;

use super::security::{Descriptor, owner_only};

/// How long a client waits while every instance of a pipe is busy.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// A connected pipe, from either end.
#[derive(Debug)]
pub enum Stream {
    /// Accepted by a [`Listener`].
    Server(NamedPipeServer),
    /// Opened by [`crate::ipc::connect`].
    Client(NamedPipeClient),
}

/// The reading half of a [`Stream`].
pub type ReadHalf = tokio::io::ReadHalf<Stream>;
/// The writing half of a [`Stream`].
pub type WriteHalf = tokio::io::WriteHalf<Stream>;

/// The pipe name standing for the socket at `path`.
pub(crate) fn pipe_name(path: &Path) -> String {
    // FNV-1a over the lower-cased path: stable across builds and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.to_string_lossy().to_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let user: String = std::env::var("USERNAME")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    format!(r"\\.\pipe\loopsy-{user}-{h:016x}")
}

/// A pipe waiting for clients: one instance is always ready for the next connection.
#[derive(Debug)]
pub struct Listener {
    name: String,
    next: NamedPipeServer,
}

fn create(name: &str, first: bool) -> io::Result<NamedPipeServer> {
    let sd = Descriptor::from_sddl(&owner_only("GA", "")?)?;
    let mut sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.as_ptr(),
        bInheritHandle: 0,
    };
    let mut o = ServerOptions::new();
    o.first_pipe_instance(first).reject_remote_clients(true);
    // SAFETY: `sa` is a valid SECURITY_ATTRIBUTES whose descriptor `sd` outlives the call.
    let r = unsafe {
        o.create_with_security_attributes_raw(
            name,
            (&mut sa as *mut SECURITY_ATTRIBUTES).cast::<c_void>(),
        )
    };
    match r {
        Err(e) if first && e.kind() == io::ErrorKind::PermissionDenied => Err(in_use(name)),
        r => r,
    }
}

/// True when a server holds a pipe of this name (an instance free now or within a moment, or
/// all of them busy).
fn pipe_exists(name: &str) -> bool {
    let wide = super::security::wide(name);
    // SAFETY: `wide` is NUL-terminated and outlives the call.
    if unsafe { WaitNamedPipeW(wide.as_ptr(), 1) } != 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(ERROR_FILE_NOT_FOUND as i32)
}

fn in_use(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::AddrInUse, format!("{name} is in use"))
}

impl Listener {
    /// Create the pipe for `path`; `AddrInUse` if another process already serves it.
    pub async fn bind(path: &Path) -> io::Result<Self> {
        let name = pipe_name(path);
        // Is a server there already? Asked first (without connecting to it) because not
        // every implementation enforces FILE_FLAG_FIRST_PIPE_INSTANCE (wine does not).
        if pipe_exists(&name) {
            return Err(in_use(&name));
        }
        let next = create(&name, true)?;
        Ok(Self { name, next })
    }

    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<Stream> {
        self.next.connect().await?;
        let fresh = create(&self.name, false)?;
        Ok(Stream::Server(std::mem::replace(&mut self.next, fresh)))
    }
}

pub(crate) async fn connect(path: &Path) -> io::Result<Stream> {
    let name = pipe_name(path);
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match ClientOptions::new().open(&name) {
            Ok(c) => return Ok(Stream::Client(c)),
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn split(s: Stream) -> (ReadHalf, WriteHalf) {
    tokio::io::split(s)
}

/// The pipe's ACL admits the owner (and SYSTEM) only.
pub(crate) fn peer_is_owner(_s: &Stream, _owner_of: &Path) -> bool {
    true
}

pub(crate) fn check_path(_path: &Path) -> Result<(), String> {
    Ok(())
}

pub(crate) fn remove(_path: &Path) -> io::Result<()> {
    Ok(())
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Server(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Server(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Server(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Server(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What a blocking stream is here: the pipe opened as a file.
pub(crate) type BlockingInner = std::fs::File;

pub(crate) fn connect_blocking(path: &Path) -> io::Result<BlockingInner> {
    let name = pipe_name(path);
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&name)
        {
            Ok(f) => return Ok(f),
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Files have no read timeout.
pub(crate) fn set_read_timeout(_s: &BlockingInner, _t: Option<Duration>) -> io::Result<()> {
    Ok(())
}

pub(crate) fn shutdown_write(_s: &BlockingInner) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "named pipes cannot half-close",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_names_are_stable_and_per_path() {
        let a = pipe_name(Path::new(r"C:\Users\u\.loopsy\loopsy.sock"));
        let b = pipe_name(Path::new(r"c:\users\u\.loopsy\LOOPSY.sock"));
        let c = pipe_name(Path::new(r"C:\Users\u\.loopsy2\loopsy.sock"));
        assert!(a.starts_with(r"\\.\pipe\loopsy-"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
