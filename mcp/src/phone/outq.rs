//! The queue between an attachment's host reader and its channel: bounded in bytes, not in
//! events, and each output event joins the output queued just before it. (Each event from
//! the host is one read of the PTY: a program that prints line by line makes many of a few
//! bytes each, and only the bytes say how far behind a phone is.)

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::bridge::HostEvent;

/// Output bytes queued at most: past it the reader waits (and the host, whose own queue then
/// fills, leaves this client behind and sends it a fresh screen later).
pub const QUEUE_BYTES: usize = 256 * 1024;
/// The largest output event that queued output is joined into.
const JOIN: usize = 64 * 1024;

#[derive(Default)]
struct Inner {
    events: VecDeque<HostEvent>,
    /// Output bytes in `events`.
    bytes: usize,
    /// The reader has stopped: nothing more will come.
    closed: bool,
}

/// One reader pushes, one attachment takes.
#[derive(Default)]
pub struct OutQueue {
    inner: Mutex<Inner>,
    readable: Notify,
    writable: Notify,
}

impl OutQueue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `ev`; output waits while [`QUEUE_BYTES`] are queued, and joins the output
    /// event before it when both fit in one.
    pub async fn push(&self, ev: HostEvent) {
        let mut ev = Some(ev);
        loop {
            {
                let mut g = self.lock();
                if let Some(e) = ev.take() {
                    match e {
                        HostEvent::Output(b) if g.bytes >= QUEUE_BYTES => {
                            ev = Some(HostEvent::Output(b));
                        }
                        HostEvent::Output(b) => {
                            g.bytes += b.len();
                            match g.events.back_mut() {
                                Some(HostEvent::Output(last)) if last.len() + b.len() <= JOIN => {
                                    last.extend_from_slice(&b)
                                }
                                _ => g.events.push_back(HostEvent::Output(b)),
                            }
                        }
                        other => g.events.push_back(other),
                    }
                }
                if ev.is_none() {
                    drop(g);
                    self.readable.notify_one();
                    return;
                }
            }
            self.writable.notified().await;
        }
    }

    /// The reader stopped (it returned or was aborted).
    pub fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_one();
    }

    /// The next event; `None` once the reader stopped and everything was taken. Cancel-safe.
    pub async fn recv(&self) -> Option<HostEvent> {
        loop {
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            if self.lock().closed {
                return self.try_recv();
            }
            self.readable.notified().await;
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<HostEvent> {
        let ev = {
            let mut g = self.lock();
            let ev = g.events.pop_front()?;
            if let HostEvent::Output(b) = &ev {
                g.bytes -= b.len();
            }
            ev
        };
        self.writable.notify_one();
        Some(ev)
    }

    /// Output bytes queued.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_joins_is_bounded_in_bytes_and_ends_after_close() {
        let q = OutQueue::default();
        for _ in 0..1000 {
            q.push(HostEvent::Output(b"12345\r\n".to_vec())).await;
        }
        q.push(HostEvent::Exit(Some(0))).await;
        q.push(HostEvent::Output(b"after".to_vec())).await;
        assert_eq!(q.bytes(), 7005);
        // A thousand small reads are one event, then the exit, then what followed it.
        match q.try_recv() {
            Some(HostEvent::Output(b)) => assert_eq!(b.len(), 7000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(q.try_recv(), Some(HostEvent::Exit(Some(0)))));
        assert!(matches!(q.try_recv(), Some(HostEvent::Output(b)) if b == b"after"));
        assert_eq!(q.bytes(), 0);

        // Full: the next push waits until something is taken.
        q.push(HostEvent::Output(vec![0; QUEUE_BYTES])).await;
        let wait = std::time::Duration::from_millis(50);
        let more = || HostEvent::Output(vec![1; 10]);
        assert!(
            tokio::time::timeout(wait, q.push(more())).await.is_err(),
            "pushed past the byte bound"
        );
        assert!(matches!(q.recv().await, Some(HostEvent::Output(b)) if b.len() == QUEUE_BYTES));
        q.push(more()).await;
        assert_eq!(q.bytes(), 10);

        q.close();
        assert!(matches!(q.recv().await, Some(HostEvent::Output(_))));
        assert!(q.recv().await.is_none());
    }
}
