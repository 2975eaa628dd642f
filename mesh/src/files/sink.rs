//! Where a received file's bytes go. They arrive into 1 MiB blocks; each full block is hashed
//! as it completes and queued for a writer thread, which writes blocks in order while the
//! network fills the next ones ([`DEPTH`] blocks in all, so memory stays bounded and a slow
//! disk slows the sender through the stream's flow control). Large transfers are written with
//! uncached I/O (`O_DIRECT` on Linux, `F_NOCACHE` on macOS): straight from the block to the
//! disk, past the page cache.
//! Copying a big image then neither evicts what the machine had cached nor piles up gigabytes
//! of dirty pages for the final fsync (the transfer is made durable before it is acknowledged
//! either way). Where direct I/O is not available (another system, a file system without it,
//! a device wanting a larger alignment) or `files.direct_io = false`, the same blocks go
//! through the page cache, flushed in the background as they go.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, spawn_blocking};

use loopsy_sys::fs::{PRIVATE_FILE, UNCACHED_IO, open_uncached, with_mode, write_all_at};

use super::flush::Flusher;

/// Direct I/O wants file offsets, lengths and memory aligned to the device's block size.
/// 4 KiB covers the disks in use; a write it does not cover fails with `EINVAL`, and the
/// transfer goes on through the page cache.
pub(super) const ALIGN: u64 = 4096;
/// One write to the disk.
const BLOCK: usize = 1024 * 1024;
/// Blocks per transfer: one filling, the rest queued for or being written. Hashing on the
/// network side and keeping several writes queued lets the disk's waits overlap with the
/// network and the decryption (with one block in flight and the hash in the writer, the
/// receiver spent half of a 1 GiB push waiting for its writer).
const DEPTH: usize = 4;
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

/// The file, owned by the writer thread while the transfer runs.
struct Disk {
    file: File,
    path: PathBuf,
    direct: bool,
}

impl Disk {
    /// Write `b` at `pos`.
    fn put(&mut self, b: &Block, pos: u64) -> io::Result<()> {
        match write_all_at(&self.file, b.data(), pos) {
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                tracing::debug!(path = %self.path.display(), "direct write refused ({e}); going on through the page cache");
                self.file = open(&self.path, false)?;
                self.direct = false;
                write_all_at(&self.file, b.data(), pos)
            }
            r => r,
        }
    }

    /// Write the blocks that come in, in order, handing each back empty; stop at the first
    /// error or when the sending side is done.
    fn run(
        mut self,
        mut full: mpsc::Receiver<(Block, u64)>,
        empty: mpsc::Sender<Block>,
    ) -> io::Result<Self> {
        while let Some((mut b, pos)) = full.blocking_recv() {
            self.put(&b, pos)?;
            b.len = 0;
            // The receiving side may be gone (a failed transfer); the block is then dropped.
            let _ = empty.try_send(b);
        }
        Ok(self)
    }
}

fn open(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    with_mode(o.create(true).write(true).read(true), PRIVATE_FILE);
    match direct {
        true => open_uncached(&mut o, path),
        false => o.open(path),
    }
}

fn joined<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.unwrap_or_else(|e| Err(io::Error::other(format!("disk writer failed: {e}"))))
}

