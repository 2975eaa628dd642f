//! `logs/audit.jsonl`: one JSON line per tool call, written by one task, size-rotated.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::warn;

/// Records queued before a tool call waits for the writer.
const AUDIT_CAPACITY: usize = 1024;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    /// `local`, `http`, `peer:<id>`, `phone:<id>`.
    pub caller: String,
    /// Tool name.
    pub tool: String,
    /// `ok`, or `error:<code>`.
    pub outcome: String,
    /// Wall time of the call in microseconds.
    pub duration_us: u64,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn now(caller: String, tool: String, outcome: String, duration: Duration) -> Self {
        Self {
            ts_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            caller,
            tool,
            outcome,
            duration_us: duration.as_micros() as u64,
        }
    }
}

enum Msg {
    Record(AuditRecord),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Handle to the audit writer task.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditMsg")
    }
}

impl AuditLog {
    /// Start the writer for `path`, rotating past `max_bytes` and keeping `keep` old files.
    pub fn spawn(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        let (tx, rx) = mpsc::channel(AUDIT_CAPACITY);
        tokio::spawn(writer(path, max_bytes, keep, rx));
        Self { tx }
    }

    /// Queue a record (waits only if the writer is far behind).
    pub async fn record(&self, rec: AuditRecord) {
        let _ = self.tx.send(Msg::Record(rec)).await;
    }

    /// Wait until everything queued so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn open(path: &PathBuf) -> std::io::Result<(tokio::fs::File, u64)> {
    let mut o = std::fs::OpenOptions::new();
    loopsy_sys::fs::with_mode(o.create(true).append(true), loopsy_sys::fs::PRIVATE_FILE);
    let f = tokio::fs::OpenOptions::from(o).open(path).await?;
    let len = f.metadata().await?.len();
    Ok((f, len))
}

async fn rotate(path: &PathBuf, keep: u32) -> std::io::Result<()> {
    let name = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    if keep == 0 {
        return tokio::fs::remove_file(path).await;
    }
    let _ = tokio::fs::remove_file(name(keep)).await;
    for i in (1..keep).rev() {
        let _ = tokio::fs::rename(name(i), name(i + 1)).await;
    }
    tokio::fs::rename(path, name(1)).await
}

async fn writer(path: PathBuf, max_bytes: u64, keep: u32, mut rx: mpsc::Receiver<Msg>) {
    let mut file: Option<(tokio::fs::File, u64)> = None;
    while let Some(msg) = rx.recv().await {
        let rec = match msg {
            Msg::Record(r) => r,
            Msg::Flush(done) => {
                if let Some((f, _)) = file.as_mut() {
                    let _ = f.flush().await;
                }
                let _ = done.send(());
                continue;
            }
        };
        let mut line = match serde_json::to_vec(&rec) {
            Ok(l) => l,
            Err(_) => continue,
        };
        line.push(b'\n');
        if file
            .as_ref()
            .is_some_and(|(_, len)| *len + line.len() as u64 > max_bytes)
        {
            file = None;
            if let Err(e) = rotate(&path, keep).await {
                warn!(error = %e, "cannot rotate the audit log");
            }
        }
        if file.is_none() {
            match open(&path).await {
                Ok(f) => file = Some(f),
                Err(e) => {
                    warn!(error = %e, path = %path.display(), "cannot open the audit log");
                    continue;
                }
            }
        }
        if let Some((f, len)) = file.as_mut() {
            match f.write_all(&line).await {
                Ok(()) => *len += line.len() as u64,
                Err(e) => {
                    warn!(error = %e, "cannot write the audit log");
                    file = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_lines_and_rotates() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::spawn(path.clone(), 4096, 2);
        for i in 0..200 {
            let rec = AuditRecord::now(
                "local".into(),
                format!("tool{i}"),
                "ok".into(),
                Duration::from_micros(7),
            );
            log.record(rec).await;
        }
        log.flush().await;
        let cur = std::fs::read_to_string(&path)?;
        assert!(cur.len() <= 4096);
        let last: serde_json::Value = serde_json::from_str(cur.lines().last().unwrap_or("{}"))?;
        assert_eq!(last["tool"], "tool199");
        assert_eq!(last["caller"], "local");
        assert!(dir.path().join("audit.jsonl.1").exists());
        assert!(dir.path().join("audit.jsonl.2").exists());
        assert!(!dir.path().join("audit.jsonl.3").exists());
        Ok(())
    }
}
