//! The exec pipe's frames: `[kind u8][len u32 BE][payload]`, the length checked before
//! anything is allocated. The client sends `Start`, then `Stdin`/`StdinEof`/`Signal`; the
//! runner answers `Started` (or `Refused`), then `Stdout`/`Stderr` as the program writes,
//! and `Exit` last. Output bytes are passed as they are: binary-safe, never re-encoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::JobState;

/// The mesh protocol id of the exec pipe.
pub const EXEC_PROTOCOL: &str = "/loopsy/exec/1";
/// Largest frame payload accepted.
pub const MAX_FRAME: u32 = 256 * 1024;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON [`Start`] (client → runner, first frame).
    Start = 1,
    /// JSON [`Started`] (runner → client).
    Started = 2,
    /// JSON [`Refused`]: the command did not start (runner → client, then the stream ends).
    Refused = 3,
    /// Bytes for the program's stdin (client → runner).
    Stdin = 4,
    /// No more stdin: the program's stdin is closed (client → runner).
    StdinEof = 5,
    /// One byte, a [`Signal`] for the program's process group (client → runner).
    Signal = 6,
    /// Bytes the program wrote to stdout (runner → client).
    Stdout = 7,
    /// Bytes the program wrote to stderr (runner → client).
    Stderr = 8,
    /// JSON [`Exit`]: how the program ended (runner → client, last frame).
    Exit = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Start,
            2 => Self::Started,
            3 => Self::Refused,
            4 => Self::Stdin,
            5 => Self::StdinEof,
            6 => Self::Signal,
            7 => Self::Stdout,
            8 => Self::Stderr,
            9 => Self::Exit,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: Kind,
    /// Its payload.
    pub data: Vec<u8>,
}

/// Signals a client may pass on (their POSIX numbers on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Signal {
    /// SIGHUP.
    HangUp = 1,
    /// SIGINT.
    Interrupt = 2,
    /// SIGKILL.
    Kill = 9,
    /// SIGTERM.
    Terminate = 15,
}

impl Signal {
    /// From its wire byte; anything else is refused.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::HangUp,
            2 => Self::Interrupt,
            9 => Self::Kill,
            15 => Self::Terminate,
            _ => return None,
        })
    }
}

/// What to run, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// The program, or (without `args`) a command line for the runner's shell.
    pub command: String,
    /// Arguments; when present, `command` runs directly, without a shell.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Working directory (`~` and `~/…` are the runner's home; default: its home).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the program's process group after this many seconds (default: never; the
    /// program ends when the client goes away).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// The client will send stdin; without it the program's stdin is empty (`/dev/null`).
    #[serde(default)]
    pub stdin: bool,
}

/// The program is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Its job id on the runner (`loopsy_job_*` tools see it there).
    pub job_id: String,
}

/// Why it did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// A stable error code (`permission_denied`, `not_found`, `unavailable`,
    /// `invalid_arguments`…).
    pub code: String,
    /// What went wrong and what to do, naming whose policy refused.
    pub message: String,
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its final state.
    #[serde(flatten)]
    pub state: JobState,
    /// The status a shell would report: the program's own code, 128 + the signal that
    /// killed it, 127 when it was not found, 126 when it could not be started.
    pub status: i32,
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended inside a frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a frame of this protocol.
    #[error("bad frame: {0}")]
    Bad(String),
}

/// Read one frame; `None` when the stream ends cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, WireError> {
    let mut head = [0u8; 5];
    match r.read(&mut head[..1]).await? {
        0 => return Ok(None),
        _ => r.read_exact(&mut head[1..]).await?,
    };
    let kind = Kind::from_u8(head[0]).ok_or_else(|| WireError::Bad(format!("kind {}", head[0])))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(WireError::Bad(format!("{len} bytes is over {MAX_FRAME}")));
    }
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data).await?;
    Ok(Some(Frame { kind, data }))
}

/// Write one frame (split into several when `data` is longer than [`MAX_FRAME`]) and flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    data: &[u8],
) -> std::io::Result<()> {
    write_frame_unflushed(w, kind, data).await?;
    w.flush().await
}

/// As [`write_frame`], leaving the flush to the caller (who has more to write at once).
pub async fn write_frame_unflushed<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    data: &[u8],
) -> std::io::Result<()> {
    let mut rest = data;
    loop {
        let n = rest.len().min(MAX_FRAME as usize);
        let (now, later) = rest.split_at(n);
        let mut head = [0u8; 5];
        head[0] = kind as u8;
        head[1..].copy_from_slice(&(n as u32).to_be_bytes());
        w.write_all(&head).await?;
        w.write_all(now).await?;
        rest = later;
        if rest.is_empty() {
            break;
        }
    }
    Ok(())
}

/// Write a JSON frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    kind: Kind,
    value: &T,
) -> std::io::Result<()> {
    let data = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_frame(w, kind, &data).await
}

/// Parse a JSON frame's payload.
pub fn parse<T: for<'de> Deserialize<'de>>(f: &Frame) -> Result<T, WireError> {
    serde_json::from_slice(&f.data).map_err(|e| WireError::Bad(format!("{:?}: {e}", f.kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_roundtrip_and_big_writes_split() -> Result<(), WireError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let big = vec![0xffu8; MAX_FRAME as usize + 10];
        write_frame(&mut a, Kind::Stdout, &[0x01, 0xff, 0xfe, 0x80]).await?;
        write_frame(&mut a, Kind::Stdout, &big).await?;
        write_frame(&mut a, Kind::StdinEof, &[]).await?;
        drop(a);
        let f = read_frame(&mut b).await?;
        assert_eq!(f.map(|f| f.data), Some(vec![0x01, 0xff, 0xfe, 0x80]));
        let (f1, f2) = (read_frame(&mut b).await?, read_frame(&mut b).await?);
        let lens = [f1, f2].map(|f| f.map(|f| f.data.len()));
        assert_eq!(lens, [Some(MAX_FRAME as usize), Some(10)]);
        let eof = read_frame(&mut b).await?;
        assert_eq!(eof.map(|f| f.kind), Some(Kind::StdinEof));
        assert!(read_frame(&mut b).await?.is_none(), "clean end");
        Ok(())
    }

    #[tokio::test]
    async fn oversized_unknown_and_cut_frames_are_refused() {
        for bytes in [
            vec![7u8, 0xff, 0xff, 0xff, 0xff],
            vec![42u8, 0, 0, 0, 0],
            vec![7u8, 0, 0, 0, 9, 1, 2],
            vec![7u8, 0],
        ] {
            let mut r = &bytes[..];
            assert!(read_frame(&mut r).await.is_err(), "{bytes:?} was accepted");
        }
    }

    #[test]
    fn start_refuses_unknown_fields_and_signals_are_a_closed_set() {
        let ok: Result<Start, _> = serde_json::from_str(r#"{"command":"true"}"#);
        assert!(ok.is_ok_and(|s| !s.stdin && s.timeout_s.is_none()));
        let bad: Result<Start, _> = serde_json::from_str(r#"{"command":"true","shell":1}"#);
        assert!(bad.is_err());
        assert_eq!(Signal::from_u8(2), Some(Signal::Interrupt));
        assert_eq!(Signal::from_u8(3), None);
    }
}
