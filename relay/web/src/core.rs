//! The browser phone's session, in plain Rust: what the wasm bindings call.

use loopsy_relay::app::{self, Control, Decoder, Kind, Message};
use loopsy_relay::e2e::{self, Channel, Initiator, KeyPair};
use loopsy_relay::link::PairLink;

/// What a pair link says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The relay's base URL.
    pub relay: String,
    /// The pair token (sent to the relay once, to redeem).
    pub token: String,
    /// The laptop's device id at the relay.
    pub device_id: String,
    /// The pairing the code belongs to.
    pub pair_id: String,
    /// Unix seconds when the link expires.
    pub expires_at: u64,
    /// The laptop's static public key (pinned by the phone).
    pub daemon_key: [u8; 32],
}

/// Parse a scanned or pasted pair link.
pub fn parse_link(url: &str) -> Result<LinkInfo, String> {
    let l = PairLink::parse(url).map_err(|e| e.to_string())?;
    let t = l.token_info().map_err(|e| e.to_string())?;
    Ok(LinkInfo {
        relay: l.relay,
        token: l.token,
        device_id: t.device_id,
        pair_id: t.pair_id,
        expires_at: t.expires_at,
        daemon_key: l.daemon_key,
    })
}

/// A new static secret for this phone (32 bytes).
pub fn generate_secret() -> Result<Vec<u8>, String> {
    KeyPair::generate()
        .map(|k| k.secret().to_vec())
        .map_err(|e| e.to_string())
}

/// The public key of a stored secret.
pub fn public_key(secret: &[u8]) -> Result<Vec<u8>, String> {
    KeyPair::from_secret(secret)
        .map(|k| k.public.to_vec())
        .map_err(|e| e.to_string())
}

/// A decrypted message for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A control message, as JSON text.
    Control(String),
    /// Terminal output bytes.
    Output(Vec<u8>),
}

/// One connection's end-to-end state (a new one per WebSocket, or after the laptop rejoined).
#[derive(Debug, Default)]
pub struct PhoneSession {
    pending: Option<Initiator>,
    chan: Option<Channel>,
    dec: Decoder,
}

impl PhoneSession {
    /// A session before its handshake.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handshake's first message, to the laptop whose key is `daemon_key`.
    pub fn start(
        &mut self,
        secret: &[u8],
        daemon_key: &[u8],
        device_id: &str,
        phone_id: &str,
    ) -> Result<Vec<u8>, String> {
        let local = KeyPair::from_secret(secret).map_err(|e| e.to_string())?;
        let daemon: [u8; 32] = daemon_key
            .try_into()
            .map_err(|_| "the laptop's key must be 32 bytes".to_string())?;
        let (init, m1) = Initiator::start(&local, &daemon, &e2e::prologue(device_id, phone_id))
            .map_err(|e| e.to_string())?;
        self.pending = Some(init);
        self.chan = None;
        self.dec = Decoder::default();
        Ok(m1)
    }

    /// Finish the handshake with the laptop's answer.
    pub fn finish(&mut self, reply: &[u8]) -> Result<(), String> {
        let init = self.pending.take().ok_or("no handshake in progress")?;
        self.chan = Some(init.finish(reply).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// Whether the handshake is done.
    pub fn ready(&self) -> bool {
        self.chan.is_some()
    }

    fn chan(&mut self) -> Result<&mut Channel, String> {
        self.chan
            .as_mut()
            .ok_or_else(|| "the end-to-end handshake has not finished".to_string())
    }

    /// Seal a control message (JSON text, checked against the protocol) as ciphertexts.
    pub fn seal_control(&mut self, json: &str) -> Result<Vec<Vec<u8>>, String> {
        let c: Control =
            serde_json::from_str(json).map_err(|e| format!("not a control message: {e}"))?;
        let parts = app::encode_control(&c);
        let chan = self.chan()?;
        parts
            .iter()
            .map(|p| chan.seal(p).map_err(|e| e.to_string()))
            .collect()
    }

    /// Seal terminal input as ciphertexts.
    pub fn seal_input(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let parts = app::encode_bytes(Kind::Input, bytes);
        let chan = self.chan()?;
        parts
            .iter()
            .map(|p| chan.seal(p).map_err(|e| e.to_string()))
            .collect()
    }

    /// Open one ciphertext; `Ok(None)` for a part of a longer control message.
    pub fn open(&mut self, ct: &[u8]) -> Result<Option<Incoming>, String> {
        let plain = self.chan()?.open(ct).map_err(|e| e.to_string())?;
        match self.dec.push(&plain).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(Message::Control(c)) => serde_json::to_string(&c)
                .map(|j| Some(Incoming::Control(j)))
                .map_err(|e| e.to_string()),
            Some(Message::Output(o)) => Ok(Some(Incoming::Output(o))),
            Some(Message::Input(_)) => Err("the laptop sent input".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_session_talks_to_a_daemon() -> Result<(), String> {
        let daemon = KeyPair::generate().map_err(|e| e.to_string())?;
        let secret = generate_secret()?;
        assert_eq!(public_key(&secret)?.len(), 32);
        let mut p = PhoneSession::new();
        assert!(p.seal_input(b"x").is_err());
        let m1 = p.start(&secret, &daemon.public, "d", "p")?;
        let (mut d, remote, m2) =
            e2e::respond(&daemon, &e2e::prologue("d", "p"), &m1).map_err(|e| e.to_string())?;
        assert_eq!(remote.to_vec(), public_key(&secret)?);
        p.finish(&m2)?;
        assert!(p.ready());
        let sealed = p.seal_control(r#"{"t":"ping","n":7}"#)?;
        let mut dec = Decoder::default();
        let got = dec
            .push(&d.open(&sealed[0]).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        assert_eq!(got, Some(Message::Control(Control::Ping { n: 7 })));
        assert!(p.seal_control(r#"{"t":"nope"}"#).is_err());
        let out = app::encode_bytes(Kind::Output, b"hello");
        let ct = d.seal(&out[0]).map_err(|e| e.to_string())?;
        assert_eq!(p.open(&ct)?, Some(Incoming::Output(b"hello".to_vec())));
        // A replay fails.
        assert!(p.open(&ct).is_err());
        Ok(())
    }

    #[test]
    fn links() -> Result<(), String> {
        let token = loopsy_relay::token::issue(
            b"0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
            "00112233445566778899aabbccddeeff",
            2_000_000_000,
        )
        .map_err(|e| e.to_string())?;
        let url = PairLink {
            relay: "https://r.example".into(),
            token,
            daemon_key: [5; 32],
        }
        .to_url();
        let l = parse_link(&url)?;
        assert_eq!(l.pair_id, "00112233445566778899aabbccddeeff");
        assert_eq!(l.daemon_key, [5; 32]);
        assert!(parse_link("https://r.example/app#nope").is_err());
        Ok(())
    }
}
