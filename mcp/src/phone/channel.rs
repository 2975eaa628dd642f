//! One phone connection: the Noise handshake, the phone's proof (a trusted static key, or a
//! pairing code on first contact), then tool calls and a live terminal attachment — all inside
//! the end-to-end channel. Anything that fails to decrypt or parse ends the connection.

use std::sync::Arc;
use std::time::Duration;

use loopsy_relay::app::{self, Control, Decoder, Kind, Message};
use loopsy_relay::e2e::{self, Channel, KeyPair};
use loopsy_relay::frame::{Frame, FrameKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::bridge::{Attachment, HostEvent};
use super::calls;
use super::store::{PairFail, PhoneStore};
use crate::{Caller, DaemonCtx};

/// How long a phone has for its handshake and hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Tool calls one connection may have running.
const MAX_CALLS: usize = 8;
/// Output within this long of the previous is "streaming".
const STREAMING: Duration = Duration::from_millis(5);
/// Output chunks at least this big (a full PTY read) may be streaming.
const STREAMING_CHUNK: usize = 2048;
/// How long streaming output is held back to fill a message.
const HOLD: Duration = Duration::from_millis(3);

/// What every channel shares.
#[derive(Clone)]
pub struct ChannelCtx {
    /// The daemon.
    pub ctx: DaemonCtx,
    /// Trusted phones.
    pub store: PhoneStore,
    /// The daemon's static key.
    pub key: Arc<KeyPair>,
    /// This device's id at the relay.
    pub device_id: String,
    /// Frames to the relay.
    pub out: mpsc::Sender<Frame>,
    /// The daemon's runtime (phone connections run there, not on the link's thread).
    pub runtime: tokio::runtime::Handle,
    /// The label phones paired here are trusted under (instead of what they call themselves).
    pub label: Option<&'static str>,
}

/// Sealing and sending on one channel.
struct Io {
    chan: Channel,
    decoder: Decoder,
    out: mpsc::Sender<Frame>,
    channel: u32,
}

impl Io {
    async fn send_plain(&mut self, plain: Vec<u8>) -> Result<(), String> {
        let ct = self.chan.seal(&plain).map_err(|e| e.to_string())?;
        self.out
            .send(Frame::new(FrameKind::Data, self.channel, ct))
            .await
            .map_err(|_| "relay link closed".to_string())
    }

    async fn control(&mut self, c: &Control) -> Result<(), String> {
        for m in app::encode_control(c) {
            self.send_plain(m).await?;
        }
        Ok(())
    }

    async fn output(&mut self, bytes: &[u8]) -> Result<(), String> {
        for m in app::encode_bytes(Kind::Output, bytes) {
            self.send_plain(m).await?;
        }
        Ok(())
    }

    /// Decrypt and decode one ciphertext; `Ok(None)` for a control part.
    fn open(&mut self, ct: &[u8]) -> Result<Option<Message>, String> {
        let plain = self.chan.open(ct).map_err(|e| e.to_string())?;
        self.decoder.push(&plain).map_err(|e| e.to_string())
    }

    async fn fatal(&mut self, code: &str, message: String) -> String {
        let _ = self
            .control(&Control::error(code, message.clone(), true))
            .await;
        message
    }
}

/// Serve one phone connection until it ends, then tell the relay to close it.
pub async fn run(cc: ChannelCtx, channel: u32, phone_id: String, inbox: mpsc::Receiver<Vec<u8>>) {
    let out = cc.out.clone();
    let reason = match serve(cc, channel, &phone_id, inbox).await {
        Ok(()) => "closed".to_string(),
        Err(e) => {
            info!("phone connection ended: {e}");
            e
        }
    };
    let reason: String = reason.chars().take(100).collect();
    let _ = out
        .send(Frame::new(FrameKind::Close, channel, reason.into_bytes()))
        .await;
}

async fn serve(
    cc: ChannelCtx,
    channel: u32,
    phone_id: &str,
    mut inbox: mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, inbox.recv()).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(_) => return Err("no handshake within 30 s".into()),
    };
    let prologue = e2e::prologue(&cc.device_id, phone_id);
    let (chan, remote, reply) =
        e2e::respond(&cc.key, &prologue, &first).map_err(|e| e.to_string())?;
    cc.out
        .send(Frame::new(FrameKind::Data, channel, reply))
        .await
        .map_err(|_| "relay link closed".to_string())?;
    let mut io = Io {
        chan,
        decoder: Decoder::default(),
        out: cc.out.clone(),
        channel,
    };
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            let Some(ct) = inbox.recv().await else {
                return Err("the phone left".to_string());
            };
            if let Some(m) = io.open(&ct)? {
                return Ok(m);
            }
        }
    })
    .await
    .map_err(|_| "no hello within 30 s".to_string())??;
    let Message::Control(Control::Hello { pair, label }) = hello else {
        return Err(io.fatal("protocol", "expected hello first".into()).await);
    };
    let mut paired = false;
    if !cc.store.trusts(phone_id, &remote) {
        let Some(proof) = pair else {
            return Err(io
                .fatal(
                    "unknown_phone",
                    "this laptop does not know this phone (revoked, or paired with another laptop): pair again with `loopsy mobile pair`".into(),
                )
                .await);
        };
        match cc.store.complete_pairing(
            &proof.pair_id,
            &proof.code,
            phone_id,
            &remote,
            cc.label.or(label.as_deref()).unwrap_or("phone"),
        ) {
            Ok(()) => paired = true,
            Err(e) => {
                let code = match e {
                    PairFail::Wrong(_) => "wrong_code",
                    PairFail::TooMany => "too_many_attempts",
                    _ => "pair_failed",
                };
                warn!("pairing refused: {e}");
                return Err(io.fatal(code, e.to_string()).await);
            }
        }
        info!("phone paired");
    }
    cc.store.seen(phone_id);
    io.control(&Control::Welcome {
        phone_id: phone_id.to_string(),
        host: cc.ctx.name().to_string(),
        version: loopsy_mesh::VERSION.to_string(),
        paired,
    })
    .await?;
    // A phone is likely to open a shell next: have one ready.
    crate::tools::sessions::prewarm_shell(&cc.ctx);
    let caller = Caller::Phone(phone_id.to_string());
    let mut trust = cc.store.subscribe();
    let (results_tx, mut results_rx) = mpsc::channel::<Control>(MAX_CALLS);
    let calls_running = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS));
    let mut attach: Option<Attachment> = None;
    // When output last went out: output that follows closely is streaming, and is held back a
    // moment to go out in fewer, larger messages (the relay's cost is per message).
    let mut last_output = std::time::Instant::now() - STREAMING;
    loop {
        let window_open = attach.as_ref().is_some_and(Attachment::window_open);
        tokio::select! {
            m = inbox.recv() => {
                let Some(ct) = m else { return Ok(()) };
                let Some(msg) = io.open(&ct)? else { continue };
                match msg {
                    Message::Input(bytes) => match attach.as_mut() {
                        Some(a) => if let Err(e) = a.input(&bytes).await {
                            attach = None;
                            io.control(&Control::Detached { reason: e }).await?;
                        },
                        None => io.control(&Control::error("not_attached", "input without an attached session was dropped: attach first", false)).await?,
                    },
                    Message::Output(_) => return Err(io.fatal("protocol", "phones do not send output".into()).await),
                    Message::Control(c) => {
                        if let Some(reply) = handle(&cc, &caller, c, &mut attach, &results_tx, &calls_running).await? {
                            let stop = matches!(reply, Control::Error { fatal: true, .. });
                            io.control(&reply).await?;
                            if stop {
                                return Err("closed by request".into());
                            }
                        }
                    }
                }
            }
            Some(r) = results_rx.recv() => io.control(&r).await?,
            ev = async { match attach.as_mut() { Some(a) => a.next().await, None => std::future::pending().await } }, if window_open => {
                match ev {
                    HostEvent::Output(mut b) | HostEvent::Screen(mut b) => {
                        if let Some(a) = attach.as_mut() {
                            // Streaming: a big chunk right after other output. Keystroke
                            // echoes and prompts are small and go out at once.
                            if b.len() >= STREAMING_CHUNK && last_output.elapsed() < STREAMING {
                                a.fill(&mut b, tokio::time::Instant::now() + HOLD).await;
                            }
                            a.send_fitting(&mut b);
                        }
                        io.output(&b).await?;
                        last_output = std::time::Instant::now();
                    }
                    HostEvent::Exit(code) => {
                        attach = None;
                        io.control(&Control::Exited { code }).await?;
                    }
                    HostEvent::Closed(why) => {
                        attach = None;
                        io.control(&Control::Detached { reason: why }).await?;
                    }
                }
            }
            r = trust.changed() => {
                if r.is_err() || !cc.store.trusts(phone_id, &remote) {
                    return Err(io.fatal("revoked", "this phone was revoked on the laptop".into()).await);
                }
            }
        }
    }
}

