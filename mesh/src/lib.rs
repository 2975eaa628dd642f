//! loopsy-mesh: this machine's node — its data dir, config, identity and libp2p swarm.
//!
//! Everything a daemon owns about *itself* lives here; the MCP surface (`loopsy-mcp`) and the
//! CLI reach it through [`Home`], [`Config`] and a cloneable [`NodeHandle`].

pub mod behaviour;
pub mod config;
pub mod context;
pub mod exec;
pub mod files;
pub mod fsutil;
pub mod fuzzing;
pub mod home;
pub mod identity;
pub mod journal;
pub mod membership;
pub mod msg;
mod muxer;
pub mod node;
pub mod node_gossip;
mod node_members;
mod node_nat;
mod node_pair;
mod node_task;
pub mod pair;
pub mod pidlock;
pub mod task;
mod tls;
pub mod token;
pub mod transport;
pub mod trust;
pub mod wire;

pub use config::{Config, ConfigError, Overrides};
pub use home::Home;
pub use identity::Identity;
pub use libp2p::multiaddr::Protocol as MultiaddrProtocol;
pub use libp2p::{Multiaddr, PeerId};
pub use libp2p_stream::OpenStreamError;
pub use node::{InboundCall, NodeConfig, NodeHandle, NodeInfo, PairTicket, PeerView};
pub use node_gossip::inbox_topic;
pub use pidlock::PidLock;
pub use token::ApiToken;

/// A stream protocol id from a static name (for callers without a direct libp2p dependency).
pub fn libp2p_stream_protocol(name: &'static str) -> libp2p::StreamProtocol {
    libp2p::StreamProtocol::new(name)
}

/// The daemon's application version (the workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
