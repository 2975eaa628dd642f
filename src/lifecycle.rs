//! `start`, `stop`, `restart`, `status`: the daemon's life, driven over the control socket.
//! Nothing here kills by port or by name: a daemon is asked to stop, and the pidfile lock
//! tells when it has.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use loopsy_mcp::control::{self, ControlError, Verb, Welcome};
use loopsy_mcp::tools::status::StatusOut;
use loopsy_mesh::{Config, Home, PidLock};
use loopsy_sys::ipc::BlockingStream;

use crate::cli::DaemonArgs;
use crate::ui::{self, BAD, BOLD, DIM, OK, WARN};

/// How long `start` waits for the daemon to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits for the daemon to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Poll interval while waiting on the daemon.
const POLL: Duration = Duration::from_millis(5);

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens.
    #[error("not running")]
    NotRunning,
    /// Something answered wrongly.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Connect to the control socket and complete the hello for `verb` (blocking).
pub fn hello(
    home: &Home,
    verb: Verb,
) -> Result<(BufReader<BlockingStream>, BlockingStream, Welcome), ProbeError> {
    let stream = match loopsy_sys::ipc::connect_blocking(&home.socket()) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ProbeError::NotRunning);
        }
        Err(e) => return Err(ControlError::Io(e).into()),
    };
    stream
        .set_read_timeout(Some(control::HELLO_TIMEOUT))
        .map_err(ControlError::Io)?;
    let mut w = stream.try_clone().map_err(ControlError::Io)?;
    w.write_all(control::hello_line(verb).as_bytes())
        .map_err(ControlError::Io)?;
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    (&mut r)
        .take(control::MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(ControlError::Io)?;
    let line = String::from_utf8_lossy(&line);
    let welcome = control::parse_welcome(line.trim_end())?;
    r.get_ref()
        .set_read_timeout(None)
        .map_err(ControlError::Io)?;
    Ok((r, w, welcome))
}

/// Is a daemon answering, and which?
pub fn probe(home: &Home) -> Result<Welcome, ProbeError> {
    hello(home, Verb::Ping).map(|(_, _, w)| w)
}

