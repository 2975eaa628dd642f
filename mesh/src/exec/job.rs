//! One job: the child process (own process group), its capped output, its state.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loopsy_sys::process::Tree;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};

use super::ExecRequest;

/// Read size for output pipes.
const CHUNK: usize = 64 * 1024;
/// After the process exits, how long we wait for its pipes to drain.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Between SIGTERM and SIGKILL on `kill`.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Output chunks (of up to [`CHUNK`] bytes) queued for a streaming client before the
/// program waits for it.
const LIVE_CHUNKS: usize = 16;

/// A streaming client's side of a job started as a pipe: the program's stdin (when the
/// client sends one) and its output, chunk by chunk in the order it was read.
pub struct Live {
    /// The program's stdin; dropping it closes it.
    pub stdin: Option<ChildStdin>,
    /// Output as it is written; ends when both pipes have closed.
    pub output: mpsc::Receiver<(Stream, Vec<u8>)>,
}

/// Which output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Still running.
    Running,
    /// Exited by itself.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Killed by a signal: our timeout, a kill request, or something else.
    Killed {
        /// The signal number.
        signal: i32,
        /// `timeout`, `kill` or `signal`.
        reason: String,
    },
    /// Could not be started.
    Failed {
        /// Why.
        message: String,
    },
}

/// A job as callers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    /// Job id.
    pub id: String,
    /// Who started it (`local`, `peer:<id>`…).
    pub owner: String,
    /// The command as given.
    pub command: String,
    /// Its arguments, if run without a shell.
    pub args: Option<Vec<String>>,
    /// State.
    #[serde(flatten)]
    pub state: JobState,
    /// Unix time in ms when it started.
    pub started_at_ms: u64,
    /// Run time so far, or in total, in ms.
    pub duration_ms: u64,
    /// Bytes the job wrote to stdout (including any beyond the cap).
    pub stdout_bytes: u64,
    /// Bytes the job wrote to stderr (including any beyond the cap).
    pub stderr_bytes: u64,
    /// Stdout went past the cap; the excess was dropped.
    pub stdout_truncated: bool,
    /// Stderr went past the cap; the excess was dropped.
    pub stderr_truncated: bool,
}

/// A page of output.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutputPage {
    /// Which stream.
    pub stream: Stream,
    /// Byte offset of `data`.
    pub offset: u64,
    /// The bytes, as UTF-8 (invalid sequences replaced).
    pub data: String,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// Bytes kept so far.
    pub kept: u64,
    /// The job has finished and nothing more will come.
    pub eof: bool,
    /// Output past the cap was dropped.
    pub truncated: bool,
}

#[derive(Default)]
struct Buf {
    data: Vec<u8>,
    total: u64,
    truncated: bool,
}

struct Data {
    state: JobState,
    out: Buf,
    err: Buf,
    finished: Option<Instant>,
    /// The program was not found (a shell's 127), rather than found and not startable.
    not_found: bool,
}

