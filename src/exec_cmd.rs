//! `loopsy exec PEER -- CMD…`: a remote command as a pipe, the way `ssh HOST CMD` is one.
//! stdout and stderr are passed byte for byte, stdin is forwarded until EOF (unless `-n`),
//! Ctrl-C / SIGTERM / SIGHUP go to the remote process group, and the exit status is the
//! program's (128 + N for a death by signal N; 255 for loopsy's own failures).

use std::io::{Read, Write};
use std::process::ExitCode;

use loopsy_mcp::control::Verb;
use loopsy_mcp::exec_pipe::LocalRequest;
use loopsy_mesh::Home;
use loopsy_mesh::exec::JobState;
use loopsy_mesh::exec::wire::{self, Exit, Kind, Refused, Signal, Start, Started};
use loopsy_sys::signal::Forward;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cli::ExecArgs;
use crate::ui::{self, DIM, WARN};

/// The status for loopsy's own failures (unreachable, refused, not trusted), as ssh uses.
pub const OWN_FAILURE: u8 = 255;
/// Read size for stdin.
const STDIN_CHUNK: usize = 64 * 1024;

fn fail(peer: &str, message: impl std::fmt::Display) -> ExitCode {
    anstream::eprintln!("{} {peer}: {message}", ui::paint(WARN, "loopsy:"));
    ExitCode::from(OWN_FAILURE)
}

/// One argument is a command line for the peer's shell (as with ssh); several are the
/// program and its arguments, run without a shell.
fn start_of(a: &ExecArgs) -> Option<Start> {
    let (command, args) = a.command.split_first()?;
    Some(Start {
        command: command.clone(),
        args: (!args.is_empty()).then(|| args.to_vec()),
        cwd: a.cwd.clone(),
        env: Default::default(),
        timeout_s: a.timeout,
        stdin: !a.no_stdin,
    })
}

/// `loopsy exec`
pub fn exec(home: &Home, a: &ExecArgs) -> anyhow::Result<ExitCode> {
    if a.tty {
        return crate::session_cmd::exec_tty(home, &a.peer, &a.command, a.cwd.as_deref());
    }
    let Some(start) = start_of(a) else {
        anyhow::bail!("give a command after --");
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(run(home, &a.peer, start, a.verbose));
    // The stdin reader may still be blocked in a read: nothing waits for it.
    rt.shutdown_background();
    Ok(code)
}

async fn run(home: &Home, peer: &str, start: Start, verbose: bool) -> ExitCode {
    let (r, mut w, _) = match loopsy_mcp::client::connect(&home.socket(), Verb::Exec).await {
        Ok(c) => c,
        Err(e) => return fail(peer, e),
    };
    // Output arrives in frames of up to 256 KiB.
    let mut r = tokio::io::BufReader::with_capacity(256 * 1024, r);
    let mut hello = match serde_json::to_vec(&LocalRequest { peer: peer.into() }) {
        Ok(h) => h,
        Err(e) => return fail(peer, e),
    };
    hello.push(b'\n');
    let forward_stdin = start.stdin;
    let sent = async {
        w.write_all(&hello).await?;
        wire::write_json(&mut w, Kind::Start, &start).await
    };
    // A refusal may come before the daemon reads the Start (an unknown peer): its reason
    // is read below either way.
    let sent = sent.await;
    let started: Started = match wire::read_frame(&mut r).await {
        Ok(Some(f)) if f.kind == Kind::Started => match wire::parse(&f) {
            Ok(s) => s,
            Err(e) => return fail(peer, e),
        },
        Ok(Some(f)) if f.kind == Kind::Refused => {
            return match wire::parse::<Refused>(&f) {
                Ok(r) => fail(peer, r.message),
                Err(e) => fail(peer, e),
            };
        }
        Ok(Some(f)) => return fail(peer, format!("unexpected {:?} frame", f.kind)),
        Ok(None) | Err(_) => {
            let why = sent.err().map(|e| format!(": {e}")).unwrap_or_default();
            return fail(
                peer,
                format!(
                    "the local daemon went away before the command started{why} (`loopsy status` tells whether it runs)"
                ),
            );
        }
    };
    if verbose {
        anstream::eprintln!(
            "{}",
            ui::paint(DIM, format!("[loopsy: {} on {peer}]", started.job_id))
        );
    }
    let (sig_tx, sig_rx) = mpsc::channel::<Signal>(8);
    let (in_tx, in_rx) = mpsc::channel::<Option<Vec<u8>>>(4);
    if forward_stdin {
        spawn_stdin_reader(in_tx);
    } else {
        drop(in_tx);
    }
    let writer = tokio::spawn(write_frames(w, sig_rx, in_rx, forward_stdin));
    // Frames are read in a task of their own: reading one is not cancel-safe, and a signal
    // must never cut a frame in half.
    let (frame_tx, mut frames) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        loop {
            let f = wire::read_frame(&mut r).await;
            let end = !matches!(f, Ok(Some(_)));
            if frame_tx.send(f).await.is_err() || end {
                break;
            }
        }
    });
    let mut signals = loopsy_sys::signal::forwarded().ok();
    let mut interrupts = 0u32;
    let outcome = loop {
        tokio::select! {
            f = frames.recv() => match f.unwrap_or(Ok(None)) {
                Ok(Some(f)) => match f.kind {
                    Kind::Stdout | Kind::Stderr => {
                        if let Err(e) = write_out(f.kind, &f.data) {
                            // A closed stdout (`| head`): stop, as ssh dies of SIGPIPE.
                            if e.kind() == std::io::ErrorKind::BrokenPipe {
                                break ExitCode::from(141);
                            }
                            break fail(peer, format!("cannot write the output: {e}"));
                        }
                    }
                    Kind::Exit => break match wire::parse::<Exit>(&f) {
                        Ok(x) => finish(peer, &started.job_id, x),
                        Err(e) => fail(peer, e),
                    },
                    other => break fail(peer, format!("unexpected {other:?} frame")),
                },
                Ok(None) | Err(_) => break fail(
                    peer,
                    "the connection was lost before the command ended (the local daemon stopped, or the peer went away); the command is stopped when its client goes",
                ),
            },
            s = next_signal(&mut signals) => {
                let sig = match s {
                    Forward::Interrupt => {
                        interrupts += 1;
                        match interrupts {
                            1 => Signal::Interrupt,
                            2 => {
                                anstream::eprintln!("{}", ui::paint(DIM, "[loopsy: interrupted again: killing the remote command]"));
                                Signal::Kill
                            }
                            _ => break ExitCode::from(130),
                        }
                    }
                    Forward::Terminate => Signal::Terminate,
                    Forward::HangUp => Signal::HangUp,
                };
                let _ = sig_tx.try_send(sig);
            }
        }
    };
    writer.abort();
    reader.abort();
    outcome
}

