//! The phone's side of the end-to-end channel for the browser: key generation, the Noise
//! handshake, sealing and opening messages, and pair-link parsing — `loopsy-relay`'s code,
//! compiled to wasm so the web app runs the same implementation the tests and the daemon do.
//! [`core`] holds the logic (tested natively); [`bindings`] exports it to JavaScript.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod bindings;
