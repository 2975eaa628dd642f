//! `loopsy sessions`, `loopsy shell`, `loopsy attach`, `loopsy kill`: terminal sessions from
//! the CLI. Listing and starting go through the daemon's tools; attach talks to the session's
//! host directly over its 0600 socket, so typing has no extra hop.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use loopsy_mesh::Home;
use loopsy_term::proto::{Kind, encode_resize, read_frame, write_frame};
use serde_json::{Value, json};

use crate::client::Session;
use crate::ui::{self, BOLD, DIM, OK, WARN};

/// The byte that detaches (Ctrl-]).
pub const DETACH_KEY: u8 = 0x1d;

fn with_peer(mut v: Value, peer: Option<&str>) -> Value {
    if let Some(p) = peer {
        v["peer"] = Value::String(p.to_string());
    }
    v
}

fn ago(ms: u64) -> String {
    let now = loopsy_term::record::now_ms();
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `loopsy sessions [--peer P] [--json]`
pub fn list(home: &Home, peer: Option<&str>, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_session_list", with_peer(json!({}), peer))?;
    let rows = v["sessions"].as_array().cloned().unwrap_or_default();
    if json_out {
        ui::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        anstream::println!(
            "{}",
            ui::paint(DIM, "no sessions (start one: loopsy shell)")
        );
        return Ok(ExitCode::SUCCESS);
    }
    anstream::println!(
        "{}",
        ui::paint(
            BOLD,
            format!(
                "{:<17} {:<16} {:<8} {:<12} {:>7} {:<9} {}",
                "ID", "NAME", "KIND", "STATE", "CLIENTS", "ACTIVE", "COMMAND"
            )
        )
    );
    for r in rows {
        let state = match (r["state"].as_str(), r["exit_code"].as_i64()) {
            (Some("exited"), Some(c)) => format!("exited {c}"),
            (Some(s), _) => s.to_string(),
            _ => "?".into(),
        };
        let style = match r["state"].as_str() {
            Some("running") => OK,
            Some("lost") => WARN,
            _ => DIM,
        };
        anstream::println!(
            "{:<17} {:<16} {:<8} {} {:>7} {:<9} {}",
            ui::safe_line(r["id"].as_str().unwrap_or("?")),
            ui::safe_line(r["name"].as_str().unwrap_or("?")),
            ui::safe_line(r["kind"].as_str().unwrap_or("?")),
            ui::paint(style, format!("{state:<12}")),
            r["clients"].as_u64().unwrap_or(0),
            ago(r["last_activity_ms"].as_u64().unwrap_or(0)),
            ui::safe_line(r["command"].as_str().unwrap_or(""))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy approve [id] [--json]`
pub fn approve(home: &Home, id: Option<&str>, json_out: bool) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let args = id.map_or(json!({}), |i| json!({ "id": i }));
    let v = s.call("loopsy_approve", args)?;
    if json_out {
        ui::print_json(&v["requests"])?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = v["requests"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        anstream::println!("{}", ui::paint(DIM, "no pending auto-approve requests"));
    }
    for r in rows {
        let what = format!(
            "{} {} ({}) requested by {}",
            r["id"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["flag"].as_str().unwrap_or("?"),
            r["requested_by"].as_str().unwrap_or("?")
        );
        if id.is_some() {
            anstream::println!("{} approved {what}", ui::paint(OK, "✓"));
        } else {
            anstream::println!(
                "{what}, expires in {} s",
                r["expires_in_s"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `loopsy kill [--rm] <id|name> [--peer P]`
pub fn kill(home: &Home, id: &str, rm: bool, peer: Option<&str>) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let tool = if rm {
        "loopsy_session_remove"
    } else {
        "loopsy_session_stop"
    };
    let v = s.call(tool, with_peer(json!({ "id": id }), peer))?;
    if rm {
        anstream::println!(
            "{} removed {} ({})",
            ui::paint(OK, "✓"),
            v["name"].as_str().unwrap_or("?"),
            v["id"].as_str().unwrap_or("?")
        );
        return Ok(ExitCode::SUCCESS);
    }
    anstream::println!(
        "{} {} ({}) {}",
        ui::paint(OK, "✓"),
        v["name"].as_str().unwrap_or("?"),
        v["id"].as_str().unwrap_or("?"),
        match v["exit_code"].as_i64() {
            Some(c) => format!("exited with code {c}"),
            None => format!("is {}", v["state"].as_str().unwrap_or("?")),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// This terminal's size; 80×24 when it has none (not a terminal, or a fresh PTY at 0×0).
fn term_size() -> (u16, u16) {
    match crossterm::terminal::size() {
        Ok((c, r)) if c > 0 && r > 0 => (c, r),
        _ => (80, 24),
    }
}

/// `loopsy shell [--peer P] [--name N] [--detached] [-- cmd args…]`
pub fn shell(
    home: &Home,
    peer: Option<&str>,
    name: Option<&str>,
    command: &[String],
    detached: bool,
) -> anyhow::Result<ExitCode> {
    let (cols, rows) = term_size();
    let mut args = json!({ "cols": cols, "rows": rows });
    // Here, start where the user is; on a peer, in its home directory.
    if peer.is_none() {
        let cwd = std::env::current_dir().context("no current directory")?;
        args["cwd"] = json!(cwd.display().to_string());
    }
    let mut args = with_peer(args, peer);
    if let Some(n) = name {
        args["name"] = json!(n);
    }
    if let Some((cmd, rest)) = command.split_first() {
        args["kind"] = json!("custom");
        args["command"] = json!(cmd);
        args["args"] = json!(rest);
    }
    let info = {
        let s = Session::connect(home)?;
        s.call("loopsy_session_start", args)?
    };
    let id = info["id"].as_str().context("no session id")?.to_string();
    if detached || !std::io::stdin().is_terminal() {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    attach_id(home, peer, &id, info["name"].as_str().unwrap_or(&id))
}

/// `loopsy attach [--peer P] <id|name>`
pub fn attach(home: &Home, peer: Option<&str>, target: &str) -> anyhow::Result<ExitCode> {
    let s = Session::connect(home)?;
    let v = s.call("loopsy_session_list", with_peer(json!({}), peer))?;
    drop(s);
    let rows = v["sessions"].as_array().cloned().unwrap_or_default();
    let found = rows
        .iter()
        .find(|r| r["id"] == target)
        .or_else(|| {
            rows.iter()
                .find(|r| r["name"] == target && r["state"] == "running")
        })
        .or_else(|| rows.iter().find(|r| r["name"] == target));
    let Some(r) = found else {
        bail!("no session {target:?} here; `loopsy sessions` lists them");
    };
    if r["state"] != "running" {
        bail!(
            "session {target} is {} and cannot be attached; `loopsy sessions` shows its state",
            r["state"].as_str().unwrap_or("not running")
        );
    }
    let id = r["id"].as_str().context("no id")?.to_string();
    attach_id(home, peer, &id, r["name"].as_str().unwrap_or(&id))
}

/// A carrier of the host protocol to a session on `peer`, through this machine's daemon.
async fn via_daemon(
    home: &Home,
    peer: &str,
    session: &str,
) -> anyhow::Result<(loopsy_term::client::Rx, loopsy_term::client::Tx)> {
    use tokio::io::AsyncWriteExt;
    let s = loopsy_sys::ipc::connect(&home.socket())
        .await
        .context("the daemon is not running (start it with `loopsy start`)")?;
    let (r, mut w) = loopsy_sys::ipc::split(s);
    let mut r = tokio::io::BufReader::new(r);
    loopsy_mcp::control::handshake(&mut r, &mut w, loopsy_mcp::control::Verb::Attach).await?;
    let req = loopsy_mcp::attach::LocalRequest {
        peer: peer.to_string(),
        session: session.to_string(),
    };
    let mut line = serde_json::to_vec(&req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    Ok((Box::new(r), Box::new(w)))
}

/// Puts the terminal in raw mode and back (also on error and panic unwinding).
struct RawMode(bool);
impl RawMode {
    fn on() -> Self {
        Self(std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok())
    }
}
impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

fn attach_id(home: &Home, peer: Option<&str>, id: &str, name: &str) -> anyhow::Result<ExitCode> {
    if std::io::stderr().is_terminal() {
        anstream::eprint!(
            "{}\r\n",
            ui::paint(DIM, format!("[attached to {name}; detach with Ctrl-]]"))
        );
    }
    match attach_until_end(home, peer, id, name)? {
        End::Detached => {
            anstream::eprintln!("{}", ui::paint(DIM, format!("[detached from {name}]")));
            Ok(ExitCode::SUCCESS)
        }
        End::Exited(code) => {
            anstream::eprintln!(
                "{}",
                ui::paint(
                    DIM,
                    format!(
                        "[{name} exited{}]",
                        code.map_or(String::new(), |c| format!(" with code {c}"))
                    )
                )
            );
            Ok(ExitCode::from(code.unwrap_or(0).clamp(0, 255) as u8))
        }
        End::Lost => bail!("the session host went away"),
        End::Refused(why) => bail!("{why}"),
    }
}

/// Attach this terminal to session `id` until it ends or is detached.
fn attach_until_end(home: &Home, peer: Option<&str>, id: &str, name: &str) -> anyhow::Result<End> {
    let sid: loopsy_term::SessionId = id.parse().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cols, rows) = term_size();
    let attached = rt
        .block_on(async {
            match peer {
                // Here: straight to the host's socket, no hop through the daemon.
                None => {
                    let sock =
                        loopsy_term::record::SessionDir::new(&home.sessions(), &sid).socket();
                    Ok(loopsy_term::client::attach(&sock, cols, rows).await?)
                }
                Some(p) => {
                    let (rx, tx) = via_daemon(home, p, id).await?;
                    Ok::<_, anyhow::Error>(
                        loopsy_term::client::attach_on(rx, tx, cols, rows).await?,
                    )
                }
            }
        })
        .with_context(|| format!("cannot attach to session {name}"))?;
    let raw = RawMode::on();
    let outcome = rt.block_on(pump(attached));
    // Nothing the attach started may hold the exit up (a runtime's drop waits for its
    // blocking work without end).
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    drop(raw);
    // Leave the alternate screen a full-screen program may have left us in.
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x1b[?1049l\x1b[?25h");
    let _ = out.flush();
    outcome
}

/// `loopsy exec -t PEER -- cmd…`: the command in a PTY on the peer (a session that is removed
/// once it has ended), attached to this terminal; the exit status is the program's. Ctrl-]
/// detaches and leaves it running as a session.
pub fn exec_tty(
    home: &Home,
    peer: &str,
    command: &[String],
    cwd: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (cmd, rest) = command.split_first().context("give a command after --")?;
    let (cols, rows) = term_size();
    let mut args =
        json!({ "peer": peer, "kind": "custom", "command": cmd, "cols": cols, "rows": rows });
    if !rest.is_empty() {
        args["args"] = json!(rest);
    }
    if let Some(c) = cwd {
        args["cwd"] = json!(c);
    }
    let (info, here) = {
        let s = Session::connect(home)?;
        let me = s.call("loopsy_status", json!({}))?;
        let here = me["name"] == peer || me["peer_id"] == peer;
        (s.call("loopsy_session_start", args)?, here)
    };
    let id = info["id"].as_str().context("no session id")?.to_string();
    let name = info["name"].as_str().unwrap_or(&id).to_string();
    let at = (!here).then_some(peer);
    // It may end between the start and the attach (a quick `pwd`): then it is shown as one
    // that ended before it could be attached.
    // Ok: attached until it ended (or detached); Err: it ended before the attach, with this
    // exit code.
    let attached: Result<End, Option<i32>> = if info["state"] == "running" {
        match attach_until_end(home, at, &id, &name) {
            Ok(end) => Ok(end),
            Err(e) => match exit_of(home, at, &id) {
                Some(code) => Err(code),
                None => return Err(e),
            },
        }
    } else {
        Err(info["exit_code"].as_i64().map(|c| c as i32))
    };
    let code = match attached {
        Err(code) => {
            let s = Session::connect(home)?;
            let out = s.call(
                "loopsy_session_read",
                with_peer(json!({ "id": id, "mode": "scrollback" }), at),
            )?;
            print!("{}", out["text"].as_str().unwrap_or_default());
            code
        }
        Ok(end) => match end {
            End::Exited(code) => code,
            End::Detached => {
                anstream::eprintln!(
                    "{}",
                    ui::paint(
                        DIM,
                        format!(
                            "[detached: it runs on as session {name} on {peer}; `loopsy attach --peer {peer} {name}`]"
                        )
                    )
                );
                return Ok(ExitCode::SUCCESS);
            }
            End::Lost => bail!("the session host on {peer} went away"),
            End::Refused(why) => bail!("{why}"),
        },
    };
    let s = Session::connect(home)?;
    if let Err(e) = s.call("loopsy_session_remove", with_peer(json!({ "id": id }), at)) {
        tracing::debug!("cannot remove the ended session {id}: {e}");
    }
    Ok(ExitCode::from(code.unwrap_or(0).clamp(0, 255) as u8))
}

/// The exit code of session `id` if it has ended (`Some(None)`: ended, no code).
fn exit_of(home: &Home, at: Option<&str>, id: &str) -> Option<Option<i32>> {
    let s = Session::connect(home).ok()?;
    let v = s
        .call("loopsy_session_list", with_peer(json!({}), at))
        .ok()?;
    let r = v["sessions"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)?
        .clone();
    (r["state"] == "exited").then(|| r["exit_code"].as_i64().map(|c| c as i32))
}

enum End {
    Detached,
    Exited(Option<i32>),
    Lost,
    /// The far end ended it and said why.
    Refused(String),
}

async fn pump(a: loopsy_term::client::Attached) -> anyhow::Result<End> {
    let loopsy_term::client::Attached { mut rx, mut tx, .. } = a;
    // stdin is read on a thread (blocking), forwarded through a bounded channel.
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(32);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if in_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Frames are read in their own task: a half-read frame must never be dropped because a
    // keypress won the select below (reading a frame is not cancel-safe).
    let (frame_tx, mut frames) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(async move {
        loop {
            let f = read_frame(&mut rx).await;
            let end = !matches!(f, Ok(Some(_)));
            if frame_tx.send(f).await.is_err() || end {
                break;
            }
        }
    });
    let mut winch = loopsy_sys::signal::resizes()?;
    let mut size = term_size();
    let mut stdout = std::io::stdout();
    let mut stdin_open = true;
    let end = loop {
        tokio::select! {
            f = frames.recv() => match f.unwrap_or(Ok(None))? {
                Some(f) if f.kind == Kind::Output => {
                    stdout.write_all(&f.data)?;
                    stdout.flush()?;
                }
                Some(f) if f.kind == Kind::Exit => {
                    let code = serde_json::from_slice::<Value>(&f.data)
                        .ok()
                        .and_then(|v| v["code"].as_i64())
                        .map(|c| c as i32);
                    break End::Exited(code);
                }
                // The far end's reason for ending it (a revoked capability).
                Some(f) if f.kind == Kind::Reply => {
                    if let Ok(loopsy_term::proto::Reply::Error { message, .. }) =
                        serde_json::from_slice(&f.data)
                    {
                        break End::Refused(message);
                    }
                }
                Some(_) => {}
                None => break End::Lost,
            },
            input = in_rx.recv(), if stdin_open => match input {
                Some(bytes) => {
                    if let Some(i) = bytes.iter().position(|b| *b == DETACH_KEY) {
                        if i > 0 {
                            write_frame(&mut tx, Kind::Input, &bytes[..i]).await?;
                        }
                        break End::Detached;
                    }
                    write_frame(&mut tx, Kind::Input, &bytes).await?;
                }
                None => stdin_open = false,
            },
            _ = winch.recv() => {
                // Where resizes are polled (Windows), most checks find the same size.
                let now = term_size();
                if now != size {
                    size = now;
                    write_frame(&mut tx, Kind::Resize, &encode_resize(now.0, now.1)).await?;
                }
            }
        }
    };
    reader.abort();
    Ok(end)
}

/// The hidden `session-host` subcommand: run one session's host (started by the daemon).
pub fn host(sessions: &std::path::Path, id: &str) -> anyhow::Result<()> {
    let id: loopsy_term::SessionId = id.parse().map_err(anyhow::Error::msg)?;
    loopsy_term::host::run(sessions, &id)?;
    Ok(())
}
