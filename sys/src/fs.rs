//! Private, durable files. On Unix privacy is the file mode (0600 files, 0700 dirs); on
//! Windows it is the data dir's ACL (the owner and SYSTEM only, inherited by everything made
//! inside it), and the modes below are what that ACL stands for.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::imp;

/// Mode for secrets and anything only the owner may read.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode for the data dir and other owner-only directories.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode for files others may read (service definitions).
pub const PUBLIC_FILE: u32 = 0o644;

/// Whether large writes can bypass the page cache here ([`open_uncached`]).
pub const UNCACHED_IO: bool = imp::fs::UNCACHED_IO;
/// Whether file names usually compare without regard to case here (APFS and NTFS as
/// installed by default): path rules must then match case-blind.
pub const CASE_BLIND_PATHS: bool = cfg!(any(target_os = "macos", windows));

/// Create files opened with `o` with `mode` (Unix; on Windows the directory's ACL applies).
pub fn with_mode(o: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    imp::fs::with_mode(o, mode)
}

/// Write `bytes` to `path` atomically: temp file in the same dir, fsync, rename, fsync the dir.
/// The file is created with `mode` before any byte is written, so a secret is never visible
/// with looser permissions, and a crash leaves either the old file or the new one.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = with_mode(
            OpenOptions::new().write(true).create(true).truncate(true),
            mode,
        )
        .open(&tmp)?;
        // `mode` is filtered by the umask on create; set it exactly.
        imp::fs::set_file_mode(&f, mode)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Make a rename or a new file in `dir` durable (a no-op where the file system journals
/// directory changes itself, as NTFS does).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    imp::fs::sync_dir(dir)
}

/// Create `dir` (and parents) if missing and make it owner-only.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    let existed = dir.is_dir();
    fs::create_dir_all(dir)?;
    if !existed || is_loose(dir)? {
        imp::fs::make_private_dir(dir)?;
    }
    Ok(())
}

/// The permission bits (`0o777` part) of `path`, if it exists.
pub fn mode_of(path: &Path) -> io::Result<u32> {
    imp::fs::mode_of(&fs::symlink_metadata(path)?)
}

/// True when anyone but the owner has access to `path`.
pub fn is_loose(path: &Path) -> io::Result<bool> {
    Ok(mode_of(path)? & 0o077 != 0)
}

/// Set `path` to `mode` exactly.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    imp::fs::set_mode(path, mode)
}

/// Can `meta` (the metadata of `path`) be run as a program?
pub fn is_executable(path: &Path, meta: &Metadata) -> bool {
    meta.is_file() && imp::fs::is_executable(path, meta)
}

/// Read exactly `buf.len()` bytes of `file` at `pos` (the file's cursor is not relied on).
pub fn read_exact_at(file: &File, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match imp::fs::read_at(file, buf, pos) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write all of `buf` to `file` at `pos`.
pub fn write_all_at(file: &File, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match imp::fs::write_at(file, buf, pos) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Open `path` with `o` so that writes bypass the page cache: `O_DIRECT` on Linux (offsets,
/// lengths and memory must then be aligned, else writes fail with `InvalidInput`),
/// `F_NOCACHE` on macOS (no alignment needed). Fails with `Unsupported` where
/// [`UNCACHED_IO`] is false.
pub fn open_uncached(o: &mut OpenOptions, path: &Path) -> io::Result<File> {
    imp::fs::open_uncached(o, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_private_file_and_replaces() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("secret");
        atomic_write(&p, b"one", PRIVATE_FILE)?;
        assert_eq!(fs::read(&p)?, b"one");
        assert_eq!(mode_of(&p)?, 0o600);
        atomic_write(&p, b"two", PRIVATE_FILE)?;
        assert_eq!(fs::read(&p)?, b"two");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn positional_io_round_trips() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)?;
        write_all_at(&f, b"world", 6)?;
        write_all_at(&f, b"hello ", 0)?;
        let mut buf = [0u8; 11];
        read_exact_at(&f, &mut buf, 0)?;
        assert_eq!(&buf, b"hello world");
        let mut tail = [0u8; 4];
        let err = read_exact_at(&f, &mut tail, 9).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
        Ok(())
    }

    #[test]
    fn private_dirs_are_created_private() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().join("a/b");
        ensure_private_dir(&d)?;
        assert!(d.is_dir());
        assert!(!is_loose(&d)?);
        Ok(())
    }

    #[test]
    fn uncached_open_writes_or_says_unsupported() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("big");
        let unsupported = match open_uncached(OpenOptions::new().create(true).write(true), &p) {
            // tmpfs refuses O_DIRECT.
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => false,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => true,
            Err(e) => return Err(e),
        };
        assert_eq!(unsupported, !UNCACHED_IO);
        Ok(())
    }
}
