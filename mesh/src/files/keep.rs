//! What a copy keeps of its source besides the bytes (mode and mtime, as `scp -p`), and how a
//! client asks to copy.

use std::path::Path;

/// What a copy keeps of its source besides the bytes (as `scp -p` does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// Permission bits (only the `0o777` part is ever applied: no setuid, setgid, sticky).
    pub mode: Option<u32>,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: Option<u64>,
}

impl Keep {
    /// The mode and mtime of `path`.
    pub fn of(path: &Path) -> Self {
        let mtime_ns = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        Self {
            mode: loopsy_sys::fs::mode_of(path).ok(),
            mtime_ns,
        }
    }
}

/// Mode of a received file when the sender keeps none: that of the file it replaces, else
/// an ordinary file's.
pub(super) fn mode_for(dest: &Path, keep: Keep) -> u32 {
    keep.mode
        .or_else(|| loopsy_sys::fs::mode_of(dest).ok())
        .unwrap_or(loopsy_sys::fs::PUBLIC_FILE)
        & 0o777
}

/// How a client copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOpts {
    /// Replace an existing destination file.
    pub overwrite: bool,
    /// Keep the source's mode and mtime (as `scp -p`).
    pub preserve: bool,
}
