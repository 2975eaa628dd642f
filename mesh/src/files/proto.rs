//! Framing for the file protocol: a length-prefixed JSON header (size-checked before it is
//! read), then raw bytes, then a 32-byte BLAKE3 digest of the whole file.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol id.
pub const FILE_PROTOCOL: &str = "/loopsy/file/1";
/// Largest header accepted.
pub const MAX_HEADER: u32 = 64 * 1024;
/// Most directory entries in one listing.
pub const MAX_ENTRIES: usize = 10_000;

/// What the client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileRequest {
    /// Receive a file of `size` bytes into `path`.
    Push {
        /// Destination on the server.
        path: String,
        /// Total size.
        size: u64,
        /// Transfer id (names the `.part` file, so a retry resumes it).
        id: String,
        /// Replace an existing file.
        overwrite: bool,
        /// Permission bits to give the file (without: 0644, or those of the file replaced).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// Modification time to give the file, ns since the Unix epoch (without: now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime_ns: Option<u64>,
    },
    /// Send `path` from `offset`.
    Pull {
        /// Source on the server.
        path: String,
        /// Resume point.
        offset: u64,
    },
    /// List a directory (or stat a file).
    List {
        /// Path on the server.
        path: String,
    },
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    /// File name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (Unix seconds).
    pub mtime: u64,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum FileReply {
    /// Push accepted: send bytes from `offset`.
    Ready {
        /// Bytes already held from an earlier attempt.
        offset: u64,
    },
    /// Pull accepted: `size` bytes total; bytes from the requested offset follow.
    Sending {
        /// Total size.
        size: u64,
        /// The file's permission bits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        /// The file's modification time, ns since the Unix epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime_ns: Option<u64>,
    },
    /// A listing.
    Listing {
        /// The entries.
        entries: Vec<Entry>,
        /// More entries existed than were sent.
        truncated: bool,
    },
    /// Push complete and verified.
    Done {
        /// BLAKE3 of the file, hex.
        hash: String,
    },
    /// Refused or failed.
    Error {
        /// Stable code: `not_allowed`, `denied`, `not_found`, `exists`, `invalid`,
        /// `checksum_mismatch`, `permission_denied`, `io`.
        code: String,
        /// Explanation.
        message: String,
    },
}

/// Decode a whole request frame (length prefix + JSON) from bytes, with the same checks as
/// the stream reader.
pub fn decode_request(bytes: &[u8]) -> std::io::Result<FileRequest> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let (len, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("short frame"))?;
    let len = u32::from_be_bytes(*len);
    if len > MAX_HEADER || body.len() < len as usize {
        return Err(bad("bad header length"));
    }
    serde_json::from_slice(&body[..len as usize]).map_err(|e| bad(&e.to_string()))
}

/// Write a header.
pub async fn write_header<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    v: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    if len > MAX_HEADER {
        return Err(std::io::Error::other("header too large"));
    }
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await
}

/// Read a header, refusing one over [`MAX_HEADER`] before allocating for it.
pub async fn read_header<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HEADER {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file protocol header of {len} bytes exceeds {MAX_HEADER}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn headers_roundtrip_and_oversize_is_refused() -> std::io::Result<()> {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let req = FileRequest::Push {
            path: "x".into(),
            size: 5,
            id: "ab".into(),
            overwrite: false,
            mode: Some(0o755),
            mtime_ns: None,
        };
        write_header(&mut a, &req).await?;
        assert_eq!(read_header::<_, FileRequest>(&mut b).await?, req);
        a.write_all(&(MAX_HEADER + 1).to_be_bytes()).await?;
        let e = read_header::<_, FileRequest>(&mut b).await.err();
        assert_eq!(e.map(|e| e.kind()), Some(std::io::ErrorKind::InvalidData));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u32.to_be_bytes()).await?;
        a.write_all(b"{x}").await?;
        assert!(read_header::<_, FileRequest>(&mut b).await.is_err());
        Ok(())
    }
}