/// A job shared between its task and the manager.
pub struct Job {
    pub(super) id: String,
    pub(super) owner: String,
    req: ExecRequest,
    started: Instant,
    started_at_ms: u64,
    tree: Mutex<Option<Tree>>,
    kill_requested: AtomicBool,
    /// Why it was killed, when a kill gave a reason (`revoked`, `client gone`…).
    kill_reason: Mutex<Option<String>>,
    data: Mutex<Data>,
    done: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Job {
    /// Start `req` now. The returned job is already running (or `Failed`). With `pipe`, its
    /// output is also streamed (and with `pipe == Some(true)` its stdin is open) through the
    /// returned [`Live`].
    pub(super) fn spawn(
        id: String,
        owner: String,
        req: ExecRequest,
        cap: u64,
        timeout: Option<Duration>,
        pipe: Option<bool>,
    ) -> (Arc<Job>, Option<Live>) {
        let (done, _) = watch::channel(false);
        let job = Arc::new(Job {
            id,
            owner,
            started: Instant::now(),
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            tree: Mutex::new(None),
            kill_requested: AtomicBool::new(false),
            kill_reason: Mutex::new(None),
            data: Mutex::new(Data {
                state: JobState::Running,
                out: Buf::default(),
                err: Buf::default(),
                finished: None,
                not_found: false,
            }),
            done,
            req,
        });
        let mut cmd = match &job.req.args {
            Some(args) => {
                let mut c = tokio::process::Command::new(&job.req.command);
                c.args(args);
                c
            }
            None => {
                tokio::process::Command::from(loopsy_sys::shell::command_line(&job.req.command))
            }
        };
        loopsy_sys::process::own_group(cmd.as_std_mut());
        let stdin = if pipe == Some(true) {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.envs(&job.req.env)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let dir = job
            .req
            .cwd
            .as_ref()
            .map(std::path::PathBuf::from)
            .or_else(loopsy_sys::home_dir);
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let (tx, mut live) = match pipe {
            Some(_) => {
                let (tx, rx) = mpsc::channel(LIVE_CHUNKS);
                (
                    Some(tx),
                    Some(Live {
                        stdin: None,
                        output: rx,
                    }),
                )
            }
            None => (None, None),
        };
        match cmd.spawn() {
            Ok(mut child) => {
                match Tree::adopt(&child) {
                    Ok(t) => *lock(&job.tree) = Some(t),
                    Err(e) => {
                        tracing::warn!(job = %job.id, "cannot track the job's processes: {e}")
                    }
                }
                if let Some(l) = live.as_mut() {
                    l.stdin = child.stdin.take();
                }
                tokio::spawn(run(job.clone(), child, cap, timeout, tx));
            }
            Err(e) => {
                let not_found = e.kind() == std::io::ErrorKind::NotFound;
                lock(&job.data).not_found = not_found;
                job.finish(JobState::Failed {
                    message: if not_found {
                        format!("{}: command not found", job.req.command)
                    } else {
                        format!("cannot start {:?}: {e}", job.req.command)
                    },
                });
            }
        }
        (job, live)
    }

    /// The code a shell would exit with for this job: its own code, 128 + the signal that
    /// killed it, 127 when the program was not found, 126 when it could not be started;
    /// `None` while it runs.
    pub fn exit_code(&self) -> Option<i32> {
        let d = lock(&self.data);
        match &d.state {
            JobState::Running => None,
            JobState::Exited { code } => Some(*code),
            JobState::Killed { signal, .. } => Some(128 + signal),
            JobState::Failed { .. } => Some(if d.not_found { 127 } else { 126 }),
        }
    }

    fn finish(&self, state: JobState) {
        {
            let mut d = lock(&self.data);
            if d.state == JobState::Running {
                d.state = state;
                d.finished = Some(Instant::now());
            }
        }
        self.done.send_replace(true);
    }

    /// The job's process tree, while it has one.
    pub fn tree(&self) -> Option<Tree> {
        lock(&self.tree).clone()
    }

    /// Is it still running?
    pub fn running(&self) -> bool {
        lock(&self.data).state == JobState::Running
    }

    /// When it finished.
    pub fn finished_at(&self) -> Option<Instant> {
        lock(&self.data).finished
    }

    /// A snapshot.
    pub fn info(&self) -> JobInfo {
        let d = lock(&self.data);
        let end = d.finished.unwrap_or_else(Instant::now);
        JobInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            command: self.req.command.clone(),
            args: self.req.args.clone(),
            state: d.state.clone(),
            started_at_ms: self.started_at_ms,
            duration_ms: end.duration_since(self.started).as_millis() as u64,
            stdout_bytes: d.out.total,
            stderr_bytes: d.err.total,
            stdout_truncated: d.out.truncated,
            stderr_truncated: d.err.truncated,
        }
    }

    /// Up to `limit` bytes of `stream` from `offset`.
    pub fn output(&self, stream: Stream, offset: u64, limit: usize) -> OutputPage {
        let d = lock(&self.data);
        let buf = match stream {
            Stream::Stdout => &d.out,
            Stream::Stderr => &d.err,
        };
        let kept = buf.data.len() as u64;
        let start = offset.min(kept) as usize;
        let mut end = start.saturating_add(limit).min(buf.data.len());
        // A page never ends inside a UTF-8 character (the next page starts with it), so
        // pages joined are the output, not the output with replacement characters.
        if end < buf.data.len()
            && let Err(e) = std::str::from_utf8(&buf.data[start..end])
            && e.error_len().is_none()
            && e.valid_up_to() > 0
        {
            end = start + e.valid_up_to();
        }
        OutputPage {
            stream,
            offset: start as u64,
            data: String::from_utf8_lossy(&buf.data[start..end]).into_owned(),
            next_offset: end as u64,
            kept,
            eof: d.state != JobState::Running && end as u64 == kept,
            truncated: buf.truncated,
        }
    }

    /// Wait until the job finishes or `timeout` passes; true if finished.
    pub async fn wait(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.finished()).await.is_ok()
    }

