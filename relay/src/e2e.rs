//! End-to-end encryption between a phone and its daemon, through a relay that sees only
//! ciphertext: `Noise_IK_25519_ChaChaPoly_BLAKE2s` (the `snow` crate).
//!
//! The phone (initiator) knows the daemon's static key from the pair link and keeps its own
//! static key; each connection runs a fresh handshake with ephemeral keys. The prologue binds
//! the device and phone ids the relay routed on, so a relay that swaps them breaks the
//! handshake. Transport messages carry an implicit counter: a replayed, reordered, dropped or
//! altered message fails to decrypt, and the connection is then closed.

use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Largest Noise message.
pub const MAX_MESSAGE: usize = 65535;
/// Authentication tag bytes per message.
pub const TAG_LEN: usize = 16;
/// Largest plaintext per transport message.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;
/// Length of a handshake's first message with an empty payload (e, s, tag).
pub const FIRST_MESSAGE_LEN: usize = 32 + 32 + TAG_LEN + TAG_LEN;

/// Why the end-to-end layer refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// The handshake failed (wrong key, altered message, wrong prologue).
    #[error("end-to-end handshake failed: {0}")]
    Handshake(String),
    /// A transport message did not decrypt: altered, replayed, reordered or from elsewhere.
    #[error("an end-to-end message failed authentication (altered, replayed or reordered)")]
    Decrypt,
    /// Over [`MAX_PLAINTEXT`] / [`MAX_MESSAGE`].
    #[error("end-to-end message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A key that is not 32 bytes.
    #[error("bad end-to-end key: {0}")]
    BadKey(String),
}

fn params() -> Result<NoiseParams, E2eError> {
    NOISE_PARAMS
        .parse()
        .map_err(|e| E2eError::Handshake(format!("{e:?}")))
}

/// A static X25519 key pair (the daemon's, or a phone's).
#[derive(Clone)]
pub struct KeyPair {
    secret: [u8; 32],
    /// The public half.
    pub public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate() -> Result<Self, E2eError> {
        let kp = snow::Builder::new(params()?)
            .generate_keypair()
            .map_err(|e| E2eError::BadKey(e.to_string()))?;
        Self::from_secret(&kp.private)
    }

    /// The pair for a stored secret.
    pub fn from_secret(secret: &[u8]) -> Result<Self, E2eError> {
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| E2eError::BadKey(format!("{} bytes, not 32", secret.len())))?;
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .ok_or_else(|| E2eError::BadKey("no X25519".into()))?;
        dh.set(&secret);
        let public: [u8; 32] = dh
            .pubkey()
            .try_into()
            .map_err(|_| E2eError::BadKey("public key size".into()))?;
        Ok(Self { secret, public })
    }

    /// The secret half, for storing (0600) and nowhere else.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// The prologue both sides mix in: protocol, device and phone ids.
pub fn prologue(device_id: &str, phone_id: &str) -> Vec<u8> {
    format!("loopsy-e2e/1\n{device_id}\n{phone_id}").into_bytes()
}

/// A phone's handshake in progress.
pub struct Initiator {
    hs: snow::HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

impl Initiator {
    /// Start a handshake to the daemon whose static key is `daemon`; returns the first message.
    pub fn start(
        local: &KeyPair,
        daemon: &[u8; 32],
        prologue: &[u8],
    ) -> Result<(Self, Vec<u8>), E2eError> {
        let mut hs = snow::Builder::new(params()?)
            .local_private_key(&local.secret)
            .and_then(|b| b.remote_public_key(daemon))
            .and_then(|b| b.prologue(prologue))
            .and_then(|b| b.build_initiator())
            .map_err(|e| E2eError::Handshake(e.to_string()))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| E2eError::Handshake(e.to_string()))?;
        buf.truncate(n);
        Ok((Self { hs }, buf))
    }

    /// Finish with the daemon's answer.
    pub fn finish(mut self, reply: &[u8]) -> Result<Channel, E2eError> {
        if reply.len() > MAX_MESSAGE {
            return Err(E2eError::TooLarge(reply.len()));
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        self.hs
            .read_message(reply, &mut buf)
            .map_err(|e| E2eError::Handshake(e.to_string()))?;
        let t = self
            .hs
            .into_transport_mode()
            .map_err(|e| E2eError::Handshake(e.to_string()))?;
        Ok(Channel::new(t))
    }
}

/// The daemon's side: answer a phone's first message. Returns the channel, the phone's static
/// key (to check against the phones this daemon trusts) and the reply to send.
pub fn respond(
    local: &KeyPair,
    prologue: &[u8],
    first: &[u8],
) -> Result<(Channel, [u8; 32], Vec<u8>), E2eError> {
    if first.len() > MAX_MESSAGE {
        return Err(E2eError::TooLarge(first.len()));
    }
    let mut hs = snow::Builder::new(params()?)
        .local_private_key(&local.secret)
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| E2eError::Handshake(e.to_string()))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    hs.read_message(first, &mut buf)
        .map_err(|e| E2eError::Handshake(e.to_string()))?;
    let remote: [u8; 32] = hs
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| E2eError::Handshake("no static key from the phone".into()))?;
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|e| E2eError::Handshake(e.to_string()))?;
    buf.truncate(n);
    let t = hs
        .into_transport_mode()
        .map_err(|e| E2eError::Handshake(e.to_string()))?;
    Ok((Channel::new(t), remote, buf))
}

