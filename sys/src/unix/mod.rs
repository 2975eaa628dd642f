//! What Linux and macOS share: POSIX modes, Unix domain sockets, process groups, signals,
//! `/bin/sh`. What differs between the two is in `linux.rs` and `macos.rs`.

pub(crate) mod fs;
pub(crate) mod ipc;
pub(crate) mod memory {
    pub(crate) use crate::os::release_code_pages;
}
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod shell;
pub(crate) mod signal;

pub(crate) use crate::os::{OS, PLATFORM};
