//! `loopsy_execute` and the job tools: run a command here or on a peer, then page its output,
//! wait for it, or kill it. A remote call runs the same code on the peer under its policy.

use std::collections::BTreeMap;
use std::time::Duration;

use loopsy_mesh::exec::{ExecError, ExecRequest, JobInfo, JobState, Stream};
use loopsy_mesh::trust::Capability;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Target, forward, local_or_return, require, target};
use crate::tool_error::{ErrorCode, ToolError, success};
use crate::{Caller, DaemonCtx};

/// Longest a call may block waiting for a job.
pub const MAX_WAIT_S: u64 = 60;
/// Default wait in `loopsy_execute`.
pub const DEFAULT_WAIT_S: u64 = 30;
/// Output returned inline by `loopsy_execute` / a default page, per stream.
pub const INLINE_OUTPUT: usize = 64 * 1024;
/// Largest page `loopsy_job_output` returns.
pub const MAX_PAGE: usize = 1024 * 1024;

/// `loopsy_execute` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    /// Peer (name or PeerId) to run on; omit to run on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The program to run; without `args`, a shell command line run by `sh -c`.
    pub command: String,
    /// Arguments; when given, `command` runs directly without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory on the machine that runs it (default: its home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Kill the job (and its whole process group) after this many seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Wait up to this many seconds for it to finish before returning a job id (default 30, max 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_WAIT_S))]
    pub wait_s: Option<u64>,
}

/// A job, with its output so far when it has finished.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExecuteOut {
    /// The job.
    pub job: JobView,
    /// Whether it finished within `wait_s`; if not, use loopsy_job_wait with `job.id`.
    pub finished: bool,
    /// Up to 64 KiB of stdout (when finished); page the rest with loopsy_job_output.
    pub stdout: String,
    /// Up to 64 KiB of stderr (when finished).
    pub stderr: String,
    /// More output exists than was returned inline.
    pub more_output: bool,
}

/// A job as tools show it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct JobView {
    /// Job id (pass it to the loopsy_job_* tools, with the same `peer`).
    pub id: String,
    /// `running`, `exited`, `killed` or `failed`.
    pub state: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when killed.
    pub signal: Option<i32>,
    /// Why it was killed (`timeout`, `kill`, `signal`) or why it failed.
    pub reason: Option<String>,
    /// The command.
    pub command: String,
    /// Its arguments, when run without a shell.
    pub args: Option<Vec<String>>,
    /// Unix time in ms when it started.
    pub started_at_ms: u64,
    /// Run time in ms.
    pub duration_ms: u64,
    /// Bytes written to stdout, including any past the cap.
    pub stdout_bytes: u64,
    /// Bytes written to stderr, including any past the cap.
    pub stderr_bytes: u64,
    /// Stdout exceeded the cap; the excess was dropped.
    pub stdout_truncated: bool,
    /// Stderr exceeded the cap; the excess was dropped.
    pub stderr_truncated: bool,
    /// Who started it: `local` (this machine's CLI and agents), `peer:<PeerId>`,
    /// `phone:<id>`.
    pub started_by: String,
}

impl From<JobInfo> for JobView {
    fn from(j: JobInfo) -> Self {
        let (state, exit_code, signal, reason) = match j.state {
            JobState::Running => ("running", None, None, None),
            JobState::Exited { code } => ("exited", Some(code), None, None),
            JobState::Killed { signal, reason } => ("killed", None, Some(signal), Some(reason)),
            JobState::Failed { message } => ("failed", None, None, Some(message)),
        };
        Self {
            id: j.id,
            state: state.into(),
            exit_code,
            signal,
            reason,
            command: j.command,
            args: j.args,
            started_at_ms: j.started_at_ms,
            duration_ms: j.duration_ms,
            stdout_bytes: j.stdout_bytes,
            stderr_bytes: j.stderr_bytes,
            stdout_truncated: j.stdout_truncated,
            stderr_truncated: j.stderr_truncated,
            started_by: j.owner,
        }
    }
}

