//! Binary frames multiplexed over the daemon's single relay WebSocket.
//!
//! Layout: `kind: u8 | channel: u32 BE | payload`. The channel names one phone connection; a
//! `Data` payload is one end-to-end ciphertext message, so the relay routes on the header alone.
//! Lengths are checked before anything is allocated.

/// Largest payload: one Noise message (65535 bytes). Terminal output and control messages are
/// chunked under it by the end-to-end layer, far under Cloudflare's 1 MiB WebSocket limit.
pub const MAX_PAYLOAD: usize = 65535;
/// Header bytes before the payload.
pub const HEADER_LEN: usize = 5;
/// Largest frame (header + payload) on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A phone connected on this channel.
    Open = 1,
    /// Encrypted bytes for the channel.
    Data = 2,
    /// The channel closed.
    Close = 3,
    /// Keep-alive.
    Ping = 4,
    /// Keep-alive answer.
    Pong = 5,
    /// A relay notice for the daemon: JSON `{"type": "phone-revoked", "phone_id"}` or
    /// `{"type": "error", "message"}` (e.g. a frame the relay refused).
    Notice = 6,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Open,
            2 => Self::Data,
            3 => Self::Close,
            4 => Self::Ping,
            5 => Self::Pong,
            6 => Self::Notice,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: FrameKind,
    /// Which phone connection.
    pub channel: u32,
    /// Opaque bytes.
    pub payload: Vec<u8>,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error("frame of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    /// Over [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Unknown kind byte.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

impl Frame {
    /// A frame of `kind` on `channel`.
    pub fn new(kind: FrameKind, channel: u32, payload: Vec<u8>) -> Self {
        Self {
            kind,
            channel,
            payload,
        }
    }

    /// Serialise; refuses payloads that would exceed [`MAX_FRAME`].
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let len = HEADER_LEN + self.payload.len();
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let mut out = Vec::with_capacity(len);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Parse, checking the size before copying the payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        let (header, payload) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(FrameError::Short(bytes.len()))?;
        let kind = FrameKind::from_u8(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
        let channel = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        Ok(Self {
            kind,
            channel,
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() -> Result<(), FrameError> {
        for kind in [
            FrameKind::Open,
            FrameKind::Data,
            FrameKind::Close,
            FrameKind::Ping,
            FrameKind::Pong,
            FrameKind::Notice,
        ] {
            let f = Frame {
                kind,
                channel: 0xdead_beef,
                payload: vec![1, 2, 3],
            };
            assert_eq!(Frame::decode(&f.encode()?)?, f);
        }
        let empty = Frame {
            kind: FrameKind::Ping,
            channel: 0,
            payload: vec![],
        };
        assert_eq!(Frame::decode(&empty.encode()?)?, empty);
        Ok(())
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(Frame::decode(&[2, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            Frame::decode(&[9, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(
            Frame::decode(&vec![2; MAX_FRAME + 1]),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        let big = Frame {
            kind: FrameKind::Data,
            channel: 1,
            payload: vec![0; MAX_FRAME],
        };
        assert!(matches!(big.encode(), Err(FrameError::TooLarge(_))));
    }
}
