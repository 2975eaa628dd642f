//! The daemon's one WebSocket to its relay: connect with the device bearer in the
//! subprotocol, heartbeat, reconnect with jittered backoff, and multiplex phone channels over
//! it. This task owns the socket and the channel table; channels hold a sender for frames.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use loopsy_relay::e2e::KeyPair;
use loopsy_relay::frame::{Frame, FrameKind, MAX_FRAME};
use loopsy_relay::subprotocol::{BEARER_PREFIX, VERSION_PREFIX};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{Instrument, debug, info, info_span, warn};

use super::channel::{self, ChannelCtx};
use super::creds::Creds;
use super::relay_api::ws_url;
use crate::DaemonCtx;

/// Frames waiting to go out on the socket. Small on purpose: when the relay is the
/// bottleneck, output backs up in the channels instead, where it is joined into full-size
/// messages (the relay's cost is per message, not per byte).
const OUT_CAPACITY: usize = 16;
/// Ciphertexts waiting for one channel.
const INBOX_CAPACITY: usize = 64;
/// Phone channels open at once over one relay link (the relay itself allows fewer; a
/// hostile relay sending more `Open`s gets them closed).
pub const MAX_CHANNELS: usize = 64;
/// How long a connect (TCP + TLS + upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay while the outage is young.
const BACKOFF_SHORT_CAP: Duration = Duration::from_secs(3);
/// Longest retry delay after a long outage, or when the relay refuses this device.
const BACKOFF_LONG_CAP: Duration = Duration::from_secs(30);
/// An outage older than this backs off to the long cap.
const SHORT_PHASE: Duration = Duration::from_secs(120);
/// Heartbeats per WebSocket ping. Between pings the kernel watches the path (TCP keepalive
/// probes every heartbeat, and TCP_USER_TIMEOUT for unacknowledged data), which costs the
/// daemon no wake-up; the ping (answered by the relay's edge, not the Durable Object) keeps
/// frames flowing for proxies and catches a relay that stopped answering above TCP.
const BEATS_PER_PING: u32 = 4;

/// Let the kernel watch the relay connection: keepalive probes after one idle heartbeat,
/// and an abort when data or probes go unacknowledged for about two.
fn tune_socket(s: &tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>, heartbeat: Duration) {
    let tcp = match s {
        tokio_tungstenite::MaybeTlsStream::Plain(t) => t,
        tokio_tungstenite::MaybeTlsStream::Rustls(t) => t.get_ref().0,
        _ => return,
    };
    let interval = (heartbeat / 3).max(Duration::from_secs(1));
    if let Err(e) = loopsy_sys::net::watch_path(tcp, heartbeat, interval, heartbeat + interval * 3)
    {
        debug!("TCP keepalive not set: {e}");
    }
}

/// The link's state, for `loopsy relay status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct LinkStatus {
    /// `unconfigured`, `connecting`, `connected` or `offline`.
    pub state: String,
    /// The relay's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// This device's id there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Why the last connection ended or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Successful connections since the daemon started.
    pub connects: u64,
    /// Phone connections open now.
    pub channels: usize,
    /// Unix seconds of the last state change.
    pub since: u64,
}

