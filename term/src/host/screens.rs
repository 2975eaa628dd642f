//! Fresh screens for clients that fell behind: a whole snapshot of the screen model, or
//! (for a client that says it shows exactly the last screen it got) only what changed since.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::{CLIENT_BYTES, CLIENT_QUEUE, Shared};
use crate::proto::{Frame, Kind, MAX_FRAME};

/// Diffs a skipping client gets in a row before a whole screen again (which repairs anything
/// the client's terminal drew differently from the screen model).
const MAX_DIFFS: u32 = 30;

/// An attached client, as the output path sees it.
pub(super) struct Client {
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<Frame>,
    pub(super) lagging: bool,
    /// Output bytes queued to its writer and not yet written (the writer takes them off;
    /// whole screens sent as output may take off more than was counted: it saturates).
    pub(super) queued: Arc<AtomicUsize>,
    /// It sent `Skip`: its fresh screens go as `Screen` frames, so it can tell them apart
    /// from the stale output it drops.
    pub(super) screens: bool,
    /// Set by `Skip` until its fresh screen goes out: the client's writer drops the output
    /// still queued ahead of that screen instead of sending it (it would be dropped at the
    /// other end anyway, after costing both sides a copy).
    pub(super) discard: Arc<AtomicBool>,
    /// The screen its last `Screen` frame showed, and how many diffs in a row it has had.
    pub(super) shown: Option<(vt100::Screen, u32)>,
    /// Its last `Skip` said it shows exactly `shown`: the next `Screen` may be a diff.
    pub(super) at_shown: bool,
    /// `Screen` frames queued to it so far.
    pub(super) screens_out: u64,
}

impl Client {
    pub(super) fn screen_kind(&self) -> Kind {
        if self.screens {
            Kind::Screen
        } else {
            Kind::Output
        }
    }
}

impl Shared {
    /// What turns `prev` (shown on a client, nothing after it) into the current screen, or
    /// `None` when only a whole screen will do (the size or the alternate screen changed).
    pub(super) fn diff(&self, prev: &vt100::Screen) -> Option<Vec<u8>> {
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

    pub(super) fn snapshot(&self) -> Vec<u8> {
        let s = self.parser.screen();
        let mut v = if s.alternate_screen() {
            b"\x1b[?1049h".to_vec()
        } else {
            b"\x1b[?1049l".to_vec()
        };
        v.extend_from_slice(s.state_formatted().as_bytes());
        v
    }

    /// Give stalled clients that drained their queue a fresh snapshot (a client that asked
    /// for one with `Skip` gets it as soon as it fits: its writer drops the output ahead of
    /// it).
    pub(super) fn resync(&mut self) {
        let ready = |c: &Client| {
            c.lagging
                && c.queued.load(Ordering::Acquire) <= CLIENT_BYTES / 2
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
}
