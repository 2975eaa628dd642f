//! The stream multiplexer on TCP and relayed connections: yamux (`/yamux/1.0.0`, the same wire
//! protocol every libp2p node speaks), with larger data frames than libp2p's own adapter allows.
//!
//! libp2p-yamux keeps yamux's default of 16 KiB per data frame and offers no way to change
//! it. Every frame is its own allocation, copy and hand-off from the writing task to the
//! connection task, so a 1 GiB file meant 65,536 of them and a third of the sender's CPU
//! time. [`FRAME`] cuts that sixteenfold. Interleaving stays fair: the connection takes one
//! frame per stream in turn, so a keystroke on a terminal waits behind at most one frame of a
//! transfer (about 0.25 ms on a LAN, and on any link far less than what the TCP send buffer
//! already holds). Frames from peers are accepted at any size yamux allows, as before.
//!
//! The receive windows are capped too. yamux grows a busy stream's window (by doubling, never
//! shrinking) towards the bandwidth-delay product, up to a connection-wide limit that defaults
//! to 1 GiB; a receiver whose disk is briefly slower than the network then holds that much
//! in memory (16 MiB windows were seen on loopback, with daemon RSS spikes past 100 MiB).
//! Here all streams of a connection share [`WINDOW_EXTRA`] above yamux's 256 KiB per stream:
//! still enough for 160 MB/s over a 50 ms path.

use std::collections::VecDeque;
use std::io;
use std::iter;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::future;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// Largest data frame this side sends.
pub const FRAME: usize = 256 * 1024;
/// Most streams on one connection (yamux's default).
const STREAMS: usize = 512;
/// yamux's initial (and smallest) receive window per stream.
const BASE_WINDOW: usize = 256 * 1024;
/// What the receive windows of one connection's streams may grow by, in all.
pub const WINDOW_EXTRA: usize = 16 * 1024 * 1024;

/// Inbound streams kept while nobody is asking for them (yamux's own ACK backlog: a peer
/// stops opening streams before this many are unacknowledged).
const MAX_WAITING_INBOUND: usize = 256;

/// The muxer upgrade for the swarm builder (`with_tcp(…, noise::Config::new, muxer::Config::new)`).
#[derive(Clone, Debug)]
pub struct Config(yamux::Config);

impl Config {
    /// yamux's defaults, with [`FRAME`]-sized data frames and receive windows capped by
    /// [`WINDOW_EXTRA`].
    pub fn new() -> Self {
        let mut c = yamux::Config::default();
        c.set_split_send_size(FRAME)
            .set_max_num_streams(STREAMS)
            .set_max_connection_receive_window(Some(STREAMS * BASE_WINDOW + WINDOW_EXTRA));
        Self(c)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.0, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, self.0, yamux::Mode::Client)))
    }
}

/// One yamux connection, driven by libp2p's connection task.
#[derive(Debug)]
pub struct Muxer<C> {
    conn: yamux::Connection<C>,
    /// Streams the peer opened while libp2p was driving the connection (`poll`) rather than
    /// asking for inbound streams; handed out by the next `poll_inbound`.
    waiting: VecDeque<yamux::Stream>,
    /// Who to wake when `waiting` gains a stream.
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    fn new(io: C, cfg: yamux::Config, mode: yamux::Mode) -> Self {
        Self {
            conn: yamux::Connection::new(io, cfg, mode),
            waiting: VecDeque::new(),
            inbound_waker: None,
        }
    }

    /// Drive the connection until the peer opens a stream (or it ends).
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, io::Error>> {
        match self.conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(s))) => Poll::Ready(Ok(s)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(into_io(e))),
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "yamux connection closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn into_io(e: yamux::ConnectionError) -> io::Error {
    match e {
        yamux::ConnectionError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = yamux::Stream;
    type Error = io::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(s) = this.waiting.pop_front() {
            return Poll::Ready(Ok(s));
        }
        match this.next_inbound(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                this.inbound_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut().conn.poll_new_outbound(cx).map_err(into_io)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().conn.poll_close(cx).map_err(into_io)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let s = match this.next_inbound(cx) {
            Poll::Ready(r) => r?,
            Poll::Pending => return Poll::Pending,
        };
        if this.waiting.len() >= MAX_WAITING_INBOUND {
            tracing::warn!(stream = %s, "dropping an inbound yamux stream: too many waiting");
            drop(s);
        } else {
            this.waiting.push_back(s);
            if let Some(w) = this.inbound_waker.take() {
                w.wake();
            }
        }
        // Come back at once: the connection may have more to do.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
