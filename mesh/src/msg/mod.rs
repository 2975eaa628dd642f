//! Messages between agents on different machines: signed envelopes, a durable outbox that
//! retries until the recipient acknowledges, an inbox that keeps each message exactly once,
//! and read receipts. See `agents-spec/AGENTS.md` for the protocol in plain words.

pub mod deliver;
pub mod envelope;
pub(crate) mod state;
mod store;

pub use envelope::{Envelope, Invalid, MsgType, Signed, TO_ALL};
pub use state::{InboxItem, Status};
pub use store::{
    InboxMessage, InboxQuery, MsgConfig, MsgError, MsgHandle, Outcome, Outgoing, SentStatus,
    WireItem,
};
