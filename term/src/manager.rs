//! The daemon's view of this machine's sessions: start hosts, find them again (also after a
//! daemon restart: the records and sockets under `sessions/` are the registry), and forward
//! reads, writes and stops to them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::proto::{ReadMode, ReadOut, Reply, Request, check_size, page};
use crate::record::{SessionDir, SessionInfo, SessionSpec, SessionState, load_json, save_json};
use crate::{SessionId, client};

mod spare;

/// How long a new host may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session call failed (each maps to a stable tool error code).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bad id, size, key or argument.
    #[error("{0}")]
    Invalid(String),
    /// No such session.
    #[error("no session {0:?} on this machine; loopsy_session_list shows the ids")]
    NotFound(String),
    /// The session cannot do that now (exited, not reading, host gone).
    #[error("{0}")]
    Unavailable(String),
    /// Files or sockets failed.
    #[error("sessions: {0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    /// The stable code for tool errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_arguments",
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Io(_) => "internal",
        }
    }
}

fn from_reply(r: Reply) -> Result<Reply, SessionError> {
    match r {
        Reply::Error { code, message } => Err(match code.as_str() {
            "invalid_arguments" => SessionError::Invalid(message),
            "not_found" => SessionError::NotFound(message),
            _ => SessionError::Unavailable(message),
        }),
        other => Ok(other),
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// Friendly name (default: kind-xxxx).
    pub name: Option<String>,
    /// Kind name.
    pub kind: String,
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Working directory (default: home).
    pub cwd: PathBuf,
    /// Extra environment.
    pub env: std::collections::BTreeMap<String, String>,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Default)]
pub struct WaitFor {
    /// Text (a regular expression) on the screen or in new output.
    pub pattern: Option<regex::Regex>,
    /// The program's exit.
    pub exit: bool,
    /// This long with no output.
    pub idle: Option<Duration>,
}

/// How a wait ended.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct WaitOut {
    /// `pattern`, `exit`, `idle` or `timeout`.
    pub reason: String,
    /// The matched text, for `pattern`.
    pub matched: Option<String>,
    /// The session now.
    pub session: SessionInfo,
    /// The screen now.
    pub screen: String,
}

/// This machine's sessions.
#[derive(Debug, Clone)]
pub struct Manager {
    root: PathBuf,
    exe: PathBuf,
    scrollback_bytes: usize,
    approvals: crate::Approvals,
    /// How long a spare shell waits to be claimed (None: no spares).
    spare_s: Option<u64>,
    /// Held while a spare is looked for or started, so there is one at a time.
    spare_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

use loopsy_sys::process::alive;

impl Manager {
    /// Sessions under `root` (`<home>/sessions`), hosts run as `exe session-host`.
    pub fn new(root: impl Into<PathBuf>, exe: impl Into<PathBuf>, scrollback_bytes: usize) -> Self {
        Self {
            root: root.into(),
            exe: exe.into(),
            scrollback_bytes,
            approvals: Default::default(),
            spare_s: None,
            spare_lock: Default::default(),
        }
    }

    /// Keep a spare ready after [`prewarm`](Self::prewarm), waiting `secs` to be claimed
    /// (`sessions.spare_shell_s`; 0: never).
    pub fn with_spares(mut self, secs: u64) -> Self {
        self.spare_s = (secs > 0).then_some(secs);
        self
    }

    /// With the agent kinds that may auto-approve without asking (`sessions.auto_approve`).
    pub fn with_auto_approve(mut self, kinds: Vec<String>) -> Self {
        self.approvals = crate::Approvals::new(kinds);
        self
    }

    /// Auto-approve confirmations.
    pub fn approvals(&self) -> &crate::Approvals {
        &self.approvals
    }

    /// The sessions directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every session, newest first: live ones asked directly, ended ones from their record.
    pub async fn list(&self) -> Vec<SessionInfo> {
        let mut all = self.all().await;
        all.retain(|s| !s.spare);
        all
    }

