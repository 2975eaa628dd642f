//! The libp2p protocols a loopsy node runs, and how the swarm is built.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, dcutr, gossipsub, identify, mdns, noise,
    ping, relay, tcp,
};

use crate::Identity;
use crate::node::NodeError;
use crate::wire::{
    self, MembersRequest, MembersResponse, PairRequest, PairResponse, RpcRequest, RpcResponse,
};

/// The identify protocol version all loopsy nodes speak.
pub const IDENTIFY_PROTOCOL: &str = "/loopsy/id/1";
/// The boot id in a peer's identify agent version (`loopsy/0.2.0 (boot 1f…)`): new each time
/// its daemon starts, so a connection that outlived the process it came from can be told from
/// the restarted one's.
pub fn boot_of(agent: &str) -> Option<&str> {
    let rest = agent.split_once(" (boot ")?.1;
    let id = rest.strip_suffix(')')?;
    (id.len() <= 32 && !id.is_empty()).then_some(id)
}

/// How long an RPC may take (jobs wait at most `MAX_WAIT_S` inside it).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a pairing step may take.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(20);
/// How often each connection is pinged (round-trip time; dead-link backstop).
pub const PING_INTERVAL: Duration = Duration::from_secs(60);
/// A ping unanswered this long is a miss.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// QUIC keep-alive on an otherwise quiet link.
const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A QUIC link that hears nothing for this long (ms) is closed.
const QUIC_IDLE_MS: u32 = 30_000;

/// The protocols the mesh runs.
#[derive(NetworkBehaviour)]
pub struct MeshBehaviour {
    /// Addresses and protocol versions.
    pub identify: identify::Behaviour,
    /// Liveness and RTT.
    pub ping: ping::Behaviour,
    /// LAN discovery (off on request, and useless on loopback).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Pairing: the only protocol served to untrusted peers.
    pub pair: cbor::Behaviour<PairRequest, PairResponse>,
    /// Tool calls between trusted peers.
    pub rpc: cbor::Behaviour<RpcRequest, RpcResponse>,
    /// Introductions and removals between trusted members.
    pub members: cbor::Behaviour<MembersRequest, MembersResponse>,
    /// Raw streams for bulk data (files).
    pub streams: libp2p_stream::Behaviour,
    /// Circuit relay v2 for trusted peers behind NATs (`relay.serve`).
    pub relay_server: Toggle<relay::Behaviour>,
    /// Reservations on relay nodes, and connections through them.
    pub relay_client: relay::client::Behaviour,
    /// Hole punching: upgrades a relayed connection to a direct one.
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// Is this node publicly reachable? (asks connected peers to dial back)
    pub autonat: autonat::Behaviour,
    /// Agent messages: each node subscribes to its own inbox topic (see `node_gossip`).
    pub gossip: gossipsub::Behaviour,
}

/// Largest gossip message (a batch of envelopes or its answer), protobuf framing included.
pub const MAX_GOSSIP: usize = 8 << 20;

/// Gossipsub as loopsy uses it: every message is signed by its sender's peer key and checked
/// strictly; its id is a hash of the signed content, so nobody can ask for a message they
/// have not seen (IWANT) by guessing a sequence number; no IHAVE gossip is ever emitted, and
/// nothing is forwarded (the node reports every message `Ignore` after reading it): a
/// message goes from its sender to the one subscriber of the recipient's inbox topic.
fn gossip(key: &libp2p::identity::Keypair) -> Result<gossipsub::Behaviour, String> {
    let cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP)
        .message_id_fn(|m: &gossipsub::Message| {
            let mut h = blake3::Hasher::new();
            if let Some(s) = &m.source {
                h.update(&s.to_bytes());
            }
            h.update(&m.sequence_number.unwrap_or(0).to_be_bytes());
            h.update(&m.data);
            gossipsub::MessageId::from(h.finalize().as_bytes()[..20].to_vec())
        })
        // Every member is connected to every other (directly or through a relay) and
        // publishes flood to each subscriber, so the heartbeat's mesh upkeep decides no
        // delivery here; at libp2p's 1 s it was the idle daemon's most frequent wake-up.
        .heartbeat_interval(Duration::from_secs(30))
        .history_gossip(0)
        .gossip_lazy(0)
        .gossip_factor(0.0)
        .flood_publish(true)
        .build()
        .map_err(|e| e.to_string())?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)
        .map_err(str::to_string)
}

