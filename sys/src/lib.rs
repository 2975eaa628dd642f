//! loopsy's platform layer: the one place where Linux, macOS and Windows differ.
//!
//! Everything above this crate is written once, against the neutral modules here: private
//! files ([`fs`]), the local control and session sockets ([`ipc`]), process trees
//! ([`process`]), signals ([`signal`]), long-lived TCP links ([`net`]), the user's shell and
//! browser ([`shell`]), what an idle process keeps resident ([`memory`]). Each neutral module forwards to the platform module picked below; a
//! platform that cannot do something says so with an `Unsupported` error, never silently.
//! `cfg` gates for the operating system appear in this file and the platform modules only.

pub mod fs;
pub mod ipc;
pub mod memory;
pub mod net;
pub mod process;
pub mod shell;
pub mod signal;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

#[cfg(windows)]
#[allow(unsafe_code)]
mod windows;
#[cfg(windows)]
use windows as imp;

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!("loopsy runs on Linux, macOS and Windows");

/// The operating systems loopsy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// Linux (systemd user units).
    Linux,
    /// macOS (launchd agents).
    MacOs,
    /// Windows (Task Scheduler).
    Windows,
}

/// The operating system this build is for.
pub const OS: Os = imp::OS;

/// The name of the platform this build is for, as users know it.
pub const PLATFORM: &str = imp::PLATFORM;

/// The current user's home directory (`$HOME`, or the profile directory on Windows).
pub fn home_dir() -> Option<std::path::PathBuf> {
    std::env::home_dir().filter(|p| !p.as_os_str().is_empty())
}

/// `path` with a leading `~` (alone, or before a separator) standing for the user's home
/// directory; anything else as it is.
pub fn expand_home(path: &str) -> std::path::PathBuf {
    let rest = match path.strip_prefix('~') {
        Some("") => Some(""),
        Some(r) if r.starts_with('/') || r.starts_with(std::path::MAIN_SEPARATOR) => Some(&r[1..]),
        _ => None,
    };
    match (rest, home_dir()) {
        (Some(""), Some(h)) => h,
        (Some(r), Some(h)) => h.join(r),
        _ => std::path::PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        let h = home_dir().expect("the tests run with a home directory");
        assert_eq!(expand_home("~"), h);
        assert_eq!(expand_home("~/src/app"), h.join("src/app"));
        for as_is in ["~bob/x", "/tmp/~", "x~", ""] {
            assert_eq!(
                expand_home(as_is),
                std::path::PathBuf::from(as_is),
                "{as_is}"
            );
        }
    }
}
