//! The session host: one small process per PTY (the hidden `loopsy session-host`
//! subcommand). It owns the PTY, the scrollback ring and the screen model, serves clients on
//! `sessions/<id>/host.sock`, and outlives the daemon that started it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use loopsy_sys::ipc::Listener;
use loopsy_sys::process::Tree;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::sync::mpsc;

use crate::SessionId;
use crate::keys::{bracketed, key_bytes};
use crate::proto::{
    Frame, HOST_PROTO, Kind, MAX_READ, MAX_WRITE, ReadMode, ReadOut, Reply, Request, check_size,
    page,
};
use crate::record::{
    SessionDir, SessionInfo, SessionSpec, SessionState, load_json, now_ms, save_json, write_private,
};
use crate::ring::Ring;

mod client;
mod screens;
mod spare;

use screens::Client;

/// Frames queued per attached client at most. Each PTY read is a frame, and a program that
/// prints line by line makes many of a few bytes each: counted in frames, a client whose
/// reader was off the CPU for a moment (a loaded machine) was "stalled" after 64 short lines
/// and skipped to a fresh screen. So a client is stalled by [`CLIENT_BYTES`]; this only bounds
/// the frames' own overhead.
const CLIENT_QUEUE: usize = 4096;
/// Output bytes queued for one attached client before it counts as stalled (and is skipped
/// forward to a fresh screen once it drains).
const CLIENT_BYTES: usize = 256 * 1024;
/// Input chunks queued for the PTY before writers are told to slow down.
const INPUT_QUEUE: usize = 256;
/// Rows of screen-model scrollback (the byte ring is the real scrollback).
const MODEL_SCROLLBACK: usize = 0;

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Files or sockets.
    #[error("session host: {0}")]
    Io(#[from] std::io::Error),
    /// The PTY or the program.
    #[error("session host: cannot start the program: {0}")]
    Spawn(String),
}

struct Shared {
    parser: vt100::Parser,
    ring: Ring,
    clients: Vec<Client>,
    next_client: u64,
    info: SessionInfo,
    master: Box<dyn MasterPty + Send>,
    pid: Option<u32>,
    exited: bool,
    /// `record.json`, rewritten when a spare is claimed.
    record: std::path::PathBuf,
}

