//! `daemon.pid`: an OS-locked pidfile. The lock, not the file's existence, says a daemon runs,
//! so a `kill -9` leaves nothing stale behind (the kernel drops the lock with the process).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::fsutil::{PRIVATE_FILE, with_mode};

/// Held for the daemon's whole life; dropping it releases the lock.
#[derive(Debug)]
pub struct PidLock {
    file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidLockError {
    /// Another live process holds it.
    #[error("another loopsy daemon is running for this data dir (pid {})", pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()))]
    Held {
        /// The holder's pid as written in the file, if readable.
        pid: Option<u32>,
    },
    /// The OS refused.
    #[error("cannot lock the pidfile: {0}")]
    Io(#[from] std::io::Error),
}

fn open(path: &Path) -> std::io::Result<File> {
    with_mode(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        PRIVATE_FILE,
    )
    .open(path)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl PidLock {
    /// Take the lock and write our pid, or report who holds it.
    pub fn acquire(path: &Path) -> Result<Self, PidLockError> {
        let mut file = open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(PidLockError::Held {
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(Self { file })
    }

    /// The pid of the live daemon holding the lock, or `None` when no daemon holds it.
    pub fn holder(path: &Path) -> std::io::Result<Option<u32>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(read_pid(&mut file).unwrap_or(0))),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Empty the file but keep it: deleting a locked file lets a racing starter lock an
        // unlinked inode while a third process creates a fresh one.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_and_release_frees() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("daemon.pid");
        assert_eq!(PidLock::holder(&p)?, None);
        let lock = PidLock::acquire(&p)?;
        assert_eq!(PidLock::holder(&p)?, Some(std::process::id()));
        match PidLock::acquire(&p) {
            Err(PidLockError::Held { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        assert_eq!(PidLock::holder(&p)?, None);
        let _again = PidLock::acquire(&p)?;
        Ok(())
    }
}
