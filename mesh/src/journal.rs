//! Durable storage for a store's state (the context document, the message store):
//! `doc.snapshot` (a full save, replaced by atomic rename) plus `doc.log`, an append-only file
//! of `[len u32 LE][blake3[..8]][changes]`
//! records. Each append is fsynced before it returns. On load a torn or corrupt tail is cut
//! off: everything before it is kept, nothing after it is trusted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest single record (a batch of changes).
const MAX_RECORD: u32 = 64 << 20;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The OS said no.
    #[error("store {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn digest(bytes: &[u8]) -> [u8; 8] {
    let h = blake3::hash(bytes);
    let mut d = [0u8; 8];
    d.copy_from_slice(&h.as_bytes()[..8]);
    d
}

/// The on-disk log (and snapshot) of one document.
#[derive(Debug)]
pub struct ChangeLog {
    dir: PathBuf,
    log: File,
    log_len: u64,
}

/// What was on disk at open.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The snapshot, if any.
    pub snapshot: Option<Vec<u8>>,
    /// The log's intact records, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes of torn or corrupt tail that were cut off.
    pub dropped_bytes: u64,
}

impl ChangeLog {
    /// Open (creating) the store in `dir` (mode 0700 files 0600), returning what it holds.
    pub fn open(dir: &Path) -> Result<(Self, Loaded), LogError> {
        crate::fsutil::ensure_private_dir(dir).map_err(io(dir))?;
        let snap_path = dir.join("doc.snapshot");
        let snapshot = match std::fs::read(&snap_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&snap_path)(e)),
        };
        let log_path = dir.join("doc.log");
        let mut log = crate::fsutil::with_mode(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            crate::fsutil::PRIVATE_FILE,
        )
        .open(&log_path)
        .map_err(io(&log_path))?;
        let mut all = Vec::new();
        log.read_to_end(&mut all).map_err(io(&log_path))?;
        let (records, good) = parse(&all);
        let dropped_bytes = all.len() as u64 - good;
        if dropped_bytes > 0 {
            log.set_len(good).map_err(io(&log_path))?;
            log.sync_all().map_err(io(&log_path))?;
        }
        log.seek(SeekFrom::Start(good)).map_err(io(&log_path))?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                log,
                log_len: good,
            },
            Loaded {
                snapshot,
                records,
                dropped_bytes,
            },
        ))
    }

    /// Append one record and fsync it.
    pub fn append(&mut self, changes: &[u8]) -> Result<(), LogError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("doc.log");
        let len = u32::try_from(changes.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| io(&path)(std::io::Error::other("change batch too large")))?;
        let mut rec = Vec::with_capacity(12 + changes.len());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&digest(changes));
        rec.extend_from_slice(changes);
        let written = self.log.write_all(&rec).and_then(|()| self.log.sync_data());
        if let Err(e) = written {
            // Never leave a partial record for later ones to land behind: cut back to the
            // last good end (the caller then compacts before writing again).
            let _ = self.log.set_len(self.log_len);
            let _ = self.log.seek(SeekFrom::Start(self.log_len));
            return Err(io(&path)(e));
        }
        self.log_len += rec.len() as u64;
        Ok(())
    }

    /// Bytes in the log since the last compaction.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Replace the snapshot with `full` (atomically) and empty the log. A crash in between
    /// leaves the new snapshot plus a log whose changes are already in it: loading applies
    /// them again, which changes nothing.
    pub fn compact(&mut self, full: &[u8]) -> Result<(), LogError> {
        let snap = self.dir.join("doc.snapshot");
        crate::fsutil::atomic_write(&snap, full, 0o600).map_err(io(&snap))?;
        let path = self.dir.join("doc.log");
        self.log.set_len(0).map_err(io(&path))?;
        self.log.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        self.log.sync_all().map_err(io(&path))?;
        self.log_len = 0;
        Ok(())
    }
}

/// The intact records at the start of `all`, and how many bytes they span.
pub fn parse(all: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(head) = all.get(at..at + 12) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if len == 0 || len > MAX_RECORD {
            break;
        }
        let Some(body) = all.get(at + 12..at + 12 + len as usize) else {
            break;
        };
        if digest(body) != head[4..12] {
            break;
        }
        records.push(body.to_vec());
        at += 12 + len as usize;
    }
    (records, at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_truncation_keeps_a_clean_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, loaded) = ChangeLog::open(dir.path()).unwrap();
        assert!(loaded.records.is_empty() && loaded.snapshot.is_none());
        for i in 0..20u8 {
            log.append(&vec![i; 10 + i as usize * 7]).unwrap();
        }
        drop(log);
        let full = std::fs::read(dir.path().join("doc.log")).unwrap();
        for cut in 0..=full.len() {
            let (records, good) = parse(&full[..cut]);
            // Every kept record is intact and in order; the cut point is a record boundary.
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r, &vec![i as u8; 10 + i * 7]);
            }
            assert!(good as usize <= cut);
        }
        // A flipped byte in the middle drops that record and everything after it.
        let mut bad = full.clone();
        bad[200] ^= 0xff;
        let (records, _) = parse(&bad);
        assert!(records.len() < 20);
        // Reopening a torn file cuts the tail and appends after the good part.
        std::fs::write(dir.path().join("doc.log"), &full[..full.len() - 3]).unwrap();
        let (mut log, loaded) = ChangeLog::open(dir.path()).unwrap();
        assert_eq!(loaded.records.len(), 19);
        assert!(loaded.dropped_bytes > 0);
        log.append(b"after").unwrap();
        drop(log);
        let (_, loaded) = ChangeLog::open(dir.path()).unwrap();
        assert_eq!(loaded.records.len(), 20);
        assert_eq!(loaded.records[19], b"after");
    }
}
