//! loopsy-term: terminal sessions — validated ids, kinds and their launchers, the session
//! host that owns each PTY (scrollback ring + screen model), and the daemon-side manager.

pub mod approve;
pub mod bypass;
pub mod client;
pub mod host;
pub mod id;
pub mod keys;
pub mod kind;
pub mod manager;
pub mod proto;
pub mod record;
pub mod ring;
pub mod strip;

pub use approve::{ApprovalView, Approvals, Decision};
pub use id::{SessionId, SessionIdError};
pub use kind::{LaunchError, SessionKind};
pub use manager::{Manager, SessionError, StartSpec, WaitFor, WaitOut};
pub use record::{SessionInfo, SessionState};
