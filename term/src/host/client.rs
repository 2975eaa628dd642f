//! One connection to the host's socket: a request and its reply, or an attached client
//! (output out, input, resizes and `Skip` in).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::screens::Client;
use super::{CLIENT_QUEUE, Shared, handle, lock};
use crate::proto::{
    Frame, Kind, MAX_FRAME, MAX_WRITE, Reply, Request, decode_resize, decode_skip, read_frame,
    write_frame, write_json,
};
use crate::record::now_ms;

pub(super) async fn client(
    stream: loopsy_sys::ipc::Stream,
    shared: Arc<Mutex<Shared>>,
    input: SyncSender<Vec<u8>>,
) {
    let (mut rd, mut wr) = loopsy_sys::ipc::split(stream);
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
    let queued = Arc::new(AtomicUsize::new(0));
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
            queued: queued.clone(),
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
            if f.kind == Kind::Output {
                let n = f.data.len();
                let _ = queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                    Some(q.saturating_sub(n))
                });
            }
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
