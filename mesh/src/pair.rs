//! Pairing, sans I/O: a SPAKE2 exchange keyed by the short code, with both PeerIds bound into
//! the key and both sides proving they derived it. The code never crosses the wire; a wrong
//! guess costs the guesser one of [`MAX_ATTEMPTS`] tries on the code holder's window.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use libp2p::PeerId;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// Digits in a pairing code.
pub const CODE_DIGITS: usize = 6;
/// How long a code is valid by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Wrong codes allowed per window.
pub const MAX_ATTEMPTS: u32 = 3;
/// Longest SPAKE2 message accepted (an Ed25519 group message is 33 bytes).
pub const MAX_SPAKE_MSG: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// Why pairing was refused. Sent to the other side as its `code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// No pairing window is open on that machine.
    #[error("that machine is not waiting to pair; run `loopsy pair` there first")]
    NotOpen,
    /// The code expired.
    #[error("the pairing code expired; run `loopsy pair` again for a new one")]
    Expired,
    /// Too many wrong codes: the window is closed.
    #[error("too many wrong codes; the pairing window is closed. Run `loopsy pair` again")]
    TooManyAttempts,
    /// The code was wrong (or the exchange was tampered with).
    #[error("wrong pairing code")]
    WrongCode,
    /// Malformed message.
    #[error("malformed pairing message: {0}")]
    Malformed(String),
    /// A finish without a start.
    #[error("pairing out of order; start again")]
    OutOfOrder,
}

impl PairError {
    /// Stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotOpen => "not_open",
            Self::Expired => "expired",
            Self::TooManyAttempts => "too_many_attempts",
            Self::WrongCode => "wrong_code",
            Self::Malformed(_) => "malformed",
            Self::OutOfOrder => "out_of_order",
        }
    }

    /// From a wire code.
    pub fn from_code(code: &str, message: &str) -> Self {
        match code {
            "not_open" => Self::NotOpen,
            "expired" => Self::Expired,
            "too_many_attempts" => Self::TooManyAttempts,
            "wrong_code" => Self::WrongCode,
            "out_of_order" => Self::OutOfOrder,
            _ => Self::Malformed(message.to_string()),
        }
    }
}

/// A fresh uniformly random 6-digit code.
pub fn new_code() -> String {
    // Rejection sampling: no modulo bias.
    loop {
        let n = rand::random::<u32>();
        if n < u32::MAX - (u32::MAX % 1_000_000) {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

/// Normalise what a user typed: digits only (spaces and dashes dropped).
pub fn normalize_code(s: &str) -> Result<String, PairError> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if digits.len() != CODE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PairError::Malformed(format!(
            "a pairing code is {CODE_DIGITS} digits"
        )));
    }
    Ok(digits)
}

fn identity(responder: &PeerId, initiator: &PeerId) -> Vec<u8> {
    let mut v = b"loopsy-pair/1".to_vec();
    v.extend_from_slice(&responder.to_bytes());
    v.extend_from_slice(&initiator.to_bytes());
    v
}

fn confirm(key: &[u8], role: &[u8], transcript: &[&[u8]]) -> HmacSha256 {
    // Keys of any length are valid for HMAC.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(role);
    for part in transcript {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac
}

/// What the responder sends back to a valid start.
#[derive(Debug, Clone)]
pub struct StartReply {
    /// Its SPAKE2 message.
    pub spake: Vec<u8>,
    /// Proof it derived the key (HMAC over the transcript).
    pub confirm: Vec<u8>,
}

struct Pending {
    key: Vec<u8>,
    transcript: Vec<Vec<u8>>,
}

/// The code holder's side: an open window accepting up to [`MAX_ATTEMPTS`] starts.
pub struct Window {
    code: String,
    expires: Instant,
    attempts_left: u32,
    pending: Option<(PeerId, Pending)>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("attempts_left", &self.attempts_left)
            .finish_non_exhaustive()
    }
}

impl Window {
    /// Open a window for `code`, valid for `ttl`.
    pub fn new(code: String, ttl: Duration) -> Self {
        Self {
            code,
            expires: Instant::now() + ttl,
            attempts_left: MAX_ATTEMPTS,
            pending: None,
        }
    }

    /// The code (to show the user).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Wrong codes still allowed.
    pub fn attempts_left(&self) -> u32 {
        self.attempts_left
    }

    /// Expired or used up?
    pub fn check_open(&self) -> Result<(), PairError> {
        if Instant::now() > self.expires {
            return Err(PairError::Expired);
        }
        if self.attempts_left == 0 {
            return Err(PairError::TooManyAttempts);
        }
        Ok(())
    }

    /// Handle an initiator's start. Every start costs one attempt, right or wrong.
    pub fn on_start(
        &mut self,
        me: &PeerId,
        initiator: &PeerId,
        their_msg: &[u8],
        my_name: &str,
        their_name: &str,
    ) -> Result<StartReply, PairError> {
        self.check_open()?;
        if their_msg.len() > MAX_SPAKE_MSG {
            return Err(PairError::Malformed("SPAKE2 message too long".into()));
        }
        self.attempts_left -= 1;
        let (state, my_msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(self.code.as_bytes()),
            &Identity::new(&identity(me, initiator)),
        );
        let key = state
            .finish(their_msg)
            .map_err(|e| PairError::Malformed(format!("{e:?}")))?;
        let transcript = vec![
            their_msg.to_vec(),
            my_msg.clone(),
            their_name.as_bytes().to_vec(),
            my_name.as_bytes().to_vec(),
        ];
        let parts: Vec<&[u8]> = transcript.iter().map(Vec::as_slice).collect();
        let proof = confirm(&key, b"responder", &parts)
            .finalize()
            .into_bytes()
            .to_vec();
        self.pending = Some((*initiator, Pending { key, transcript }));
        Ok(StartReply {
            spake: my_msg,
            confirm: proof,
        })
    }

