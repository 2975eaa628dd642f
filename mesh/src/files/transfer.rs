//! Both ends of push, pull and list, over any byte stream (a libp2p stream in the daemon, a
//! duplex pipe in tests). Memory per transfer is bounded whatever the file size: two 1 MiB
//! chunks on the sending side, four 1 MiB blocks on the receiving side (`sink.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::keep::{CopyOpts, Keep, mode_for};
use super::policy::{PathError, PathPolicy};
use super::proto::{Entry, FileReply, FileRequest, MAX_ENTRIES, read_header, write_header};
use super::sink::{Sink, usable_prefix};

/// Bytes per read/write.
const CHUNK: usize = 1024 * 1024;
/// A stream that moves no bytes for this long is treated as broken (a pulled cable may not
/// close a connection for minutes; the retry then resumes over a fresh one).
const STALL: std::time::Duration = std::time::Duration::from_secs(20);

/// Bound one I/O step by [`STALL`].
async fn step<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(STALL, f).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no data moved for 20 s",
        ))
    })
}

/// Bytes moved so far (shared with whoever shows progress).
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Done so far, including any resumed prefix.
    pub done: Arc<AtomicU64>,
    /// Total, once known.
    pub total: Arc<AtomicU64>,
}

/// Result of a completed transfer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TransferOutcome {
    /// Bytes in the file.
    pub bytes: u64,
    /// Bytes reused from an earlier, interrupted attempt.
    pub resumed_from: u64,
    /// BLAKE3 of the file, hex (checked on both ends).
    pub blake3: String,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A local path was refused or is missing.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The other side refused or failed.
    #[error("{message}")]
    Remote {
        /// Its stable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The destination exists.
    #[error("{0} exists; pass overwrite to replace it")]
    Exists(String),
    /// The data did not arrive intact; the partial file was discarded.
    #[error("checksum mismatch: the file changed or was corrupted in transit; retry")]
    Checksum,
    /// The connection or the disk failed (a retry resumes where it stopped).
    #[error("transfer interrupted: {0}")]
    Io(#[from] std::io::Error),
}

impl FileError {
    /// Worth retrying (the connection broke, not a refusal).
    pub fn retryable(&self) -> bool {
        matches!(self, FileError::Io(_))
    }
}

fn reply_err(code: &str, message: impl Into<String>) -> FileReply {
    FileReply::Error {
        code: code.into(),
        message: message.into(),
    }
}

fn path_reply(e: &PathError) -> FileReply {
    let code = match e {
        PathError::NotAllowed(_) => "not_allowed",
        PathError::Denied(_) | PathError::WriteDenied(..) => "denied",
        PathError::NotFound(_) => "not_found",
        PathError::Invalid(_) => "invalid",
    };
    reply_err(code, e.to_string())
}

fn part_path(dest: &Path, id: &str) -> Option<PathBuf> {
    let name = dest.file_name()?.to_string_lossy().into_owned();
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(64)
        .collect();
    if id.is_empty() {
        return None;
    }
    Some(dest.with_file_name(format!(".{name}.loopsy-{id}.part")))
}

/// Hash the first `len` bytes of `path`.
async fn hash_prefix(path: &Path, len: u64, h: &mut blake3::Hasher) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut f = tokio::fs::File::open(path).await?;
    let mut left = len;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let n = f.read(&mut buf[..CHUNK.min(left as usize)]).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank",
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Give the file its mode and mtime, fsync, then rename `part` over `dest`, then fsync the
/// directory.
async fn commit(file: std::fs::File, part: &Path, dest: &Path, keep: Keep) -> std::io::Result<()> {
    if let Some(ns) = keep.mtime_ns {
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))?;
    }
    loopsy_sys::fs::set_mode(part, mode_for(dest, keep))?;
    let file = tokio::fs::File::from_std(file);
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(part, dest).await?;
    if let Some(dir) = dest.parent() {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || loopsy_sys::fs::sync_dir(&dir))
            .await
            .map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// Receive a file into `dest` (already checked by policy): resume a matching `.part`, verify