async fn next_signal(s: &mut Option<loopsy_sys::signal::Forwarded>) -> Forward {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn write_out(kind: Kind, data: &[u8]) -> std::io::Result<()> {
    if kind == Kind::Stdout {
        let mut o = std::io::stdout().lock();
        o.write_all(data)?;
        o.flush()
    } else {
        let mut e = std::io::stderr().lock();
        e.write_all(data)?;
        e.flush()
    }
}

/// The exit status, with a line on stderr when loopsy (not the program) ended it. A job
/// loopsy ended for its own reasons (the peer revoked `exec` or stopped trusting this machine
/// mid-run) is loopsy's failure: 255, as ssh says when its connection is cut. A `--timeout`
/// keeps the status of the signal that ended the program.
fn finish(peer: &str, job: &str, x: Exit) -> ExitCode {
    match &x.state {
        JobState::Killed { reason, .. } if reason != "signal" && reason != "kill" => {
            anstream::eprintln!(
                "{} {job} on {peer} was killed ({reason})",
                ui::paint(WARN, "loopsy:")
            );
            if reason != "timeout" {
                return ExitCode::from(255);
            }
        }
        JobState::Failed { message } => {
            anstream::eprintln!("{} {peer}: {message}", ui::paint(WARN, "loopsy:"));
        }
        _ => {}
    }
    ExitCode::from(x.status.clamp(0, 255) as u8)
}

/// Read stdin on a thread of its own (a blocking read cannot be cancelled); `None` is EOF.
fn spawn_stdin_reader(tx: mpsc::Sender<Option<Vec<u8>>>) {
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(None);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot read stdin: {e}");
    }
}

/// Send signals (first) and stdin to the runner; without stdin, say EOF at once.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut sigs: mpsc::Receiver<Signal>,
    mut stdin: mpsc::Receiver<Option<Vec<u8>>>,
    forward_stdin: bool,
) -> std::io::Result<()> {
    let mut stdin_open = forward_stdin;
    if !forward_stdin {
        wire::write_frame(&mut w, Kind::StdinEof, &[]).await?;
    }
    loop {
        tokio::select! {
            biased;
            s = sigs.recv() => match s {
                Some(s) => wire::write_frame(&mut w, Kind::Signal, &[s as u8]).await?,
                None => return Ok(()),
            },
            c = stdin.recv(), if stdin_open => match c {
                Some(Some(data)) => wire::write_frame(&mut w, Kind::Stdin, &data).await?,
                Some(None) | None => {
                    stdin_open = false;
                    wire::write_frame(&mut w, Kind::StdinEof, &[]).await?;
                }
            },
        }
    }
}
