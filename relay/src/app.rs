//! What a phone and its daemon say inside the end-to-end channel (the relay never sees it).
//!
//! Each decrypted message is `kind u8 | body`: a JSON [`Control`] message (split into parts
//! when it exceeds one Noise message), terminal output, or terminal input. Control messages
//! are reassembled up to [`MAX_CONTROL`] bytes; anything larger or malformed is refused.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::e2e::MAX_PLAINTEXT;

/// Largest reassembled control message.
pub const MAX_CONTROL: usize = 1 << 20;
/// Largest body per message (one kind byte goes first).
pub const MAX_BODY: usize = MAX_PLAINTEXT - 1;
/// Terminal output bytes in flight (sent, not yet acknowledged) before the daemon waits: the
/// default, and the most a phone may ask for with `Attach { window }`.
pub const OUTPUT_WINDOW: u64 = 1 << 20;
/// The least a phone may ask for (smaller requests are raised to it).
pub const MIN_WINDOW: u64 = 4 << 10;
/// A phone on the default window acknowledges output at least every this many bytes. (The web
/// app asks for a small window instead and acknowledges once per painted frame.)
pub const ACK_EVERY: u64 = 128 * 1024;
/// Longest pairing code accepted.
pub const MAX_CODE: usize = 16;

/// Message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A whole control message, or the last part of one.
    Control = 1,
    /// A part of a control message; more follow.
    ControlPart = 2,
    /// Terminal output (daemon → phone).
    Output = 3,
    /// Terminal input (phone → daemon).
    Input = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Control,
            2 => Self::ControlPart,
            3 => Self::Output,
            4 => Self::Input,
            _ => return None,
        })
    }
}

/// Proof that the person holding this phone saw the laptop's screen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PairProof {
    /// The pairing from the redeemed token.
    pub pair_id: String,
    /// The short code `loopsy mobile pair` showed.
    pub code: String,
}

/// Control messages, both ways (`t` names the type).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Phone → daemon, first: who I am; with `pair` on the first connection after redeeming.
    Hello {
        /// The pairing proof (first connection only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pair: Option<PairProof>,
        /// A label for `loopsy phone list`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// Daemon → phone: accepted.
    Welcome {
        /// The phone's id.
        phone_id: String,
        /// The laptop's name.
        host: String,
        /// loopsy version.
        version: String,
        /// True when this connection completed pairing.
        paired: bool,
    },
    /// Phone → daemon: run a tool (the phone's allowed subset) with `args`.
    Call {
        /// Echoed in the result.
        id: u64,
        /// Tool name (`loopsy_session_list`, …).
        tool: String,
        /// Its arguments.
        #[serde(default)]
        args: Value,
    },
    /// Daemon → phone: a tool's result.
    Result {
        /// The call's id.
        id: u64,
        /// False if the tool failed (then `value` is `{code, message}`).
        ok: bool,
        /// Structured result.
        value: Value,
    },
    /// Phone → daemon: make this connection a live client of a session.
    Attach {
        /// Session id or name.
        session: String,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
        /// Output bytes the phone wants in flight at most (default and ceiling
        /// [`OUTPUT_WINDOW`], floor [`MIN_WINDOW`]). Daemons from before 0.2 refuse this field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<u64>,
    },
    /// Daemon → phone: attached; output follows (the screen first).
    Attached {
        /// The session's info.
        session: Value,
    },
    /// Phone → daemon: new terminal size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Phone → daemon: stop being a client (the session keeps running).
    Detach,
    /// Daemon → phone: the attachment ended.
    Detached {
        /// Why.
        reason: String,
    },
    /// Daemon → phone: the program ended.
    Exited {
        /// Its exit code.
        code: Option<i32>,
    },
    /// Phone → daemon: output bytes received so far on this attachment (flow control).
    Ack {
        /// Cumulative count.
        bytes: u64,
    },
    /// Either way: are you there?
    Ping {
        /// Echoed.
        n: u64,
    },
    /// The answer.
    Pong {
        /// From the ping.
        n: u64,
    },
    /// Phone → daemon: forget this phone (the phone's own "unpair").
    Forget,
    /// Daemon → phone: a refusal. `fatal` means the daemon closes the channel next.
    Error {
        /// Stable code.
        code: String,
        /// What to do.
        message: String,
        /// Whether the connection ends.
        fatal: bool,
    },
}

