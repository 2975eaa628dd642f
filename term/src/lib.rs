//! loopsy-term: terminal sessions — validated session ids, session kinds and their launchers.
//!
//! PTY hosts, scrollback and the screen model build on these types.

pub mod id;
pub mod kind;

pub use id::{SessionId, SessionIdError};
pub use kind::{LaunchError, SessionKind};
