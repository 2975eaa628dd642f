//! The job table: admission (denylist, per-caller concurrency and rate), lookup by owner,
//! and pruning of finished jobs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::job::{Job, JobInfo, Live, OutputPage, Stream};
use super::{ExecConfig, ExecRequest};

/// Why a job request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// On the denylist.
    #[error(
        "{0:?} is on this machine's exec.denylist (a speed bump, not a sandbox); ask its owner to remove it from config.toml if you need it"
    )]
    Denied(String),
    /// Too many running jobs for this caller.
    #[error(
        "{0} jobs are already running for this caller (exec.max_concurrent); wait for one to finish or kill one"
    )]
    TooManyJobs(usize),
    /// Started too many jobs in the last minute.
    #[error("rate limit: at most {0} jobs per minute (exec.rate_per_minute); retry shortly")]
    RateLimited(u32),
    /// Timeout out of range.
    #[error("timeout_s must be 1..={0}")]
    BadTimeout(u64),
    /// Empty command or bad argument.
    #[error("{0}")]
    Invalid(String),
    /// No such job for this caller.
    #[error("no job {0:?} (ids come from loopsy_execute; finished jobs are kept for a while)")]
    NotFound(String),
    /// The working directory is not a directory here.
    #[error("the working directory {0:?} does not exist there (or is not a directory)")]
    NoCwd(String),
}

impl ExecError {
    /// The stable error code callers see.
    pub fn code(&self) -> &'static str {
        match self {
            ExecError::Denied(_) => "permission_denied",
            ExecError::TooManyJobs(_) | ExecError::RateLimited(_) => "unavailable",
            ExecError::BadTimeout(_) | ExecError::Invalid(_) | ExecError::NoCwd(_) => {
                "invalid_arguments"
            }
            ExecError::NotFound(_) => "not_found",
        }
    }
}

/// `~` and `~/…` name the home directory; anything else is taken as it is. The result must
/// be a directory.
fn resolve_cwd(cwd: Option<String>) -> Result<Option<String>, ExecError> {
    let Some(c) = cwd else {
        return Ok(None);
    };
    let path = loopsy_sys::expand_home(&c);
    if !path.is_dir() {
        return Err(ExecError::NoCwd(c));
    }
    Ok(Some(path.to_string_lossy().into_owned()))
}

/// Bytes of each stream a pipe job keeps once its client has had them.
pub const PIPE_KEEP: u64 = 256 * 1024;

struct Table {
    jobs: HashMap<String, Arc<Job>>,
    finished_order: VecDeque<String>,
    starts: HashMap<String, VecDeque<Instant>>,
}

/// Cloneable handle to the job table.
#[derive(Clone)]
pub struct JobManager {
    cfg: Arc<ExecConfig>,
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobManager")
    }
}

fn basename(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or_default();
    first
        .rsplit('/')
        .next()
        .unwrap_or(first)
        .to_ascii_lowercase()
}