/// An established channel: seal outgoing and open incoming messages, in order.
pub struct Channel {
    t: snow::TransportState,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channel")
    }
}

impl Channel {
    fn new(t: snow::TransportState) -> Self {
        Self {
            t,
            buf: vec![0u8; MAX_MESSAGE],
        }
    }

    /// Encrypt one message of at most [`MAX_PLAINTEXT`] bytes.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, E2eError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(E2eError::TooLarge(plaintext.len()));
        }
        let n = self
            .t
            .write_message(plaintext, &mut self.buf)
            .map_err(|_| E2eError::TooLarge(plaintext.len()))?;
        Ok(self.buf[..n].to_vec())
    }

    /// Decrypt the next message; anything but the next genuine message fails.
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, E2eError> {
        if ciphertext.len() > MAX_MESSAGE {
            return Err(E2eError::TooLarge(ciphertext.len()));
        }
        let n = self
            .t
            .read_message(ciphertext, &mut self.buf)
            .map_err(|_| E2eError::Decrypt)?;
        Ok(self.buf[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Result<(Channel, Channel, [u8; 32], KeyPair), E2eError> {
        let daemon = KeyPair::generate()?;
        let phone = KeyPair::generate()?;
        let pro = prologue("dev", "ph");
        let (init, m1) = Initiator::start(&phone, &daemon.public, &pro)?;
        assert_eq!(m1.len(), FIRST_MESSAGE_LEN);
        let (d, remote, m2) = respond(&daemon, &pro, &m1)?;
        let p = init.finish(&m2)?;
        Ok((p, d, remote, phone))
    }

    #[test]
    fn handshake_and_transport() -> Result<(), E2eError> {
        let (mut p, mut d, remote, phone) = pair()?;
        assert_eq!(remote, phone.public);
        let c = p.seal(b"echo hi")?;
        assert!(!c.windows(7).any(|w| w == b"echo hi"));
        assert_eq!(d.open(&c)?, b"echo hi");
        let back = d.seal(b"hi")?;
        assert_eq!(p.open(&back)?, b"hi");
        let big = vec![7u8; MAX_PLAINTEXT];
        let c = d.seal(&big)?;
        assert_eq!(c.len(), MAX_MESSAGE);
        assert_eq!(p.open(&c)?, big);
        assert_eq!(
            d.seal(&vec![0; MAX_PLAINTEXT + 1]),
            Err(E2eError::TooLarge(MAX_PLAINTEXT + 1))
        );
        Ok(())
    }

    #[test]
    fn replay_reorder_tamper_fail() -> Result<(), E2eError> {
        let (mut p, mut d, _, _) = pair()?;
        let a = p.seal(b"a")?;
        let b = p.seal(b"b")?;
        // Reordered.
        assert_eq!(d.open(&b), Err(E2eError::Decrypt));
        assert_eq!(d.open(&a)?, b"a");
        // Replayed.
        assert_eq!(d.open(&a), Err(E2eError::Decrypt));
        assert_eq!(d.open(&b)?, b"b");
        // Tampered.
        let mut c = p.seal(b"c")?;
        c[0] ^= 1;
        assert_eq!(d.open(&c), Err(E2eError::Decrypt));
        Ok(())
    }

    #[test]
    fn wrong_keys_or_ids_fail() -> Result<(), E2eError> {
        let daemon = KeyPair::generate()?;
        let other = KeyPair::generate()?;
        let phone = KeyPair::generate()?;
        // The phone believes in another daemon key: the daemon cannot answer.
        let (_, m1) = Initiator::start(&phone, &other.public, &prologue("d", "p"))?;
        assert!(matches!(
            respond(&daemon, &prologue("d", "p"), &m1),
            Err(E2eError::Handshake(_))
        ));
        // A relay that swaps the phone id breaks it too.
        let (_, m1) = Initiator::start(&phone, &daemon.public, &prologue("d", "p"))?;
        assert!(respond(&daemon, &prologue("d", "q"), &m1).is_err());
        // A replayed first message gets an answer the replayer cannot use.
        let (init, m1) = Initiator::start(&phone, &daemon.public, &prologue("d", "p"))?;
        let (_, _, m2a) = respond(&daemon, &prologue("d", "p"), &m1)?;
        let (_, _, m2b) = respond(&daemon, &prologue("d", "p"), &m1)?;
        assert_ne!(m2a, m2b);
        assert!(init.finish(&m2a).is_ok());
        assert!(matches!(
            respond(&daemon, b"x", &[0u8; 10]),
            Err(E2eError::Handshake(_))
        ));
        Ok(())
    }

    #[test]
    fn keys_roundtrip() -> Result<(), E2eError> {
        let k = KeyPair::generate()?;
        let again = KeyPair::from_secret(k.secret())?;
        assert_eq!(again.public, k.public);
        assert!(KeyPair::from_secret(&[1, 2]).is_err());
        assert!(!format!("{k:?}").contains(&hex::encode(k.secret())));
        Ok(())
    }
}
