//! The session host: one small process per PTY (the hidden `loopsy session-host`
//! subcommand). It owns the PTY, the scrollback ring and the screen model, serves clients on
//! `sessions/<id>/host.sock`, and outlives the daemon that started it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::SessionId;
use crate::keys::{bracketed, key_bytes};
use crate::proto::{
    Frame, HOST_PROTO, Kind, MAX_FRAME, MAX_READ, MAX_WRITE, ReadMode, ReadOut, Reply, Request,
    check_size, decode_resize, decode_skip, page, read_frame, write_frame, write_json,
};
use crate::record::{
    SessionDir, SessionInfo, SessionSpec, SessionState, load_json, now_ms, save_json, write_private,
};
use crate::ring::Ring;

mod spare;

/// Frames queued per attached client before it counts as stalled.
const CLIENT_QUEUE: usize = 64;
/// Input chunks queued for the PTY before writers are told to slow down.
const INPUT_QUEUE: usize = 256;
/// Rows of screen-model scrollback (the byte ring is the real scrollback).
const MODEL_SCROLLBACK: usize = 0;
/// Diffs a skipping client gets in a row before a whole screen again (which repairs anything
/// the client's terminal drew differently from the screen model).
const MAX_DIFFS: u32 = 30;

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

struct Client {
    id: u64,
    tx: mpsc::Sender<Frame>,
    lagging: bool,
    /// It sent `Skip`: its fresh screens go as `Screen` frames, so it can tell them apart
    /// from the stale output it drops.
    screens: bool,
    /// Set by `Skip` until its fresh screen goes out: the client's writer drops the output
    /// still queued ahead of that screen instead of sending it (it would be dropped at the
    /// other end anyway, after costing both sides a copy).
    discard: Arc<AtomicBool>,
    /// The screen its last `Screen` frame showed, and how many diffs in a row it has had.
    shown: Option<(vt100::Screen, u32)>,
    /// Its last `Skip` said it shows exactly `shown`: the next `Screen` may be a diff.
    at_shown: bool,
    /// `Screen` frames queued to it so far.
    screens_out: u64,
}

impl Client {
    fn screen_kind(&self) -> Kind {
        if self.screens {
            Kind::Screen
        } else {
            Kind::Output
        }
    }
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
    /// What turns `prev` (shown on a client, nothing after it) into the current screen, or
    /// `None` when only a whole screen will do (the size or the alternate screen changed).
    fn diff(&self, prev: &vt100::Screen) -> Option<Vec<u8>> {
        let s = self.parser.screen();
        if s.size() != prev.size() || s.alternate_screen() != prev.alternate_screen() {
            return None;
        }
        let mut v = s.state_diff(prev).into_bytes();
        if v.is_empty() {
            // Never an empty frame: the client acknowledges what it painted, and the daemon
            // waits for that before the next screen. Re-stating the cursor's visibility
            // changes nothing.
            v.extend_from_slice(if s.hide_cursor() {
                b"\x1b[?25l"
            } else {
                b"\x1b[?25h"
            });
        }
        Some(v)
    }

    fn snapshot(&self) -> Vec<u8> {
        let s = self.parser.screen();
        let mut v = if s.alternate_screen() {
            b"\x1b[?1049h".to_vec()
        } else {
            b"\x1b[?1049l".to_vec()
        };
        v.extend_from_slice(s.state_formatted().as_bytes());
        v
    }