/// A `.part` file being written from `pos` on.
pub(super) struct Sink {
    cur: Block,
    /// File offset of `cur`'s first byte.
    pos: u64,
    /// Hash of everything before `cur`.
    hasher: blake3::Hasher,
    /// Full blocks to the writer (`None` once closed).
    full: Option<mpsc::Sender<(Block, u64)>>,
    /// Written blocks back from it.
    empty: mpsc::Receiver<Block>,
    /// Blocks not yet made (they are allocated as the transfer needs them).
    unmade: usize,
    /// The writer thread (`None` once joined).
    writer: Option<JoinHandle<io::Result<Disk>>>,
    flusher: Option<Flusher>,
    /// Time spent waiting for the writer (a measure of how much the disk held us back).
    waited: Duration,
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
        let want_direct =
            direct_io && UNCACHED_IO && left >= DIRECT_MIN && offset.is_multiple_of(ALIGN);
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
                Ok(Disk { file, path, direct })
            })
            .await,
        )?;
        let flusher = match disk.direct {
            true => None,
            false => Some(Flusher::new(disk.file.try_clone()?)),
        };
        let (full_tx, full_rx) = mpsc::channel(DEPTH);
        let (empty_tx, empty_rx) = mpsc::channel(DEPTH);
        let writer = Some(spawn_blocking(move || disk.run(full_rx, empty_tx)));
        Ok(Self {
            cur: Block::new(),
            pos: offset,
            hasher,
            full: Some(full_tx),
            empty: empty_rx,
            unmade: DEPTH - 1,
            writer,
            flusher,
            waited: Duration::ZERO,
        })
    }

    /// Room for the next bytes to arrive (fill it, then call [`Sink::filled`]).
    pub(super) fn space(&mut self) -> &mut [u8] {
        self.cur.space()
    }

    /// `n` bytes of [`Sink::space`] were filled; a full block goes to the writer.
    pub(super) async fn filled(&mut self, n: usize) -> io::Result<()> {
        self.cur.len += n;
        if self.cur.len < BLOCK {
            return Ok(());
        }
        let spare = match self.unmade {
            0 => {
                let t0 = Instant::now();
                let b = self.empty.recv().await;
                self.waited += t0.elapsed();
                match b {
                    Some(b) => b,
                    None => return Err(self.writer_error().await),
                }
            }
            _ => {
                self.unmade -= 1;
                Block::new()
            }
        };
        let full = std::mem::replace(&mut self.cur, spare);
        self.hasher.update(full.data());
        let pos = self.pos;
        self.pos += full.len as u64;
        if let Some(f) = &mut self.flusher {
            f.wrote(full.len as u64);
        }
        let sent = match &self.full {
            Some(tx) => tx.send((full, pos)).await.is_ok(),
            None => false,
        };
        match sent {
            true => Ok(()),
            false => Err(self.writer_error().await),
        }
    }

    /// Why the writer stopped early.
    async fn writer_error(&mut self) -> io::Error {
        match self.drain().await {
            Err(e) => e,
            Ok(_) => io::Error::other("the disk writer stopped"),
        }
    }

    /// Close the queue and wait for the writer to write what it holds (once: later calls
    /// find it gone).
    async fn drain(&mut self) -> io::Result<Disk> {
        self.full = None;
        let r = match self.writer.take() {
            Some(w) => joined(w.await),
            None => Err(io::Error::other("the disk writer stopped")),
        };
        if let Some(f) = self.flusher.take() {
            f.finish().await;
        }
        r
    }

    /// Write what is left and hand back the file (not yet synced) and the whole file's hash.
    pub(super) async fn finish(mut self) -> io::Result<(File, blake3::Hash)> {
        let disk = self.drain().await?;
        tracing::debug!(
            waited_ms = self.waited.as_millis() as u64,
            "received file written"
        );
        let (tail, pos) = (self.cur, self.pos);
        let mut hasher = self.hasher;
        hasher.update(tail.data());
        let hash = hasher.finalize();
        let file = joined(
            spawn_blocking(move || {
                if tail.len > 0 {
                    // A tail that is not a whole number of blocks cannot be written directly:
                    // it goes through the page cache (the final fsync covers both).
                    match disk.direct {
                        true => write_all_at(&open(&disk.path, false)?, tail.data(), pos)?,
                        false => write_all_at(&disk.file, tail.data(), pos)?,
                    }
                }
                Ok(disk.file)
            })
            .await,
        )?;
        Ok((file, hash))
    }

    /// Give up: wait for the writes under way so the file's length is final (a retry resumes
    /// from it).
    pub(super) async fn abandon(mut self) {
        let _ = self.drain().await;
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

// `/dev/full` is Linux's.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A disk that fails (`/dev/full`: every write is `ENOSPC`) fails the transfer with that
    /// error within the blocks already queued, and giving up afterwards neither hangs nor
    /// panics.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_disk_fails_the_transfer_with_its_error() {
        let left = 64 * BLOCK as u64;
        let mut sink = Sink::open(Path::new("/dev/full"), 0, left, true, blake3::Hasher::new())
            .await
            .unwrap();
        let mut blocks = 0;
        let err = loop {
            let space = sink.space();
            let n = space.len();
            space.fill(7);
            match sink.filled(n).await {
                Ok(()) => blocks += usize::from(n == BLOCK),
                Err(e) => break e,
            }
            assert!(blocks < 64, "all blocks accepted by a disk that is full");
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(
            blocks <= DEPTH + 1,
            "{blocks} blocks accepted after the disk failed"
        );
        sink.abandon().await;
    }
}
