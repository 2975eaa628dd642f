//! What is on disk for a session, in `sessions/<id>/`: the spec the daemon wrote
//! (`spec.json`), the record its host keeps (`record.json`), and after exit the final screen
//! (`screen.txt`) and raw scrollback (`scrollback.bin`). The host's socket is `host.sock`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What to start (written by the daemon, read by the host).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionSpec {
    /// Session id (also the directory name).
    pub id: SessionId,
    /// Friendly name (unique among live sessions on this machine).
    pub name: String,
    /// `shell`, `claude`, `codex`, `gemini`, `opencode` or `custom`.
    pub kind: String,
    /// Program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// Scrollback ring size in bytes.
    pub scrollback_bytes: usize,
    /// A spare started ahead of use: hidden until claimed, and gone after this many seconds
    /// unclaimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare_s: Option<u64>,
}

/// Running or not.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The host is starting the program.
    Starting,
    /// The program runs.
    Running,
    /// The program ended (see `exit_code`).
    Exited,
    /// The host died without recording an exit (crash, reboot).
    Lost,
}

/// A session as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// Friendly name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Program and arguments as one line.
    pub command: String,
    /// Working directory.
    pub cwd: String,
    /// Current columns.
    pub cols: u16,
    /// Current rows.
    pub rows: u16,
    /// State.
    pub state: SessionState,
    /// Exit code once exited (None if killed by a signal).
    pub exit_code: Option<i32>,
    /// Created (Unix ms).
    pub created_ms: u64,
    /// Last output or input (Unix ms).
    pub last_activity_ms: u64,
    /// Ended (Unix ms), once exited.
    pub ended_ms: Option<u64>,
    /// Clients attached now.
    pub clients: u32,
    /// Bytes of output so far (the cursor of the newest byte).
    #[serde(default)]
    pub output_bytes: u64,
    /// The host process.
    pub host_pid: u32,
    /// The host's protocol revision (that of the loopsy that started it; 0 for hosts from
    /// before revisions were kept).
    #[serde(default)]
    pub proto: u32,
    /// A spare nobody has claimed yet. Spares are never listed, so the tools' schemas leave
    /// it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(skip)]
    pub spare: bool,
}

/// Paths of one session's directory.
#[derive(Debug, Clone)]
pub struct SessionDir(PathBuf);

impl SessionDir {
    /// `sessions/<id>` under `sessions_root`.
    pub fn new(sessions_root: &Path, id: &SessionId) -> Self {
        Self(sessions_root.join(id.as_str()))
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `spec.json`.
    pub fn spec(&self) -> PathBuf {
        self.0.join("spec.json")
    }
    /// `record.json`.
    pub fn record(&self) -> PathBuf {
        self.0.join("record.json")
    }
    /// `host.sock`.
    pub fn socket(&self) -> PathBuf {
        self.0.join("host.sock")
    }
    /// `screen.txt` (final screen after exit).
    pub fn final_screen(&self) -> PathBuf {
        self.0.join("screen.txt")
    }
    /// `scrollback.bin` (raw output ring after exit).
    pub fn final_scrollback(&self) -> PathBuf {
        self.0.join("scrollback.bin")
    }
    /// `host.log` (the host's own errors).
    pub fn log(&self) -> PathBuf {
        self.0.join("host.log")
    }
}

/// Write `bytes` to `path` atomically, mode 0600 (temp file, fsync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    loopsy_sys::fs::atomic_write(path, bytes, loopsy_sys::fs::PRIVATE_FILE)
}

/// Save a JSON value atomically.
pub fn save_json<T: Serialize>(path: &Path, v: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
    write_private(path, &bytes)
}

/// Largest record or spec file read.
const MAX_JSON: u64 = 1 << 20;

/// Load a JSON file (size-capped).
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_JSON {
        return Err(std::io::Error::other(format!(
            "{} is {len} bytes; the limit is {MAX_JSON}",
            path.display()
        )));
    }
    serde_json::from_slice(&std::fs::read(path)?).map_err(std::io::Error::other)
}
