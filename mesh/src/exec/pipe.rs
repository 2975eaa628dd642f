//! The runner's side of an exec pipe: read the `Start`, start the job under this machine's
//! policy, then pass stdin and signals in and output out until the program ends. A client
//! that goes away takes its job with it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use super::job::Stream;
use super::wire::{self, Exit, Kind, Refused, Signal, Start, Started};
use super::{ExecRequest, Job, JobManager};

/// How long the client has to send its `Start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// After the program has exited, how long output may pause before the pipe is closed (a
/// background child that keeps the program's stdout open does not hold the client).
const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// How long the runner waits, after the Exit, for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// Stdin chunks queued for a program that is not reading.
const STDIN_CHUNKS: usize = 8;
/// After a client asked its program to stop, how long what the program left behind (its
/// background children, which ignore SIGINT) has between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// How a pipe ended, for the caller's audit record.
pub enum Outcome {
    /// Refused before it started: the code.
    Refused(&'static str),
    /// The job ran (its final state is in the job).
    Ran(Arc<Job>),
}

/// Refuse on `w`: one `Refused` frame, then the end of the stream.
pub async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, code: &str, message: String) {
    write_refusal(w, code, message).await;
}

/// Refuse a caller that sends a `Start` first (a peer's stream): read it (briefly) so the
/// refusal reaches the caller rather than a reset of a stream it is still writing to.
pub async fn refuse_after_start<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    code: &str,
    message: String,
) {
    let _ = tokio::time::timeout(START_TIMEOUT, wire::read_frame(s)).await;
    write_refusal(s, code, message).await;
}

async fn write_refusal<W: AsyncWrite + Unpin>(w: &mut W, code: &str, message: String) {
    let _ = wire::write_json(
        w,
        Kind::Refused,
        &Refused {
            code: code.into(),
            message,
        },
    )
    .await;
    let _ = w.shutdown().await;
}

/// Serve one pipe on `s` for `owner`. `revoked` resolves (with a reason) when the caller's
/// right to run commands here ends: the job is then killed with that reason.
pub async fn serve<S, F>(jobs: &JobManager, owner: &str, s: S, revoked: F) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = String>,
{
    let (mut rd, mut wr) = tokio::io::split(s);
    let start = match tokio::time::timeout(START_TIMEOUT, wire::read_frame(&mut rd)).await {
        Ok(Ok(Some(f))) if f.kind == Kind::Start => wire::parse::<Start>(&f),
        Ok(Ok(Some(f))) => Err(wire::WireError::Bad(format!("{:?} before Start", f.kind))),
        Ok(Ok(None)) => return Outcome::Refused("invalid_arguments"),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(wire::WireError::Bad("no Start within 10 s".into())),
    };
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            refuse(&mut wr, "invalid_arguments", e.to_string()).await;
            return Outcome::Refused("invalid_arguments");
        }
    };
    let want_stdin = start.stdin;
    let req = ExecRequest {
        command: start.command,
        args: start.args,
        cwd: start.cwd,
        env: start.env,
        timeout_s: start.timeout_s,
    };
    let (job, live) = match jobs.start_pipe(owner, req, want_stdin) {
        Ok(j) => j,
        Err(e) => {
            refuse(&mut wr, e.code(), e.to_string()).await;
            return Outcome::Refused(e.code());
        }
    };
    let started = Started {
        job_id: job.id.clone(),
    };
    if wire::write_json(&mut wr, Kind::Started, &started)
        .await
        .is_err()
    {
        job.kill_because("client gone");
        return Outcome::Ran(job);
    }
    let stdin = live.stdin.map(spawn_stdin_writer);
    let stop_asked = AtomicBool::new(false);
    let mut ended = false;
    {
        let output = send_output(&job, live.output, &mut wr);
        let input = read_input(&job, &mut rd, stdin, &stop_asked);
        tokio::pin!(output, input, revoked);
        let mut revoked_done = false;
        loop {
            tokio::select! {
                r = &mut output => {
                    if r.is_err() {
                        job.kill_because("client gone");
                    }
                    ended = r.is_ok();
                    break;
                }
                () = &mut input => {
                    // The client went away without waiting for the end: so does its job.
                    job.kill_because("client gone");
                    break;
                }
                reason = &mut revoked, if !revoked_done => {
                    revoked_done = true;
                    tracing::info!(job = %job.id, "{reason}: killing the job");
                    job.kill_because(&reason);
                }
            }
        }
    }
    // After the Exit, the client closes: read to its end (briefly) rather than drop a stream
    // it may still be writing to, which some transports answer with a reset that can
    // overtake the Exit.
    if ended {
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(Some(_)) = wire::read_frame(&mut rd).await {}
        })
        .await;
    }
    // The client asked its program to stop (Ctrl-C): what it left running goes too, as a
    // closing terminal would take it. Without that, background children stay (`nohup … &`
    // works as over ssh).
    if stop_asked.load(Ordering::SeqCst)
        && let Some(tree) = job.tree()
        && !tree.is_empty()
    {
        tree.terminate();
        tokio::spawn(async move {
            tokio::time::sleep(LEFTOVER_GRACE).await;
            if !tree.is_empty() {
                tree.kill();
            }
        });
    }
    Outcome::Ran(job)
}