/// the digest, then rename. Used by the server for a push and by the client for a pull.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    dest: &Path,
    part: &Path,
    (offset, size): (u64, u64),
    direct_io: bool,
    keep: Keep,
    p: &Progress,
) -> Result<String, FileError> {
    let mut h = blake3::Hasher::new();
    hash_prefix(part, offset, &mut h).await?;
    let mut sink = Sink::open(part, offset, size - offset, direct_io, h).await?;
    let mut left = size - offset;
    let copied = async {
        while left > 0 {
            let space = sink.space();
            let want = space.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = step(s.read(&mut space[..want])).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stream ended early",
                ));
            }
            sink.filled(n).await?;
            left -= n as u64;
            p.done.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        sink.abandon().await;
        return Err(e.into());
    }
    let (f, mine) = sink.finish().await?;
    let mut digest = [0u8; 32];
    step(s.read_exact(&mut digest)).await?;
    if mine.as_bytes() != &digest {
        drop(f);
        let _ = tokio::fs::remove_file(part).await;
        return Err(FileError::Checksum);
    }
    commit(f, part, dest, keep).await?;
    Ok(mine.to_hex().to_string())
}

/// Read `len` bytes of `file` at `pos` into `buf` and hash them, on a blocking thread.
fn read_chunk(
    file: Arc<std::fs::File>,
    mut buf: Vec<u8>,
    mut h: blake3::Hasher,
    pos: u64,
    len: usize,
) -> tokio::task::JoinHandle<std::io::Result<(Vec<u8>, blake3::Hasher, usize)>> {
    tokio::task::spawn_blocking(move || {
        loopsy_sys::fs::read_exact_at(&file, &mut buf[..len], pos).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                std::io::Error::new(e.kind(), "the file shrank while being sent")
            }
            _ => e,
        })?;
        h.update(&buf[..len]);
        Ok((buf, h, len))
    })
}

/// Send `src` from `offset`, then its digest. The next chunk is read and hashed on a
/// blocking thread while this one goes out.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    src: &Path,
    offset: u64,
    size: u64,
    p: &Progress,
) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    hash_prefix(src, offset, &mut h).await?;
    let file = Arc::new(tokio::fs::File::open(src).await?.into_std().await);
    let mut pos = offset;
    let start = |pos: &mut u64, buf: Option<Vec<u8>>, h: blake3::Hasher| {
        let len = CHUNK.min(usize::try_from(size - *pos).unwrap_or(CHUNK));
        let buf = buf.unwrap_or_else(|| vec![0u8; CHUNK]);
        let task = read_chunk(file.clone(), buf, h, *pos, len);
        *pos += len as u64;
        task
    };
    let mut pending = Some(start(&mut pos, None, h));
    let mut spare = None;
    let h = loop {
        let task = pending
            .take()
            .ok_or_else(|| std::io::Error::other("no read under way"))?;
        let (buf, h, n) = task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("file reader failed: {e}"))))?;
        let h = match pos < size {
            true => {
                pending = Some(start(&mut pos, spare.take(), h));
                None
            }
            false => Some(h),
        };
        step(s.write_all(&buf[..n])).await?;
        p.done.fetch_add(n as u64, Ordering::Relaxed);
        spare = Some(buf);
        if let Some(h) = h {
            break h;
        }
    };
    step(s.flush()).await?;
    let digest = h.finalize();
    s.write_all(digest.as_bytes()).await?;
    s.flush().await?;
    Ok(digest.to_hex().to_string())
}

/// What the peer at the other end may do here; `Err` holds the refusal it gets otherwise
/// (whose policy, and where the right can be granted: [`crate::NodeHandle::refusal`]).
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub read: Result<(), String>,
    pub write: Result<(), String>,
}

/// The refusal for a peer without the right.
fn not_granted(why: &str) -> FileReply {
    reply_err("permission_denied", why.to_string())
}