/// Arguments naming one job.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    /// The peer the job runs on (as given to loopsy_execute); omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The job id.
    pub job_id: String,
}

/// `loopsy_job_wait` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobWaitArgs {
    /// The peer the job runs on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The job id.
    pub job_id: String,
    /// Seconds to wait (default 30, max 60); call again to keep waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_WAIT_S))]
    pub timeout_s: Option<u64>,
}

/// `loopsy_job_output` arguments.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobOutputArgs {
    /// The peer the job runs on; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The job id.
    pub job_id: String,
    /// `stdout` or `stderr`.
    pub stream: Stream,
    /// Byte offset to start at (default 0; use `next_offset` from the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Most bytes to return (default 65536, 64 KiB; at most 1048576, 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub limit: Option<u32>,
}

/// `loopsy_job_list` arguments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobListArgs {
    /// The peer whose jobs (started by this machine) to list; omit for this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// Jobs.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct JobsOut {
    /// Newest first.
    pub jobs: Vec<JobView>,
}

fn exec_err(e: ExecError) -> ToolError {
    let code = match e {
        ExecError::Denied(_) => ErrorCode::PermissionDenied,
        ExecError::TooManyJobs(_) | ExecError::RateLimited(_) => ErrorCode::Unavailable,
        ExecError::BadTimeout(_) | ExecError::Invalid(_) | ExecError::NoCwd(_) => {
            ErrorCode::InvalidArguments
        }
        ExecError::NotFound(_) => ErrorCode::NotFound,
    };
    ToolError::new(code, e.to_string())
}

fn summary(j: &JobView) -> String {
    match (j.state.as_str(), j.exit_code, &j.reason) {
        ("exited", Some(c), _) => format!("{} exited with {c} after {} ms", j.id, j.duration_ms),
        ("running", ..) => format!(
            "{} still running after {} ms; loopsy_job_wait to wait",
            j.id, j.duration_ms
        ),
        (s, _, Some(r)) => format!("{} {s} ({r})", j.id),
        (s, ..) => format!("{} {s}", j.id),
    }
}

/// Arguments that may name a peer to run on.
pub trait Routed: Serialize {
    /// The `peer` argument.
    fn peer(&mut self) -> &mut Option<String>;
}

#[macro_export]
/// Implement [`Routed`] for argument structs with a `peer: Option<String>` field.
macro_rules! routed {
    ($($t:ty),*) => {$(
        impl $crate::tools::exec::Routed for $t {
            fn peer(&mut self) -> &mut Option<String> {
                &mut self.peer
            }
        }
    )*};
}
routed!(
    ExecuteArgs,
    JobArgs,
    JobWaitArgs,
    JobOutputArgs,
    JobListArgs
);

/// Run here (returning the arguments, with the `exec` capability checked), or forward `tool`
/// to the named peer and return its result.
async fn route<A: Routed>(
    ctx: &DaemonCtx,
    caller: &Caller,
    tool: &str,
    a: A,
) -> Result<A, CallToolResult> {
    route_with(ctx, caller, tool, a, Capability::Exec).await
}

/// Run here (if the caller holds `cap`) or forward to the `peer` the arguments name.
pub(crate) async fn route_with<A: Routed>(
    ctx: &DaemonCtx,
    caller: &Caller,
    tool: &str,
    mut a: A,
    cap: Capability,
) -> Result<A, CallToolResult> {
    match target(ctx, caller, a.peer().as_deref()) {
        Err(e) => Err(e.into_result()),
        Ok(Target::Remote(p)) => {
            *a.peer() = None;
            Err(forward(ctx, &p, tool, &a).await)
        }
        Ok(Target::Local) => require(ctx, caller, cap)
            .await
            .map(|()| a)
            .map_err(ToolError::into_result),
    }
}

fn too_long(what: &str) -> CallToolResult {
    ToolError::new(
        ErrorCode::InvalidArguments,
        format!("{what} must be at most {MAX_WAIT_S}"),
    )
    .into_result()
}