/// One control message from an accepted phone; returns what to answer at once, if anything.
async fn handle(
    cc: &ChannelCtx,
    caller: &Caller,
    c: Control,
    attach: &mut Option<Attachment>,
    results: &mpsc::Sender<Control>,
    running: &Arc<tokio::sync::Semaphore>,
) -> Result<Option<Control>, String> {
    Ok(match c {
        Control::Ping { n } => Some(Control::Pong { n }),
        Control::Call { id, tool, args } => {
            let Ok(permit) = running.clone().try_acquire_owned() else {
                return Ok(Some(Control::Result {
                    id,
                    ok: false,
                    value: serde_json::json!({"code": "unavailable", "message": format!("at most {MAX_CALLS} calls may run at once")}),
                }));
            };
            let (ctx, caller, results) = (cc.ctx.clone(), caller.clone(), results.clone());
            tokio::spawn(async move {
                let (ok, value) = calls::call(&ctx, &caller, &tool, args).await;
                let _ = results.send(Control::Result { id, ok, value }).await;
                drop(permit);
            });
            None
        }
        Control::Attach {
            session,
            cols,
            rows,
            window,
        } => {
            *attach = None;
            match Attachment::open(&cc.ctx, &session, cols, rows, window).await {
                Ok(a) => {
                    let info = a.info.clone();
                    *attach = Some(a);
                    debug!(%session, "phone attached");
                    Some(Control::Attached { session: info })
                }
                Err((code, message)) => Some(Control::error(&code, message, false)),
            }
        }
        Control::Resize { cols, rows } => match attach.as_mut() {
            Some(a) => {
                if let Err(e) = a.resize(cols, rows).await {
                    *attach = None;
                    Some(Control::Detached { reason: e })
                } else {
                    None
                }
            }
            None => None,
        },
        Control::Ack { bytes } => match attach.as_mut() {
            Some(a) => match a.acked(bytes).await {
                Ok(()) => None,
                Err(e) => {
                    *attach = None;
                    Some(Control::Detached { reason: e })
                }
            },
            None => None,
        },
        Control::Detach => {
            *attach = None;
            Some(Control::Detached {
                reason: "detached".into(),
            })
        }
        Control::Forget => {
            let phone = match caller {
                Caller::Phone(p) => p.clone(),
                _ => String::new(),
            };
            cc.store.remove(&phone).map_err(|e| e.to_string())?;
            info!("phone asked to be forgotten");
            Some(Control::error(
                "revoked",
                "this laptop forgot this phone",
                true,
            ))
        }
        Control::Hello { .. } => Some(Control::error("protocol", "hello was already said", false)),
        Control::Welcome { .. }
        | Control::Result { .. }
        | Control::Attached { .. }
        | Control::Detached { .. }
        | Control::Exited { .. }
        | Control::Pong { .. }
        | Control::Error { .. } => Some(Control::error(
            "protocol",
            "that message goes from the laptop to the phone",
            false,
        )),
    })
}