impl JobManager {
    /// A manager with these limits.
    pub fn new(cfg: ExecConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            table: Arc::new(Mutex::new(Table {
                jobs: HashMap::new(),
                finished_order: VecDeque::new(),
                starts: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits in force.
    pub fn config(&self) -> &ExecConfig {
        &self.cfg
    }

    /// Admit and start a job for `owner`.
    pub fn start(&self, owner: &str, req: ExecRequest) -> Result<Arc<Job>, ExecError> {
        self.admit(owner, req, None).map(|(j, _)| j)
    }

    /// Admit and start a job for `owner` whose output is streamed to a client as it comes
    /// (and whose stdin the client writes, with `stdin`). Without `timeout_s` it runs until
    /// it ends or the client kills it.
    pub fn start_pipe(
        &self,
        owner: &str,
        req: ExecRequest,
        stdin: bool,
    ) -> Result<(Arc<Job>, Live), ExecError> {
        match self.admit(owner, req, Some(stdin))? {
            (j, Some(live)) => Ok((j, live)),
            (_, None) => Err(ExecError::Invalid("the job has no pipe".into())),
        }
    }

    fn admit(
        &self,
        owner: &str,
        mut req: ExecRequest,
        pipe: Option<bool>,
    ) -> Result<(Arc<Job>, Option<Live>), ExecError> {
        if req.command.trim().is_empty() {
            return Err(ExecError::Invalid("command is empty".into()));
        }
        if req.command.contains('\0') || req.args.iter().flatten().any(|a| a.contains('\0')) {
            return Err(ExecError::Invalid(
                "command and args may not contain NUL bytes".into(),
            ));
        }
        let base = basename(&req.command);
        if self
            .cfg
            .denylist
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&base))
        {
            return Err(ExecError::Denied(base));
        }
        let timeout = match (req.timeout_s, pipe) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(self.cfg.default_timeout_s),
        };
        if timeout.is_some_and(|t| t == 0 || t > self.cfg.max_timeout_s) {
            return Err(ExecError::BadTimeout(self.cfg.max_timeout_s));
        }
        req.cwd = resolve_cwd(req.cwd.take())?;
        let mut t = self.lock();
        self.prune(&mut t);
        let running = t
            .jobs
            .values()
            .filter(|j| j.owner == owner && j.running())
            .count();
        if running >= self.cfg.max_concurrent {
            return Err(ExecError::TooManyJobs(running));
        }
        let now = Instant::now();
        let starts = t.starts.entry(owner.to_string()).or_default();
        while starts
            .front()
            .is_some_and(|s| now.duration_since(*s) > Duration::from_secs(60))
        {
            starts.pop_front();
        }
        if starts.len() >= self.cfg.rate_per_minute as usize {
            return Err(ExecError::RateLimited(self.cfg.rate_per_minute));
        }
        starts.push_back(now);
        let id = format!("job-{}", hex::encode(rand::random::<[u8; 6]>()));
        let (job, live) = Job::spawn(
            id.clone(),
            owner.to_string(),
            req,
            // A pipe's output went to its client as it came: the job keeps only a little of
            // it (for `loopsy_job_output`), so finished pipes do not hold 8 MiB each.
            if pipe.is_some() {
                self.cfg.output_cap_bytes.min(PIPE_KEEP)
            } else {
                self.cfg.output_cap_bytes
            },
            timeout.map(Duration::from_secs),
            pipe,
        );
        t.jobs.insert(id, job.clone());
        Ok((job, live))
    }

    /// Drop the oldest finished jobs beyond `keep_finished`.
    fn prune(&self, t: &mut Table) {
        let newly: Vec<String> = t
            .jobs
            .values()
            .filter(|j| !j.running() && !t.finished_order.contains(&j.id))
            .map(|j| (j.finished_at(), j.id.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        t.finished_order.extend(newly);
        while t.finished_order.len() > self.cfg.keep_finished {
            if let Some(old) = t.finished_order.pop_front() {
                t.jobs.remove(&old);
            }
        }
    }

    /// A job visible to `owner` (`local` sees every job).
    pub fn get(&self, owner: &str, id: &str) -> Result<Arc<Job>, ExecError> {
        let t = self.lock();
        t.jobs
            .get(id)
            .filter(|j| owner == "local" || j.owner == owner)
            .cloned()
            .ok_or_else(|| ExecError::NotFound(id.to_string()))
    }

    /// Jobs visible to `owner`, newest first.
    pub fn list(&self, owner: &str) -> Vec<JobInfo> {
        let t = self.lock();
        let mut v: Vec<JobInfo> = t
            .jobs
            .values()
            .filter(|j| owner == "local" || j.owner == owner)
            .map(|j| j.info())
            .collect();
        v.sort_by_key(|j| std::cmp::Reverse(j.started_at_ms));
        v
    }

    /// Output page (see [`Job::output`]).
    pub fn output(
        &self,
        owner: &str,
        id: &str,
        stream: Stream,
        offset: u64,
        limit: usize,
    ) -> Result<OutputPage, ExecError> {
        Ok(self.get(owner, id)?.output(stream, offset, limit))
    }

    /// Kill every running job (daemon shutdown).
    pub fn kill_all(&self) {
        let jobs: Vec<Arc<Job>> = self.lock().jobs.values().cloned().collect();
        for j in jobs {
            j.kill_because("the daemon stopped");
        }
    }
}

// POSIX shell command lines (the Windows tree kill is loopsy-sys's `a_tree_is_killed_whole`).
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::exec::JobState;

    fn req(cmd: &str) -> ExecRequest {
        ExecRequest {
            command: cmd.into(),
            args: None,
            cwd: None,
            env: Default::default(),
            timeout_s: None,
        }
    }

    #[tokio::test]
    async fn runs_captures_and_reports_exit() -> Result<(), ExecError> {
        let m = JobManager::new(ExecConfig::default());
        let j = m.start("local", req("echo out; echo err >&2; exit 3"))?;
        assert!(j.wait(Duration::from_secs(10)).await);
        let info = j.info();
        assert_eq!(info.state, JobState::Exited { code: 3 });
        assert_eq!(j.output(Stream::Stdout, 0, 100).data, "out\n");
        assert_eq!(j.output(Stream::Stderr, 0, 100).data, "err\n");
        let mut args = req("printf");
        args.args = Some(vec!["%s|".into(), "a b".into(), "$HOME".into()]);
        let j = m.start("local", args)?;
        assert!(j.wait(Duration::from_secs(10)).await);
        assert_eq!(
            j.output(Stream::Stdout, 0, 100).data,
            "a b|$HOME|",
            "no shell expansion with args"
        );
        Ok(())
    }

    #[tokio::test]
    async fn output_is_capped_and_paged() -> Result<(), ExecError> {
        let m = JobManager::new(ExecConfig {
            output_cap_bytes: 1000,
            ..Default::default()
        });
        let j = m.start("local", req("head -c 100000 /dev/zero"))?;
        assert!(j.wait(Duration::from_secs(10)).await);
        let info = j.info();
        assert_eq!((info.stdout_bytes, info.stdout_truncated), (100_000, true));
        let p = j.output(Stream::Stdout, 600, 1000);
        assert_eq!(
            (p.offset, p.next_offset, p.kept, p.eof, p.truncated),
            (600, 1000, 1000, true, true)
        );
        Ok(())
    }

    #[tokio::test]
    async fn pages_never_split_a_character() -> Result<(), ExecError> {
        let m = JobManager::new(ExecConfig::default());
        let mut r = req("printf");
        let euros = "€".repeat(5000);
        r.args = Some(vec!["%s".into(), euros.clone()]);
        let j = m.start("local", r)?;
        assert!(j.wait(Duration::from_secs(10)).await);
        let (mut joined, mut offset, mut pages) = (String::new(), 0, 0);
        loop {
            let p = j.output(Stream::Stdout, offset, 1000);
            assert!(p.next_offset > offset || p.eof, "no progress at {offset}");
            joined.push_str(&p.data);
            offset = p.next_offset;
            pages += 1;
            if p.eof {
                break;
            }
        }
        assert!(pages > 10);
        assert_eq!(joined, euros, "a page split a character");
        Ok(())
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() -> Result<(), ExecError> {
        let m = JobManager::new(ExecConfig::default());
        let mut r = req("sleep 60 & sleep 60 & sleep 30");
        r.timeout_s = Some(1);
        let j = m.start("local", r)?;
        let tree = j
            .tree()
            .ok_or_else(|| ExecError::Invalid("no process tree".into()))?;
        assert!(j.wait(Duration::from_secs(10)).await);
        assert_eq!(
            j.info().state,
            JobState::Killed {
                signal: 9,
                reason: "timeout".into()
            }
        );
        // The backgrounded children were in the group and died with it.
        let gone = || tree.is_empty();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() {
            assert!(
                Instant::now() < deadline,
                "the process tree survived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn kill_and_admission_limits() -> Result<(), ExecError> {
        let m = JobManager::new(ExecConfig {
            max_concurrent: 1,
            rate_per_minute: 3,
            ..Default::default()
        });
        let j = m.start("peer:a", req("sleep 30"))?;
        assert_eq!(
            m.start("peer:a", req("true")).err(),
            Some(ExecError::TooManyJobs(1))
        );
        assert!(
            m.get("peer:b", &j.id).is_err(),
            "other callers cannot see it"
        );
        assert!(m.get("local", &j.id).is_ok(), "the machine's owner can");
        j.kill();
        assert!(j.wait(Duration::from_secs(10)).await);
        assert!(matches!(j.info().state, JobState::Killed { ref reason, .. } if reason == "kill"));
        m.start("peer:a", req("true"))?;
        assert_eq!(
            m.start("peer:a", req("true"))
                .err()
                .map(|e| matches!(e, ExecError::RateLimited(3) | ExecError::TooManyJobs(_))),
            Some(true)
        );
        assert_eq!(
            m.start("x", req("/sbin/MKFS -t ext4 /dev/x")).err(),
            Some(ExecError::Denied("mkfs".into()))
        );
        let mut bad = req("true");
        bad.timeout_s = Some(0);
        assert!(matches!(m.start("x", bad), Err(ExecError::BadTimeout(_))));
        assert!(matches!(
            m.start("x", req("  ")),
            Err(ExecError::Invalid(_))
        ));
        let j = m.start("x", req("/nonexistent/program --flag"))?;
        assert!(j.wait(Duration::from_secs(5)).await);
        assert!(matches!(j.info().state, JobState::Exited { code: 127 }));
        Ok(())
    }
}
