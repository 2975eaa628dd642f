//! The session host's socket protocol: frames of `[kind u8][len u32 BE][payload]`, length
//! checked before anything is allocated. A connection opens with one request; `attach` turns
//! it into a stream of output frames one way and input/resize frames the other.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::record::SessionInfo;

/// Largest frame payload accepted (a full 1000×500 screen of wide characters fits).
pub const MAX_FRAME: u32 = 4 << 20;
/// Largest single write into a session (text plus keys).
pub const MAX_WRITE: usize = 64 * 1024;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A JSON [`Request`].
    Request = 1,
    /// A JSON [`Reply`].
    Reply = 2,
    /// Terminal output (host → client).
    Output = 3,
    /// Keyboard input (client → host).
    Input = 4,
    /// New size: cols u16 BE, rows u16 BE (client → host).
    Resize = 5,
    /// The program ended: JSON `{"code": n|null}` (host → client).
    Exit = 6,
    /// The whole current screen, replacing everything sent before it: the answer to `Skip`
    /// (host → client; only to clients that sent `Skip`). After a `Skip` with
    /// [`SKIP_AT_SCREEN`], it may instead be only what changed since the previous `Screen`.
    Screen = 7,
    /// "I am far behind": stop queueing output for me and send a `Screen` (client → host;
    /// only to hosts whose [`SessionInfo::proto`](crate::record::SessionInfo) is at least 1).
    /// Data: empty, or [`SKIP_AT_SCREEN`] and the number of `Screen` frames received so far
    /// (u64 BE).
    Skip = 8,
}

/// `Skip` data: "what I show is exactly your `Screen` number n (counted from 1), and nothing
/// after it", so the answer may be a diff from that screen if it was the host's last. (Hosts
/// before this ignore it and send a whole one.)
pub const SKIP_AT_SCREEN: u8 = 1;

/// `Skip` data for a client that shows exactly its `screens`-th `Screen` frame.
pub fn skip_at_screen(screens: u64) -> Vec<u8> {
    let mut v = vec![SKIP_AT_SCREEN];
    v.extend_from_slice(&screens.to_be_bytes());
    v
}

/// The screen a `Skip` says its client shows, if it says so.
pub fn decode_skip(data: &[u8]) -> Option<u64> {
    match data {
        [SKIP_AT_SCREEN, n @ ..] => Some(u64::from_be_bytes(n.try_into().ok()?)),
        _ => None,
    }
}

/// This host protocol's revision (`SessionInfo::proto`): 1 added `Skip` and `Screen`.
pub const HOST_PROTO: u32 = 1;

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Request,
            2 => Self::Reply,
            3 => Self::Output,
            4 => Self::Input,
            5 => Self::Resize,
            6 => Self::Exit,
            7 => Self::Screen,
            8 => Self::Skip,
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

/// How to read a session.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// The visible screen as text (what a person sees now).
    #[default]
    Screen,
    /// All kept output as plain text.
    Scrollback,
    /// Plain text of the output since `cursor` (from an earlier read).
    Since,
}

/// What a client asks first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The session's state.
    Info,
    /// Rendered text.
    Read {
        /// Which text.
        mode: ReadMode,
        /// For `since`: the cursor from an earlier read.
        cursor: Option<u64>,
    },
    /// Type into the session.
    Write {
        /// Text typed as is (or pasted, with `paste`).
        text: String,
        /// Named keys sent after the text (`Enter`, `Ctrl-C`, …).
        keys: Vec<String>,
        /// Send `text` as a bracketed paste when the program asked for it.
        paste: bool,
    },
    /// Resize the terminal.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// End the program: SIGHUP to its process group, SIGKILL 3 s later if it lingers.
    Stop,
    /// Take a spare session into use under this name and size (refused once claimed).
    Claim {
        /// Its name from now on.
        name: String,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Become a live client at this size.
    Attach {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// Text read from a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ReadOut {
    /// The text.
    pub text: String,
    /// Pass back as `cursor` with mode `since` to get only what came after.
    pub cursor: String,
    /// True if output between the given cursor and this text was dropped from the ring (or,
    /// for scrollback, if older output than this page exists).
    pub gap: bool,
    /// True if more output follows this page: read again with mode since and `cursor`.
    #[serde(default)]
    pub more: bool,
    /// Cursor row and column on the screen (0-based).
    pub cursor_pos: (u16, u16),
    /// Whether a full-screen program has the alternate screen up.
    pub alternate_screen: bool,
}

/// Raw output bytes one read returns at most (a page; its text fits any frame).
pub const MAX_READ: usize = 256 * 1024;

/// One page of text from raw output `raw` whose first byte is at absolute offset `start`
/// (everything kept): `(text, gap, more, next_cursor)`.
pub fn page(
    raw: &[u8],
    start: u64,
    mode: ReadMode,
    cursor: Option<u64>,
) -> (String, bool, bool, u64) {
    let end = start + raw.len() as u64;
    match mode {
        ReadMode::Screen => (String::new(), false, false, end),
        ReadMode::Scrollback => {
            let cut = raw.len().saturating_sub(MAX_READ);
            (crate::strip::plain(&raw[cut..]), cut > 0, false, end)
        }
        ReadMode::Since => {
            let want = cursor.unwrap_or(0);
            let from = want.clamp(start, end);
            let skip = (from - start) as usize;
            let n = utf8_page_len(&raw[skip..], MAX_READ);
            (
                crate::strip::plain(&raw[skip..skip + n]),
                want < start,
                skip + n < raw.len(),
                from + n as u64,
            )
        }
    }
}

/// How many of `bytes` (at most `max`) make a page that does not end inside a UTF-8
/// character (the rest comes with the next page).
pub fn utf8_page_len(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    // Back off over continuation bytes to a lead byte, then keep it only if complete.
    let mut n = max;
    let mut back = 0;
    while n > 0 && back < 3 && (bytes[n - 1] & 0xC0) == 0x80 {
        n -= 1;
        back += 1;
    }
    if n > 0 {
        let lead = bytes[n - 1];
        let need = match lead {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if need > back + 1 {
            return n - 1;
        }
    }
    max
}

/// What the host answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// State.
    Info(SessionInfo),
    /// Text.
    Text(ReadOut),
    /// Done.
    Ok,
    /// Refused or failed.
    Error {
        /// Stable code (`invalid_arguments`, `unavailable`, …).
        code: String,
        /// What happened and what to do.
        message: String,
    },
}

impl Reply {
    /// An error reply.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Write one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    data: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind as u8;
    head[1..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(data).await?;
    w.flush().await
}

/// Write a JSON frame.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    kind: Kind,
    v: &T,
) -> std::io::Result<()> {
    let data = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    write_frame(w, kind, &data).await
}

/// Read one frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = decode_head(head)?;
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data).await?;
    Ok(Some(Frame { kind, data }))
}

