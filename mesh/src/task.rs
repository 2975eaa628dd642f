//! Tasks handed from one agent to another. A task lives on the daemon that created it (its
//! owner): that daemon alone decides claims and status changes, one at a time, so two workers
//! claiming at once get exactly one winner. Other machines reach it by the owner's PeerId in
//! the task id. Lifecycle (A2A vocabulary): submitted → working → input-required → completed
//! | failed | canceled. Every change is journalled (fsync) before it is acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::journal::{ChangeLog, LogError};

/// Where a task stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// Created, not yet claimed.
    Submitted,
    /// Claimed; a worker is on it.
    Working,
    /// The worker needs something from the creator (see `note`).
    InputRequired,
    /// Done; see `result`.
    Completed,
    /// Could not be done; see `note`.
    Failed,
    /// Called off.
    Canceled,
}

impl TaskStatus {
    /// Completed, failed or canceled: nothing changes after.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

/// One change in a task's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct TaskEvent {
    /// The status it moved to.
    pub status: TaskStatus,
    /// When (Unix ms).
    pub at: u64,
    /// Who (PeerId).
    pub by: String,
    /// What they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Task {
    /// `t<ms>-<hex>@<owner PeerId>`: where it lives is part of its name.
    pub id: String,
    /// The daemon that created it and decides its changes (PeerId).
    pub owner: String,
    /// Who should do it (PeerId), or `*` for any trusted peer.
    pub assignee: String,
    /// What to do.
    pub description: String,
    /// Input data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Where it stands.
    pub status: TaskStatus,
    /// The machine whose worker claimed it (PeerId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// The claiming worker's own label, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The latest note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Created (Unix ms).
    pub created_at: u64,
    /// Last changed (Unix ms).
    pub updated_at: u64,
    /// Every change, oldest first (at most 100).
    pub history: Vec<TaskEvent>,
}

/// Why a task call failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Bad arguments or a transition the lifecycle does not allow.
    #[error("{0}")]
    Invalid(String),
    /// No such task here.
    #[error("no task {0} here")]
    NotFound(String),
    /// Someone else has it.
    #[error("{0}")]
    Conflict(String),
    /// Not the caller's to change.
    #[error("{0}")]
    Denied(String),
    /// An update to a task the caller has not claimed (claim it first).
    #[error("{0}")]
    NotClaimed(String),
    /// Disk failure.
    #[error(transparent)]
    Store(#[from] LogError),
    /// The store task stopped.
    #[error("the task store has stopped")]
    Stopped,
}

/// The largest input or result (bytes of JSON text).
pub const MAX_FIELD: usize = 256 * 1024;
/// The largest description or note.
pub const MAX_TEXT: usize = 16 * 1024;
/// Notes are kept in the history up to this many bytes each.
const HISTORY_NOTE: usize = 1024;
/// Most tasks kept (oldest final ones are dropped beyond it).
pub const MAX_TASKS: usize = 10_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The owner PeerId in a task id.
pub fn owner_of(id: &str) -> Option<&str> {
    let (local, owner) = id.split_once('@')?;
    let ok = local.is_ascii()
        && local.len() == 23
        && local.starts_with('t')
        && local[1..14].bytes().all(|b| b.is_ascii_digit())
        && local.as_bytes()[14] == b'-'
        && local[15..].bytes().all(|b| b.is_ascii_hexdigit());
    (ok && owner.parse::<libp2p::PeerId>().is_ok()).then_some(owner)
}

/// A change asked for.
#[derive(Debug, Clone)]
pub enum Change {
    /// Take it (`who`: the claiming machine; `worker`: its label).
    Claim {
        /// Worker label.
        worker: Option<String>,
    },
    /// Move to `status`.
    Update {
        /// New status.
        status: TaskStatus,
        /// A note.
        note: Option<String>,
        /// The result.
        result: Option<serde_json::Value>,
    },
}

enum Cmd {
    Create(Task, oneshot::Sender<Result<Task, TaskError>>),
    Change(
        String,
        String,
        Change,
        oneshot::Sender<Result<Task, TaskError>>,
    ),
    Get(String, oneshot::Sender<Option<Task>>),
    List(oneshot::Sender<Vec<Task>>),
}

/// A cloneable handle to the task store.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    tx: mpsc::Sender<Cmd>,
    changed: watch::Receiver<u64>,
    me: String,
}

fn check_len(what: &str, n: usize) -> Result<(), TaskError> {
    if n > MAX_FIELD {
        return Err(TaskError::Invalid(format!(
            "{what} is {n} bytes; the limit is {MAX_FIELD}"
        )));
    }
    Ok(())
}

