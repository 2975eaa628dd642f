//! Spare sessions: a host started ahead of use, so that opening a shell finds its prompt
//! already drawn. A spare is hidden from lists until a start claims it (`Request::Claim`);
//! unclaimed, it ends after its time and leaves nothing behind.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Shared, lock, stop};
use crate::proto::Reply;
use crate::record::{now_ms, save_json};

impl Shared {
    /// Hand this spare to its user: named `name`, sized `cols`×`rows`, listed from now on.
    pub(super) fn claim(&mut self, name: String, cols: u16, rows: u16, record: &Path) -> Reply {
        if !self.info.spare {
            return Reply::error("unavailable", "this session was claimed already");
        }
        if self.exited {
            return Reply::error("unavailable", "this spare has ended");
        }
        if let Err(e) = self.resize(cols, rows) {
            return Reply::error("invalid_arguments", e);
        }
        let now = now_ms();
        self.info.spare = false;
        self.info.name = name;
        self.info.created_ms = now;
        self.info.last_activity_ms = now;
        // The record is what lists show once the host is gone: it must not say "spare".
        if let Err(e) = save_json(record, &self.info) {
            eprintln!("cannot record the claimed spare: {e}");
        }
        Reply::Info(self.info.clone())
    }
}

/// Resolves once an unclaimed spare has had its time (never for any other session), after
/// asking its program to end.
pub(super) async fn expire(shared: Arc<Mutex<Shared>>, spare_s: Option<u64>) {
    let Some(s) = spare_s else {
        return std::future::pending().await;
    };
    tokio::time::sleep(Duration::from_secs(s)).await;
    if lock(&shared).info.spare {
        let _ = stop(&shared);
    }
    std::future::pending().await
}

/// Whether the session that just ended was a spare nobody claimed; if so, no claim is taken
/// from now on (its directory is about to go).
pub(super) fn ended_unclaimed(shared: &Arc<Mutex<Shared>>) -> bool {
    let mut s = lock(shared);
    if s.info.spare {
        s.exited = true;
    }
    s.info.spare
}