impl Shared {
    fn output(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
        self.ring.push(bytes);
        self.info.output_bytes = self.ring.end();
        self.info.last_activity_ms = now_ms();
        self.clients.retain_mut(|c| {
            if c.lagging {
                return true;
            }
            if c.queued.load(std::sync::atomic::Ordering::Acquire) + bytes.len() > CLIENT_BYTES {
                // Never block the PTY for one slow client: skip it forward later.
                c.lagging = true;
                return true;
            }
            match c.tx.try_send(Frame {
                kind: Kind::Output,
                data: bytes.to_vec(),
            }) {
                Ok(()) => {
                    c.queued
                        .fetch_add(bytes.len(), std::sync::atomic::Ordering::AcqRel);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Never block the PTY for one slow client: skip it forward later.
                    c.lagging = true;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.info.clients = self.clients.len() as u32;
        // A skipped client that has caught up resumes now, not at the next tick: a busy
        // terminal would otherwise pause a merely slower client for up to a tick each time.
        // (After the others got `bytes`: its fresh screen already shows them.)
        self.resync();
    }

    fn resize(&mut self, cols: u16, rows: u16) -> Result<(), String> {
        check_size(cols, rows)?;
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| e.to_string())?;
        if let (Some(r), Some(c)) = (
            std::num::NonZeroU16::new(rows),
            std::num::NonZeroU16::new(cols),
        ) {
            self.parser.set_size(r, c);
        }
        self.info.cols = cols;
        self.info.rows = rows;
        Ok(())
    }

    fn read(&self, mode: ReadMode, cursor: Option<u64>) -> Reply {
        let s = self.parser.screen();
        // Copy only the page asked for, not the whole ring, while the output path waits.
        let from = match mode {
            ReadMode::Screen => self.ring.end(),
            ReadMode::Scrollback => self
                .ring
                .end()
                .saturating_sub(MAX_READ as u64)
                .max(self.ring.start()),
            ReadMode::Since => cursor.unwrap_or(0),
        };
        let slice = self.ring.since_max(from, MAX_READ + 4);
        let (text, mut gap, more, next) = match mode {
            ReadMode::Screen => (s.contents(), false, false, self.ring.end()),
            ReadMode::Scrollback => {
                let (t, _, _, next) = page(
                    &slice.bytes,
                    slice.start,
                    ReadMode::Since,
                    Some(slice.start),
                );
                (t, slice.start > self.ring.start(), false, next)
            }
            ReadMode::Since => {
                let (t, _, more, next) = page(&slice.bytes, slice.start, mode, Some(slice.start));
                (t, false, more || next < self.ring.end(), next)
            }
        };
        gap |= slice.gap && mode == ReadMode::Since;
        Reply::Text(ReadOut {
            text,
            cursor: next.to_string(),
            gap,
            more,
            cursor_pos: s.cursor_position(),
            alternate_screen: s.alternate_screen(),
        })
    }

    fn input_bytes(&self, text: &str, keys: &[String], paste: bool) -> Result<Vec<u8>, String> {
        let s = self.parser.screen();
        let mut v = if paste && s.bracketed_paste() {
            bracketed(text)
        } else {
            text.as_bytes().to_vec()
        };
        for k in keys {
            v.extend(key_bytes(k, s.application_cursor()).map_err(|e| e.to_string())?);
        }
        if v.len() > MAX_WRITE {
            return Err(format!(
                "write of {} bytes exceeds {MAX_WRITE}; split it",
                v.len()
            ));
        }
        Ok(v)
    }
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run the host for `sessions_root/<id>` until its program exits (blocking; the process's
/// main). Detaches into its own session first so a dying daemon takes nothing with it.
pub fn run(sessions_root: &Path, id: &SessionId) -> Result<(), HostError> {
    loopsy_sys::process::new_session();
    let dir = SessionDir::new(sessions_root, id);
    let spec: SessionSpec = load_json(&dir.spec())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(dir, spec))
}

async fn serve(dir: SessionDir, spec: SessionSpec) -> Result<(), HostError> {
    check_size(spec.cols, spec.rows).map_err(HostError::Spawn)?;
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: spec.rows,
            cols: spec.cols,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| HostError::Spawn(e.to_string()))?;
    let mut cmd = CommandBuilder::new(&spec.program);
    cmd.args(&spec.args);
    cmd.cwd(&spec.cwd);
    cmd.env("TERM", "xterm-256color");
    cmd.env("LOOPSY_SESSION", spec.id.as_str());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = pair
        .slave
        .spawn_command(cmd)
        .map_err(|e| HostError::Spawn(format!("{}: {e}", spec.program.display())))?;
    drop(pair.slave);
    let pid = child.process_id();
    let mut reader = pair
        .master
        .try_clone_reader()
        .map_err(|e| HostError::Spawn(e.to_string()))?;
    let mut writer = pair
        .master
        .take_writer()
        .map_err(|e| HostError::Spawn(e.to_string()))?;

    // A host lives as long as its program: what only starting it ran goes back (see
    // loopsy_sys::memory), once a minute.
    tokio::spawn(loopsy_sys::memory::keep_code_pages_released(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(60),
    ));
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (in_tx, in_rx) = sync_channel::<Vec<u8>>(INPUT_QUEUE);
    std::thread::spawn(move || {
        while let Ok(b) = in_rx.recv() {
            if writer.write_all(&b).and_then(|()| writer.flush()).is_err() {
                break;
            }
        }
    });
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel::<Option<i32>>();
    std::thread::spawn(move || {
        let code = child.wait().ok().and_then(|st| {
            if st.signal().is_some() {
                None
            } else {
                i32::try_from(st.exit_code()).ok()
            }
        });
        let _ = exit_tx.send(code);
    });

    let now = now_ms();
    let info = SessionInfo {
        id: spec.id.as_str().to_string(),
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        command: std::iter::once(spec.program.display().to_string())
            .chain(spec.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        cwd: spec.cwd.display().to_string(),
        cols: spec.cols,
        rows: spec.rows,
        state: SessionState::Running,
        exit_code: None,
        created_ms: now,
        last_activity_ms: now,
        ended_ms: None,
        clients: 0,
        output_bytes: 0,
        host_pid: std::process::id(),
        proto: HOST_PROTO,
        spare: spec.spare_s.is_some(),
    };
    let rows =
        std::num::NonZeroU16::new(spec.rows).ok_or_else(|| HostError::Spawn("rows".into()))?;
    let cols =
        std::num::NonZeroU16::new(spec.cols).ok_or_else(|| HostError::Spawn("cols".into()))?;
    let shared = Arc::new(Mutex::new(Shared {
        parser: vt100::Parser::new(rows, cols, MODEL_SCROLLBACK),
        ring: Ring::new(spec.scrollback_bytes),
        clients: Vec::new(),
        next_client: 0,
        info: info.clone(),
        master: pair.master,
        pid,
        exited: false,
        record: dir.record(),
    }));

    let sock = dir.socket();
    let _ = loopsy_sys::ipc::remove(&sock);
    let mut listener = Listener::bind(&sock).await?;
    save_json(&dir.record(), &info)?;

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let expiry = spare::expire(shared.clone(), spec.spare_s);
    tokio::pin!(expiry);
    let code = loop {
        tokio::select! {
            Some(bytes) = out_rx.recv() => lock(&shared).output(&bytes),
            code = &mut exit_rx => break code.ok().flatten(),
            accepted = listener.accept() => {
                if let Ok(stream) = accepted {
                    tokio::spawn(client::client(stream, shared.clone(), in_tx.clone()));
                }
            }
            _ = tick.tick() => lock(&shared).resync(),
            () = &mut expiry => {}
        }
    };
    if spare::ended_unclaimed(&shared) {
        drop(listener);
        let _ = std::fs::remove_dir_all(dir.path());
        return Ok(());
    }
    // The program is gone: take what it printed last (its PTY may stay open in a
    // background child, so only briefly), then record the end.
    let drain = async {
        while let Some(bytes) = out_rx.recv().await {
            lock(&shared).output(&bytes);
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    let (info, screen, ring, snapshot, clients) = {
        let mut s = lock(&shared);
        s.exited = true;
        s.info.state = SessionState::Exited;
        s.info.exit_code = code;
        s.info.ended_ms = Some(now_ms());
        // The record outlives the host: nobody is attached to an ended session.
        s.info.clients = 0;
        let clients: Vec<(mpsc::Sender<Frame>, bool, Kind)> = s
            .clients
            .iter()
            .map(|c| (c.tx.clone(), c.lagging, c.screen_kind()))
            .collect();
        (
            s.info.clone(),
            s.parser.screen().contents(),
            s.ring.all(),
            s.snapshot(),
            clients,
        )
    };
    // Record the end first and stop answering on the socket, so requests from now on see an
    // exited session at once instead of waiting on a host that is leaving.
    write_private(&dir.final_screen(), screen.as_bytes())?;
    write_private(&dir.final_scrollback(), &ring)?;
    save_json(&dir.record(), &info)?;
    drop(listener);
    let _ = loopsy_sys::ipc::remove(&sock);
    // Every client gets the final screen (a skipped-forward one would otherwise miss the
    // last output) and then the exit, all within one short deadline.
    let payload = serde_json::to_vec(&serde_json::json!({ "code": code })).unwrap_or_default();
    let sends = clients.into_iter().map(|(tx, lagging, kind)| {
        let (snapshot, payload) = (snapshot.clone(), payload.clone());
        async move {
            if lagging
                && tx
                    .send(Frame {
                        kind,
                        data: snapshot,
                    })
                    .await
                    .is_err()
            {
                return;
            }
            let _ = tx
                .send(Frame {
                    kind: Kind::Exit,
                    data: payload,
                })
                .await;
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), join_all(sends)).await;
    // Let attached clients receive the exit frame.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Run futures concurrently to completion.
async fn join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

fn stop(shared: &Arc<Mutex<Shared>>) -> Reply {
    let Some(pid) = lock(shared).pid else {
        return Reply::error("unavailable", "the program's pid is unknown");
    };
    // portable-pty makes the program a session leader, so its pid is its process group.
    let tree = match Tree::of_leader(pid) {
        Ok(t) => t,
        Err(e) => return Reply::error("unavailable", format!("cannot reach the program: {e}")),
    };
    tree.hang_up();
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !lock(&shared).exited {
            tree.kill();
        }
    });
    Reply::Ok
}

fn queue_input(input: &SyncSender<Vec<u8>>, bytes: Vec<u8>) -> Reply {
    match input.try_send(bytes) {
        Ok(()) => Reply::Ok,
        Err(TrySendError::Full(_)) => Reply::error(
            "unavailable",
            "the program is not reading its input; try again later",
        ),
        Err(TrySendError::Disconnected(_)) => Reply::error("unavailable", "the program has exited"),
    }
}

fn handle(shared: &Arc<Mutex<Shared>>, input: &SyncSender<Vec<u8>>, req: Request) -> Reply {
    match req {
        Request::Info => Reply::Info(lock(shared).info.clone()),
        Request::Read { mode, cursor } => lock(shared).read(mode, cursor),
        Request::Write { text, keys, paste } => {
            let bytes = {
                let mut s = lock(shared);
                s.info.last_activity_ms = now_ms();
                s.input_bytes(&text, &keys, paste)
            };
            match bytes {
                Ok(b) => queue_input(input, b),
                Err(e) => Reply::error("invalid_arguments", e),
            }
        }
        Request::Resize { cols, rows } => match lock(shared).resize(cols, rows) {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::error("invalid_arguments", e),
        },
        Request::Stop => stop(shared),
        Request::Claim { name, cols, rows } => {
            let mut s = lock(shared);
            let record = s.record.clone();
            s.claim(name, cols, rows, &record)
        }
        Request::Attach { .. } => Reply::error("internal", "attach is handled elsewhere"),
    }
}
