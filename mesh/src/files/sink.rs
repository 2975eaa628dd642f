//! Where a received file's bytes go. They arrive into 1 MiB blocks; each full block is hashed
//! and written by a blocking task while the next one fills from the network, so the network
//! task only reads. Large transfers are written with direct I/O (`O_DIRECT`, Linux): straight
//! from the block to the disk, past the page cache. Copying a big image then neither evicts
//! what the machine had cached nor piles up gigabytes of dirty pages for the final fsync (the
//! transfer is made durable before it is acknowledged either way). Where direct I/O is not
//! available (another system, a file system without it, a device wanting a larger alignment)
//! or `files.direct_io = false`, the same blocks go through the page cache, flushed in the
//! background as they go.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tokio::task::{JoinHandle, spawn_blocking};

use super::flush::Flusher;

/// Direct I/O wants file offsets, lengths and memory aligned to the device's block size.
/// 4 KiB covers the disks in use; a write it does not cover fails with `EINVAL`, and the
/// transfer goes on through the page cache.
pub(super) const ALIGN: u64 = 4096;
/// One write to the disk.
const BLOCK: usize = 1024 * 1024;
/// Transfers with less than this left go through the page cache.
const DIRECT_MIN: u64 = 8 * 1024 * 1024;

/// `BLOCK` bytes of memory starting at an `ALIGN`-aligned address, `len` of them filled.
struct Block {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Self {
        let mem = vec![0u8; BLOCK + ALIGN as usize];
        let misalign = mem.as_ptr() as usize % ALIGN as usize;
        let start = (ALIGN as usize - misalign) % ALIGN as usize;
        Self { mem, start, len: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    fn space(&mut self) -> &mut [u8] {
        let end = self.start + BLOCK;
        &mut self.mem[self.start + self.len..end]
    }
}

/// The file and the running hash: with the blocking task while a block is being written.
struct Disk {
    file: File,
    path: PathBuf,
    direct: bool,
    hasher: blake3::Hasher,
}

impl Disk {
    /// Hash `b` and write it at `pos`.
    fn put(&mut self, b: &Block, pos: u64) -> io::Result<()> {
        self.hasher.update(b.data());
        match self.file.write_all_at(b.data(), pos) {
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                tracing::debug!(path = %self.path.display(), "direct write refused ({e}); going on through the page cache");
                self.file = open(&self.path, false)?;
                self.direct = false;
                self.file.write_all_at(b.data(), pos)
            }
            r => r,
        }
    }
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).write(true).read(true).mode(0o600);
    #[cfg(target_os = "linux")]
    if direct {
        o.custom_flags(nix::libc::O_DIRECT);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = direct;
    o.open(path)
}

fn joined<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.unwrap_or_else(|e| Err(io::Error::other(format!("disk writer failed: {e}"))))
}

/// Whether a write is under way.
enum State {
    Idle(Box<Disk>, Block),
    Busy(JoinHandle<io::Result<(Box<Disk>, Block)>>),
    Failed,
}

/// A `.part` file being written from `pos` on.
pub(super) struct Sink {
    state: State,
    cur: Block,
    /// File offset of `cur`'s first byte.
    pos: u64,
    flusher: Option<Flusher>,
}