fn bad(m: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m)
}

/// Check a frame header (kind known, length within [`MAX_FRAME`]) before reading the body.
pub fn decode_head(head: [u8; 5]) -> std::io::Result<(Kind, u32)> {
    let kind =
        Kind::from_u8(head[0]).ok_or_else(|| bad(format!("unknown frame kind {}", head[0])))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    Ok((kind, len))
}

/// Decode a resize payload.
pub fn decode_resize(data: &[u8]) -> Option<(u16, u16)> {
    let b: [u8; 4] = data.try_into().ok()?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

/// Encode a resize payload.
pub fn encode_resize(cols: u16, rows: u16) -> [u8; 4] {
    let (c, r) = (cols.to_be_bytes(), rows.to_be_bytes());
    [c[0], c[1], r[0], r[1]]
}

/// Sizes a terminal may take.
pub const MAX_COLS: u16 = 1000;
/// Most rows.
pub const MAX_ROWS: u16 = 500;

/// Check a size (`0×0` and `100000` columns are refused with a clear message).
pub fn check_size(cols: u16, rows: u16) -> Result<(), String> {
    if cols == 0 || rows == 0 || cols > MAX_COLS || rows > MAX_ROWS {
        return Err(format!(
            "size {cols}x{rows} is out of range: columns 1-{MAX_COLS}, rows 1-{MAX_ROWS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused_before_allocation() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Output, b"hello").await.unwrap();
        write_json(&mut buf, Kind::Request, &Request::Info)
            .await
            .unwrap();
        let mut r = buf.as_slice();
        let f = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((f.kind, f.data.as_slice()), (Kind::Output, &b"hello"[..]));
        let f = read_frame(&mut r).await.unwrap().unwrap();
        let req: Request = serde_json::from_slice(&f.data).unwrap();
        assert_eq!(req, Request::Info);
        assert!(read_frame(&mut r).await.unwrap().is_none());

        let mut huge = vec![3u8];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read_frame(&mut huge.as_slice()).await.unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        let e = read_frame(&mut [9u8, 0, 0, 0, 0].as_slice())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unknown frame kind"), "{e}");
    }

    #[test]
    fn pages_are_bounded_and_resume_at_their_cursor() {
        let raw = vec![b'a'; MAX_READ + 10];
        let (t, gap, more, next) = page(&raw, 100, ReadMode::Since, Some(100));
        assert_eq!(
            (t.len(), gap, more, next),
            (MAX_READ, false, true, 100 + MAX_READ as u64)
        );
        let (t, gap, more, next) = page(&raw, 100, ReadMode::Since, Some(next));
        assert_eq!((t.len(), gap, more), (10, false, false));
        assert_eq!(next, 100 + raw.len() as u64);
        let (_, gap, _, _) = page(&raw, 100, ReadMode::Since, Some(5));
        assert!(gap);
        let (t, gap, _, _) = page(&raw, 100, ReadMode::Scrollback, None);
        assert_eq!((t.len(), gap), (MAX_READ, true));
    }

    #[test]
    fn pages_do_not_split_characters() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_page_len(s, 2), 1);
        assert_eq!(utf8_page_len(s, 3), 3);
        assert_eq!(utf8_page_len(s, 5), 3);
        assert_eq!(utf8_page_len(s, 6), 6);
        assert_eq!(utf8_page_len(s, 9), 6);
        assert_eq!(utf8_page_len(s, 10), 10);
        assert_eq!(utf8_page_len(b"plain", 3), 3);
    }

    #[test]
    fn skip_says_which_screen_it_shows() {
        assert_eq!(decode_skip(&skip_at_screen(7)), Some(7));
        assert_eq!(decode_skip(&skip_at_screen(u64::MAX)), Some(u64::MAX));
        // Empty (older clients), short, long or unknown: a whole screen, never a diff.
        for bad in [
            &[][..],
            &[1],
            &[1, 0, 0],
            &[2, 0, 0, 0, 0, 0, 0, 0, 7],
            &[1; 10],
        ] {
            assert_eq!(decode_skip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_size(80, 24).is_ok());
        assert!(check_size(0, 0).is_err());
        assert!(check_size(u16::MAX, 24).is_err());
        assert_eq!(decode_resize(&encode_resize(132, 43)), Some((132, 43)));
        assert_eq!(decode_resize(b"abc"), None);
    }
}
