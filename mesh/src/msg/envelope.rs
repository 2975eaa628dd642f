//! The message envelope (field names kept from the original protocol) and its signed wire
//! form. `from` and `to` on the wire are PeerIds — names are local to each machine — and the
//! envelope is signed with the sender's peer key: a receiver accepts it only if the signature
//! verifies, the signer is the peer on the other end of the connection, and `from` names that
//! same peer.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

/// What a message is for (the original's types, plus `task` for task hand-offs).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MsgType {
    /// Conversation.
    Chat,
    /// Asks for something; expect a `response` with `reply_to`.
    Request,
    /// Answers a `request`.
    Response,
    /// Sent to every peer.
    Broadcast,
    /// A task hand-off or update.
    Task,
}

/// `to` of a message sent to every trusted peer.
pub const TO_ALL: &str = "*";
/// Largest envelope on the wire (JSON text).
pub const MAX_ENVELOPE: usize = 1 << 20;
/// Longest `thread`, `reply_to` and `id`.
const MAX_REF: usize = 128;
/// Default and longest time a message is retried and kept.
pub const DEFAULT_TTL_S: u64 = 7 * 24 * 3600;
/// Longest `ttl_s`.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;
/// Domain separation for signatures.
const SIG_CONTEXT: &[u8] = b"loopsy-msg-v1\0";

/// A message as signed and sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Unique and sortable: `<ms since epoch, 13 digits>-<16 hex>`.
    pub id: String,
    /// The sender's PeerId (the signer).
    pub from: String,
    /// The recipient's PeerId, or `*` for every peer.
    pub to: String,
    /// When it was sent (Unix ms).
    pub ts: u64,
    /// What it is for.
    #[serde(rename = "type")]
    pub kind: MsgType,
    /// The text (often JSON; never interpreted by loopsy).
    pub body: String,
    /// Retried and kept this long after `ts` (default 7 days, at most 30).
    pub ttl_s: u64,
    /// The id of the message this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A conversation id, for `wait_for_message(thread)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not valid JSON of an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// Body or envelope over the limit.
    #[error("{0}")]
    Oversize(String),
    /// The signature does not verify, or the signer is not who `from` says.
    #[error("{0}")]
    BadSignature(String),
}

impl Invalid {
    /// A short counter name.
    pub fn counter(&self) -> &'static str {
        match self {
            Invalid::Malformed(_) => "malformed",
            Invalid::Oversize(_) => "oversize",
            Invalid::BadSignature(_) => "bad_signature",
        }
    }
}

/// A fresh id for a message sent at `ts`.
pub fn new_id(ts: u64) -> String {
    format!("{ts:013}-{:016x}", rand::random::<u64>())
}

fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 30
        && b[..13].iter().all(u8::is_ascii_digit)
        && b[13] == b'-'
        && b[14..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn valid_ref(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_REF && !s.chars().any(char::is_control)
}

impl Envelope {
    /// Check the fields a sender or receiver must agree on.
    pub fn check(&self, max_body: usize) -> Result<(), Invalid> {
        if !valid_id(&self.id) {
            return Err(Invalid::Malformed(format!("bad id {:?}", self.id)));
        }
        if self.body.len() > max_body {
            return Err(Invalid::Oversize(format!(
                "body is {} bytes; the limit is {max_body} (messages.max_body_bytes)",
                self.body.len()
            )));
        }
        if self.ttl_s == 0 || self.ttl_s > MAX_TTL_S {
            return Err(Invalid::Malformed(format!("ttl_s must be 1..={MAX_TTL_S}")));
        }
        for r in [&self.reply_to, &self.thread].into_iter().flatten() {
            if !valid_ref(r) {
                return Err(Invalid::Malformed(format!(
                    "reply_to and thread are 1-{MAX_REF} bytes without control characters"
                )));
            }
        }
        if self.from.parse::<PeerId>().is_err() {
            return Err(Invalid::Malformed("from is not a PeerId".into()));
        }
        if self.to != TO_ALL && self.to.parse::<PeerId>().is_err() {
            return Err(Invalid::Malformed("to is not a PeerId or *".into()));
        }
        Ok(())
    }

    /// When it expires (Unix ms).
    pub fn expires_at(&self) -> u64 {
        self.ts.saturating_add(self.ttl_s.saturating_mul(1000))
    }
}

/// An envelope with its signature, as it crosses the wire and sits in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Signed {
    /// The envelope's JSON text, exactly as signed.
    pub env: String,
    /// The signer's public key (protobuf encoding).
    #[serde(with = "crate::wire::serde_bytes_vec")]
    pub key: Vec<u8>,
    /// Signature over the context string and `env`.
    #[serde(with = "crate::wire::serde_bytes_vec")]
    pub sig: Vec<u8>,
}