    /// Resolves once the job has finished.
    pub async fn finished(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Send `signal` to the whole process tree (as a terminal's Ctrl-C or hang-up would).
    pub fn signal(self: &Arc<Self>, signal: super::wire::Signal) {
        use super::wire::Signal;
        match signal {
            Signal::Terminate => self.kill(),
            Signal::Kill => {
                if let Some(t) = self.tree() {
                    self.kill_requested.store(true, Ordering::SeqCst);
                    t.kill();
                }
            }
            Signal::Interrupt => {
                if let Some(t) = self.tree() {
                    t.interrupt();
                }
            }
            Signal::HangUp => {
                if let Some(t) = self.tree() {
                    t.hang_up();
                }
            }
        }
    }

    /// As [`Job::kill`], recording why (the state's `reason`).
    pub fn kill_because(self: &Arc<Self>, reason: &str) {
        if self.running() {
            *lock(&self.kill_reason) = Some(reason.to_string());
        }
        self.kill();
    }

    /// SIGTERM the process tree, then SIGKILL after a grace period (on Windows the job
    /// object ends at once).
    pub fn kill(self: &Arc<Self>) {
        let Some(tree) = self.tree() else {
            return;
        };
        if !self.running() {
            return;
        }
        self.kill_requested.store(true, Ordering::SeqCst);
        tree.terminate();
        let job = self.clone();
        tokio::spawn(async move {
            if !job.wait(KILL_GRACE).await {
                tree.kill();
            }
        });
    }
}

type LiveTx = mpsc::Sender<(Stream, Vec<u8>)>;

async fn pump(
    job: Arc<Job>,
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    cap: u64,
    mut live: Option<LiveTx>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut d = lock(&job.data);
            let b = match stream {
                Stream::Stdout => &mut d.out,
                Stream::Stderr => &mut d.err,
            };
            b.total += n as u64;
            let room = cap.saturating_sub(b.data.len() as u64) as usize;
            if room < n {
                b.truncated = true;
            }
            b.data.extend_from_slice(&buf[..n.min(room)]);
        }
        // A streaming client gets every byte; the program waits while it is behind.
        if let Some(tx) = &live
            && tx.send((stream, buf[..n].to_vec())).await.is_err()
        {
            live = None;
        }
    }
}

async fn run(
    job: Arc<Job>,
    mut child: tokio::process::Child,
    cap: u64,
    timeout: Option<Duration>,
    live: Option<LiveTx>,
) {
    let readers = [
        child
            .stdout
            .take()
            .map(|p| tokio::spawn(pump(job.clone(), p, Stream::Stdout, cap, live.clone()))),
        child
            .stderr
            .take()
            .map(|p| tokio::spawn(pump(job.clone(), p, Stream::Stderr, cap, live))),
    ];
    let tree = job.tree();
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, child.wait()).await,
        None => Ok(child.wait().await),
    };
    let status = match waited {
        Ok(s) => s,
        Err(_) => {
            // Over time: the whole process tree goes, not just the shell.
            if let Some(t) = &tree {
                t.kill();
            }
            let _ = child.wait().await;
            for r in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(DRAIN_GRACE, r).await;
            }
            job.finish(JobState::Killed {
                signal: loopsy_sys::process::KILL_SIGNAL,
                reason: "timeout".into(),
            });
            return;
        }
    };
    // Let the pipes drain; a background grandchild holding them open does not hold us up.
    for r in readers.into_iter().flatten() {
        if tokio::time::timeout(DRAIN_GRACE, r).await.is_err() {
            tracing::debug!(job = %job.id, "output pipe still open after exit; not waiting");
        }
    }
    let killed = job.kill_requested.load(Ordering::SeqCst);
    let state = match status {
        // Without signals (Windows) a job ended by `kill` exits with a code: it was killed.
        Ok(_) if killed && !loopsy_sys::process::HAS_SIGNALS => JobState::Killed {
            signal: loopsy_sys::process::KILL_SIGNAL,
            reason: lock(&job.kill_reason)
                .clone()
                .unwrap_or_else(|| "kill".into()),
        },
        Ok(s) => match (s.code(), loopsy_sys::process::exit_signal(&s)) {
            (Some(code), _) => JobState::Exited { code },
            (None, Some(sig)) => JobState::Killed {
                signal: sig,
                reason: match lock(&job.kill_reason).clone() {
                    Some(r) => r,
                    None if job.kill_requested.load(Ordering::SeqCst) => "kill".into(),
                    None => "signal".into(),
                },
            },
            (None, None) => JobState::Failed {
                message: "unknown exit status".into(),
            },
        },
        Err(e) => JobState::Failed {
            message: format!("wait failed: {e}"),
        },
    };
    job.finish(state);
}
