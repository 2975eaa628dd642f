//! Durable, private file writes and permission checks for the data dir: the platform layer's
//! (`loopsy_sys::fs`), under the name the rest of the crate has always used.

pub use loopsy_sys::fs::*;
