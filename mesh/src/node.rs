//! The libp2p node: one task owns the Swarm; everyone else holds a cloneable [`NodeHandle`].

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, noise, ping, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::Identity;

/// Commands queued to the node task before it applies backpressure.
const COMMAND_CAPACITY: usize = 64;
/// How long start-up waits for the first listen address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The identify protocol version all loopsy nodes speak.
pub const IDENTIFY_PROTOCOL: &str = "/loopsy/id/1";

/// The protocols the mesh runs.
#[derive(NetworkBehaviour)]
pub struct MeshBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// How the node listens.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// TCP port (0 = any).
    pub port: u16,
    /// Loopback only.
    pub local_only: bool,
}

/// A snapshot of the node for status tools.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// This machine's PeerId.
    pub peer_id: PeerId,
    /// Where the mesh listens, as multiaddrs ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<Multiaddr>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The transport stack could not be built.
    #[error("cannot build the mesh transport: {0}")]
    Build(String),
    /// The listen port is taken or not allowed.
    #[error(
        "cannot listen on mesh port {port}: {reason}. Another loopsy daemon (other LOOPSY_HOME) may use it; \
         set mesh.listen_port in config.toml or LOOPSY_MESH_PORT (0 picks a free port)"
    )]
    Listen {
        /// The port asked for.
        port: u16,
        /// The OS's answer.
        reason: String,
    },
    /// The node task is gone (daemon shutting down).
    #[error("the mesh node has stopped")]
    Stopped,
}

enum Command {
    Info(oneshot::Sender<NodeInfo>),
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle to the node task.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Info(_) => "Info",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

impl NodeHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Current listen addresses and identity.
    pub async fn info(&self) -> Result<NodeInfo, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Info(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Stop the node and wait until its listeners are closed.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Build the swarm, start listening, and spawn the owner task. Returns once the first
/// listen address is known, so status is right from the first call.
pub async fn spawn(identity: &Identity, listen: &ListenConfig) -> Result<NodeHandle, NodeError> {
    let mut swarm = build(identity)?;
    let ip = if listen.local_only {
        "127.0.0.1"
    } else {
        "0.0.0.0"
    };
    let addr: Multiaddr = format!("/ip4/{ip}/tcp/{}", listen.port)
        .parse()
        .map_err(|e: libp2p::multiaddr::Error| NodeError::Build(e.to_string()))?;
    let listen_err = |reason: String| NodeError::Listen {
        port: listen.port,
        reason,
    };
    if listen.port != 0 {
        // libp2p listens with SO_REUSEPORT, so a second daemon on the same port would bind
        // "successfully" and steal half the connections. A plain bind (no SO_REUSEPORT)
        // fails while anyone holds the port: that tells us the truth.
        std::net::TcpListener::bind((ip, listen.port)).map_err(|e| listen_err(e.to_string()))?;
    }
    swarm
        .listen_on(addr)
        .map_err(|e| listen_err(e.to_string()))?;

    // Wait for the first address (or the listener's failure).
    let first = tokio::time::timeout(LISTEN_TIMEOUT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { .. } => return Ok(()),
                SwarmEvent::ListenerError { error, .. } => return Err(error.to_string()),
                SwarmEvent::ListenerClosed { reason: Err(e), .. } => return Err(e.to_string()),
                _ => {}
            }
        }
    })
    .await;
    match first {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Err(listen_err(reason)),
        Err(_) => return Err(listen_err("no listen address within 5 s".into())),
    }

    let peer_id = *swarm.local_peer_id();
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    tokio::spawn(run(swarm, rx));
    Ok(NodeHandle { tx, peer_id })
}

fn build(identity: &Identity) -> Result<Swarm<MeshBehaviour>, NodeError> {
    let agent = format!("loopsy/{}", crate::VERSION);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_behaviour(|key| MeshBehaviour {
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(agent),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
        })
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

async fn run(mut swarm: Swarm<MeshBehaviour>, mut rx: mpsc::Receiver<Command>) {
    let me = *swarm.local_peer_id();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::Info(reply)) => {
                    let listen_addrs = swarm
                        .listeners()
                        .map(|a| a.clone().with_p2p(me).unwrap_or_else(|a| a))
                        .collect();
                    let _ = reply.send(NodeInfo { peer_id: me, listen_addrs });
                }
                Some(Command::Shutdown(done)) => {
                    info!("mesh node stopping");
                    drop(swarm);
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => info!(%address, "mesh listening"),
                SwarmEvent::ExpiredListenAddr { address, .. } => debug!(%address, "listen address expired"),
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                    debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection established");
                }
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                    debug!(peer = %peer_id, ?cause, "connection closed");
                }
                SwarmEvent::ListenerError { error, .. } => warn!(%error, "mesh listener error"),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listens_on_loopback_port_zero_and_reports_addrs() -> Result<(), NodeError> {
        let id = Identity::generate();
        let h = spawn(
            &id,
            &ListenConfig {
                port: 0,
                local_only: true,
            },
        )
        .await?;
        let info = h.info().await?;
        assert_eq!(info.peer_id, id.peer_id());
        assert_eq!(info.listen_addrs.len(), 1);
        let a = info.listen_addrs[0].to_string();
        assert!(
            a.starts_with("/ip4/127.0.0.1/tcp/") && a.ends_with(&id.peer_id().to_string()),
            "{a}"
        );
        assert!(!a.contains("/tcp/0/"), "{a}");

        // The same port again is refused with a clear error.
        let port: u16 = a
            .split('/')
            .nth(4)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let err = spawn(
            &Identity::generate(),
            &ListenConfig {
                port,
                local_only: true,
            },
        )
        .await;
        assert!(matches!(err, Err(NodeError::Listen { .. })), "{err:?}");
        h.shutdown().await;
        assert!(matches!(h.info().await, Err(NodeError::Stopped)));
        Ok(())
    }
}
