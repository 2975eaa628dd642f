//! A phone connection as a live client of a terminal session: attach to the session host's
//! socket, pass output out (a reader task feeds a small queue, so a phone that stops
//! acknowledging makes the host skip it forward to a fresh screen instead of blocking the
//! PTY), and pass input and resizes in.

use std::sync::Arc;
use std::time::Duration;

use loopsy_relay::app::{MIN_WINDOW, OUTPUT_WINDOW};
use loopsy_term::proto::{Kind, encode_resize, read_frame, skip_at_screen, write_frame};

use tokio::task::JoinHandle;

use super::outq::OutQueue;
use crate::DaemonCtx;

/// Output joined into one event at most (one end-to-end message's worth).
const COALESCE: usize = loopsy_relay::app::MAX_BODY;
/// How long one write into the host may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Output bytes queued behind the window at which a phone that asked for a window counts as
/// far behind: it is skipped to a fresh screen instead of being sent the stale output. (Counted
/// in bytes: a program that prints line by line makes many events of a few bytes each.)
const FAR_BEHIND: usize = 64 * 1024;

/// The longest output waits for a phone to acknowledge a fresh screen (a phone that only
/// acknowledges every so many bytes, or one farther away than this, then gets output as
/// before).
const SCREEN_HOLD: Duration = Duration::from_millis(250);

/// What the host sent.
#[derive(Debug)]
pub enum HostEvent {
    /// Terminal output.
    Output(Vec<u8>),
    /// A fresh screen that replaces all output before it (the host's answer to `Skip`;
    /// handed out as `Output`).
    Screen(Vec<u8>),
    /// The program ended.
    Exit(Option<i32>),
    /// The host went away.
    Closed(String),
}

