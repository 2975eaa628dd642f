//! The daemon's side of the phone relay: the relay credentials, the phones this laptop trusts,
//! the one WebSocket to the relay (`link`), and each phone connection (`channel`) — an
//! end-to-end encrypted channel bridged to tools and terminal sessions (`calls`, `bridge`).

pub mod bridge;
pub mod calls;
pub mod channel;
pub mod creds;
pub mod link;
pub mod local;
mod outq;
pub mod relay_api;
pub mod store;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use loopsy_mesh::Home;
use loopsy_relay::link::PairLink;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use creds::Creds;
pub use link::LinkStatus;
pub use relay_api::{RelayApi, RelayError};
pub use store::{Phone, PhoneStore};

use crate::DaemonCtx;

/// A pairing window for a phone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PairOut {
    /// The link for the QR code (`<relay>/app#pair=…`).
    pub link: String,
    /// The short code the phone must type (not in the link).
    pub code: String,
    /// Unix seconds when the link and code expire.
    pub expires_at: u64,
}

/// A phone as `loopsy phone list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PhoneView {
    /// The trusted phone.
    #[serde(flatten)]
    pub phone: Phone,
    /// Live connections at the relay now (if the relay answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// The phones, for `loopsy_phone_list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PhonesOut {
    /// Trusted phones (this laptop's list decides).
    pub phones: Vec<PhoneView>,
    /// Why the relay's view is missing, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_error: Option<String>,
}

/// What a revoke did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RevokeOut {
    /// The phone.
    pub phone_id: String,
    /// Removed from this laptop's list (it can no longer connect, whatever the relay does).
    pub revoked_here: bool,
    /// Removed at the relay too.
    pub revoked_at_relay: bool,
    /// Why the relay part failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_error: Option<String>,
}

struct Inner {
    dashboard: tokio::sync::OnceCell<local::Dashboard>,
    ctx: std::sync::OnceLock<DaemonCtx>,
    creds_path: std::path::PathBuf,
    creds: RwLock<Option<Creds>>,
    store: PhoneStore,
    api: RelayApi,
    status: watch::Sender<LinkStatus>,
    reconfigured: watch::Sender<u64>,
    heartbeat: Duration,
}

/// The phone side of the daemon (cheap to clone).
#[derive(Clone)]
pub struct PhoneHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PhoneHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhoneHub")
    }
}

