//! The TCP transport: libp2p's TCP with the kernel watching every link, TLS (AES-GCM) offered
//! before Noise, and our yamux settings.
//!
//! The swarm builder's own `with_tcp` gives no access to the sockets, and a link whose far end
//! vanished without a RST (a pulled cable, a closed lid) must still be noticed. libp2p's ping
//! does that by waking both daemons every few seconds on every link, which is most of what an
//! idle daemon with peers costs a laptop's battery. TCP keepalive probes and `TCP_USER_TIMEOUT`
//! do the same job inside the kernel at no wake-up at all, so every TCP socket, dialled or
//! accepted, gets them here before the security handshake, and ping runs only rarely (see
//! `behaviour.rs`).

use std::time::Duration;

use futures::TryFutureExt;
use futures::future::{Either, MapOk};
use libp2p::PeerId;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::{
    InboundConnectionUpgrade, OutboundConnectionUpgrade, SelectUpgrade, UpgradeInfo, Version,
};
use libp2p::{identity::Keypair, noise, tcp};
use tracing::debug;

/// A link with no traffic for this long gets its first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Then a probe this often; three unanswered ones end the link (idle + 3 × this: 25 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Sent data (or probes) unacknowledged this long ends the link too, where the platform has
/// `TCP_USER_TIMEOUT` (Linux); elsewhere ping is the backstop.
pub const UNACKED_LIMIT: Duration = Duration::from_secs(25);

/// Why the transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("Noise: {0}")]
    Noise(#[from] noise::Error),
}

/// TCP with keepalive, upgraded with TLS or Noise (TLS first) and yamux.
pub fn tcp(
    key: &Keypair,
    cfg: tcp::Config,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, TransportError> {
    let security = Security(SelectUpgrade::new(
        crate::tls::Config::new(key)?,
        noise::Config::new(key)?,
    ));
    Ok(tcp::tokio::Transport::new(cfg)
        .map(|stream: tcp::tokio::TcpStream, _| {
            watch(&stream.0);
            stream
        })
        .upgrade(Version::V1Lazy)
        .authenticate(security)
        .multiplex(crate::muxer::Config::new())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// Keepalive and the unacknowledged-data limit on one socket; a failure costs only the early
/// notice of a dead link, so it is logged, not returned.
fn watch(stream: &tokio::net::TcpStream) {
    if let Err(e) =
        loopsy_sys::net::watch_path(stream, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, UNACKED_LIMIT)
    {
        debug!("TCP keepalive not set on a mesh link: {e}");
    }
}

/// Two security upgrades offered in order, giving the `(PeerId, stream)` pair `authenticate`
/// wants (libp2p's `SelectUpgrade` gives one or the other pair).
#[derive(Clone)]
struct Security<A, B>(SelectUpgrade<A, B>);

impl<A, B> UpgradeInfo for Security<A, B>
where
    SelectUpgrade<A, B>: UpgradeInfo,
{
    type Info = <SelectUpgrade<A, B> as UpgradeInfo>::Info;
    type InfoIter = <SelectUpgrade<A, B> as UpgradeInfo>::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

type Pair<A, B> = fn(Either<(PeerId, A), (PeerId, B)>) -> (PeerId, Either<A, B>);

/// `Either<(id, a), (id, b)>` → `(id, Either<a, b>)`.
fn pair<A, B>(e: Either<(PeerId, A), (PeerId, B)>) -> (PeerId, Either<A, B>) {
    match e {
        Either::Left((id, a)) => (id, Either::Left(a)),
        Either::Right((id, b)) => (id, Either::Right(b)),
    }
}

impl<C, A, B, SA, SB, E> InboundConnectionUpgrade<C> for Security<A, B>
where
    SelectUpgrade<A, B>:
        InboundConnectionUpgrade<C, Output = Either<(PeerId, SA), (PeerId, SB)>, Error = E>,
{
    type Output = (PeerId, Either<SA, SB>);
    type Error = E;
    type Future = MapOk<<SelectUpgrade<A, B> as InboundConnectionUpgrade<C>>::Future, Pair<SA, SB>>;

    fn upgrade_inbound(self, socket: C, info: Self::Info) -> Self::Future {
        self.0
            .upgrade_inbound(socket, info)
            .map_ok(pair as Pair<SA, SB>)
    }
}

impl<C, A, B, SA, SB, E> OutboundConnectionUpgrade<C> for Security<A, B>
where
    SelectUpgrade<A, B>:
        OutboundConnectionUpgrade<C, Output = Either<(PeerId, SA), (PeerId, SB)>, Error = E>,
{
    type Output = (PeerId, Either<SA, SB>);
    type Error = E;
    type Future =
        MapOk<<SelectUpgrade<A, B> as OutboundConnectionUpgrade<C>>::Future, Pair<SA, SB>>;

    fn upgrade_outbound(self, socket: C, info: Self::Info) -> Self::Future {
        self.0
            .upgrade_outbound(socket, info)
            .map_ok(pair as Pair<SA, SB>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watched_socket_has_keepalive_on() -> std::io::Result<()> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let c = tokio::net::TcpStream::connect(l.local_addr()?).await?;
        watch(&c);
        assert!(socket2::SockRef::from(&c).keepalive()?);
        Ok(())
    }
}
