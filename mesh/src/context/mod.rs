//! The context: one automerge document of key → entry, kept by one owner task, made durable by
//! an append-only change log (fsync before a write is acknowledged) with compaction into a
//! snapshot. Replication between peers builds on this document.

pub mod guard;
mod store;
pub mod sync;

pub use crate::journal::{ChangeLog, LogError};
pub use store::{
    ContextConfig, ContextError, ContextHandle, Entry, Lag, MAX_KEY_BYTES, Page, check_key,
};
