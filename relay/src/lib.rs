//! loopsy-relay wire types: what daemon, relay and phone say to each other. No I/O, so the
//! same code builds for the Cloudflare Worker (wasm32) and natively for the daemon and tests.

pub mod frame;
pub mod subprotocol;

pub use frame::{Frame, FrameError, FrameKind, MAX_FRAME};
pub use subprotocol::{Offer, SubprotocolError, negotiate};