/// Spawn `loopsy daemon` detached, logging to `logs/daemon.log`, and wait until it answers.
pub fn spawn_daemon(home: &Home, args: &DaemonArgs) -> anyhow::Result<Welcome> {
    if let Some(pid) = PidLock::holder(&home.pidfile())? {
        bail!(
            "daemon pid {pid} holds {} but does not answer on the control socket; it may still be \
             starting, or be hung (see `loopsy logs`; stop it with `kill {pid}`)",
            home.pidfile().display()
        );
    }
    let log_path = home.daemon_log();
    let log = loopsy_sys::fs::with_mode(
        OpenOptions::new().create(true).append(true),
        loopsy_sys::fs::PRIVATE_FILE,
    )
    .open(&log_path)
    .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe().context("cannot find the loopsy executable")?;
    let mut cmd = Command::new(exe);
    // Own process group (no console on Windows): a Ctrl-C in the starting terminal does not
    // reach the daemon.
    loopsy_sys::process::detach(&mut cmd, loopsy_sys::process::Detach::Group);
    let mut child = cmd
        .arg("--home")
        .arg(home.root())
        .arg("daemon")
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot spawn the daemon")?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match probe(home) {
            Ok(w) => return Ok(w),
            Err(ProbeError::NotRunning) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the daemon exited during start-up ({status}):\n{}",
                log_tail_since(&log_path, log_start)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon (pid {}) did not answer within {}s; see `loopsy logs`",
                child.id(),
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn log_tail_since(path: &std::path::Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(16 * 1024).read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Make sure a daemon runs (starting one if needed, with the flags it last ran with); used
/// by `loopsy mcp`.
pub fn ensure_running(home: &Home) -> anyhow::Result<Welcome> {
    match probe(home) {
        Ok(w) => Ok(w),
        Err(ProbeError::NotRunning) => {
            crate::setup::ensure(home, None, false)?;
            // Whoever starts it (an agent's `loopsy mcp`), the daemon runs as it last ran:
            // `start --local-only` stays local-only.
            spawn_daemon(home, &remembered_flags(home))
        }
        Err(e) => Err(e.into()),
    }
}

/// Record the flags a daemon started with, for `loopsy restart` (best effort: a daemon that
/// cannot write it still runs, and `restart` then needs the flags again).
pub fn remember_flags(home: &Home, args: &DaemonArgs) {
    let written = serde_json::to_vec(args)
        .map_err(std::io::Error::other)
        .and_then(|b| loopsy_mesh::fsutil::atomic_write(&home.daemon_flags(), &b, 0o600));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot record the daemon's flags; `loopsy restart` will need them again");
    }
}

/// The flags the daemon last started with (none recorded, or unreadable: none).
pub fn remembered_flags(home: &Home) -> DaemonArgs {
    std::fs::read(home.daemon_flags())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// `loopsy restart`: stop, then start with `args`, or without any, with the flags the daemon
/// last started with.
pub fn restart(home: &Home, args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let args = if args == DaemonArgs::default() {
        let last = remembered_flags(home);
        if last != DaemonArgs::default() {
            anstream::eprintln!(
                "{} restarting with the flags it last started with: {}",
                ui::paint(DIM, "·"),
                last.to_args().join(" ")
            );
        }
        last
    } else {
        args
    };
    stop(home, true)?;
    start(home, &args)
}

/// `loopsy start`
pub fn start(home: &Home, args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    match probe(home) {
        Ok(w) if w.version == loopsy_mesh::VERSION => {
            anstream::eprintln!(
                "{} loopsy is already running (pid {}); `loopsy restart` to restart it",
                ui::paint(WARN, "!"),
                w.pid
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(w) => {
            anstream::eprintln!(
                "{} a loopsy daemon of version {} is running (pid {}); this is {}. Run `loopsy restart` to switch",
                ui::paint(WARN, "!"),
                w.version,
                w.pid,
                loopsy_mesh::VERSION
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(ProbeError::NotRunning) => {}
        Err(e) => return Err(e.into()),
    }
    let report = crate::setup::ensure(home, None, false)?;
    if report.created {
        anstream::eprintln!("{} initialized {}", ui::paint(OK, "✓"), report.data_dir);
    }
    // Check the config here so mistakes show in this terminal, not only in the log.
    Config::load(&home.config(), &args.overrides())?;
    let w = spawn_daemon(home, args)?;
    anstream::println!(
        "{} loopsy {} started: {} ({}) pid {}",
        ui::paint(OK, "✓"),
        w.version,
        ui::paint(BOLD, &report.name),
        report.peer_id,
        w.pid
    );
    Ok(ExitCode::SUCCESS)
}

/// `loopsy stop`. Returns whether a daemon was stopped.
pub fn stop(home: &Home, quiet: bool) -> anyhow::Result<bool> {
    let w = match hello(home, Verb::Shutdown) {
        Ok((_, _, w)) => w,
        Err(ProbeError::NotRunning) => {
            if let Some(pid) = PidLock::holder(&home.pidfile())? {
                bail!(
                    "daemon pid {pid} holds the pidfile but does not answer on the control socket; \
                     see `loopsy logs`, then `kill {pid}`"
                );
            }
            if !quiet {
                anstream::eprintln!("loopsy is not running");
            }
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while PidLock::holder(&home.pidfile())?.is_some() {
        if Instant::now() > deadline {
            bail!(
                "daemon pid {} did not exit within {}s; see `loopsy logs` (force it with `kill {}`)",
                w.pid,
                STOP_TIMEOUT.as_secs(),
                w.pid
            );
        }
        std::thread::sleep(POLL);
    }
    if !quiet {
        anstream::println!("{} loopsy stopped (pid {})", ui::paint(OK, "✓"), w.pid);
    }
    Ok(true)
}

/// `loopsy status`
pub fn status(home: &Home, json: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let client = loopsy_mcp::client::McpClient::connect(&home.socket()).await?;
        let r = client.call("loopsy_status", serde_json::json!({})).await;
        let welcome = client.welcome.clone();
        client.close().await;
        Ok::<_, loopsy_mcp::client::ClientError>((r?, welcome))
    });
    let (result, welcome) = match result {
        Ok(r) => r,
        Err(loopsy_mcp::client::ClientError::NotRunning(_)) => {
            if json {
                ui::print_json(&serde_json::json!({ "running": false }))?;
            } else {
                anstream::eprintln!(
                    "{} loopsy is not running; start it with `loopsy start`",
                    ui::paint(BAD, "✗")
                );
            }
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    let value = result
        .structured_content
        .context("the daemon's status had no structured content")?;
    if result.is_error == Some(true) {
        bail!("loopsy_status failed: {}", value["message"]);
    }
    if json {
        return ui::print_json(&value).map(|()| ExitCode::SUCCESS);
    }
    let s: StatusOut = serde_json::from_value(value)?;
    anstream::println!(
        "{} {} is running",
        ui::paint(OK, "●"),
        ui::paint(BOLD, &s.name)
    );
    anstream::println!("  peer id   {}", s.peer_id);
    anstream::println!(
        "  version   {} (pid {}, up {})",
        s.version,
        s.pid,
        human_duration(s.uptime_s)
    );
    for (i, a) in s.listen_addrs.iter().enumerate() {
        anstream::println!(
            "  {}{}",
            if i == 0 { "listening " } else { "          " },
            a
        );
    }
    if let Some(u) = &s.http_url {
        anstream::println!("  http mcp  {u}");
    }
    anstream::println!("  data dir  {}", ui::paint(DIM, &s.data_dir));
    if welcome.version != loopsy_mesh::VERSION {
        anstream::println!(
            "{} the daemon is version {}, this CLI {}: run `loopsy restart`",
            ui::paint(WARN, "!"),
            welcome.version,
            loopsy_mesh::VERSION
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn human_duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}