impl Sink {
    /// Open `part` to write from `offset` (a multiple of [`ALIGN`]; what is before it is
    /// kept), `left` bytes to come, `hasher` holding the hash of the kept prefix.
    pub(super) async fn open(
        part: &Path,
        offset: u64,
        left: u64,
        direct_io: bool,
        hasher: blake3::Hasher,
    ) -> io::Result<Self> {
        let want_direct = direct_io
            && cfg!(target_os = "linux")
            && left >= DIRECT_MIN
            && offset.is_multiple_of(ALIGN);
        let path = part.to_path_buf();
        let disk = joined(
            spawn_blocking(move || {
                let (file, direct) = match want_direct {
                    true => match open(&path, true) {
                        Ok(f) => (f, true),
                        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                            (open(&path, false)?, false)
                        }
                        Err(e) => return Err(e),
                    },
                    false => (open(&path, false)?, false),
                };
                Ok(Disk {
                    file,
                    path,
                    direct,
                    hasher,
                })
            })
            .await,
        )?;
        let flusher = match disk.direct {
            true => None,
            false => Some(Flusher::new(disk.file.try_clone()?)),
        };
        Ok(Self {
            state: State::Idle(Box::new(disk), Block::new()),
            cur: Block::new(),
            pos: offset,
            flusher,
        })
    }

    /// Room for the next bytes to arrive (fill it, then call [`Sink::filled`]).
    pub(super) fn space(&mut self) -> &mut [u8] {
        self.cur.space()
    }

    /// `n` bytes of [`Sink::space`] were filled; a full block goes to the disk.
    pub(super) async fn filled(&mut self, n: usize) -> io::Result<()> {
        self.cur.len += n;
        if self.cur.len < BLOCK {
            return Ok(());
        }
        let (mut disk, spare) = self.idle().await?;
        let full = std::mem::replace(&mut self.cur, spare);
        let pos = self.pos;
        self.pos += full.len as u64;
        if let Some(f) = &mut self.flusher {
            f.wrote(full.len as u64);
        }
        self.state = State::Busy(spawn_blocking(move || {
            disk.put(&full, pos)?;
            let mut block = full;
            block.len = 0;
            Ok((disk, block))
        }));
        Ok(())
    }

    /// Wait for the write under way, if any.
    async fn idle(&mut self) -> io::Result<(Box<Disk>, Block)> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Idle(d, b) => Ok((d, b)),
            State::Busy(h) => joined(h.await),
            State::Failed => Err(io::Error::other("an earlier disk write failed")),
        }
    }

    /// Write what is left and hand back the file (not yet synced) and the whole file's hash.
    pub(super) async fn finish(mut self) -> io::Result<(File, blake3::Hash)> {
        let idle = self.idle().await;
        if let Some(f) = self.flusher.take() {
            f.finish().await;
        }
        let (disk, _) = idle?;
        let (tail, pos) = (self.cur, self.pos);
        joined(
            spawn_blocking(move || {
                let mut disk = disk;
                if tail.len > 0 {
                    disk.hasher.update(tail.data());
                    // A tail that is not a whole number of blocks cannot be written directly:
                    // it goes through the page cache (the final fsync covers both).
                    match disk.direct {
                        true => open(&disk.path, false)?.write_all_at(tail.data(), pos)?,
                        false => disk.file.write_all_at(tail.data(), pos)?,
                    }
                }
                Ok((disk.file, disk.hasher.finalize()))
            })
            .await,
        )
    }

    /// Give up: wait for any write under way so the file's length is final (a retry resumes
    /// from it).
    pub(super) async fn abandon(mut self) {
        let _ = self.idle().await;
        if let Some(f) = self.flusher.take() {
            f.finish().await;
        }
    }
}

/// How much of an interrupted `.part` a retry keeps: all of it when at most `max` (else it
/// is deleted and the retry starts over), cut down to a multiple of [`ALIGN`] so direct
/// writes can go on from there.
pub(super) async fn usable_prefix(part: &Path, max: Option<u64>) -> u64 {
    let Ok(m) = tokio::fs::metadata(part).await else {
        return 0;
    };
    let len = m.len();
    if max.is_some_and(|max| len > max) {
        let _ = tokio::fs::remove_file(part).await;
        return 0;
    }
    let keep = len - len % ALIGN;
    if keep == len {
        return len;
    }
    let cut = async {
        let f = tokio::fs::OpenOptions::new().write(true).open(part).await?;
        f.set_len(keep).await
    };
    match cut.await {
        Ok(()) => keep,
        Err(_) => {
            let _ = tokio::fs::remove_file(part).await;
            0
        }
    }
}