/// Server side of one stream, for a peer with `access`.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    policy: &PathPolicy,
    access: &Access,
) -> std::io::Result<()> {
    let req: FileRequest = step(read_header(s)).await?;
    match req {
        FileRequest::Push {
            path,
            size,
            id,
            overwrite,
            mode,
            mtime_ns,
        } => {
            if let Err(why) = &access.write {
                return write_header(s, &not_granted(why)).await;
            }
            let dest = match policy.writable(&path) {
                Ok(d) => d,
                Err(e) => return write_header(s, &path_reply(&e)).await,
            };
            if let Some(dir) = dest.parent()
                && !dir.is_dir()
            {
                return write_header(
                    s,
                    &reply_err(
                        "invalid",
                        format!("{} is not a directory there", dir.display()),
                    ),
                )
                .await;
            }
            if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.is_dir()) {
                return write_header(
                    s,
                    &reply_err("invalid", format!("{path} is a directory there")),
                )
                .await;
            }
            if !overwrite && tokio::fs::symlink_metadata(&dest).await.is_ok() {
                return write_header(
                    s,
                    &reply_err(
                        "exists",
                        format!("{path} exists; pass overwrite to replace it"),
                    ),
                )
                .await;
            }
            let Some(part) = part_path(&dest, &id) else {
                return write_header(s, &reply_err("invalid", "bad transfer id")).await;
            };
            let offset = usable_prefix(&part, Some(size)).await;
            write_header(s, &FileReply::Ready { offset }).await?;
            match receive(
                s,
                &dest,
                &part,
                (offset, size),
                policy.direct_io(),
                Keep { mode, mtime_ns },
                &Progress::default(),
            )
            .await
            {
                Ok(hash) => write_header(s, &FileReply::Done { hash }).await,
                Err(FileError::Checksum) => {
                    write_header(s, &reply_err("checksum_mismatch", "checksum mismatch")).await
                }
                Err(FileError::Io(e)) => Err(e),
                Err(e) => write_header(s, &reply_err("io", e.to_string())).await,
            }
        }
        FileRequest::Pull { path, offset } => {
            if let Err(why) = &access.read {
                return write_header(s, &not_granted(why)).await;
            }
            let src = match policy.readable(&path) {
                Ok(p) if p.is_file() => p,
                Ok(_) => {
                    return write_header(s, &reply_err("invalid", format!("{path} is not a file")))
                        .await;
                }
                Err(e) => return write_header(s, &path_reply(&e)).await,
            };
            let size = tokio::fs::metadata(&src).await?.len();
            if offset > size {
                return write_header(
                    s,
                    &reply_err("invalid", "resume offset beyond the end of the file"),
                )
                .await;
            }
            let keep = Keep::of(&src);
            write_header(
                s,
                &FileReply::Sending {
                    size,
                    mode: keep.mode,
                    mtime_ns: keep.mtime_ns,
                },
            )
            .await?;
            send(s, &src, offset, size, &Progress::default())
                .await
                .map(|_| ())
        }
        FileRequest::List { path } => {
            if let Err(why) = &access.read {
                return write_header(s, &not_granted(why)).await;
            }
            match policy.readable(&path) {
                Ok(p) => {
                    let (entries, truncated) = list_dir(&p).await?;
                    write_header(s, &FileReply::Listing { entries, truncated }).await
                }
                Err(e) => write_header(s, &path_reply(&e)).await,
            }
        }
    }
}

fn entry(name: String, m: &std::fs::Metadata) -> Entry {
    let kind = if m.is_symlink() {
        "symlink"
    } else if m.is_dir() {
        "dir"
    } else if m.is_file() {
        "file"
    } else {
        "other"
    };
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Entry {
        name,
        kind: kind.into(),
        size: m.len(),
        mtime,
    }
}

async fn list_dir(p: &Path) -> std::io::Result<(Vec<Entry>, bool)> {
    let m = tokio::fs::symlink_metadata(p).await?;
    if !m.is_dir() {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok((vec![entry(name, &m)], false));
    }
    let mut rd = tokio::fs::read_dir(p).await?;
    let mut out = Vec::new();
    let mut truncated = false;
    while let Some(e) = rd.next_entry().await? {
        if out.len() >= MAX_ENTRIES {
            truncated = true;
            break;
        }
        if let Ok(m) = e.metadata().await {
            out.push(entry(e.file_name().to_string_lossy().into_owned(), &m));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, truncated))
}