/// `loopsy_execute`
pub async fn execute(ctx: &DaemonCtx, caller: &Caller, a: ExecuteArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_execute", a, Capability::Exec);
    let wait = a.wait_s.unwrap_or(DEFAULT_WAIT_S);
    if wait > MAX_WAIT_S {
        return too_long("wait_s");
    }
    let req = ExecRequest {
        command: a.command,
        args: a.args,
        cwd: a.cwd,
        env: a.env.unwrap_or_default(),
        timeout_s: a.timeout_s,
    };
    let job = match ctx.jobs().start(&caller.owner(), req) {
        Ok(j) => j,
        Err(e) => return exec_err(e).into_result(),
    };
    let finished = job.wait(Duration::from_secs(wait)).await;
    let (stdout, stderr, more) = if finished {
        let o = job.output(Stream::Stdout, 0, INLINE_OUTPUT);
        let e = job.output(Stream::Stderr, 0, INLINE_OUTPUT);
        let more = !o.eof || !e.eof;
        (o.data, e.data, more)
    } else {
        (String::new(), String::new(), true)
    };
    execute_result(ExecuteOut {
        job: JobView::from(job.info()),
        finished,
        stdout,
        stderr,
        more_output: more,
    })
}

/// The `loopsy_execute` result: the summary line, then stdout once the job has finished.
fn execute_result(out: ExecuteOut) -> CallToolResult {
    let mut text = summary(&out.job);
    if out.finished && !out.stdout.is_empty() {
        text.push('\n');
        text.push_str(&out.stdout);
    }
    success(text, &out)
}

/// A job of this caller, as a result (after `f` acts on it).
async fn with_job<F, Fut>(ctx: &DaemonCtx, caller: &Caller, id: &str, f: F) -> CallToolResult
where
    F: FnOnce(std::sync::Arc<loopsy_mesh::exec::Job>) -> Fut,
    Fut: std::future::Future<Output = std::sync::Arc<loopsy_mesh::exec::Job>>,
{
    match ctx.jobs().get(&caller.owner(), id) {
        Ok(j) => {
            let v = JobView::from(f(j).await.info());
            success(summary(&v), &v)
        }
        Err(e) => exec_err(e).into_result(),
    }
}

/// `loopsy_job_status`
pub async fn status(ctx: &DaemonCtx, caller: &Caller, a: JobArgs) -> CallToolResult {
    match route(ctx, caller, "loopsy_job_status", a).await {
        Ok(a) => with_job(ctx, caller, &a.job_id, |j| async move { j }).await,
        Err(r) => r,
    }
}

/// `loopsy_job_wait`
pub async fn wait(ctx: &DaemonCtx, caller: &Caller, a: JobWaitArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_job_wait", a, Capability::Exec);
    let t = a.timeout_s.unwrap_or(DEFAULT_WAIT_S);
    if t > MAX_WAIT_S {
        return too_long("timeout_s");
    }
    with_job(ctx, caller, &a.job_id, |j| async move {
        j.wait(Duration::from_secs(t)).await;
        j
    })
    .await
}

/// `loopsy_job_output`
pub async fn output(ctx: &DaemonCtx, caller: &Caller, a: JobOutputArgs) -> CallToolResult {
    let a = local_or_return!(ctx, caller, "loopsy_job_output", a, Capability::Exec);
    if a.limit == Some(0) {
        return ToolError::new(
            ErrorCode::InvalidArguments,
            "limit must be at least 1 (a page of 0 bytes never reaches the end)",
        )
        .into_result();
    }
    let limit = a
        .limit
        .map(|l| l as usize)
        .unwrap_or(INLINE_OUTPUT)
        .min(MAX_PAGE);
    match ctx.jobs().output(
        &caller.owner(),
        &a.job_id,
        a.stream,
        a.offset.unwrap_or(0),
        limit,
    ) {
        Ok(p) => {
            let mut text = p.data.clone();
            if p.truncated && p.eof {
                text.push_str("\n[loopsy: output past exec.output_cap_bytes was dropped]");
            }
            success(text, &p)
        }
        Err(e) => exec_err(e).into_result(),
    }
}