impl LinkStatus {
    fn new(state: &str, creds: Option<&Creds>) -> Self {
        Self {
            state: state.into(),
            url: creds.map(|c| c.url.clone()),
            device_id: creds.map(|c| c.device_id.clone()),
            last_error: None,
            connects: 0,
            channels: 0,
            since: now_s(),
        }
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the link needs.
pub struct LinkCtx {
    /// The daemon.
    pub ctx: DaemonCtx,
    /// The hub (credentials, phones).
    pub hub: super::PhoneHub,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Status out.
    pub status: watch::Sender<LinkStatus>,
    /// Bumped when the credentials change.
    pub reconfigured: watch::Receiver<u64>,
    /// The daemon's runtime, where phone connections run (the link has a thread of its own).
    pub runtime: tokio::runtime::Handle,
}

enum Ended {
    /// Try again after a backoff.
    Retry(String),
    /// The relay refused this device: back off long.
    Refused(String),
    /// New credentials: reconnect at once.
    Reconfigured,
    /// The daemon is stopping.
    Shutdown,
}

/// Run the link until the daemon stops.
pub async fn run(mut l: LinkCtx) {
    let mut delay = BACKOFF_MIN;
    let mut outage_started: Option<Instant> = None;
    loop {
        let creds = l.hub.creds();
        let Some(creds) = creds else {
            l.status.send_replace(LinkStatus::new("unconfigured", None));
            tokio::select! {
                _ = l.reconfigured.changed() => continue,
                () = l.ctx.shutdown_token().cancelled() => return,
            }
        };
        let key = match creds.keypair() {
            Ok(k) => Arc::new(k),
            Err(e) => {
                warn!("{e}");
                set_error(&l.status, &creds, "offline", &e);
                tokio::select! {
                    _ = l.reconfigured.changed() => continue,
                    () = l.ctx.shutdown_token().cancelled() => return,
                }
            }
        };
        l.status.send_modify(|s| {
            s.state = "connecting".into();
            s.url = Some(creds.url.clone());
            s.device_id = Some(creds.device_id.clone());
            s.since = now_s();
        });
        let ended = connect_and_serve(&mut l, &creds, key)
            .instrument(info_span!("relay", url = %creds.url))
            .await;
        let (why, cap) = match ended {
            Ended::Shutdown => return,
            Ended::Reconfigured => {
                delay = BACKOFF_MIN;
                outage_started = None;
                continue;
            }
            Ended::Retry(why) => {
                let young = outage_started.get_or_insert_with(Instant::now).elapsed() < SHORT_PHASE;
                (
                    why,
                    if young {
                        BACKOFF_SHORT_CAP
                    } else {
                        BACKOFF_LONG_CAP
                    },
                )
            }
            Ended::Refused(why) => {
                outage_started.get_or_insert_with(Instant::now);
                (why, BACKOFF_LONG_CAP)
            }
        };
        set_error(&l.status, &creds, "offline", &why);
        // Jitter: anywhere in [delay/2, delay], so many daemons do not retry in step.
        let wait = delay.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        debug!(?wait, "relay link down: {why}");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = l.reconfigured.changed() => { delay = BACKOFF_MIN; outage_started = None; continue; }
            () = l.ctx.shutdown_token().cancelled() => return,
        }
        delay = (delay * 2).min(cap);
        if let Some(t) = outage_started
            && delay == BACKOFF_SHORT_CAP
            && t.elapsed() >= SHORT_PHASE
        {
            delay = BACKOFF_LONG_CAP;
        }
    }
}

fn set_error(status: &watch::Sender<LinkStatus>, creds: &Creds, state: &str, why: &str) {
    status.send_modify(|s| {
        if s.state != state {
            s.since = now_s();
        }
        s.state = state.into();
        s.url = Some(creds.url.clone());
        s.device_id = Some(creds.device_id.clone());
        s.last_error = Some(why.to_string());
        s.channels = 0;
    });
}

async fn connect_and_serve(l: &mut LinkCtx, creds: &Creds, key: Arc<KeyPair>) -> Ended {
    let url = ws_url(
        &creds.url,
        &format!("/v1/device/{}/connect", creds.device_id),
    );
    let mut req = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Refused(format!("bad relay URL: {e}")),
    };
    let offer = format!("{VERSION_PREFIX}1, {BEARER_PREFIX}{}", creds.device_secret);
    match offer.parse() {
        Ok(v) => {
            req.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        Err(_) => return Ended::Refused("the device secret is not a valid header value".into()),
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME + 1024))
        .max_frame_size(Some(MAX_FRAME + 1024));
    let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
    let ws = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match r {
            Err(_) => return Ended::Retry("connect timed out".into()),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).chars().take(300).collect::<String>())
                    .unwrap_or_default();
                let msg = serde_json::from_str::<loopsy_relay::api::ApiError>(&body)
                    .map(|e| e.message)
                    .unwrap_or(body);
                let why = format!("the relay refused this device ({status}): {msg}");
                return if matches!(status, 401 | 403 | 404) {
                    Ended::Refused(format!("{why}; run `loopsy relay configure <url>` again"))
                } else {
                    Ended::Retry(why)
                };
            }
            Ok(Err(e)) => return Ended::Retry(e.to_string()),
            Ok(Ok((ws, _resp))) => ws,
        },
        _ = l.reconfigured.changed() => return Ended::Reconfigured,
        () = l.ctx.shutdown_token().cancelled() => return Ended::Shutdown,
    };
    tune_socket(ws.get_ref(), l.heartbeat);
    info!("connected to the relay");
    l.status.send_modify(|s| {
        s.state = "connected".into();
        s.last_error = None;
        s.connects += 1;
        s.since = now_s();
    });
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(OUT_CAPACITY);
    let mut channels: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let ping_every = l.heartbeat * BEATS_PER_PING;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let cc = ChannelCtx {
        ctx: l.ctx.clone(),
        store: l.hub.store().clone(),
        key,
        device_id: creds.device_id.clone(),
        out: out_tx.clone(),
        runtime: l.runtime.clone(),
        label: None,
    };
    let ended = loop {
        tokio::select! {
            m = stream.next() => {
                let m = match m {
                    None => break Ended::Retry("the relay closed the connection".into()),
                    Some(Err(e)) => break Ended::Retry(format!("relay connection: {e}")),
                    Some(Ok(m)) => m,
                };
                last_heard = Instant::now();
                match m {
                    Message::Binary(b) => {
                        match on_frame(&cc, &mut channels, &b).await {
                            Ok(None) => {}
                            // Answered here, on the sink: this loop is also what empties the
                            // outgoing queue, so it must never wait on that queue itself.
                            Ok(Some(reply)) => match reply.encode() {
                                Ok(b) => if let Err(e) = sink.send(Message::Binary(b.into())).await {
                                    break Ended::Retry(format!("relay connection: {e}"));
                                },
                                Err(e) => warn!("frame not sent: {e}"),
                            },
                            Err(e) => warn!("{e}"),
                        }
                        l.status.send_if_modified(|s| {
                            let n = channels.len();
                            (s.channels != n).then(|| s.channels = n).is_some()
                        });
                    }
                    Message::Close(f) => {
                        let why = f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                        break Ended::Retry(format!("the relay closed the connection {why}"));
                    }
                    Message::Text(_) => warn!("text message from the relay ignored"),
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            Some(f) = out_rx.recv() => {
                if f.kind == FrameKind::Close {
                    channels.remove(&f.channel);
                }
                match f.encode() {
                    Ok(b) => if let Err(e) = sink.send(Message::Binary(b.into())).await {
                        break Ended::Retry(format!("relay connection: {e}"));
                    },
                    Err(e) => warn!("frame not sent: {e}"),
                }
            }
            _ = beat.tick() => {
                // The last ping went unanswered for a whole period: the link is dead.
                if ping_sent.is_some_and(|t| last_heard < t) {
                    break Ended::Retry("no answer to heartbeats".into());
                }
                if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                    break Ended::Retry(format!("relay connection: {e}"));
                }
                ping_sent = Some(Instant::now());
            }
            _ = l.reconfigured.changed() => break Ended::Reconfigured,
            () = l.ctx.shutdown_token().cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                break Ended::Shutdown;
            }
        }
    };
    // Every channel's end-to-end state dies with the link; phones re-handshake on reconnect.
    channels.clear();
    ended
}

