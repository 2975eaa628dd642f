//! `phones.json` (0600): the phones this daemon trusts, each bound to its static key — the
//! daemon's own list, so revoking a phone here stops it even if the relay misbehaves — and the
//! pairings waiting for their short code (in memory only: a restart cancels them).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use loopsy_mesh::fsutil::{PRIVATE_FILE, atomic_write};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// Most phones one daemon trusts.
pub const MAX_PHONES: usize = 32;
/// Wrong codes a pairing survives.
pub const MAX_ATTEMPTS: u32 = 3;
/// Pairings waiting at once (the oldest is dropped).
const MAX_PENDING: usize = 4;
/// Largest `phones.json` read.
const MAX_BYTES: u64 = 1 << 20;

/// Constant-time equality (lengths are not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A trusted phone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Phone {
    /// Its id at the relay.
    pub phone_id: String,
    /// Its static X25519 public key (base64url).
    pub key: String,
    /// What it called itself.
    pub label: String,
    /// Unix seconds.
    pub paired_at: u64,
    /// Unix seconds of its last connection (this daemon run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// Why a pairing proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairFail {
    /// No such pairing (never issued here, used, or cancelled by a restart).
    #[error(
        "this pairing is not open on the laptop (used, expired or cancelled): run `loopsy mobile pair` again"
    )]
    Unknown,
    /// Past its expiry.
    #[error("this pairing expired: run `loopsy mobile pair` again")]
    Expired,
    /// Wrong code; some tries left.
    #[error("wrong code ({0} tries left)")]
    Wrong(u32),
    /// Wrong code, and no tries left: the pairing is closed.
    #[error("wrong code too many times: this pairing is closed; run `loopsy mobile pair` again")]
    TooMany,
    /// The list is full.
    #[error(
        "this laptop already trusts {MAX_PHONES} phones: revoke one with `loopsy phone revoke`"
    )]
    Full,
    /// Disk trouble.
    #[error("cannot save the phone: {0}")]
    Io(String),
}

#[derive(Debug)]
struct Pending {
    pair_id: String,
    code: String,
    expires_at: u64,
    attempts: u32,
}

#[derive(Debug, Default)]
struct State {
    phones: Vec<Phone>,
    pending: Vec<Pending>,
}

/// The daemon's trusted phones (cheap to clone).
#[derive(Debug, Clone)]
pub struct PhoneStore {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PhoneStore {
    /// Open (or start) the list at `path`.
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let phones = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_BYTES => {
                return Err(format!("{}: too large to be a phone list", path.display()));
            }
            Ok(_) => {
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            path,
            state: Arc::new(Mutex::new(State {
                phones,
                pending: Vec::new(),
            })),
            changed: Arc::new(watch::channel(0).0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, s: &State) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&s.phones).map_err(|e| e.to_string())?;
        atomic_write(&self.path, &bytes, PRIVATE_FILE)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Bumped on every change of the list (channels re-check their phone).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The trusted phones.
    pub fn list(&self) -> Vec<Phone> {
        self.lock().phones.clone()
    }

    /// Whether `phone_id` is trusted with exactly this static key.
    pub fn trusts(&self, phone_id: &str, key: &[u8; 32]) -> bool {
        let k = URL_SAFE_NO_PAD.encode(key);
        self.lock()
            .phones
            .iter()
            .any(|p| p.phone_id == phone_id && ct_eq(p.key.as_bytes(), k.as_bytes()))
    }

    /// Note a connection.
    pub fn seen(&self, phone_id: &str) {
        if let Some(p) = self
            .lock()
            .phones
            .iter_mut()
            .find(|p| p.phone_id == phone_id)
        {
            p.last_seen = Some(now_s());
        }
    }

    /// Open a pairing: the phone that redeems `pair_id` must then show `code`.
    pub fn open_pairing(&self, pair_id: String, code: String, expires_at: u64) {
        let mut s = self.lock();
        let now = now_s();
        s.pending.retain(|p| p.expires_at > now);
        if s.pending.len() >= MAX_PENDING {
            s.pending.remove(0);
        }
        s.pending.push(Pending {
            pair_id,
            code,
            expires_at,
            attempts: 0,
        });
    }

    /// Cancel every open pairing.
    pub fn close_pairings(&self) {
        self.lock().pending.clear();
    }

