//! Windows: ACLs instead of modes, named pipes instead of Unix sockets, Job Objects instead
//! of process groups, console control events instead of signals, `cmd.exe` and PowerShell.
//! The Win32 calls that no safe crate wraps are made here, each with its SAFETY note.

pub(crate) mod fs;
pub(crate) mod ipc;
pub(crate) mod memory {
    /// Not done on Windows: trimming the working set there pages out written memory too.
    pub(crate) fn release_code_pages() -> std::io::Result<usize> {
        Ok(0)
    }
}
pub(crate) mod net;
pub(crate) mod process;
mod security;
pub(crate) mod shell;
pub(crate) mod signal;

pub(crate) const PLATFORM: &str = "Windows";
pub(crate) const OS: crate::Os = crate::Os::Windows;

/// A Win32 call's BOOL result as an `io::Result`, with the thread's last error on failure.
fn check(ok: i32) -> std::io::Result<()> {
    if ok == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
