//! loopsy-relay: everything daemon, relay and phone say to each other, and every decision the
//! relay makes — with no I/O, so the same code builds for the Cloudflare Worker (wasm32) and
//! natively for the daemon and its tests.
//!
//! - [`route`], [`subprotocol`], [`secret`], [`token`], [`limit`], [`splice`], [`api`]: the
//!   relay's surface and rules (the Worker only moves bytes and storage calls).
//! - [`frame`]: the daemon ⇄ relay multiplexing frames.
//! - [`e2e`], [`app`], [`link`] (feature `e2e`): the phone ⇄ daemon channel the relay cannot read.

pub mod api;
pub mod frame;
pub mod limit;
pub mod route;
pub mod secret;
pub mod splice;
pub mod subprotocol;
pub mod token;
pub mod web;

#[cfg(feature = "e2e")]
pub mod app;
#[cfg(feature = "e2e")]
pub mod e2e;
#[cfg(feature = "e2e")]
pub mod link;

pub use frame::{Frame, FrameError, FrameKind, MAX_FRAME};
pub use subprotocol::{Offer, SubprotocolError, negotiate};

/// This build's version (also reported by the Worker's `/health`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