/// Stream the job's output, then its `Exit`.
async fn send_output<W: AsyncWrite + Unpin>(
    job: &Arc<Job>,
    mut output: mpsc::Receiver<(Stream, Vec<u8>)>,
    w: &mut W,
) -> std::io::Result<()> {
    let mut exited = false;
    // A chunk of the other stream, read while coalescing, goes out next.
    let mut held: Option<(Stream, Vec<u8>)> = None;
    loop {
        let next = if let Some(h) = held.take() {
            Some(h)
        } else if exited {
            tokio::time::timeout(DRAIN_IDLE, output.recv())
                .await
                .unwrap_or_default()
        } else {
            tokio::select! {
                c = output.recv() => c,
                () = job.finished() => {
                    exited = true;
                    continue;
                }
            }
        };
        let Some((stream, mut bytes)) = next else {
            break;
        };
        // What is already queued for the same stream goes in the same frame (fewer, larger
        // writes); the order between the streams is kept.
        while bytes.len() < wire::MAX_FRAME as usize {
            match output.try_recv() {
                Ok((s, more)) if s == stream => bytes.extend_from_slice(&more),
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let kind = match stream {
            Stream::Stdout => Kind::Stdout,
            Stream::Stderr => Kind::Stderr,
        };
        wire::write_frame_unflushed(w, kind, &bytes).await?;
        if held.is_none() && output.is_empty() {
            w.flush().await?;
        }
    }
    job.finished().await;
    let exit = Exit {
        state: job.info().state,
        status: job.exit_code().unwrap_or(255),
    };
    wire::write_json(w, Kind::Exit, &exit).await?;
    w.shutdown().await
}

/// Read the client's frames until it goes away: stdin to the program, signals to its
/// process group. Returns when the stream ends or breaks.
async fn read_input<R: AsyncRead + Unpin>(
    job: &Arc<Job>,
    r: &mut R,
    mut stdin: Option<mpsc::Sender<Vec<u8>>>,
    stop_asked: &AtomicBool,
) {
    while let Ok(Some(f)) = wire::read_frame(r).await {
        match f.kind {
            Kind::Stdin => {
                if let Some(tx) = &stdin {
                    // A program that does not read its stdin must not stall signals for
                    // ever: once it has ended, stdin is dropped.
                    tokio::select! {
                        r = tx.send(f.data) => if r.is_err() { stdin = None },
                        () = job.finished() => stdin = None,
                    }
                }
            }
            Kind::StdinEof => stdin = None,
            Kind::Signal => {
                if let Some(sig) = f.data.first().copied().and_then(Signal::from_u8) {
                    stop_asked.store(true, Ordering::SeqCst);
                    job.signal(sig);
                }
            }
            _ => {
                tracing::debug!(kind = ?f.kind, "unexpected frame from the exec client");
                return;
            }
        }
    }
}

/// A task that writes stdin chunks to the program, closing its stdin when the channel ends.
fn spawn_stdin_writer(mut stdin: ChildStdin) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STDIN_CHUNKS);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if stdin.write_all(&chunk).await.is_err() {
                // The program closed its stdin: the rest is dropped, as a pipe would.
                while rx.recv().await.is_some() {}
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });
    tx
}
