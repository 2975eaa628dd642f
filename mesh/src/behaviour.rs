//! The libp2p protocols a loopsy node runs, and how the swarm is built.

use std::time::Duration;

use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, Swarm, identify, mdns, noise, ping, tcp, yamux};

use crate::Identity;
use crate::node::NodeError;
use crate::wire::{self, PairRequest, PairResponse, RpcRequest, RpcResponse};

/// The identify protocol version all loopsy nodes speak.
pub const IDENTIFY_PROTOCOL: &str = "/loopsy/id/1";
/// How long an RPC may take (jobs wait at most `MAX_WAIT_S` inside it).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a pairing step may take.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Raw streams for bulk data (files).
    pub streams: libp2p_stream::Behaviour,
}

/// Build the swarm for `identity`.
pub fn build(identity: &Identity, mdns_on: bool) -> Result<Swarm<MeshBehaviour>, NodeError> {
    let agent = format!("loopsy/{}", crate::VERSION);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mdns = if mdns_on {
                let cfg = mdns::Config {
                    query_interval: Duration::from_secs(5),
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
            Ok(MeshBehaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(agent),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(5)),
                ),
                mdns: mdns.into(),
                pair,
                rpc,
                streams: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}