/// `loopsy_job_kill`
pub async fn kill(ctx: &DaemonCtx, caller: &Caller, a: JobArgs) -> CallToolResult {
    match route(ctx, caller, "loopsy_job_kill", a).await {
        Ok(a) => {
            with_job(ctx, caller, &a.job_id, |j| async move {
                j.kill();
                j.wait(Duration::from_secs(5)).await;
                j
            })
            .await
        }
        Err(r) => r,
    }
}

/// `loopsy_job_list`
pub async fn list(ctx: &DaemonCtx, caller: &Caller, a: JobListArgs) -> CallToolResult {
    match route(ctx, caller, "loopsy_job_list", a).await {
        Ok(_) => {
            let jobs: Vec<JobView> = ctx
                .jobs()
                .list(&caller.owner())
                .into_iter()
                .map(JobView::from)
                .collect();
            success(format!("{} jobs", jobs.len()), &JobsOut { jobs })
        }
        Err(r) => r,
    }
}

/// How often a waiting `loopsy_execute` looks for new output to report.
const POLL: Duration = Duration::from_millis(200);

fn sc(r: &CallToolResult) -> serde_json::Value {
    r.structured_content.clone().unwrap_or_default()
}

/// `loopsy_execute` for a client that asked for progress: output is streamed as progress
/// notifications while the call waits (here or on a peer), then the usual result.
pub async fn execute_reporting(
    ctx: &DaemonCtx,
    caller: &Caller,
    a: ExecuteArgs,
    reporter: Option<super::progress::Reporter>,
) -> CallToolResult {
    let wait = a.wait_s.unwrap_or(DEFAULT_WAIT_S);
    let Some(rep) = reporter.filter(|_| wait > 0 && wait <= MAX_WAIT_S) else {
        return execute(ctx, caller, a).await;
    };
    let peer = a.peer.clone();
    let first = execute(
        ctx,
        caller,
        ExecuteArgs {
            wait_s: Some(0),
            ..a
        },
    )
    .await;
    if first.is_error == Some(true) {
        return first;
    }
    let Some(id) = sc(&first)["job"]["id"].as_str().map(str::to_string) else {
        return first;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(wait);
    let mut offsets = [0u64, 0u64];
    let mut last_status;
    loop {
        last_status = status(
            ctx,
            caller,
            JobArgs {
                peer: peer.clone(),
                job_id: id.clone(),
            },
        )
        .await;
        let running = sc(&last_status)["state"] == "running";
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let page = output(
                ctx,
                caller,
                JobOutputArgs {
                    peer: peer.clone(),
                    job_id: id.clone(),
                    stream,
                    offset: Some(offsets[i]),
                    limit: None,
                },
            )
            .await;
            let v = sc(&page);
            let data = v["data"].as_str().unwrap_or_default();
            if !data.is_empty() {
                offsets[i] = v["next_offset"].as_u64().unwrap_or(offsets[i]);
                rep.report(
                    (offsets[0] + offsets[1]) as f64,
                    None,
                    Some(data.to_string()),
                )
                .await;
            }
        }
        if !running || std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let job: JobView = match serde_json::from_value(sc(&last_status)) {
        Ok(j) => j,
        Err(_) => return last_status,
    };
    let finished = job.state != "running";
    let mut inline = [String::new(), String::new()];
    let mut more = !finished;
    if finished {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let page = output(
                ctx,
                caller,
                JobOutputArgs {
                    peer: peer.clone(),
                    job_id: id.clone(),
                    stream,
                    offset: Some(0),
                    limit: None,
                },
            )
            .await;
            let v = sc(&page);
            inline[i] = v["data"].as_str().unwrap_or_default().to_string();
            more |= !v["eof"].as_bool().unwrap_or(true);
        }
    }
    let [stdout, stderr] = inline;
    execute_result(ExecuteOut {
        job,
        finished,
        stdout,
        stderr,
        more_output: more,
    })
}