fn signed_bytes(env: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIG_CONTEXT.len() + env.len());
    m.extend_from_slice(SIG_CONTEXT);
    m.extend_from_slice(env.as_bytes());
    m
}

impl Signed {
    /// Sign `env` with this node's key.
    pub fn sign(env: &Envelope, key: &Keypair) -> Result<Self, Invalid> {
        let text = serde_json::to_string(env).map_err(|e| Invalid::Malformed(e.to_string()))?;
        let sig = key
            .sign(&signed_bytes(&text))
            .map_err(|e| Invalid::BadSignature(format!("cannot sign: {e}")))?;
        Ok(Self {
            env: text,
            key: key.public().encode_protobuf(),
            sig,
        })
    }

    /// Check the signature, that `sender` (the connection's peer) signed it and is `from`,
    /// and the envelope itself; the envelope.
    pub fn open(&self, sender: &PeerId, max_body: usize) -> Result<Envelope, Invalid> {
        if self.env.len() > MAX_ENVELOPE {
            return Err(Invalid::Oversize(format!(
                "envelope is {} bytes; the limit is {MAX_ENVELOPE}",
                self.env.len()
            )));
        }
        let key = PublicKey::try_decode_protobuf(&self.key)
            .map_err(|e| Invalid::BadSignature(format!("bad signer key: {e}")))?;
        if key.to_peer_id() != *sender {
            return Err(Invalid::BadSignature(
                "signed by a key other than the sending peer's".into(),
            ));
        }
        if !key.verify(&signed_bytes(&self.env), &self.sig) {
            return Err(Invalid::BadSignature("signature does not verify".into()));
        }
        let env: Envelope =
            serde_json::from_str(&self.env).map_err(|e| Invalid::Malformed(e.to_string()))?;
        if env.from != sender.to_string() {
            return Err(Invalid::BadSignature(
                "from does not match the signer".into(),
            ));
        }
        env.check(max_body)?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(from: &Keypair) -> Envelope {
        Envelope {
            id: new_id(1_700_000_000_000),
            from: from.public().to_peer_id().to_string(),
            to: TO_ALL.into(),
            ts: 1_700_000_000_000,
            kind: MsgType::Chat,
            body: "hello".into(),
            ttl_s: 60,
            reply_to: None,
            thread: Some("t1".into()),
        }
    }

    #[test]
    fn a_signed_envelope_opens_only_for_its_signer() {
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519();
        let s = Signed::sign(&env(&a), &a).unwrap();
        let a_id = a.public().to_peer_id();
        assert_eq!(s.open(&a_id, 1024).unwrap().body, "hello");
        // Relayed by someone else: refused.
        let e = s.open(&b.public().to_peer_id(), 1024).unwrap_err();
        assert_eq!(e.counter(), "bad_signature");
        // Tampered body.
        let mut t = s.clone();
        t.env = t.env.replace("hello", "HELLO");
        assert_eq!(t.open(&a_id, 1024).unwrap_err().counter(), "bad_signature");
        // Signed by b but claiming to be from a.
        let forged = Signed::sign(&env(&a), &b).unwrap();
        let e = forged.open(&b.public().to_peer_id(), 1024).unwrap_err();
        assert!(e.to_string().contains("from does not match"), "{e}");
        // Oversize body.
        assert_eq!(s.open(&a_id, 3).unwrap_err().counter(), "oversize");
    }

    /// The conformance vectors in agents-spec/ (the schema there must agree; the Python
    /// suite checks that side).
    #[test]
    fn conformance_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agents-spec/vectors/envelopes.json"
        );
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let vectors = all["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 10);
        for v in vectors {
            let ok = serde_json::from_value::<Envelope>(v["envelope"].clone())
                .map_err(|e| e.to_string())
                .and_then(|e| e.check(65536).map_err(|e| e.to_string()));
            assert_eq!(
                ok.is_ok(),
                v["valid"].as_bool().unwrap(),
                "{}: {ok:?}",
                v["name"]
            );
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_checked() {
        let a = new_id(5);
        let b = new_id(1_700_000_000_000);
        assert!(a < b && valid_id(&a) && valid_id(&b));
        for bad in ["", "x", "1700000000000-ZZ", "../../etc/passwd"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