    /// The initiator reported a mismatch: drop its pending exchange (the attempt stays used).
    pub fn on_abort(&mut self, initiator: &PeerId) {
        if self.pending.as_ref().is_some_and(|(p, _)| p == initiator) {
            self.pending = None;
        }
    }

    /// Handle the initiator's proof. `Ok` means both sides hold the same key: pair.
    pub fn on_finish(&mut self, initiator: &PeerId, proof: &[u8]) -> Result<(), PairError> {
        let Some((who, p)) = self.pending.take() else {
            return Err(PairError::OutOfOrder);
        };
        if who != *initiator {
            return Err(PairError::OutOfOrder);
        }
        let parts: Vec<&[u8]> = p.transcript.iter().map(Vec::as_slice).collect();
        confirm(&p.key, b"initiator", &parts)
            .verify_slice(proof)
            .map_err(|_| PairError::WrongCode)
    }
}

/// The initiator's side (the machine that typed the code).
pub struct Initiator {
    state: Spake2<Ed25519Group>,
    msg: Vec<u8>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

impl Initiator {
    /// Begin pairing with `responder` using `code`. Returns the message to send.
    pub fn start(me: &PeerId, responder: &PeerId, code: &str) -> (Self, Vec<u8>) {
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(code.as_bytes()),
            &Identity::new(&identity(responder, me)),
        );
        (
            Self {
                state,
                msg: msg.clone(),
            },
            msg,
        )
    }

    /// Check the responder's reply; on success return our proof for the finish message.
    pub fn on_reply(
        self,
        reply: &StartReply,
        my_name: &str,
        their_name: &str,
    ) -> Result<Vec<u8>, PairError> {
        if reply.spake.len() > MAX_SPAKE_MSG {
            return Err(PairError::Malformed("SPAKE2 message too long".into()));
        }
        let key = self
            .state
            .finish(&reply.spake)
            .map_err(|e| PairError::Malformed(format!("{e:?}")))?;
        let parts: [&[u8]; 4] = [
            &self.msg,
            &reply.spake,
            my_name.as_bytes(),
            their_name.as_bytes(),
        ];
        confirm(&key, b"responder", &parts)
            .verify_slice(&reply.confirm)
            .map_err(|_| PairError::WrongCode)?;
        Ok(confirm(&key, b"initiator", &parts)
            .finalize()
            .into_bytes()
            .to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code_i: &str, w: &mut Window) -> Result<(), PairError> {
        let (r, i) = (PeerId::random(), PeerId::random());
        let (init, msg) = Initiator::start(&i, &r, code_i);
        let reply = w.on_start(&r, &i, &msg, "resp", "init")?;
        let proof = init.on_reply(&reply, "init", "resp")?;
        w.on_finish(&i, &proof)
    }

    #[test]
    fn right_code_pairs() {
        let mut w = Window::new("123456".into(), DEFAULT_TTL);
        assert_eq!(run("123456", &mut w), Ok(()));
    }

    #[test]
    fn wrong_code_fails_and_attempts_run_out() {
        let mut w = Window::new("123456".into(), DEFAULT_TTL);
        for _ in 0..MAX_ATTEMPTS {
            assert_eq!(run("654321", &mut w), Err(PairError::WrongCode));
        }
        // Even the right code is refused once the window is used up.
        assert_eq!(run("123456", &mut w), Err(PairError::TooManyAttempts));
    }

    #[test]
    fn expired_window_refuses() {
        let mut w = Window::new("123456".into(), Duration::from_millis(0));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(run("123456", &mut w), Err(PairError::Expired));
    }

    #[test]
    fn peer_ids_are_bound() {
        // A relay that swaps the initiator's PeerId breaks the key agreement.
        let mut w = Window::new("111111".into(), DEFAULT_TTL);
        let (r, i, mallory) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (init, msg) = Initiator::start(&i, &r, "111111");
        let reply = w
            .on_start(&r, &mallory, &msg, "resp", "init")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            init.on_reply(&reply, "init", "resp"),
            Err(PairError::WrongCode)
        );
    }

    #[test]
    fn finish_out_of_order_and_bad_input() {
        let mut w = Window::new("111111".into(), DEFAULT_TTL);
        assert_eq!(
            w.on_finish(&PeerId::random(), b"x"),
            Err(PairError::OutOfOrder)
        );
        let r = w.on_start(&PeerId::random(), &PeerId::random(), &[0u8; 500], "a", "b");
        assert!(matches!(r, Err(PairError::Malformed(_))));
        assert!(normalize_code("12 34-56").is_ok());
        assert!(normalize_code("12345").is_err() && normalize_code("abcdef").is_err());
        let c = new_code();
        assert_eq!(c.len(), 6);
    }
}
