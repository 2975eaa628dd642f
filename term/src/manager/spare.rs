//! Spare sessions, the daemon's side: [`Manager::prewarm`] keeps one host ready for a given
//! program; [`Manager::start`] claims it when a start asks for exactly that program, and
//! makes the next one ready. The registry is the sessions directory itself (a spare's record
//! says `spare`), so a daemon restart finds the spare its predecessor left.

use super::{Manager, SessionError, StartSpec};
use crate::SessionId;
use crate::client;
use crate::proto::{HOST_PROTO, Reply, Request};
use crate::record::{SessionDir, SessionSpec, SessionState, load_json};

/// Whether a spare started from `spec` runs what `s` asks for (name and size aside).
fn runs(spec: &SessionSpec, s: &StartSpec) -> bool {
    spec.kind == s.kind
        && spec.program == s.program
        && spec.args == s.args
        && spec.cwd == s.cwd
        && spec.env == s.env
}

impl Manager {
    /// A running spare that runs what `s` asks for; spares that have ended are cleared away.
    async fn ready_spare(&self, s: &StartSpec) -> Option<SessionId> {
        let mut found = None;
        for info in self.all().await.into_iter().filter(|i| i.spare) {
            let Ok(id) = info.id.parse::<SessionId>() else {
                continue;
            };
            let dir = SessionDir::new(&self.root, &id);
            if info.state != SessionState::Running {
                let _ = std::fs::remove_dir_all(dir.path());
                continue;
            }
            if info.proto != HOST_PROTO {
                // Left by another loopsy version: of no use to this one (it then clears up).
                let _ = client::request(&dir.socket(), &Request::Stop).await;
                continue;
            }
            if found.is_none()
                && let Ok(spec) = load_json::<SessionSpec>(&dir.spec())
                && runs(&spec, s)
            {
                found = Some(id);
            }
        }
        found
    }

    /// Have a spare of `s` ready (started now unless one is), when spares are on.
    pub async fn prewarm(&self, s: StartSpec) -> Result<(), SessionError> {
        let Some(spare_s) = self.spare_s else {
            return Ok(());
        };
        let _one_at_a_time = self.spare_lock.lock().await;
        if self.ready_spare(&s).await.is_some() {
            return Ok(());
        }
        let id = SessionId::random();
        let name = format!("spare-{}", &id.as_str()[..4]);
        self.spawn(id, name, s, Some(spare_s)).await.map(|_| ())
    }

    /// Take a ready spare for `s` under its name and size, and start the next spare in the
    /// background. `None` when there is none (or another start took it first).
    pub(super) async fn claim_spare(
        &self,
        s: &StartSpec,
    ) -> Result<Option<crate::SessionInfo>, SessionError> {
        if self.spare_s.is_none() {
            return Ok(None);
        }
        let Some(id) = self.ready_spare(s).await else {
            return Ok(None);
        };
        let name = self.free_name(s, &id).await?;
        let claim = Request::Claim {
            name,
            cols: s.cols,
            rows: s.rows,
        };
        let sock = SessionDir::new(&self.root, &id).socket();
        let Ok(Reply::Info(info)) = client::request(&sock, &claim).await else {
            return Ok(None);
        };
        let (m, next) = (self.clone(), s.clone());
        tokio::spawn(async move { m.prewarm(next).await });
        Ok(Some(info))
    }
}