/// The PeerIds a relay node serves: the node task keeps it equal to the trust list.
pub type Allowed = Arc<RwLock<HashSet<PeerId>>>;

/// Circuit relay limits for a node that serves (`[relay]` in config.toml).
#[derive(Clone, Debug)]
pub struct RelayServe {
    /// Longest life of one relayed connection.
    pub circuit_max: Duration,
    /// Most bytes one relayed connection may carry (0 = no limit).
    pub circuit_max_bytes: u64,
    /// Most relayed connections at once.
    pub max_circuits: usize,
}

/// A relay-side gate: only trusted peers may reserve or open circuits. Counted when refused.
fn trusted_only(
    allowed: Allowed,
    refused: Arc<std::sync::atomic::AtomicU64>,
) -> Box<dyn relay::RateLimiter> {
    Box::new(move |peer: PeerId, _addr: &Multiaddr, _now| {
        let ok = allowed.read().map(|s| s.contains(&peer)).unwrap_or(false);
        if !ok {
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%peer, "relay refused an untrusted peer");
        }
        ok
    })
}

/// Build the swarm for `identity`. `hole_punching` turns DCUtR on; `serve` makes it a relay
/// node for the peers in `allowed` (refusals counted in `refused`).
pub fn build(
    identity: &Identity,
    mdns_on: bool,
    hole_punching: bool,
    serve: Option<RelayServe>,
    allowed: Allowed,
    refused: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Swarm<MeshBehaviour>, NodeError> {
    let agent = format!(
        "loopsy/{} (boot {:016x})",
        crate::VERSION,
        rand::random::<u64>()
    );
    // TCP with the kernel watching each link, TLS with AES-GCM first (much cheaper than
    // Noise's ChaCha20 where the CPU has AES instructions), Noise for peers without it.
    let tcp = crate::transport::tcp(identity.keypair(), tcp::Config::default().nodelay(true))
        .map_err(|e| NodeError::Build(e.to_string()))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair().clone())
        .with_tokio()
        // QUIC watches its own links: a keep-alive every 15 s (under the 30 s many NATs keep
        // an idle UDP mapping) and a link silent for 30 s is dead. libp2p's 5 s would wake
        // both ends of every QUIC link several times a second between them.
        .with_quic_config(|mut c| {
            c.keep_alive_interval = QUIC_KEEP_ALIVE;
            c.max_idle_timeout = QUIC_IDLE_MS;
            c
        })
        .with_other_transport(|_| tcp)
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_relay_client(noise::Config::new, crate::muxer::Config::new)
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mdns = if mdns_on {
                // A starting node probes at once (500 ms, doubling), and the others answer
                // it; they see it in turn at their next query. Every query wakes each node
                // on the LAN a few times, hence not faster.
                let cfg = mdns::Config {
                    query_interval: Duration::from_secs(15),
                    ..Default::default()
                };
                Some(mdns::tokio::Behaviour::new(cfg, peer_id)?)
            } else {
                None
            };
            let pair = cbor::Behaviour::with_codec(
                cbor::codec::Codec::default()
                    .set_request_size_maximum(wire::MAX_PAIR_MSG)
                    .set_response_size_maximum(wire::MAX_PAIR_MSG),
                [(
                    StreamProtocol::new(wire::PAIR_PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(PAIR_TIMEOUT),
            );
            let rpc = cbor::Behaviour::with_codec(
                cbor::codec::Codec::default()
                    .set_request_size_maximum(wire::MAX_RPC_REQUEST)
                    .set_response_size_maximum(wire::MAX_RPC_RESPONSE),
                [(
                    StreamProtocol::new(wire::RPC_PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(RPC_TIMEOUT),
            );
            let members = cbor::Behaviour::with_codec(
                cbor::codec::Codec::default()
                    .set_request_size_maximum(wire::MAX_MEMBERS_MSG)
                    .set_response_size_maximum(1024),
                [(
                    StreamProtocol::new(wire::MEMBERS_PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default().with_request_timeout(PAIR_TIMEOUT),
            );
            let gossip = gossip(key)?;
            Ok(MeshBehaviour {
                gossip,
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(agent),
                ),
                // The round-trip time `peers list` shows, and the backstop for a dead link
                // the kernel did not catch (no TCP_USER_TIMEOUT on macOS and Windows): two
                // misses in a row close it. Keepalive probes (TCP, `transport.rs`) and QUIC's
                // own keep-alive notice a silent peer within 30 s without waking the daemon;
                // each ping wakes both ends a few times, hence once a minute.
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(PING_INTERVAL)
                        .with_timeout(PING_TIMEOUT),
                ),
                mdns: mdns.into(),
                pair,
                rpc,
                members,
                streams: libp2p_stream::Behaviour::new(),
                relay_server: serve
                    .map(|limits| {
                        // Only trusted peers pass the gate; for them, rate limits sized for
                        // a mesh whose machines restart and roam (libp2p's defaults, 30 per
                        // peer in 2 minutes, refuse a laptop that reconnects often), per
                        // peer only: many machines may sit behind one office NAT.
                        let per_min = |n: u32| {
                            std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN)
                        };
                        let cfg = relay::Config {
                            max_circuits: limits.max_circuits,
                            max_circuits_per_peer: limits.max_circuits.min(16),
                            max_circuit_duration: limits.circuit_max,
                            max_circuit_bytes: limits.circuit_max_bytes,
                            reservation_rate_limiters: vec![trusted_only(
                                allowed.clone(),
                                refused.clone(),
                            )],
                            circuit_src_rate_limiters: vec![trusted_only(
                                allowed.clone(),
                                refused.clone(),
                            )],
                            ..relay::Config::default()
                        }
                        .reservation_rate_per_peer(per_min(120), Duration::from_secs(60))
                        .circuit_src_per_peer(per_min(240), Duration::from_secs(60));
                        relay::Behaviour::new(peer_id, cfg)
                    })
                    .into(),
                relay_client,
                dcutr: hole_punching.then(|| dcutr::Behaviour::new(peer_id)).into(),
                autonat: autonat::Behaviour::new(
                    peer_id,
                    autonat::Config {
                        // Lab and office networks use private addresses: probe them too.
                        only_global_ips: false,
                        // Ask only the relay nodes (`add_server`), as `mesh status` says:
                        // every probe makes the server dial back, a connection of its own.
                        use_connected: false,
                        boot_delay: Duration::from_secs(2),
                        retry_interval: Duration::from_secs(30),
                        refresh_interval: Duration::from_secs(300),
                        throttle_server_period: Duration::from_secs(5),
                        timeout: Duration::from_secs(10),
                        ..autonat::Config::default()
                    },
                ),
            })
        })
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::boot_of;

    #[test]
    fn boot_ids_are_read_from_the_agent_version() {
        assert_eq!(boot_of("loopsy/0.2.0 (boot 00ff12)"), Some("00ff12"));
        assert_eq!(boot_of("loopsy/0.1.0"), None);
        assert_eq!(boot_of("loopsy/0.2.0 (boot )"), None);
        assert_eq!(boot_of("loopsy/0.2.0 (boot 00ff12"), None);
        assert_eq!(boot_of(&format!("x (boot {})", "a".repeat(33))), None);
    }
}
