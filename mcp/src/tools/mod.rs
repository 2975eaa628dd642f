//! Tool input and output types, one file per capability.

pub mod status;