/// One frame from the relay; what to answer at once, if anything.
async fn on_frame(
    cc: &ChannelCtx,
    channels: &mut HashMap<u32, mpsc::Sender<Vec<u8>>>,
    bytes: &[u8],
) -> Result<Option<Frame>, String> {
    let f = Frame::decode(bytes).map_err(|e| format!("frame from the relay refused: {e}"))?;
    match f.kind {
        FrameKind::Open => {
            let phone_id = String::from_utf8(f.payload).unwrap_or_default();
            if !loopsy_relay::route::valid_id(&phone_id) {
                return Err("open frame with a malformed phone id".into());
            }
            if channels.len() >= MAX_CHANNELS && !channels.contains_key(&f.channel) {
                warn!("the relay opened more than {MAX_CHANNELS} phone channels: closing this one");
                return Ok(Some(Frame::new(
                    FrameKind::Close,
                    f.channel,
                    b"too many channels".to_vec(),
                )));
            }
            let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
            channels.insert(f.channel, tx);
            let ch = f.channel;
            cc.runtime.spawn(
                channel::run(cc.clone(), ch, phone_id.clone(), rx)
                    .instrument(info_span!("phone", phone = %phone_id, channel = ch)),
            );
        }
        FrameKind::Data => match channels.get(&f.channel) {
            Some(tx) => {
                // Never wait here: the channel's task may itself be waiting on the outgoing
                // queue, which only this loop empties. A phone that outruns its channel by a
                // whole inbox is closed (it reconnects and resumes).
                match tx.try_send(f.payload) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        channels.remove(&f.channel);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        channels.remove(&f.channel);
                        warn!(
                            channel = f.channel,
                            "a phone channel fell a whole inbox behind: closed"
                        );
                        return Ok(Some(Frame::new(
                            FrameKind::Close,
                            f.channel,
                            b"too far behind".to_vec(),
                        )));
                    }
                }
            }
            None => {
                return Ok(Some(Frame::new(
                    FrameKind::Close,
                    f.channel,
                    b"unknown channel".to_vec(),
                )));
            }
        },
        FrameKind::Close => {
            channels.remove(&f.channel);
        }
        FrameKind::Notice => {
            let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap_or_default();
            match v["type"].as_str() {
                Some("phone-revoked") => {
                    if let Some(p) = v["phone_id"].as_str() {
                        info!(phone = p, "the relay says this phone revoked itself");
                        if let Err(e) = cc.store.remove(p) {
                            warn!("cannot forget phone {p}: {e}");
                        }
                    }
                }
                _ => warn!("relay notice: {v}"),
            }
        }
        FrameKind::Ping => {
            return Ok(Some(Frame::new(FrameKind::Pong, 0, f.payload)));
        }
        FrameKind::Pong => {}
    }
    Ok(None)
}