fn json_len(v: &Option<serde_json::Value>) -> usize {
    v.as_ref().map_or(0, |v| {
        serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
    })
}

/// Apply `c` by `who` to `t` (pure; the lifecycle rules).
fn apply(t: &mut Task, who: &str, c: Change, now: u64) -> Result<(), TaskError> {
    let by_owner = who == t.owner;
    match c {
        Change::Claim { worker } => {
            if t.status != TaskStatus::Submitted {
                let holder = t.claimed_by.clone().unwrap_or_default();
                return Err(TaskError::Conflict(format!(
                    "task {} is {} (claimed by {holder}); it is not yours",
                    t.id,
                    serde_json::to_value(t.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                )));
            }
            if t.assignee != "*" && t.assignee != who && !by_owner {
                return Err(TaskError::Denied(format!(
                    "task {} is assigned to another machine",
                    t.id
                )));
            }
            t.status = TaskStatus::Working;
            t.claimed_by = Some(who.to_string());
            t.worker = worker;
            t.updated_at = now;
            t.history.push(TaskEvent {
                status: TaskStatus::Working,
                at: now,
                by: who.to_string(),
                note: Some("claimed".into()),
            });
        }
        Change::Update {
            status,
            note,
            result,
        } => {
            if t.status.is_final() {
                return Err(TaskError::Conflict(format!(
                    "task {} is already finished",
                    t.id
                )));
            }
            let is_worker = t.claimed_by.as_deref() == Some(who);
            let allowed = match status {
                // The owner can call it off at any time.
                TaskStatus::Canceled => by_owner || is_worker,
                TaskStatus::Working
                | TaskStatus::InputRequired
                | TaskStatus::Completed
                | TaskStatus::Failed => is_worker,
                TaskStatus::Submitted => false,
            };
            if !allowed {
                return Err(match status {
                    TaskStatus::Submitted => {
                        TaskError::Invalid("a task cannot go back to submitted".to_string())
                    }
                    _ if t.claimed_by.is_none() => TaskError::NotClaimed(format!(
                        "claim task {} (loopsy_task_claim) before updating it",
                        t.id
                    )),
                    _ => TaskError::Denied(format!("task {} is claimed by another worker", t.id)),
                });
            }
            t.status = status;
            if note.is_some() {
                t.note.clone_from(&note);
            }
            if result.is_some() {
                t.result = result;
            }
            t.updated_at = now;
            t.history.push(TaskEvent {
                status,
                at: now,
                by: who.to_string(),
                note: note.map(|n| {
                    let mut end = n.len().min(HISTORY_NOTE);
                    while !n.is_char_boundary(end) {
                        end -= 1;
                    }
                    n[..end].to_string()
                }),
            });
            if t.history.len() > 100 {
                t.history.remove(1);
            }
        }
    }
    Ok(())
}

fn encode(t: &Task) -> Result<Vec<u8>, TaskError> {
    let mut b = Vec::new();
    ciborium::into_writer(t, &mut b).map_err(|e| TaskError::Invalid(e.to_string()))?;
    Ok(b)
}

struct Owner {
    tasks: BTreeMap<String, Task>,
    log: ChangeLog,
    changed: watch::Sender<u64>,
    dirty: bool,
    /// Some journal records could not be read: never compact them away.
    frozen: bool,
}

impl Owner {
    /// Journal the task's new state (fsync), then keep it.
    fn put(&mut self, t: Task) -> Result<Task, TaskError> {
        if self.dirty {
            self.compact()?;
        }
        if !self.tasks.contains_key(&t.id)
            && self.tasks.len() >= MAX_TASKS
            && self.tasks.values().all(|t| !t.status.is_final())
        {
            return Err(TaskError::Invalid(format!(
                "{MAX_TASKS} unfinished tasks already; finish or cancel some first"
            )));
        }
        if let Err(e) = self.log.append(&encode(&t)?) {
            self.dirty = true;
            return Err(e.into());
        }
        let id = t.id.clone();
        self.tasks.insert(id.clone(), t.clone());
        // Over the limit: drop the oldest finished tasks (never the one just written), and
        // rewrite the journal so they do not come back on the next start.
        let mut evicted = false;
        while self.tasks.len() > MAX_TASKS {
            let Some(old) = self
                .tasks
                .values()
                .filter(|x| x.status.is_final() && x.id != id)
                .min_by_key(|x| x.updated_at)
                .map(|x| x.id.clone())
            else {
                break;
            };
            self.tasks.remove(&old);
            evicted = true;
        }
        if (evicted || self.log.log_len() > 8 << 20)
            && let Err(e) = self.compact()
        {
            tracing::warn!(error = %e, "task store compaction failed");
            self.dirty = true;
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        Ok(t)
    }

    fn compact(&mut self) -> Result<(), TaskError> {
        if self.frozen {
            return Ok(());
        }
        let all: Vec<&Task> = self.tasks.values().collect();
        let mut b = Vec::new();
        ciborium::into_writer(&all, &mut b).map_err(|e| TaskError::Invalid(e.to_string()))?;
        self.log.compact(&b)?;
        self.dirty = false;
        Ok(())
    }
}

impl TaskHandle {
    /// Open the store in `dir`; `me` is this daemon's PeerId.
    pub fn open(dir: &Path, me: String) -> Result<Self, TaskError> {
        let (log, loaded) = ChangeLog::open(dir)?;
        let mut tasks = BTreeMap::new();
        if let Some(s) = &loaded.snapshot {
            let all: Vec<Task> = ciborium::from_reader(&s[..])
                .map_err(|e| TaskError::Invalid(format!("task snapshot: {e}")))?;
            for t in all {
                tasks.insert(t.id.clone(), t);
            }
        }
        let mut skipped = 0;
        for r in &loaded.records {
            match ciborium::from_reader::<Task, _>(&r[..]) {
                Ok(t) => {
                    tasks.insert(t.id.clone(), t);
                }
                Err(e) => {
                    // Each record is a whole task: one that cannot be read (a newer version
                    // wrote it?) is skipped, and the journal is left as it is.
                    tracing::warn!(error = %e, "task journal record skipped");
                    skipped += 1;
                }
            }
        }
        let (changed_tx, changed) = watch::channel(0);
        let mut owner = Owner {
            tasks,
            log,
            changed: changed_tx,
            dirty: false,
            frozen: skipped > 0,
        };
        owner.compact()?;
        let (tx, mut rx) = mpsc::channel::<Cmd>(256);
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::Create(t, r) => {
                        let _ = r.send(owner.put(t));
                    }
                    Cmd::Change(id, who, c, r) => {
                        let res = match owner.tasks.get(&id).cloned() {
                            None => Err(TaskError::NotFound(id)),
                            Some(mut t) => {
                                apply(&mut t, &who, c, now_ms()).and_then(|()| owner.put(t))
                            }
                        };
                        let _ = r.send(res);
                    }
                    Cmd::Get(id, r) => {
                        let _ = r.send(owner.tasks.get(&id).cloned());
                    }
                    Cmd::List(r) => {
                        let _ = r.send(owner.tasks.values().cloned().collect());
                    }
                }
            }
        });
        Ok(Self { tx, changed, me })
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, TaskError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(|_| TaskError::Stopped)?;
        rx.await.map_err(|_| TaskError::Stopped)
    }

    /// Changes whenever a task does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// Create a task owned here.
    pub async fn create(
        &self,
        assignee: String,
        description: String,
        input: Option<serde_json::Value>,
    ) -> Result<Task, TaskError> {
        if description.trim().is_empty() {
            return Err(TaskError::Invalid("describe the task".into()));
        }
        if description.len() > MAX_TEXT {
            return Err(TaskError::Invalid(format!(
                "description is {} bytes; the limit is {MAX_TEXT}",
                description.len()
            )));
        }
        check_len("input", json_len(&input))?;
        let now = now_ms();
        let t = Task {
            id: format!("t{now:013}-{:08x}@{}", rand::random::<u32>(), self.me),
            owner: self.me.clone(),
            assignee,
            description,
            input,
            status: TaskStatus::Submitted,
            claimed_by: None,
            worker: None,
            note: None,
            result: None,
            created_at: now,
            updated_at: now,
            history: vec![TaskEvent {
                status: TaskStatus::Submitted,
                at: now,
                by: self.me.clone(),
                note: None,
            }],
        };
        self.ask(|r| Cmd::Create(t, r)).await?
    }

    /// Apply a change by `who` (a PeerId: this machine's own for local agents).
    pub async fn change(&self, id: &str, who: &str, c: Change) -> Result<Task, TaskError> {
        match &c {
            Change::Update { note, result, .. } => {
                if note.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
                    return Err(TaskError::Invalid(format!(
                        "note is longer than {MAX_TEXT} bytes"
                    )));
                }
                check_len("result", json_len(result))?;
            }
            Change::Claim { worker } => {
                if worker.as_ref().is_some_and(|w| w.len() > 128) {
                    return Err(TaskError::Invalid("worker is at most 128 bytes".into()));
                }
            }
        }
        let (id, who) = (id.to_string(), who.to_string());
        self.ask(|r| Cmd::Change(id, who, c, r)).await?
    }

    /// One task.
    pub async fn get(&self, id: &str) -> Result<Option<Task>, TaskError> {
        let id = id.to_string();
        self.ask(|r| Cmd::Get(id, r)).await
    }

    /// Every task owned here, oldest first.
    pub async fn list(&self) -> Result<Vec<Task>, TaskError> {
        self.ask(Cmd::List).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claim_wins_and_the_lifecycle_holds_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let me = libp2p::PeerId::random().to_string();
        let (b, c) = (
            libp2p::PeerId::random().to_string(),
            libp2p::PeerId::random().to_string(),
        );
        let s = TaskHandle::open(dir.path(), me.clone()).unwrap();
        let t = s.create("*".into(), "build it".into(), None).await.unwrap();
        assert_eq!(owner_of(&t.id), Some(me.as_str()));
        // Two claims race: exactly one wins, the other is told who has it.
        let (r1, r2) = tokio::join!(
            s.change(&t.id, &b, Change::Claim { worker: None }),
            s.change(&t.id, &c, Change::Claim { worker: None })
        );
        let (win, lose) = if r1.is_ok() { (r1, r2) } else { (r2, r1) };
        let winner = win.unwrap().claimed_by.unwrap();
        assert!(matches!(lose, Err(TaskError::Conflict(m)) if m.contains(&winner)));
        let loser = if winner == b { &c } else { &b };
        // Only the winner moves it on; nobody moves it back to submitted.
        let done = Change::Update {
            status: TaskStatus::Completed,
            note: None,
            result: Some(serde_json::json!({"ok": true})),
        };
        assert!(matches!(
            s.change(&t.id, loser, done.clone()).await,
            Err(TaskError::Denied(_))
        ));
        s.change(&t.id, &winner, done.clone()).await.unwrap();
        assert!(matches!(
            s.change(&t.id, &winner, done).await,
            Err(TaskError::Conflict(_))
        ));
        drop(s);
        let s = TaskHandle::open(dir.path(), me).unwrap();
        let back = s.get(&t.id).await.unwrap().unwrap();
        assert_eq!(back.status, TaskStatus::Completed);
        assert_eq!(back.result, Some(serde_json::json!({"ok": true})));
        assert_eq!(back.history.len(), 3);
    }

    /// The conformance vectors in agents-spec/.
    #[test]
    fn transition_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agents-spec/vectors/task_transitions.json"
        );
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let (owner, worker, other) = ("owner-id", "worker-id", "other-id");
        for v in all["vectors"].as_array().unwrap() {
            let status: TaskStatus = serde_json::from_value(v["status"].clone()).unwrap();
            let mut t = Task {
                id: "t".into(),
                owner: owner.into(),
                assignee: if v["assignee"] == "*" { "*" } else { worker }.into(),
                description: "d".into(),
                input: None,
                status,
                claimed_by: (v["claimed"] == true).then(|| worker.to_string()),
                worker: None,
                note: None,
                result: None,
                created_at: 0,
                updated_at: 0,
                history: Vec::new(),
            };
            let actor = match v["actor"].as_str().unwrap() {
                "owner" => owner,
                "worker" => worker,
                _ => other,
            };
            let change = if v["change"]["claim"] == true {
                Change::Claim { worker: None }
            } else {
                Change::Update {
                    status: serde_json::from_value(v["change"]["status"].clone()).unwrap(),
                    note: None,
                    result: None,
                }
            };
            let got = match apply(&mut t, actor, change, 1) {
                Ok(()) => "ok",
                Err(TaskError::Conflict(_)) => "conflict",
                Err(TaskError::Denied(_)) => "denied",
                Err(TaskError::NotClaimed(_)) => "not_claimed",
                Err(TaskError::Invalid(_)) => "invalid",
                Err(e) => panic!("{}: {e}", v["name"]),
            };
            assert_eq!(got, v["expect"].as_str().unwrap(), "{}", v["name"]);
        }
    }

    #[test]
    fn ids_name_their_owner() {
        let p = libp2p::PeerId::random().to_string();
        assert_eq!(
            owner_of(&format!("t1700000000000-0a1b2c3d@{p}")),
            Some(p.as_str())
        );
        for bad in [
            "",
            "t1-2@x",
            "../x@y",
            &format!("t1700000000000-zzzzzzzz@{p}"),
            // 23 bytes, but a multi-byte character where the dash should be.
            &format!("t170000000000é-0a1b2c3@{p}"),
        ] {
            assert_eq!(owner_of(bad), None, "{bad}");
        }
    }
}
