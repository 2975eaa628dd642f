//! Remote and local jobs: run a command under this machine's policy, capture its output with
//! caps, enforce timeouts on the whole process group, and let callers page, wait and kill.

mod job;
mod manager;
pub mod pipe;
pub mod wire;

pub use job::{Job, JobInfo, JobState, Live, OutputPage, Stream};
pub use manager::{ExecError, JobManager};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Limits for jobs (from `[exec]` in config.toml).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// Jobs one caller may have running at once.
    pub max_concurrent: usize,
    /// Jobs one caller may start per minute.
    pub rate_per_minute: u32,
    /// Timeout when the caller gives none, in seconds.
    pub default_timeout_s: u64,
    /// Largest timeout a caller may ask for, in seconds.
    pub max_timeout_s: u64,
    /// Bytes kept per stream (stdout, stderr); the rest is counted and dropped.
    pub output_cap_bytes: u64,
    /// Finished jobs kept for status/output queries.
    pub keep_finished: usize,
    /// Command names refused (basename, case-insensitive). A speed bump, not a sandbox: the
    /// real control is the per-peer `exec` capability.
    pub denylist: Vec<String>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 128,
            rate_per_minute: 600,
            default_timeout_s: 300,
            max_timeout_s: 3600,
            output_cap_bytes: 8 * 1024 * 1024,
            keep_finished: 256,
            denylist: ["mkfs", "format", "shutdown", "reboot", "halt", "poweroff"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program, or (without `args`) a shell command line run by `sh -c`.
    pub command: String,
    /// Arguments; when present, `command` is run directly, without a shell.
    pub args: Option<Vec<String>>,
    /// Working directory (default: the daemon's home directory).
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Seconds before the job's process group is killed.
    pub timeout_s: Option<u64>,
}
