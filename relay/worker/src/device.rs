//! `Device`: one Durable Object per registered daemon. It holds the device's secret hash, its
//! phones (secret hashes and static keys), burnt pair ids and rate-limit counters in SQLite,
//! and splices the daemon's WebSocket to its phones' with the Hibernation API (sockets are
//! told apart by tags, which survive eviction). Decisions come from `loopsy_relay`.

use loopsy_relay::api::{
    self, ApiError, PairIssue, PairIssued, PhoneEntry, Phones, Redeem, Redeemed,
};
use loopsy_relay::limit::{self, Counter, Policy};
use loopsy_relay::route::{self, Route};
use loopsy_relay::splice::{self, Action, Socket};
use loopsy_relay::{secret, subprotocol, token};
use serde::Deserialize;
use worker::{
    DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, durable_object,
};

use crate::http;

/// The Worker's internal call that stores a new device (unreachable from outside: the Worker
/// only forwards requests that matched a public route).
pub const INTERNAL_REGISTER: &str = "https://device/internal/register";

const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS device (id INTEGER PRIMARY KEY CHECK (id = 0), device_id TEXT NOT NULL, secret_hash TEXT NOT NULL, created INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS phones (phone_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, phone_key TEXT NOT NULL, label TEXT NOT NULL, paired_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS used_pairs (pair_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, counter TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tap (n INTEGER PRIMARY KEY AUTOINCREMENT, dir TEXT NOT NULL, data BLOB NOT NULL)",
];

#[derive(Deserialize)]
struct DeviceRow {
    secret_hash: String,
}

#[derive(Deserialize)]
struct PhoneRow {
    phone_id: String,
    secret_hash: String,
    phone_key: String,
    label: String,
    paired_at: i64,
}

#[derive(Deserialize)]
struct NewDevice {
    device_id: String,
    secret_hash: String,
}

fn s(v: impl Into<String>) -> SqlStorageValue {
    SqlStorageValue::String(v.into())
}

fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A device's relay state.
#[durable_object(websocket)]
pub struct Device {
    state: State,
    env: Env,
    /// `LOOPSY_TEST_TAP = "1"` (read once; it cannot change while the object lives).
    tapping: bool,
}

impl DurableObject for Device {
    fn new(state: State, env: Env) -> Self {
        // No schema here: an object for a device id nobody registered must store nothing
        // (any well-formed id reaches an object). Registration creates the tables.
        // Phones keep their socket alive with "ping"; the runtime answers without waking us.
        if let Ok(pair) =
            worker::worker_sys::WebSocketRequestResponsePair::new(splice::PING, splice::PONG)
        {
            state.set_websocket_auto_response(&pair);
        }
        let tapping = env
            .var("LOOPSY_TEST_TAP")
            .map(|v| v.to_string() == "1")
            .unwrap_or(false);
        let me = Self {
            state,
            env,
            tapping,
        };
        // Tests: note each construction, to show the object was evicted and came back.
        me.tap("constructed", &[]);
        me
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        match self.handle(req).await {
            Ok(r) => Ok(r),
            Err(e) => http::error(&e),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let tags = self.state.get_tags(&ws);
        let actions = match (splice::socket_of(&tags), message) {
            (Some(Socket::Device), WebSocketIncomingMessage::Binary(b)) => {
                self.tap("device", &b);
                // Terminal output is most of the traffic: one lookup, no copy.
                if let Some((ch, payload)) = splice::data_route(&b) {
                    let socks = self.state.get_websockets_with_tag(&splice::channel_tag(ch));
                    if !socks.is_empty() {
                        for ws in socks {
                            let _ = ws.send_with_bytes(payload);
                        }
                        return Ok(());
                    }
                }
                splice::on_device_binary(&b, |ch| self.channel_open(ch))
            }
            (Some(Socket::Device), WebSocketIncomingMessage::String(_)) => splice::on_device_text(),
            (Some(Socket::Phone { channel, .. }), WebSocketIncomingMessage::Binary(b)) => {
                self.tap("phone", &b);
                splice::on_phone_binary(channel, b, self.device_online(None))
            }
            (Some(Socket::Phone { channel, .. }), WebSocketIncomingMessage::String(t)) => {
                if t == splice::PING {
                    vec![]
                } else {
                    splice::on_phone_text(channel)
                }
            }
            (None, _) => {
                let _ = ws.close(Some(splice::close::PROTOCOL), Some("unknown socket"));
                vec![]
            }
        };
        self.run(actions);
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        self.closed(ws, code);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        self.closed(ws, 1011);
        Ok(())
    }
}

impl Device {
    /// A socket closed (or failed): tell the other side, finish the close handshake.
    fn closed(&self, ws: WebSocket, code: usize) {
        let tags = self.state.get_tags(&ws);
        let actions = match splice::socket_of(&tags) {
            Some(Socket::Device) if !self.device_online(Some(&ws)) => splice::on_device_close(),
            Some(Socket::Phone { channel, .. }) => {
                splice::on_phone_close(channel, self.device_online(None))
            }
            _ => vec![],
        };
        // Complete the close handshake (1005/1006 cannot be sent back).
        let echo = u16::try_from(code)
            .ok()
            .filter(|c| *c == 1000 || (3000..5000).contains(c))
            .unwrap_or(1000);
        let _ = ws.close(Some(echo), Some("closed"));
        self.run(actions);
    }

    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// Whether a daemon socket is open (other than `except`, which is closing).
    fn device_online(&self, except: Option<&WebSocket>) -> bool {
        self.state
            .get_websockets_with_tag(splice::DEVICE_TAG)
            .iter()
            .any(|w| Some(w) != except)
    }

    fn channel_open(&self, channel: u32) -> bool {
        !self
            .state
            .get_websockets_with_tag(&splice::channel_tag(channel))
            .is_empty()
    }

    fn tapping(&self) -> bool {
        self.tapping
    }

    /// Test builds only: record what passed through, to prove it was ciphertext.
    fn tap(&self, from: &str, bytes: &[u8]) {
        if self.tapping() {
            let _ = self.sql().exec(
                "INSERT INTO tap (dir, data) VALUES (?, ?)",
                vec![s(from), SqlStorageValue::Blob(bytes.to_vec())],
            );
        }
    }

    fn run(&self, actions: Vec<Action>) {
        for a in actions {
            let r = match &a {
                Action::ToDevice(b) => {
                    for ws in self.state.get_websockets_with_tag(splice::DEVICE_TAG) {
                        let _ = ws.send_with_bytes(b);
                    }
                    Ok(())
                }
                Action::ToChannel(ch, b) => {
                    for ws in self
                        .state
                        .get_websockets_with_tag(&splice::channel_tag(*ch))
                    {
                        let _ = ws.send_with_bytes(b);
                    }
                    Ok(())
                }
                Action::NoticeToChannel(ch, text) => {
                    for ws in self
                        .state
                        .get_websockets_with_tag(&splice::channel_tag(*ch))
                    {
                        let _ = ws.send_with_str(text);
                    }
                    Ok(())
                }
                Action::NoticeToPhones(text) => {
                    for ws in self.state.get_websockets_with_tag(splice::PHONE_TAG) {
                        let _ = ws.send_with_str(text);
                    }
                    Ok(())
                }
                Action::CloseChannel(ch, code, reason) => {
                    for ws in self
                        .state
                        .get_websockets_with_tag(&splice::channel_tag(*ch))
                    {
                        let _ = ws.close(Some(*code), Some(reason));
                    }
                    Ok(())
                }
                Action::ClosePhone(p, code, reason) => {
                    for ws in self.state.get_websockets_with_tag(&splice::phone_tag(p)) {
                        let _ = ws.close(Some(*code), Some(reason));
                    }
                    Ok(())
                }
                Action::CloseDevice(code, reason) => {
                    for ws in self.state.get_websockets_with_tag(splice::DEVICE_TAG) {
                        let _ = ws.close(Some(*code), Some(reason));
                    }
                    Ok::<(), ()>(())
                }
            };
            let _ = r;
        }
    }

    /// The registered device, if any. An object nobody registered has no tables at all:
    /// that is "no device" too, and reading it writes nothing.
    fn device_row(&self) -> Result<Option<DeviceRow>, ApiError> {
        let rows: Vec<DeviceRow> = match self
            .sql()
            .exec("SELECT secret_hash FROM device WHERE id = 0", None)
            .and_then(|c| c.to_array())
        {
            Ok(rows) => rows,
            Err(_) => return Ok(None),
        };
        Ok(rows.into_iter().next())
    }

    fn ensure_schema(&self) -> Result<(), ApiError> {
        let sql = self.sql();
        for q in SCHEMA {
            sql.exec(q, None).map_err(http::internal)?;
        }
        Ok(())
    }

    /// How many rows a table holds.
    fn rows(&self, table: &str) -> Result<usize, ApiError> {
        #[derive(Deserialize)]
        struct N {
            n: i64,
        }
        let rows: Vec<N> = self
            .sql()
            .exec(&format!("SELECT COUNT(*) AS n FROM {table}"), None)
            .and_then(|c| c.to_array())
            .map_err(http::internal)?;
        Ok(rows
            .first()
            .map_or(0, |r| usize::try_from(r.n).unwrap_or(usize::MAX)))
    }

    fn phone_row(&self, phone_id: &str) -> Result<Option<PhoneRow>, ApiError> {
        let rows: Vec<PhoneRow> = self
            .sql()
            .exec(
                "SELECT phone_id, secret_hash, phone_key, label, paired_at FROM phones WHERE phone_id = ?",
                vec![s(phone_id)],
            )
            .and_then(|c| c.to_array())
            .map_err(http::internal)?;
        Ok(rows.into_iter().next())
    }

    /// Count an attempt under `p` for `key`; refuse with 429 when limited.
    fn limit(&self, key: &str, p: &Policy) -> Result<(), ApiError> {
        let mut c = self.counter(key)?;
        let r = c.attempt(p, http::now_s());
        self.save_counter(key, p, &c)?;
        r.map_err(ApiError::limited)
    }

    fn counter(&self, key: &str) -> Result<Counter, ApiError> {
        #[derive(Deserialize)]
        struct Row {
            counter: String,
        }
        let rows: Vec<Row> = self
            .sql()
            .exec("SELECT counter FROM limits WHERE key = ?", vec![s(key)])
            .and_then(|c| c.to_array())
            .map_err(http::internal)?;
        Ok(rows
            .first()
            .and_then(|r| serde_json::from_str(&r.counter).ok())
            .unwrap_or_default())
    }

    fn save_counter(&self, key: &str, p: &Policy, c: &Counter) -> Result<(), ApiError> {
        // Storage stays bounded whoever calls: a failing key not stored yet is refused when
        // the table is full. Only failures can be produced by strangers; what succeeded (the
        // owner, its phones) is always kept.
        let now = http::now_s();
        let failing = c.failures > 0 || c.locked_until > now;
        if failing
            && self.rows("limits")? >= limit::MAX_LIMIT_ROWS
            && self.counter_row_missing(key)?
            && !self.prune_limits(now)?
        {
            return Err(ApiError::new(
                429,
                "limited",
                "too many clients are being rate-limited here: try again later",
            ));
        }
        let r = if c.idle(p, http::now_s()) {
            self.sql()
                .exec("DELETE FROM limits WHERE key = ?", vec![s(key)])
        } else {
            let text = serde_json::to_string(c).map_err(http::internal)?;
            self.sql().exec(
                "INSERT INTO limits (key, counter) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET counter = excluded.counter",
                vec![s(key), s(text)],
            )
        };
        r.map(|_| ()).map_err(http::internal)
    }

    /// Drop rows of clients that failed a few times long ago (no lockout running, nothing
    /// this hour); true if that made room.
    fn prune_limits(&self, now: u64) -> Result<bool, ApiError> {
        #[derive(Deserialize)]
        struct Row {
            key: String,
            counter: String,
        }
        let rows: Vec<Row> = self
            .sql()
            .exec("SELECT key, counter FROM limits", None)
            .and_then(|c| c.to_array())
            .map_err(http::internal)?;
        let mut freed = 0;
        for r in rows {
            let c: Counter = serde_json::from_str(&r.counter).unwrap_or_default();
            if now >= c.locked_until && now >= c.window_start.saturating_add(3600) {
                self.sql()
                    .exec("DELETE FROM limits WHERE key = ?", vec![s(r.key)])
                    .map_err(http::internal)?;
                freed += 1;
            }
        }
        Ok(freed > 0)
    }

    fn counter_row_missing(&self, key: &str) -> Result<bool, ApiError> {
        let rows: Vec<serde_json::Value> = self
            .sql()
            .exec("SELECT key FROM limits WHERE key = ?", vec![s(key)])
            .and_then(|c| c.to_array())
            .map_err(http::internal)?;
        Ok(rows.is_empty())
    }

    /// Check a bearer with `ok`: wrong bearers count against the client's IP (locked out
    /// after ten in a row), never against the device or phone they name, so a stranger who
    /// knows a device id (it is in every pair link) cannot lock its owner out.
    /// Only failures are stored (a client that gets it right leaves no row behind), so the
    /// rows are the failing clients', capped by `MAX_LIMIT_ROWS`.
    fn check_bearer(&self, key: &str, ok: bool) -> Result<(), ApiError> {
        self.check_failures(key, &limit::BEARER_PER_IP, Some(ok))
    }

    /// Refuse while `key` is locked out; then, with the outcome, store a failure (or clear
    /// past ones). `None`: only the lockout check (the outcome is not known yet).
    fn check_failures(&self, key: &str, p: &Policy, ok: Option<bool>) -> Result<(), ApiError> {
        let now = http::now_s();
        let mut c = self.counter(key)?;
        if now < c.locked_until {
            return Err(ApiError::limited(limit::Limited::Locked {
                retry_after_s: c.locked_until - now,
            }));
        }
        match ok {
            None => Ok(()),
            Some(true) => {
                if c.failures > 0 {
                    c.succeeded();
                    self.save_counter(key, p, &c)?;
                }
                Ok(())
            }
            Some(false) => {
                c.failed(p, now);
                self.save_counter(key, p, &c)
            }
        }
    }

    /// The device's bearer must match (`Authorization` for HTTP, subprotocol for WebSockets).
    fn auth_device(&self, ip: &str, bearer: Option<&str>) -> Result<DeviceRow, ApiError> {
        let row = self.device_row()?.ok_or_else(|| {
            ApiError::not_found(
                "this relay does not know that device: run `loopsy relay configure <url>` again",
            )
        })?;
        let Some(bearer) = bearer else {
            return Err(ApiError::unauthorized("the device bearer is missing"));
        };
        let ok = secret::matches(bearer, &row.secret_hash);
        self.check_bearer(&format!("device-ip:{ip}"), ok)?;
        if !ok {
            return Err(ApiError::forbidden("wrong device secret"));
        }
        // The owner's own pace (a reconnect loop is cut off; its link never is by others).
        self.limit("device", &limit::DEVICE)?;
        Ok(row)
    }

    async fn handle(&self, mut req: Request) -> Result<Response, ApiError> {
        let url = req.url().map_err(http::internal)?;
        if url.as_str() == INTERNAL_REGISTER {
            let body = req.bytes().await.map_err(http::internal)?;
            let new: NewDevice = api::parse_body(&body)?;
            return self.register(new);
        }
        let route = route::route(req.method().as_ref(), url.path(), url.query())?;
        // A device id nobody registered: answer before anything is stored.
        if self.device_row()?.is_none() {
            return Err(ApiError::not_found(
                "this relay does not know that device: run `loopsy relay configure <url>` again",
            ));
        }
        let ip = http::client_ip(&req);
        let bearer = req
            .headers()
            .get("Authorization")
            .ok()
            .flatten()
            .and_then(|h| secret::from_authorization(&h).map(str::to_string));
        match route {
            Route::DeviceConnect(_) => self.device_connect(&req, &ip),
            Route::PhoneConnect(_, phone) => self.phone_connect(&req, &ip, &phone),
            Route::PairIssue(d) => {
                self.auth_device(&ip, bearer.as_deref())?;
                let body = req.bytes().await.map_err(http::internal)?;
                let issue: PairIssue = if body.is_empty() {
                    PairIssue::default()
                } else {
                    api::parse_body(&body)?
                };
                self.pair_issue(&d, issue)
            }
            Route::PairRedeem(d) => {
                let body = req.bytes().await.map_err(http::internal)?;
                self.redeem(&ip, &d, &body)
            }
            Route::PhoneList(_) => {
                self.auth_device(&ip, bearer.as_deref())?;
                self.phone_list()
            }
            Route::PhoneRevoke(_, phone) => self.phone_revoke(&ip, bearer.as_deref(), &phone),
            Route::TestTap(_) => {
                if !self.tapping() {
                    return Err(ApiError::not_found("no such endpoint"));
                }
                self.auth_device(&ip, bearer.as_deref())?;
                self.take_tap()
            }
            _ => Err(ApiError::not_found("no such endpoint")),
        }
    }

    fn register(&self, new: NewDevice) -> Result<Response, ApiError> {
        if self.device_row()?.is_some() {
            return Err(ApiError::conflict("device already registered"));
        }
        self.ensure_schema()?;
        self.sql()
            .exec(
                "INSERT INTO device (id, device_id, secret_hash, created) VALUES (0, ?, ?, ?)",
                vec![s(new.device_id), s(new.secret_hash), int(http::now_s())],
            )
            .map_err(http::internal)?;
        http::json(200, &serde_json::json!({ "ok": true }))
    }

    fn pair_issue(&self, device_id: &str, issue: PairIssue) -> Result<Response, ApiError> {
        let key = self.token_key()?;
        let pair_id = secret::id_from(&http::random()?);
        let expires_at = http::now_s() + token::clamp_ttl(issue.ttl_s);
        let token = token::issue(key.as_bytes(), device_id, &pair_id, expires_at)?;
        http::json(
            200,
            &PairIssued {
                token,
                pair_id,
                expires_at,
            },
        )
    }

    fn token_key(&self) -> Result<String, ApiError> {
        self.env
            .secret("PAIR_TOKEN_SECRET")
            .map(|s| s.to_string())
            .map_err(|_| token::TokenError::NoKey.into())
    }

    fn redeem(&self, ip: &str, device_id: &str, body: &[u8]) -> Result<Response, ApiError> {
        // Per client IP: pair tokens are HMAC-signed, so bad ones cost nothing but a hash;
        // a stranger who knows the device id locks out only itself.
        let key = format!("redeem:{ip}");
        self.check_failures(&key, &limit::REDEEM, None)?;
        let result = self.try_redeem(device_id, body);
        // Only a bad token counts towards the lockout (a malformed body is a client bug).
        let counts = match &result {
            Ok(_) => Some(true),
            Err(e) if e.error.starts_with("token_") || e.error == "conflict" => Some(false),
            Err(_) => None,
        };
        if let Some(ok) = counts {
            self.check_failures(&key, &limit::REDEEM, Some(ok))?;
        }
        http::json(200, &result?)
    }

    fn try_redeem(&self, device_id: &str, body: &[u8]) -> Result<Redeemed, ApiError> {
        let r: Redeem = api::parse_body(body)?;
        let key = self.token_key()?;
        let now = http::now_s();
        let t = token::verify(key.as_bytes(), &r.token, device_id, now)?;
        api::parse_key(&r.phone_key)?;
        if self.device_row()?.is_none() {
            return Err(ApiError::not_found("this relay does not know that device"));
        }
        let _ = self.sql().exec(
            "DELETE FROM used_pairs WHERE expires_at < ?",
            vec![int(now)],
        );
        let used = self
            .sql()
            .exec(
                "SELECT pair_id FROM used_pairs WHERE pair_id = ?",
                vec![s(t.pair_id.clone())],
            )
            .and_then(|c| c.to_array::<serde_json::Value>())
            .map_err(http::internal)?;
        if !used.is_empty() {
            return Err(ApiError::conflict(
                "this pair link was already used: run `loopsy mobile pair` again for a new one",
            ));
        }
        if self.rows("phones")? >= limit::MAX_PHONES {
            return Err(ApiError::conflict(format!(
                "this laptop already has {} phones paired: revoke one (`loopsy phone revoke <id>`) first",
                limit::MAX_PHONES
            )));
        }
        let phone_id = secret::id_from(&http::random()?);
        let phone_secret = secret::secret_from(&http::random()?);
        let sql = self.sql();
        sql.exec(
            "INSERT INTO used_pairs (pair_id, expires_at) VALUES (?, ?)",
            vec![s(t.pair_id.clone()), int(t.expires_at)],
        )
        .map_err(http::internal)?;
        sql.exec(
            "INSERT INTO phones (phone_id, secret_hash, phone_key, label, paired_at) VALUES (?, ?, ?, ?, ?)",
            vec![
                s(phone_id.clone()),
                s(secret::hash(&phone_secret)),
                s(r.phone_key),
                s(api::clean_label(&r.label)),
                int(now),
            ],
        )
        .map_err(http::internal)?;
        Ok(Redeemed {
            device_id: device_id.to_string(),
            phone_id,
            phone_secret,
            pair_id: t.pair_id,
        })
    }

    fn phone_list(&self) -> Result<Response, ApiError> {
        let rows: Vec<PhoneRow> = self
            .sql()
            .exec(
                "SELECT phone_id, secret_hash, phone_key, label, paired_at FROM phones ORDER BY paired_at",
                None,
            )
            .and_then(|c| c.to_array())
            .map_err(http::internal)?;
        let phones = rows
            .into_iter()
            .map(|r| PhoneEntry {
                connections: u32::try_from(
                    self.state
                        .get_websockets_with_tag(&splice::phone_tag(&r.phone_id))
                        .len(),
                )
                .unwrap_or(u32::MAX),
                phone_id: r.phone_id,
                phone_key: r.phone_key,
                label: r.label,
                paired_at: u64::try_from(r.paired_at).unwrap_or(0),
            })
            .collect();
        http::json(200, &Phones { phones })
    }

    /// Revoke by the device (its bearer) or by the phone itself (its own bearer).
    fn phone_revoke(
        &self,
        ip: &str,
        bearer: Option<&str>,
        phone_id: &str,
    ) -> Result<Response, ApiError> {
        let Some(bearer) = bearer else {
            return Err(ApiError::unauthorized("a bearer is required"));
        };
        let phone = self.phone_row(phone_id)?;
        let by_phone = phone
            .as_ref()
            .is_some_and(|p| secret::matches(bearer, &p.secret_hash));
        if !by_phone {
            self.auth_device(ip, Some(bearer))?;
        }
        if phone.is_none() {
            return Err(ApiError::not_found("no such phone (already revoked?)"));
        }
        self.sql()
            .exec("DELETE FROM phones WHERE phone_id = ?", vec![s(phone_id)])
            .map_err(http::internal)?;
        self.run(splice::on_phone_revoked(phone_id, self.device_online(None)));
        http::json(
            200,
            &serde_json::json!({ "ok": true, "phone_id": phone_id }),
        )
    }

    fn take_tap(&self) -> Result<Response, ApiError> {
        use base64::Engine;
        let cursor = self
            .sql()
            .exec("SELECT dir, data FROM tap ORDER BY n", None)
            .map_err(http::internal)?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(http::internal)?;
            if let [SqlStorageValue::String(dir), SqlStorageValue::Blob(data)] = &row[..] {
                out.push(serde_json::json!({
                    "dir": dir,
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                }));
            }
        }
        let _ = self.sql().exec("DELETE FROM tap", None);
        http::json(200, &out)
    }

    /// Check the upgrade request: WebSocket, same-origin (or none), a version we speak.
    fn ws_offer(&self, req: &Request) -> Result<subprotocol::Offer, ApiError> {
        let upgrade = req
            .headers()
            .get("Upgrade")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return Err(ApiError::new(
                426,
                "upgrade_required",
                "expected a WebSocket upgrade",
            ));
        }
        if let Some(origin) = req.headers().get("Origin").ok().flatten() {
            let url = req.url().map_err(http::internal)?;
            let own = url.origin().ascii_serialization();
            if origin != "null" && origin != own {
                return Err(ApiError::forbidden(format!(
                    "origin {origin} is not allowed"
                )));
            }
        }
        let header = req
            .headers()
            .get("Sec-WebSocket-Protocol")
            .ok()
            .flatten()
            .unwrap_or_default();
        Ok(subprotocol::negotiate(&header)?)
    }

    fn accept(
        &self,
        offer: &subprotocol::Offer,
        tags: &[String],
    ) -> Result<(WebSocket, Response), ApiError> {
        let pair = WebSocketPair::new().map_err(http::internal)?;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.state.accept_websocket_with_tags(&pair.server, &tags);
        let h = http::base_headers();
        let _ = h.set("Sec-WebSocket-Protocol", &offer.accepted());
        let resp = Response::from_websocket(pair.client)
            .map_err(http::internal)?
            .with_headers(h);
        Ok((pair.server, resp))
    }

    fn device_connect(&self, req: &Request, ip: &str) -> Result<Response, ApiError> {
        let offer = self.ws_offer(req)?;
        self.auth_device(ip, offer.bearer.as_deref())?;
        let mut actions = splice::on_device_connect(self.device_online(None));
        // Replace older connections before accepting the new one.
        if let Some(pos) = actions
            .iter()
            .position(|a| matches!(a, Action::CloseDevice(..)))
        {
            self.run(vec![actions.remove(pos)]);
        }
        let generation = format!("g:{}", worker::Date::now().as_millis());
        let (_server, resp) = self.accept(&offer, &[splice::DEVICE_TAG.to_string(), generation])?;
        // Announce phones that are already waiting, then tell them the laptop is here.
        let open: Vec<(String, u32)> = self
            .state
            .get_websockets_with_tag(splice::PHONE_TAG)
            .iter()
            .filter_map(|ws| match splice::socket_of(&self.state.get_tags(ws)) {
                Some(Socket::Phone { phone_id, channel }) => Some((phone_id, channel)),
                _ => None,
            })
            .collect();
        self.run(splice::announce_channels(&open));
        self.run(actions);
        Ok(resp)
    }

    fn phone_connect(&self, req: &Request, ip: &str, phone_id: &str) -> Result<Response, ApiError> {
        let offer = self.ws_offer(req)?;
        let Some(bearer) = offer.bearer.as_deref() else {
            return Err(ApiError::unauthorized(
                "the phone bearer is missing (send it as loopsy.bearer.<secret> in Sec-WebSocket-Protocol)",
            ));
        };
        let phone = self.phone_row(phone_id)?;
        let ok = phone
            .as_ref()
            .is_some_and(|p| secret::matches(bearer, &p.secret_hash));
        // Wrong bearers count against the client's IP (for a phone that exists, against
        // that IP and that phone: a revoked phone retrying at home locks out nobody else);
        // a phone has its own pace (a reconnect loop is cut off) that nobody else spends.
        let key = match phone {
            Some(_) => format!("phone-ip:{ip}:{phone_id}"),
            None => format!("phone-ip:{ip}"),
        };
        self.check_bearer(&key, ok)?;
        if !ok {
            return Err(ApiError::forbidden(
                "unknown or revoked phone: pair again with `loopsy mobile pair`",
            ));
        }
        let key = format!("connect:{phone_id}");
        self.limit(&key, &limit::PHONE_CONNECT)?;
        let mine = self
            .state
            .get_websockets_with_tag(&splice::phone_tag(phone_id))
            .len();
        let all = self.state.get_websockets_with_tag(splice::PHONE_TAG).len();
        splice::may_open_channel(mine, all)
            .map_err(|m| ApiError::new(429, "too_many_connections", m))?;
        let channel = loop {
            let c = u32::from_be_bytes(http::random()?);
            if c != 0 && !self.channel_open(c) {
                break c;
            }
        };
        let (_server, resp) = self.accept(&offer, &splice::phone_tags(phone_id, channel))?;
        self.run(splice::on_phone_connect(
            phone_id,
            channel,
            self.device_online(None),
        ));
        Ok(resp)
    }
}