impl PhoneHub {
    /// Load the relay settings and the phone list from `home`.
    pub fn open(home: &Home, heartbeat: Duration) -> Result<Self, String> {
        let creds_path = creds::path(home);
        let c = creds::load(&creds_path)?;
        let store = PhoneStore::open(home.root().join("phones.json"))?;
        // Dashboard tabs paired with an earlier run cannot come back (new key, new port).
        store.forget_label(local::LABEL)?;
        let api = RelayApi::new().map_err(|e| e.to_string())?;
        let state = if c.is_some() {
            "connecting"
        } else {
            "unconfigured"
        };
        let status = LinkStatus {
            state: state.into(),
            url: c.as_ref().map(|c| c.url.clone()),
            device_id: c.as_ref().map(|c| c.device_id.clone()),
            last_error: None,
            connects: 0,
            channels: 0,
            since: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dashboard: tokio::sync::OnceCell::new(),
                ctx: std::sync::OnceLock::new(),
                creds_path,
                creds: RwLock::new(c),
                store,
                api,
                status: watch::channel(status).0,
                reconfigured: watch::channel(0).0,
                heartbeat,
            }),
        })
    }

    /// Start the relay link (it waits while no relay is configured). The link runs on a
    /// thread of its own with a single-threaded runtime: an idle link then costs one wake-up
    /// for the ping and one for its answer, instead of rousing the daemon's worker pool.
    pub fn spawn(&self, ctx: DaemonCtx) -> Result<(), String> {
        let _ = self.inner.ctx.set(ctx.clone());
        let l = link::LinkCtx {
            ctx,
            hub: self.clone(),
            heartbeat: self.inner.heartbeat,
            status: self.inner.status.clone(),
            reconfigured: self.inner.reconfigured.subscribe(),
            runtime: tokio::runtime::Handle::current(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the relay link's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("loopsy-relay".into())
            .spawn(move || rt.block_on(link::run(l)))
            .map(|_| ())
            .map_err(|e| format!("cannot start the relay link's thread: {e}"))
    }

    /// The current credentials.
    pub fn creds(&self) -> Option<Creds> {
        self.inner
            .creds
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The local dashboard (started on first use) and a one-tab pairing link for it.
    pub async fn dashboard_link(&self, ttl_s: u64) -> Result<String, String> {
        let ctx = self
            .inner
            .ctx
            .get()
            .cloned()
            .ok_or("the daemon is still starting")?;
        let store = self.inner.store.clone();
        let d = self
            .inner
            .dashboard
            .get_or_try_init(|| local::Dashboard::start(ctx, store, 0, local::app_dir()))
            .await?;
        d.link(ttl_s)
    }

    /// The trusted phones.
    pub fn store(&self) -> &PhoneStore {
        &self.inner.store
    }

    /// The link's state.
    pub fn status(&self) -> LinkStatus {
        self.inner.status.borrow().clone()
    }

    /// Wait until the link is connected (or `timeout` passes); returns the last state.
    pub async fn wait_connected(&self, timeout: Duration) -> LinkStatus {
        let mut rx = self.inner.status.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| s.state == "connected")).await;
        self.status()
    }

    /// Re-read `relay.json` (after `loopsy relay configure` wrote it) and reconnect. A new
    /// device means new phone ids: phones paired before must pair again.
    pub fn reload(&self) -> Result<LinkStatus, String> {
        let c = creds::load(&self.inner.creds_path)?;
        let changed_device = {
            let mut cur = self.inner.creds.write().unwrap_or_else(|p| p.into_inner());
            let changed = cur.as_ref().map(|c| &c.device_id) != c.as_ref().map(|c| &c.device_id);
            *cur = c;
            changed
        };
        if changed_device {
            self.inner.store.clear()?;
        }
        self.inner.reconfigured.send_modify(|g| *g += 1);
        Ok(self.status())
    }

    /// Open a pairing window: a pair token from the relay, a short code checked here.
    pub async fn pair(&self, ttl_s: u64) -> Result<PairOut, String> {
        let c = self
            .creds()
            .ok_or("no relay is configured: run `loopsy relay configure <url>` first")?;
        let issued = self
            .inner
            .api
            .pair_issue(&c, ttl_s)
            .await
            .map_err(|e| e.to_string())?;
        let key = c.keypair()?;
        let code = loopsy_mesh::pair::new_code();
        self.inner
            .store
            .open_pairing(issued.pair_id, code.clone(), issued.expires_at);
        let link = PairLink {
            relay: c.url.clone(),
            token: issued.token,
            daemon_key: key.public,
        };
        Ok(PairOut {
            link: link.to_url(),
            code,
            expires_at: issued.expires_at,
        })
    }

    /// The trusted phones, with the relay's live view when it answers.
    pub async fn phones(&self) -> PhonesOut {
        let mine = self.inner.store.list();
        let (relay, relay_error) = match self.creds() {
            None => (None, Some("no relay is configured".to_string())),
            Some(c) => match self.inner.api.phones(&c).await {
                Ok(p) => (Some(p.phones), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let phones = mine
            .into_iter()
            .map(|p| PhoneView {
                connections: relay.as_ref().map(|r| {
                    r.iter()
                        .find(|e| e.phone_id == p.phone_id)
                        .map_or(0, |e| e.connections)
                }),
                phone: p,
            })
            .collect();
        PhonesOut {
            phones,
            relay_error,
        }
    }

    /// Revoke a phone here (which alone stops it) and at the relay (which also closes its
    /// sockets).
    pub async fn revoke(&self, phone_id: &str) -> Result<RevokeOut, String> {
        let revoked_here = self.inner.store.remove(phone_id)?;
        let (revoked_at_relay, relay_error) = match self.creds() {
            None => (false, Some("no relay is configured".to_string())),
            Some(c) => match self.inner.api.revoke(&c, phone_id).await {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e.to_string())),
            },
        };
        if !revoked_here && !revoked_at_relay {
            return Err(format!(
                "no phone {phone_id:?} here or at the relay: `loopsy phone list` shows the ids"
            ));
        }
        Ok(RevokeOut {
            phone_id: phone_id.to_string(),
            revoked_here,
            revoked_at_relay,
            relay_error,
        })
    }
}
