//! The local dashboard: the phone web app served by the daemon on 127.0.0.1, talking to this
//! daemon directly. The server speaks the relay's phone API (health, redeem, phone connect),
//! so the very same app and the very same end-to-end channel run here: a browser tab pairs
//! with the link `loopsy dashboard` opens (which carries the code, since it never leaves this
//! machine) and is then a trusted phone like any other (`loopsy phone list|revoke`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, StreamExt};
use loopsy_relay::api::{self, ApiError, Redeem, Redeemed};
use loopsy_relay::e2e::KeyPair;
use loopsy_relay::frame::{Frame, FrameKind};
use loopsy_relay::link::PairLink;
use loopsy_relay::{secret, splice, subprotocol, token, web};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

use super::channel::{self, ChannelCtx};
use super::store::PhoneStore;
use crate::DaemonCtx;

/// The label dashboard tabs are trusted under (pruned at each daemon start).
pub const LABEL: &str = "dashboard";

/// Where the built app is: `LOOPSY_APP_DIR`, else the checkout this binary was built from.
pub fn app_dir() -> PathBuf {
    std::env::var_os("LOOPSY_APP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/app/dist")))
}

/// What the dashboard server shares.
struct Local {
    ctx: DaemonCtx,
    store: PhoneStore,
    key: Arc<KeyPair>,
    device_id: String,
    token_key: [u8; 32],
    used: Mutex<HashSet<String>>,
    /// Phone ids handed out by a redeem in this run: the only ones that may connect.
    redeemed: Mutex<HashSet<String>>,
    app_dir: PathBuf,
}