    /// Check a phone's proof; on success trust `phone_id` with `key`.
    pub fn complete_pairing(
        &self,
        pair_id: &str,
        code: &str,
        phone_id: &str,
        key: &[u8; 32],
        label: &str,
    ) -> Result<(), PairFail> {
        let mut s = self.lock();
        let now = now_s();
        let i = s
            .pending
            .iter()
            .position(|p| p.pair_id == pair_id)
            .ok_or(PairFail::Unknown)?;
        if s.pending[i].expires_at <= now {
            s.pending.remove(i);
            return Err(PairFail::Expired);
        }
        let code = loopsy_mesh::pair::normalize_code(code).unwrap_or_default();
        if !ct_eq(code.as_bytes(), s.pending[i].code.as_bytes()) {
            s.pending[i].attempts += 1;
            let left = MAX_ATTEMPTS.saturating_sub(s.pending[i].attempts);
            if left == 0 {
                s.pending.remove(i);
                return Err(PairFail::TooMany);
            }
            return Err(PairFail::Wrong(left));
        }
        if s.phones.len() >= MAX_PHONES && !s.phones.iter().any(|p| p.phone_id == phone_id) {
            return Err(PairFail::Full);
        }
        s.pending.remove(i);
        s.phones.retain(|p| p.phone_id != phone_id);
        s.phones.push(Phone {
            phone_id: phone_id.to_string(),
            key: URL_SAFE_NO_PAD.encode(key),
            label: loopsy_relay::api::clean_label(label),
            paired_at: now,
            last_seen: Some(now),
        });
        self.save(&s).map_err(PairFail::Io)
    }

    /// Stop trusting a phone; false if it was not trusted.
    pub fn remove(&self, phone_id: &str) -> Result<bool, String> {
        let mut s = self.lock();
        let before = s.phones.len();
        s.phones.retain(|p| p.phone_id != phone_id);
        if s.phones.len() == before {
            return Ok(false);
        }
        self.save(&s)?;
        Ok(true)
    }

    /// Forget every phone trusted under `label`.
    pub fn forget_label(&self, label: &str) -> Result<(), String> {
        let mut s = self.lock();
        let before = s.phones.len();
        s.phones.retain(|p| p.label != label);
        if s.phones.len() != before {
            self.save(&s)?;
        }
        Ok(())
    }

    /// Forget every phone (a new relay means new phone ids).
    pub fn clear(&self) -> Result<(), String> {
        let mut s = self.lock();
        s.pending.clear();
        if s.phones.is_empty() {
            return Ok(());
        }
        s.phones.clear();
        self.save(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_rules() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("phones.json");
        let s = PhoneStore::open(path.clone())?;
        let key = [3u8; 32];
        let far = now_s() + 300;
        s.open_pairing("p1".into(), "123456".into(), far);
        assert_eq!(
            s.complete_pairing("nope", "123456", "ph", &key, "x"),
            Err(PairFail::Unknown)
        );
        assert_eq!(
            s.complete_pairing("p1", "000000", "ph", &key, "x"),
            Err(PairFail::Wrong(2))
        );
        assert_eq!(
            s.complete_pairing("p1", "000001", "ph", &key, "x"),
            Err(PairFail::Wrong(1))
        );
        assert_eq!(
            s.complete_pairing("p1", "000002", "ph", &key, "x"),
            Err(PairFail::TooMany)
        );
        // Closed for good, even with the right code now.
        assert_eq!(
            s.complete_pairing("p1", "123456", "ph", &key, "x"),
            Err(PairFail::Unknown)
        );
        s.open_pairing("p2".into(), "654321".into(), far);
        let rx = s.subscribe();
        s.complete_pairing("p2", "654 321", "ph", &key, "Pixel")
            .map_err(|e| e.to_string())?;
        assert!(rx.has_changed().unwrap_or(false));
        assert!(s.trusts("ph", &key));
        assert!(!s.trusts("ph", &[4u8; 32]));
        assert!(!s.trusts("other", &key));
        // Single use.
        assert_eq!(
            s.complete_pairing("p2", "654321", "ph2", &key, "x"),
            Err(PairFail::Unknown)
        );
        s.open_pairing("p3".into(), "111111".into(), now_s());
        assert_eq!(
            s.complete_pairing("p3", "111111", "ph3", &key, "x"),
            Err(PairFail::Expired)
        );
        // Persisted, and removable.
        let again = PhoneStore::open(path)?;
        assert_eq!(again.list().len(), 1);
        assert!(again.remove("ph")?);
        assert!(!again.remove("ph")?);
        assert!(!again.trusts("ph", &key));
        Ok(())
    }
}