fn remote(r: FileReply) -> FileError {
    match r {
        FileReply::Error { code, message } => FileError::Remote { code, message },
        other => FileError::Remote {
            code: "protocol".into(),
            message: format!("unexpected reply {other:?}"),
        },
    }
}

/// Client: push local `src` (checked by the local policy) to `dest` on the server.
pub async fn push<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    local: &PathPolicy,
    src: &str,
    dest: &str,
    id: &str,
    opts: CopyOpts,
    p: &Progress,
) -> Result<TransferOutcome, FileError> {
    let shown = src;
    let src = local.readable(src)?;
    let meta = tokio::fs::metadata(&src).await?;
    if !meta.is_file() {
        return Err(FileError::Path(PathError::Invalid(format!(
            "{shown} is not a file (loopsy cp copies one file at a time)"
        ))));
    }
    let size = meta.len();
    let keep = if opts.preserve {
        Keep::of(&src)
    } else {
        Keep::default()
    };
    p.total.store(size, Ordering::Relaxed);
    write_header(
        s,
        &FileRequest::Push {
            path: dest.into(),
            size,
            id: id.into(),
            overwrite: opts.overwrite,
            mode: keep.mode,
            mtime_ns: keep.mtime_ns,
        },
    )
    .await?;
    let offset = match step(read_header(s)).await? {
        FileReply::Ready { offset } if offset <= size => offset,
        other => return Err(remote(other)),
    };
    p.done.store(offset, Ordering::Relaxed);
    let hash = send(s, &src, offset, size, p).await?;
    match step(read_header(s)).await? {
        FileReply::Done { hash: theirs } if theirs == hash => Ok(TransferOutcome {
            bytes: size,
            resumed_from: offset,
            blake3: hash,
        }),
        FileReply::Done { .. } => Err(FileError::Checksum),
        FileReply::Error { code, .. } if code == "checksum_mismatch" => Err(FileError::Checksum),
        other => Err(remote(other)),
    }
}

/// Client: pull `src` from the server into local `dest` (checked by the local policy).
pub async fn pull<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    local: &PathPolicy,
    src: &str,
    dest: &str,
    id: &str,
    opts: CopyOpts,
    p: &Progress,
) -> Result<TransferOutcome, FileError> {
    let dest_path = local.writable(dest)?;
    if tokio::fs::metadata(&dest_path)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        return Err(FileError::Path(PathError::Invalid(format!(
            "{dest} is a directory"
        ))));
    }
    if !opts.overwrite && tokio::fs::symlink_metadata(&dest_path).await.is_ok() {
        return Err(FileError::Exists(dest.into()));
    }
    let part =
        part_path(&dest_path, id).ok_or_else(|| PathError::Invalid("bad transfer id".into()))?;
    let offset = usable_prefix(&part, None).await;
    write_header(
        s,
        &FileRequest::Pull {
            path: src.into(),
            offset,
        },
    )
    .await?;
    let (size, keep) = match step(read_header(s)).await? {
        FileReply::Sending {
            size,
            mode,
            mtime_ns,
        } => (
            size,
            if opts.preserve {
                Keep { mode, mtime_ns }
            } else {
                Keep::default()
            },
        ),
        FileReply::Error { code, .. } if code == "invalid" && offset > 0 => {
            // The source shrank since the interrupted attempt: start over next time.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FileError::Io(std::io::Error::other(
                "the source changed since the interrupted attempt; retry starts over",
            )));
        }
        other => return Err(remote(other)),
    };
    p.total.store(size, Ordering::Relaxed);
    p.done.store(offset, Ordering::Relaxed);
    let hash = receive(
        s,
        &dest_path,
        &part,
        (offset, size),
        local.direct_io(),
        keep,
        p,
    )
    .await?;
    Ok(TransferOutcome {
        bytes: size,
        resumed_from: offset,
        blake3: hash,
    })
}

/// Client: list `path` on the server.
pub async fn list<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> Result<(Vec<Entry>, bool), FileError> {
    write_header(s, &FileRequest::List { path: path.into() }).await?;
    match step(read_header(s)).await? {
        FileReply::Listing { entries, truncated } => Ok((entries, truncated)),
        other => Err(remote(other)),
    }
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