    /// [`list`](Self::list) with the spares.
    async fn all(&self) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for e in rd.flatten() {
            let Ok(id) = e.file_name().to_string_lossy().parse::<SessionId>() else {
                continue;
            };
            if let Ok(info) = self.info_of(&id).await {
                out.push(info);
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
        out
    }

    async fn info_of(&self, id: &SessionId) -> Result<SessionInfo, SessionError> {
        let dir = SessionDir::new(&self.root, id);
        let asked = client::request(&dir.socket(), &Request::Info).await;
        if let Ok(Reply::Info(i)) = asked {
            return Ok(i);
        }
        let mut rec: SessionInfo = load_json(&dir.record())
            .map_err(|_| SessionError::NotFound(id.as_str().to_string()))?;
        // No socket, or nobody behind it: the host is gone (a pid alone may have been reused
        // after a reboot). A slow host (timeout) is still counted as running.
        let host_gone = matches!(&asked, Err(e) if matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ));
        if matches!(rec.state, SessionState::Running | SessionState::Starting)
            && (host_gone || !alive(rec.host_pid))
        {
            rec.state = SessionState::Lost;
        }
        Ok(rec)
    }

    /// Find a session by id, or by name (a live one first).
    pub async fn find(&self, id_or_name: &str) -> Result<SessionInfo, SessionError> {
        if let Ok(id) = id_or_name.parse::<SessionId>()
            && let Ok(i) = self.info_of(&id).await
            && !i.spare
        {
            return Ok(i);
        }
        let all = self.list().await;
        all.iter()
            .find(|s| s.name == id_or_name && s.state == SessionState::Running)
            .or_else(|| all.iter().find(|s| s.name == id_or_name))
            .cloned()
            .ok_or_else(|| match id_or_name.parse::<SessionId>() {
                Ok(_) => SessionError::NotFound(id_or_name.to_string()),
                Err(e) => SessionError::Invalid(e.to_string()),
            })
    }

    fn dir(&self, info: &SessionInfo) -> Result<SessionDir, SessionError> {
        let id: SessionId = info
            .id
            .parse()
            .map_err(|e: crate::SessionIdError| SessionError::Invalid(e.to_string()))?;
        Ok(SessionDir::new(&self.root, &id))
    }

    /// The host socket of a running session.
    pub async fn socket(&self, id_or_name: &str) -> Result<(SessionInfo, PathBuf), SessionError> {
        let info = self.find(id_or_name).await?;
        if info.state != SessionState::Running {
            return Err(SessionError::Unavailable(format!(
                "session {} has {}; start a new one",
                info.name,
                match info.state {
                    SessionState::Exited => format!(
                        "exited (code {})",
                        info.exit_code
                            .map_or("none: killed by a signal".into(), |c| c.to_string())
                    ),
                    _ => "lost its host".into(),
                }
            )));
        }
        let sock = self.dir(&info)?.socket();
        Ok((info, sock))
    }

    /// Start a session and wait until its host answers. A matching spare is taken if one is
    /// ready (and another made ready for next time).
    pub async fn start(&self, s: StartSpec) -> Result<SessionInfo, SessionError> {
        check_size(s.cols, s.rows).map_err(SessionError::Invalid)?;
        if !s.cwd.is_dir() {
            return Err(SessionError::Invalid(format!(
                "working directory {} does not exist",
                s.cwd.display()
            )));
        }
        if let Some(info) = self.claim_spare(&s).await? {
            return Ok(info);
        }
        let id = SessionId::random();
        let name = self.free_name(&s, &id).await?;
        self.spawn(id, name, s, None).await
    }

    /// `s`'s name (default: kind-xxxx from `id`), checked and not taken by a live session.
    async fn free_name(&self, s: &StartSpec, id: &SessionId) -> Result<String, SessionError> {
        let name = s
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("{}-{}", s.kind, &id.as_str()[..4]));
        if name.len() > 64 || name.chars().any(char::is_control) {
            return Err(SessionError::Invalid(
                "name must be at most 64 printable characters".into(),
            ));
        }
        if self
            .list()
            .await
            .iter()
            .any(|x| x.name == name && x.state == SessionState::Running)
        {
            return Err(SessionError::Invalid(format!(
                "a running session is already named {name:?}; pick another name"
            )));
        }
        Ok(name)
    }