    fn output(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
        self.ring.push(bytes);
        self.info.output_bytes = self.ring.end();
        self.info.last_activity_ms = now_ms();
        self.clients.retain_mut(|c| {
            if c.lagging {
                return true;
            }
            match c.tx.try_send(Frame {
                kind: Kind::Output,
                data: bytes.to_vec(),
            }) {
                Ok(()) => true,
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

    /// Give stalled clients that drained their queue a fresh snapshot (a client that asked
    /// for one with `Skip` gets it as soon as it fits: its writer drops the output ahead of
    /// it).
    fn resync(&mut self) {
        let ready = |c: &Client| {
            c.lagging
                && c.tx.capacity()
                    >= if c.discard.load(Ordering::Acquire) {
                        1
                    } else {
                        CLIENT_QUEUE / 2
                    }
        };
        if !self.clients.iter().any(ready) {
            return;
        }
        let mut snap = None;
        let mut clients = std::mem::take(&mut self.clients);
        for c in clients.iter_mut() {
            if !ready(c) {
                continue;
            }
            let diff = match &c.shown {
                Some((prev, n)) if c.at_shown && *n < MAX_DIFFS => {
                    self.diff(prev).map(|d| (d, n + 1))
                }
                _ => None,
            };
            let (data, diffs) = match diff {
                Some(d) => d,
                None => (snap.get_or_insert_with(|| self.snapshot()).clone(), 0),
            };
            // (The writer sends a screen larger than a frame as several.)
            let frames = data.len().div_ceil(MAX_FRAME as usize).max(1) as u64;
            if c.tx
                .try_send(Frame {
                    kind: c.screen_kind(),
                    data,
                })
                .is_ok()
            {
                if c.screens {
                    c.shown = Some((self.parser.screen().clone(), diffs));
                    c.screens_out += frames;
                }
                c.at_shown = false;
                c.lagging = false;
            }
        }
        self.clients = clients;
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
    let _ = nix::unistd::setsid();
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
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
    }
    save_json(&dir.record(), &info)?;

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let expiry = spare::expire(shared.clone(), spec.spare_s);
    tokio::pin!(expiry);
    let code = loop {
        tokio::select! {
            Some(bytes) = out_rx.recv() => lock(&shared).output(&bytes),
            code = &mut exit_rx => break code.ok().flatten(),
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(client(stream, shared.clone(), in_tx.clone()));
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
    let _ = std::fs::remove_file(&sock);
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
    let Ok(pid) = i32::try_from(pid) else {
        return Reply::error("internal", "pid out of range");
    };
    // portable-pty makes the program a session leader, so its pid is its process group.
    let _ = killpg(Pid::from_raw(pid), Signal::SIGHUP);
    let _ = killpg(Pid::from_raw(pid), Signal::SIGCONT);
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !lock(&shared).exited {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
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

async fn client(stream: UnixStream, shared: Arc<Mutex<Shared>>, input: SyncSender<Vec<u8>>) {
    let (mut rd, mut wr) = stream.into_split();
    let first = match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd)).await {
        Ok(Ok(Some(f))) if f.kind == Kind::Request => f,
        Ok(Err(e)) => {
            let _ = write_json(
                &mut wr,
                Kind::Reply,
                &Reply::error("invalid_arguments", e.to_string()),
            )
            .await;
            return;
        }
        _ => return,
    };
    let req: Request = match serde_json::from_slice(&first.data) {
        Ok(r) => r,
        Err(e) => {
            let _ = write_json(
                &mut wr,
                Kind::Reply,
                &Reply::error("invalid_arguments", e.to_string()),
            )
            .await;
            return;
        }
    };
    let Request::Attach { cols, rows } = req else {
        let reply = handle(&shared, &input, req);
        let _ = write_json(&mut wr, Kind::Reply, &reply).await;
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Frame>(CLIENT_QUEUE);
    let discard = Arc::new(AtomicBool::new(false));
    let registered = (|| {
        let mut s = lock(&shared);
        s.resize(cols, rows)?;
        let info = s.info.clone();
        let snap = s.snapshot();
        let id = s.next_client;
        s.next_client += 1;
        // The reply and the first screen go through the queue, so nothing overtakes them.
        let reply = serde_json::to_vec(&Reply::Info(info)).unwrap_or_default();
        let _ = tx.try_send(Frame {
            kind: Kind::Reply,
            data: reply,
        });
        let _ = tx.try_send(Frame {
            kind: Kind::Output,
            data: snap,
        });
        s.clients.push(Client {
            id,
            tx,
            lagging: false,
            screens: false,
            discard: discard.clone(),
            shown: None,
            at_shown: false,
            screens_out: 0,
        });
        s.info.clients = s.clients.len() as u32;
        Ok::<u64, String>(id)
    })();
    let id = match registered {
        Ok(id) => id,
        Err(e) => {
            let _ = write_json(&mut wr, Kind::Reply, &Reply::error("invalid_arguments", e)).await;
            return;
        }
    };
    let dropping = discard.clone();
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            match f.kind {
                Kind::Output if dropping.load(Ordering::Acquire) => continue,
                Kind::Screen => dropping.store(false, Ordering::Release),
                _ => {}
            }
            // Output is a byte stream: a snapshot larger than a frame goes in several.
            let mut failed = false;
            for part in f.data.chunks(MAX_FRAME as usize) {
                if write_frame(&mut wr, f.kind, part).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                break;
            }
            if f.kind == Kind::Exit {
                break;
            }
        }
    });
    while let Ok(Some(f)) = read_frame(&mut rd).await {
        match f.kind {
            Kind::Input => {
                lock(&shared).info.last_activity_ms = now_ms();
                // Hold this client back (not the PTY) while the program is not reading.
                // (At most INPUT_QUEUE chunks of MAX_WRITE bytes wait for the PTY.)
                for part in f.data.chunks(MAX_WRITE) {
                    let mut bytes = part.to_vec();
                    loop {
                        match input.try_send(bytes) {
                            Ok(()) => break,
                            Err(TrySendError::Full(b)) => {
                                bytes = b;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                }
            }
            Kind::Resize => {
                if let Some((c, r)) = decode_resize(&f.data) {
                    let _ = lock(&shared).resize(c, r);
                }
            }
            Kind::Skip => {
                // Queue nothing more of the old output for it; a fresh screen goes as soon
                // as its queue has room (now, on the next output, or on the next tick).
                let mut s = lock(&shared);
                if let Some(c) = s.clients.iter_mut().find(|c| c.id == id) {
                    c.lagging = true;
                    c.screens = true;
                    c.discard.store(true, Ordering::Release);
                    // (Only if no other screen went to it since the one it shows.)
                    c.at_shown = decode_skip(&f.data) == Some(c.screens_out);
                }
                s.resync();
            }
            _ => {}
        }
    }
    {
        let mut s = lock(&shared);
        s.clients.retain(|c| c.id != id);
        s.info.clients = s.clients.len() as u32;
    }
    writer.abort();
}