/// A live attachment.
pub struct Attachment {
    /// The session as attached (JSON).
    pub info: serde_json::Value,
    tx: loopsy_term::client::Tx,
    events: Arc<OutQueue>,
    reader: JoinHandle<()>,
    /// An event taken while coalescing output, handed out next.
    stash: Option<HostEvent>,
    /// Output that did not fit the window, handed out first once it opens.
    rest: Vec<u8>,
    /// Output bytes allowed in flight (what the phone asked for, within bounds).
    window: u64,
    /// Whether a phone that falls far behind is skipped to a fresh screen (it asked for a
    /// window, and the host knows `Skip`).
    can_skip: bool,
    /// Dropping stale output until the host's fresh screen arrives.
    skipping: bool,
    /// A fresh screen was handed out and nothing after it has gone yet: once it is sent whole,
    /// output waits until the phone acknowledges it (see [`Attachment::acked`]).
    screen_out: bool,
    /// The phone was sent a whole fresh screen and nothing after it (so the next one may be a
    /// diff from it: [`skip_at_screen`]).
    at_screen: bool,
    /// `Screen` frames taken from the host.
    screens_in: u64,
    /// Output waits until the phone has acknowledged this many bytes (the end of a screen),
    /// or until the instant passes.
    hold: Option<(u64, tokio::time::Instant)>,
    sent: u64,
    acked: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Attachment {
    /// Attach to `session` (id or name) at `cols`×`rows`, with at most `window` output bytes
    /// in flight (default [`OUTPUT_WINDOW`]); `Err((code, message))` if refused.
    pub async fn open(
        ctx: &DaemonCtx,
        session: &str,
        cols: u16,
        rows: u16,
        window: Option<u64>,
    ) -> Result<Self, (String, String)> {
        let (_, sock) = ctx
            .sessions()
            .socket(session)
            .await
            .map_err(|e| (e.code().to_string(), e.to_string()))?;
        let att = loopsy_term::client::attach(&sock, cols, rows)
            .await
            .map_err(|e| ("unavailable".to_string(), format!("cannot attach: {e}")))?;
        let info = serde_json::to_value(&att.info).unwrap_or_default();
        let can_skip = window.is_some() && att.info.proto >= 1;
        let events = Arc::new(OutQueue::default());
        let out = Closing(events.clone());
        let mut rx = att.rx;
        let reader = tokio::spawn(async move {
            loop {
                let ev = match read_frame(&mut rx).await {
                    Ok(Some(f)) if f.kind == Kind::Output => HostEvent::Output(f.data),
                    Ok(Some(f)) if f.kind == Kind::Screen => HostEvent::Screen(f.data),
                    Ok(Some(f)) if f.kind == Kind::Exit => {
                        let code = serde_json::from_slice::<serde_json::Value>(&f.data)
                            .ok()
                            .and_then(|v| v["code"].as_i64())
                            .and_then(|c| i32::try_from(c).ok());
                        out.0.push(HostEvent::Exit(code)).await;
                        return;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => HostEvent::Closed("the session host closed".into()),
                    Err(e) => HostEvent::Closed(format!("the session host: {e}")),
                };
                let end = matches!(ev, HostEvent::Closed(_));
                out.0.push(ev).await;
                if end {
                    return;
                }
            }
        });
        Ok(Self {
            info,
            tx: att.tx,
            events,
            reader,
            stash: None,
            rest: Vec::new(),
            window: window.map_or(OUTPUT_WINDOW, |w| w.clamp(MIN_WINDOW, OUTPUT_WINDOW)),
            can_skip,
            skipping: false,
            screen_out: false,
            at_screen: false,
            screens_in: 0,
            hold: None,
            sent: 0,
            acked: 0,
        })
    }

    /// Whether more output may be sent before the phone acknowledges.
    pub fn window_open(&self) -> bool {
        self.in_flight() < self.window
    }

    /// Whether the output queued behind the window is stale enough to skip: [`FAR_BEHIND`]
    /// bytes of it.
    fn far_behind(&self) -> bool {
        self.events.bytes() >= FAR_BEHIND
    }

    fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }

    /// The next event from the host; output already queued behind it is joined on (up to one
    /// end-to-end message), so a busy terminal goes out in few large frames, not many small.
    pub async fn next(&mut self) -> HostEvent {
        // (Cancel-safe up to here: nothing is taken while waiting.)
        if let Some((_, until)) = self.hold {
            tokio::time::sleep_until(until).await;
            self.hold = None;
        }
        if !self.rest.is_empty() {
            return HostEvent::Output(std::mem::take(&mut self.rest));
        }
        let ev = loop {
            let ev = match self.stash.take() {
                Some(e) => e,
                None => self
                    .events
                    .recv()
                    .await
                    .unwrap_or_else(|| HostEvent::Closed("the session host closed".into())),
            };
            match ev {
                HostEvent::Output(_) if self.skipping => continue,
                HostEvent::Screen(screen) => {
                    self.screens_in += 1;
                    self.skipping = false;
                    self.screen_out = self.can_skip;
                    return HostEvent::Output(screen);
                }
                other => {
                    self.skipping = false;
                    break other;
                }
            }
        };
        let HostEvent::Output(mut buf) = ev else {
            return ev;
        };
        while buf.len() < COALESCE {
            match self.events.try_recv() {
                Some(HostEvent::Output(more)) if buf.len() + more.len() <= COALESCE => {
                    buf.extend_from_slice(&more)
                }
                Some(other) => {
                    self.stash = Some(other);
                    break;
                }
                None => break,
            }
        }
        HostEvent::Output(buf)
    }

    /// Join more output onto `buf` until it is a full message or `deadline` passes (used while
    /// output is streaming, so a busy terminal goes out in few large messages).
    pub async fn fill(&mut self, buf: &mut Vec<u8>, deadline: tokio::time::Instant) {
        while buf.len() < COALESCE && self.stash.is_none() && !self.screen_out {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(HostEvent::Output(more))) if buf.len() + more.len() <= COALESCE => {
                    buf.extend_from_slice(&more)
                }
                Ok(Some(other)) => self.stash = Some(other),
                Ok(None) => self.stash = Some(HostEvent::Closed("the session host closed".into())),
                Err(_) => return,
            }
        }
    }

    /// Take from `buf` what fits the window now and count it as sent; the rest goes out
    /// first when the window opens again. (A phone that asked for a small window to paint
    /// every frame gets no message larger than that window.)
    pub fn send_fitting(&mut self, buf: &mut Vec<u8>) {
        let room = usize::try_from(self.window.saturating_sub(self.in_flight()))
            .unwrap_or(usize::MAX)
            .max(1);
        if buf.len() > room {
            // `rest` is empty here: `next` hands it out before anything newer.
            self.rest = buf.split_off(room);
        }
        self.sent += buf.len() as u64;
        self.at_screen = self.screen_out && self.rest.is_empty();
        if self.at_screen {
            self.screen_out = false;
            self.hold = Some((self.sent, tokio::time::Instant::now() + SCREEN_HOLD));
        }
    }

    /// The phone has received `bytes` in all (cumulative; never goes back). If it is far
    /// behind (the window was shut while the host kept queueing), the stale output is
    /// dropped and the host asked for a fresh screen, which goes out next.
    ///
    /// After a fresh screen, nothing more goes out until the phone has acknowledged it (for at
    /// most [`SCREEN_HOLD`]): if by then the session has again printed more than the phone
    /// can take, the phone gets the next screen instead. So through a flood (`yes`) a phone
    /// is sent about one screen per frame it paints, like a local terminal that draws its
    /// current screen at the display's rate, instead of parsing output it could never show;
    /// once the flood ends, output flows byte for byte again. The laptop keeps everything
    /// (`loopsy_session_read`).
    pub async fn acked(&mut self, bytes: u64) -> Result<(), String> {
        self.acked = self.acked.max(bytes.min(self.sent));
        if self.hold.is_some_and(|(end, _)| self.acked >= end) {
            self.hold = None;
        }
        if self.can_skip
            && !self.skipping
            && self.hold.is_none()
            && self.window_open()
            && self.far_behind()
        {
            let at = if self.at_screen {
                skip_at_screen(self.screens_in)
            } else {
                Vec::new()
            };
            self.write(Kind::Skip, &at).await?;
            self.skipping = true;
            self.screen_out = false;
            self.rest.clear();
            if matches!(self.stash, Some(HostEvent::Output(_))) {
                self.stash = None;
            }
        }
        Ok(())
    }

    async fn write(&mut self, kind: Kind, data: &[u8]) -> Result<(), String> {
        tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut self.tx, kind, data))
            .await
            .map_err(|_| "the session host stopped reading input".to_string())?
            .map_err(|e| format!("the session host: {e}"))
    }

    /// Type into the session.
    pub async fn input(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.write(Kind::Input, bytes).await
    }

    /// Resize the session.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), String> {
        self.write(Kind::Resize, &encode_resize(cols, rows)).await
    }
}

/// Marks the queue closed when the reader task ends, however it ends.
struct Closing(Arc<OutQueue>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}