    /// Start a host for `s` (a spare when `spare_s` is set) and wait until it answers.
    async fn spawn(
        &self,
        id: SessionId,
        name: String,
        s: StartSpec,
        spare_s: Option<u64>,
    ) -> Result<SessionInfo, SessionError> {
        let dir = SessionDir::new(&self.root, &id);
        loopsy_sys::ipc::check_path(&dir.socket()).map_err(SessionError::Invalid)?;
        loopsy_sys::fs::ensure_private_dir(dir.path())?;
        let spec = SessionSpec {
            id: id.clone(),
            name,
            kind: s.kind,
            program: s.program,
            args: s.args,
            cwd: s.cwd,
            env: s.env,
            cols: s.cols,
            rows: s.rows,
            scrollback_bytes: self.scrollback_bytes,
            spare_s,
        };
        save_json(&dir.spec(), &spec)?;
        let log = std::fs::File::create(dir.log())?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        loopsy_sys::process::detach(cmd.as_std_mut(), loopsy_sys::process::Detach::Session);
        let mut child = cmd
            .arg("session-host")
            .arg("--sessions")
            .arg(&self.root)
            .arg("--id")
            .arg(id.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let t0 = Instant::now();
        loop {
            if let Ok(Reply::Info(i)) = client::request(&dir.socket(), &Request::Info).await {
                // Reap the host when it ends (it is our child until we exit).
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Ok(i);
            }
            // A program that ends at once may end before the first answer: its host has
            // recorded the end, and the session started (and exited) all the same.
            if let Ok(i) = load_json::<SessionInfo>(&dir.record())
                && i.state == SessionState::Exited
            {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Ok(i);
            }
            if let Ok(Some(_)) = child.try_wait() {
                // The end may have been recorded just before the host left.
                if let Ok(i) = load_json::<SessionInfo>(&dir.record())
                    && i.state == SessionState::Exited
                {
                    return Ok(i);
                }
                let why = std::fs::read_to_string(dir.log()).unwrap_or_default();
                let _ = std::fs::remove_dir_all(dir.path());
                return Err(SessionError::Invalid(format!(
                    "the session did not start: {}",
                    why.trim()
                )));
            }
            if t0.elapsed() > START_TIMEOUT {
                let _ = child.kill().await;
                return Err(SessionError::Unavailable(
                    "the session host did not come up within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ask(&self, id_or_name: &str, req: Request) -> Result<Reply, SessionError> {
        let (_, sock) = self.socket(id_or_name).await?;
        let r = client::request(&sock, &req)
            .await
            .map_err(|e| SessionError::Unavailable(format!("the session host: {e}")))?;
        from_reply(r)
    }

    /// Read a session as text (an ended one from what its host saved).
    pub async fn read(
        &self,
        id_or_name: &str,
        mode: ReadMode,
        cursor: Option<u64>,
    ) -> Result<ReadOut, SessionError> {
        let mut info = self.find(id_or_name).await?;
        if info.state == SessionState::Running {
            match self.ask(&info.id, Request::Read { mode, cursor }).await {
                Ok(Reply::Text(t)) => return Ok(t),
                Ok(other) => {
                    return Err(SessionError::Unavailable(format!("unexpected {other:?}")));
                }
                // The program may have just ended (its host closes as it leaves): read
                // what the host saved instead.
                Err(e) => {
                    info = self.find(&info.id).await?;
                    if info.state == SessionState::Running {
                        return Err(e);
                    }
                }
            }
        }
        let dir = self.dir(&info)?;
        if info.state == SessionState::Lost {
            return Err(SessionError::Unavailable(format!(
                "session {} lost its host (crash or reboot) before recording its output; remove it",
                info.name
            )));
        }
        // An ended session: its saved ring (which started at `end - len`) and final screen.
        let raw = std::fs::read(dir.final_scrollback()).unwrap_or_default();
        let end = info.output_bytes.max(raw.len() as u64);
        let start = end - raw.len() as u64;
        let (text, gap, more, next) = match mode {
            ReadMode::Screen => (
                std::fs::read_to_string(dir.final_screen()).unwrap_or_default(),
                false,
                false,
                end,
            ),
            _ => page(&raw, start, mode, cursor),
        };
        Ok(ReadOut {
            text,
            cursor: next.to_string(),
            gap,
            more,
            cursor_pos: (0, 0),
            alternate_screen: false,
        })
    }

    /// Type into a session.
    pub async fn write(
        &self,
        id_or_name: &str,
        text: String,
        keys: Vec<String>,
        paste: bool,
    ) -> Result<(), SessionError> {
        if text.len() > crate::proto::MAX_WRITE {
            return Err(SessionError::Invalid(format!(
                "write of {} bytes exceeds {}; split it",
                text.len(),
                crate::proto::MAX_WRITE
            )));
        }
        self.ask(id_or_name, Request::Write { text, keys, paste })
            .await
            .map(|_| ())
    }

    /// Resize a session.
    pub async fn resize(&self, id_or_name: &str, cols: u16, rows: u16) -> Result<(), SessionError> {
        check_size(cols, rows).map_err(SessionError::Invalid)?;
        self.ask(id_or_name, Request::Resize { cols, rows })
            .await
            .map(|_| ())
    }

    /// End a session's program (SIGHUP, then SIGKILL after 3 s) and wait for it to exit.
    pub async fn stop(&self, id_or_name: &str) -> Result<SessionInfo, SessionError> {
        let info = self.find(id_or_name).await?;
        if info.state != SessionState::Running {
            return Ok(info);
        }
        self.ask(&info.id, Request::Stop).await?;
        let t0 = Instant::now();
        loop {
            let now = self.find(&info.id).await?;
            if now.state != SessionState::Running || t0.elapsed() > Duration::from_secs(8) {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forget a session (stopping it first if it runs). The id is validated before any path
    /// is built from it, so `../..` never reaches the file system.
    pub async fn remove(&self, id_or_name: &str) -> Result<SessionInfo, SessionError> {
        let found = self.find(id_or_name).await?;
        let sid: SessionId = found
            .id
            .parse()
            .map_err(|e: crate::SessionIdError| SessionError::Invalid(e.to_string()))?;
        let info = self.info_of(&sid).await?;
        let info = if info.state == SessionState::Running {
            self.stop(sid.as_str()).await?
        } else {
            info
        };
        if info.state == SessionState::Running {
            return Err(SessionError::Unavailable(
                "the session did not stop; try again".into(),
            ));
        }
        let dir = SessionDir::new(&self.root, &sid);
        std::fs::remove_dir_all(dir.path())?;
        Ok(info)
    }

    /// Wait for a pattern, the exit, or quiet, up to `timeout`.
    pub async fn wait(
        &self,
        id_or_name: &str,
        what: &WaitFor,
        timeout: Duration,
    ) -> Result<WaitOut, SessionError> {
        let first = self.find(id_or_name).await?;
        let id = first.id.clone();
        let t0 = Instant::now();
        // New output is searched from here on, plus whatever is on the screen now.
        let mut cursor = self
            .read(&id, ReadMode::Since, Some(u64::MAX))
            .await?
            .cursor;
        let mut seen = String::new();
        loop {
            let info = self.find(&id).await?;
            let screen = self.read(&id, ReadMode::Screen, None).await?;
            let done = |reason: &str, matched: Option<String>| WaitOut {
                reason: reason.into(),
                matched,
                session: info.clone(),
                screen: screen.text.clone(),
            };
            if let Some(re) = &what.pattern {
                let fresh = self.read(&id, ReadMode::Since, cursor.parse().ok()).await?;
                cursor = fresh.cursor;
                seen.push_str(&fresh.text);
                if seen.len() > 1 << 20 {
                    let cut = seen.len() - (1 << 19);
                    let cut = (cut..seen.len())
                        .find(|i| seen.is_char_boundary(*i))
                        .unwrap_or(0);
                    seen.drain(..cut);
                }
                if let Some(m) = re.find(&screen.text).or_else(|| re.find(&seen)) {
                    return Ok(done("pattern", Some(m.as_str().to_string())));
                }
            }
            if info.state != SessionState::Running {
                return Ok(done("exit", None));
            }
            if let Some(idle) = what.idle {
                let quiet = crate::record::now_ms().saturating_sub(info.last_activity_ms);
                if quiet >= idle.as_millis() as u64 {
                    return Ok(done("idle", None));
                }
            }
            if t0.elapsed() >= timeout {
                return Ok(done("timeout", None));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