impl Control {
    /// An error message.
    pub fn error(code: &str, message: impl Into<String>, fatal: bool) -> Self {
        Self::Error {
            code: code.into(),
            message: message.into(),
            fatal,
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A whole control message.
    Control(Control),
    /// Terminal output.
    Output(Vec<u8>),
    /// Terminal input.
    Input(Vec<u8>),
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Empty or unknown kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Empty message.
    #[error("empty message")]
    Empty,
    /// A control message over [`MAX_CONTROL`].
    #[error("control message over {MAX_CONTROL} bytes")]
    TooLarge,
    /// Not a valid control message.
    #[error("bad control message: {0}")]
    BadControl(String),
}

/// Encode a control message as one or more plaintexts (each ≤ [`MAX_PLAINTEXT`]).
pub fn encode_control(c: &Control) -> Vec<Vec<u8>> {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let chunks: Vec<&[u8]> = if json.is_empty() {
        vec![&[]]
    } else {
        json.chunks(MAX_BODY).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let kind = if i == last {
                Kind::Control
            } else {
                Kind::ControlPart
            };
            let mut m = Vec::with_capacity(chunk.len() + 1);
            m.push(kind as u8);
            m.extend_from_slice(chunk);
            m
        })
        .collect()
}

/// Encode terminal bytes (output or input) as plaintexts of at most [`MAX_PLAINTEXT`].
pub fn encode_bytes(kind: Kind, bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .chunks(MAX_BODY)
        .map(|chunk| {
            let mut m = Vec::with_capacity(chunk.len() + 1);
            m.push(kind as u8);
            m.extend_from_slice(chunk);
            m
        })
        .collect()
}

/// Reassembles control parts; one per direction per connection.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Vec<u8>,
}

impl Decoder {
    /// Feed one decrypted message; returns a whole message when one is complete.
    pub fn push(&mut self, plaintext: &[u8]) -> Result<Option<Message>, AppError> {
        let (&k, body) = plaintext.split_first().ok_or(AppError::Empty)?;
        let kind = Kind::from_u8(k).ok_or(AppError::UnknownKind(k))?;
        match kind {
            Kind::Output => Ok(Some(Message::Output(body.to_vec()))),
            Kind::Input => Ok(Some(Message::Input(body.to_vec()))),
            Kind::ControlPart | Kind::Control => {
                if self.partial.len() + body.len() > MAX_CONTROL {
                    self.partial = Vec::new();
                    return Err(AppError::TooLarge);
                }
                self.partial.extend_from_slice(body);
                if kind == Kind::ControlPart {
                    return Ok(None);
                }
                let whole = std::mem::take(&mut self.partial);
                serde_json::from_slice(&whole)
                    .map(|c| Some(Message::Control(c)))
                    .map_err(|e| AppError::BadControl(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: &Control) -> Result<Control, AppError> {
        let mut d = Decoder::default();
        let mut out = None;
        for m in encode_control(c) {
            assert!(m.len() <= MAX_PLAINTEXT);
            out = d.push(&m)?;
        }
        match out {
            Some(Message::Control(c)) => Ok(c),
            other => Err(AppError::BadControl(format!("{other:?}"))),
        }
    }

    #[test]
    fn control_roundtrip_and_split() -> Result<(), AppError> {
        let small = Control::Hello {
            pair: Some(PairProof {
                pair_id: "p".into(),
                code: "123456".into(),
            }),
            label: None,
        };
        assert_eq!(roundtrip(&small)?, small);
        let big = Control::Result {
            id: 1,
            ok: true,
            value: Value::String("x".repeat(200_000)),
        };
        assert!(encode_control(&big).len() > 3);
        assert_eq!(roundtrip(&big)?, big);
        assert_eq!(roundtrip(&Control::Detach)?, Control::Detach);
        Ok(())
    }

    #[test]
    fn bytes_and_refusals() -> Result<(), AppError> {
        let mut d = Decoder::default();
        let parts = encode_bytes(Kind::Output, &vec![b'z'; 100_000]);
        assert_eq!(parts.len(), 2);
        let mut total = 0;
        for p in parts {
            if let Some(Message::Output(b)) = d.push(&p)? {
                total += b.len();
            }
        }
        assert_eq!(total, 100_000);
        assert_eq!(d.push(&[]), Err(AppError::Empty));
        assert_eq!(d.push(&[9, 1]), Err(AppError::UnknownKind(9)));
        assert!(matches!(
            d.push(b"\x01{not json"),
            Err(AppError::BadControl(_))
        ));
        let mut unknown_field = vec![1u8];
        unknown_field.extend_from_slice(br#"{"t":"resize","cols":1,"rows":2,"evil":1}"#);
        assert!(matches!(
            d.push(&unknown_field),
            Err(AppError::BadControl(_))
        ));
        let mut bad = vec![1u8];
        bad.extend_from_slice(br#"{"t":"nope"}"#);
        assert!(matches!(d.push(&bad), Err(AppError::BadControl(_))));
        // Parts beyond the cap are refused and forgotten.
        let part = {
            let mut m = vec![Kind::ControlPart as u8];
            m.extend(std::iter::repeat_n(b' ', MAX_BODY));
            m
        };
        let mut refused = false;
        for _ in 0..(MAX_CONTROL / MAX_BODY + 2) {
            if d.push(&part) == Err(AppError::TooLarge) {
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert_eq!(
            d.push(&encode_control(&Control::Detach)[0])?,
            Some(Message::Control(Control::Detach))
        );
        Ok(())
    }
}
