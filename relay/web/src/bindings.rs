//! The JavaScript face of [`crate::core`] (wasm-bindgen): byte arrays in and out, errors as
//! exceptions with the message the app shows.

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::core::{self, Incoming};

fn err(e: String) -> JsError {
    JsError::new(&e)
}

fn array(parts: Vec<Vec<u8>>) -> Array {
    parts
        .into_iter()
        .map(|p| JsValue::from(Uint8Array::from(p.as_slice())))
        .collect()
}

fn set(o: &Object, k: &str, v: impl Into<JsValue>) -> Result<(), JsError> {
    Reflect::set(o, &JsValue::from_str(k), &v.into())
        .map(|_| ())
        .map_err(|_| JsError::new("cannot build the result object"))
}

/// A new static secret for this phone.
#[wasm_bindgen(js_name = generateSecret)]
pub fn generate_secret() -> Result<Vec<u8>, JsError> {
    core::generate_secret().map_err(err)
}

/// The public key of a secret.
#[wasm_bindgen(js_name = publicKey)]
pub fn public_key(secret: &[u8]) -> Result<Vec<u8>, JsError> {
    core::public_key(secret).map_err(err)
}

/// Parse a pair link: `{relay, token, deviceId, pairId, expiresAt, daemonKey}`.
#[wasm_bindgen(js_name = parseLink)]
pub fn parse_link(url: &str) -> Result<Object, JsError> {
    let l = core::parse_link(url).map_err(err)?;
    let o = Object::new();
    set(&o, "relay", l.relay)?;
    set(&o, "token", l.token)?;
    set(&o, "deviceId", l.device_id)?;
    set(&o, "pairId", l.pair_id)?;
    set(&o, "expiresAt", l.expires_at as f64)?;
    set(&o, "daemonKey", Uint8Array::from(&l.daemon_key[..]))?;
    Ok(o)
}

/// One connection's end-to-end session.
#[wasm_bindgen]
pub struct Session {
    inner: core::PhoneSession,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

#[wasm_bindgen]
impl Session {
    /// A session before its handshake.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Session {
        Session {
            inner: core::PhoneSession::new(),
        }
    }

    /// The handshake's first message.
    pub fn start(
        &mut self,
        secret: &[u8],
        daemon_key: &[u8],
        device_id: &str,
        phone_id: &str,
    ) -> Result<Vec<u8>, JsError> {
        self.inner
            .start(secret, daemon_key, device_id, phone_id)
            .map_err(err)
    }

    /// Finish with the laptop's answer.
    pub fn finish(&mut self, reply: &[u8]) -> Result<(), JsError> {
        self.inner.finish(reply).map_err(err)
    }

    /// Whether the handshake is done.
    pub fn ready(&self) -> bool {
        self.inner.ready()
    }

    /// Seal a control message (JSON text): an array of ciphertexts.
    #[wasm_bindgen(js_name = sealControl)]
    pub fn seal_control(&mut self, json: &str) -> Result<Array, JsError> {
        self.inner.seal_control(json).map(array).map_err(err)
    }

    /// Seal terminal input: an array of ciphertexts.
    #[wasm_bindgen(js_name = sealInput)]
    pub fn seal_input(&mut self, bytes: &[u8]) -> Result<Array, JsError> {
        self.inner.seal_input(bytes).map(array).map_err(err)
    }

    /// Open a ciphertext: `{control: json}`, `{output: Uint8Array}`, or null for a part.
    pub fn open(&mut self, ct: &[u8]) -> Result<JsValue, JsError> {
        Ok(match self.inner.open(ct).map_err(err)? {
            None => JsValue::NULL,
            Some(Incoming::Control(j)) => {
                let o = Object::new();
                set(&o, "control", j)?;
                o.into()
            }
            Some(Incoming::Output(b)) => {
                let o = Object::new();
                set(&o, "output", Uint8Array::from(b.as_slice()))?;
                o.into()
            }
        })
    }
}