/// The running dashboard.
#[derive(Clone)]
pub struct Dashboard {
    local: Arc<Local>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("addr", &self.addr)
            .finish()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn error(e: ApiError) -> Response {
    let mut r = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        e.body(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl Dashboard {
    /// Serve on 127.0.0.1:`port` (0: any free port) the app built in `app_dir`.
    pub async fn start(
        ctx: DaemonCtx,
        store: PhoneStore,
        port: u16,
        app_dir: PathBuf,
    ) -> Result<Self, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        // A device id for this daemon's local "relay": stable for the run, not a secret.
        let device_id = secret::id_from(&rand::random());
        let local = Arc::new(Local {
            ctx,
            store,
            key: Arc::new(key),
            device_id,
            token_key: rand::random(),
            used: Mutex::new(HashSet::new()),
            redeemed: Mutex::new(HashSet::new()),
            app_dir,
        });
        let app = Router::new()
            .route("/health", get(health))
            .route("/app", get(app_root))
            .route("/app/", get(app_root))
            .route("/app/{file}", get(app_file))
            .route("/v1/device/{d}/redeem", post(redeem))
            .route("/v1/device/{d}/phones/{p}/connect", get(connect))
            .with_state(local.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shutdown = local.ctx.shutdown_token().clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(e) = served.await {
                warn!("dashboard server: {e}");
            }
        });
        info!(%addr, "dashboard listening");
        Ok(Self { local, addr })
    }

    /// A pairing link for one browser tab, with its code (it stays on this machine).
    pub fn link(&self, ttl_s: u64) -> Result<String, String> {
        let l = &self.local;
        let pair_id = secret::id_from(&rand::random());
        let expires_at = now_s() + token::clamp_ttl(Some(ttl_s));
        let tok = token::issue(&l.token_key, &l.device_id, &pair_id, expires_at)
            .map_err(|e| e.to_string())?;
        let code = loopsy_mesh::pair::new_code();
        l.store.open_pairing(pair_id, code.clone(), expires_at);
        let link = PairLink {
            relay: format!("http://{}", self.addr),
            token: tok,
            daemon_key: l.key.public,
        };
        Ok(format!("{}.{code}", link.to_url()))
    }
}

async fn health() -> Response {
    let h = api::Health {
        ok: true,
        service: "loopsy-dashboard".into(),
        version: loopsy_mesh::VERSION.into(),
        protocols: subprotocol::SUPPORTED_VERSIONS.to_vec(),
        registration_secret: false,
    };
    axum::Json(h).into_response()
}

async fn app_root(State(l): State<Arc<Local>>) -> Response {
    serve_file(&l, "")
}

async fn app_file(State(l): State<Arc<Local>>, Path(file): Path<String>) -> Response {
    serve_file(&l, &file)
}

fn serve_file(l: &Local, file: &str) -> Response {
    let Some(f) = web::app_file(file) else {
        return error(ApiError::not_found("no such file in the app"));
    };
    // Only listed files, joined to the build directory: no path from the request is used.
    let path = l.app_dir.join(f.asset);
    let Ok(body) = std::fs::read(&path) else {
        return error(ApiError::not_found(format!(
            "the app is not built ({} is missing): run scripts/build-app in the loopsy checkout",
            path.display()
        )));
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    for (k, v) in [
        ("content-type", f.content_type),
        ("cache-control", f.cache),
        ("content-security-policy", web::CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    if file == "sw.js" {
        h.insert("service-worker-allowed", HeaderValue::from_static("/app/"));
    }
    r
}

async fn redeem(State(l): State<Arc<Local>>, Path(d): Path<String>, body: Bytes) -> Response {
    let result = (|| {
        if d != l.device_id {
            return Err(ApiError::not_found("no such device here"));
        }
        let r: Redeem = api::parse_body(&body)?;
        let t = token::verify(&l.token_key, &r.token, &l.device_id, now_s())?;
        api::parse_key(&r.phone_key)?;
        let mut used = l.used.lock().unwrap_or_else(|p| p.into_inner());
        if !used.insert(t.pair_id.clone()) {
            return Err(ApiError::conflict(
                "this link was already used: run `loopsy dashboard` again",
            ));
        }
        drop(used);
        let phone_id = secret::id_from(&rand::random());
        l.redeemed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(phone_id.clone());
        Ok(Redeemed {
            device_id: l.device_id.clone(),
            phone_id,
            // The local server keeps no bearer: the end-to-end channel decides who is trusted.
            phone_secret: secret::secret_from(&rand::random()),
            pair_id: t.pair_id,
        })
    })();
    match result {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => error(e),
    }
}

async fn connect(
    State(l): State<Arc<Local>>,
    Path((d, p)): Path<(String, String)>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if d != l.device_id || !loopsy_relay::route::valid_id(&p) {
        return error(ApiError::not_found("no such device here"));
    }
    // Only a tab that redeemed a link of this run gets a socket (as on the relay, where a
    // phone needs the bearer its redeem gave it).
    if !l
        .redeemed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&p)
    {
        return error(ApiError::forbidden(
            "this tab has not redeemed a dashboard link: run `loopsy dashboard` again",
        ));
    }
    // Same-origin only: another site in the browser cannot open this socket.
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !origin.starts_with("http://127.0.0.1:")
        && !origin.starts_with("http://localhost:")
    {
        return error(ApiError::forbidden(format!(
            "origin {origin} is not allowed"
        )));
    }
    let offer = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let offer = match subprotocol::negotiate(offer) {
        Ok(o) => o,
        Err(e) => return error(e.into()),
    };
    ws.protocols([offer.accepted()])
        .on_upgrade(move |socket| serve_socket(l, p, socket))
}

/// One browser tab: the relay's splice and the daemon's link, in one.
async fn serve_socket(l: Arc<Local>, phone_id: String, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    if tx
        .send(AxMessage::Text(
            splice::notice("device-online", "the laptop is online").into(),
        ))
        .await
        .is_err()
    {
        return;
    }
    let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(16);
    let cc = ChannelCtx {
        ctx: l.ctx.clone(),
        store: l.store.clone(),
        key: l.key.clone(),
        device_id: l.device_id.clone(),
        out: out_tx,
        runtime: tokio::runtime::Handle::current(),
        label: Some(LABEL),
    };
    let channel = tokio::spawn(
        channel::run(cc, 1, phone_id.clone(), in_rx)
            .instrument(info_span!("dashboard", phone = %phone_id)),
    );
    loop {
        tokio::select! {
            m = rx.next() => match m {
                // Never wait on the channel here: it may be waiting on `out`, which only this
                // loop empties. A tab that outruns it by a whole inbox is closed (it
                // reconnects and resumes).
                Some(Ok(AxMessage::Binary(b))) => {
                    if b.len() > loopsy_relay::frame::MAX_PAYLOAD || in_tx.try_send(b.to_vec()).is_err() {
                        break;
                    }
                }
                Some(Ok(AxMessage::Text(t))) if t.as_str() == splice::PING => {
                    let _ = tx.send(AxMessage::Text(splice::PONG.into())).await;
                }
                Some(Ok(AxMessage::Ping(_) | AxMessage::Pong(_))) => {}
                _ => break,
            },
            f = out_rx.recv() => match f {
                Some(f) if f.kind == FrameKind::Data => {
                    if tx.send(AxMessage::Binary(f.payload.into())).await.is_err() {
                        break;
                    }
                }
                _ => break,
            },
        }
    }
    drop(in_tx);
    let _ = tx.close().await;
    let _ = channel.await;
}
