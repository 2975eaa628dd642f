//! Writing a received file to disk while it arrives. The kernel would otherwise keep a
//! whole transfer dirty in memory (up to its dirty ratio: gigabytes) and the final fsync
//! would start writing it all only at the end; a background fdatasync every few MiB lets the
//! disk work while the network does, so the fsync that makes the file durable has only the
//! last stretch left.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Ask for a flush after this many new bytes.
const EVERY: u64 = 32 * 1024 * 1024;

/// A background flusher for one file.
pub(super) struct Flusher {
    tick: Option<SyncSender<()>>,
    since: u64,
    worker: tokio::task::JoinHandle<()>,
}

impl Flusher {
    /// Flush `file` (a second handle to the file being written) in the background.
    pub(super) fn new(file: std::fs::File) -> Self {
        // One pending request at most: requests made during a flush fold into the next one.
        let (tick, rx) = sync_channel::<()>(1);
        let worker = tokio::task::spawn_blocking(move || {
            while rx.recv().is_ok() {
                let _ = file.sync_data();
            }
        });
        Self {
            tick: Some(tick),
            since: 0,
            worker,
        }
    }

    /// `n` more bytes were written.
    pub(super) fn wrote(&mut self, n: u64) {
        self.since += n;
        if self.since < EVERY {
            return;
        }
        self.since = 0;
        if let Some(t) = &self.tick
            && let Err(TrySendError::Disconnected(())) = t.try_send(())
        {
            self.tick = None;
        }
    }

    /// Stop, once any flush under way has ended.
    pub(super) async fn finish(mut self) {
        self.tick = None;
        let _ = self.worker.await;
    }
}
