//! Durable, private file writes and permission checks for the data dir.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode for secrets and anything only the owner may read.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode for the data dir itself.
pub const PRIVATE_DIR: u32 = 0o700;

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
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` is filtered by the umask on create; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create `dir` (and parents) if missing and make it owner-only.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR))?;
    }
    Ok(())
}

/// The permission bits (`0o777` part) of `path`, if it exists.
pub fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(fs::symlink_metadata(path)?.permissions().mode() & 0o777)
}

/// True when group or others have any access to `path`.
pub fn is_loose(path: &Path) -> io::Result<bool> {
    Ok(mode_of(path)? & 0o077 != 0)
}

/// Set `path` to `mode` exactly.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
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
    fn loose_detection_and_fix() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("f");
        fs::write(&p, b"x")?;
        set_mode(&p, 0o644)?;
        assert!(is_loose(&p)?);
        set_mode(&p, PRIVATE_FILE)?;
        assert!(!is_loose(&p)?);
        let d = dir.path().join("d");
        fs::create_dir(&d)?;
        set_mode(&d, 0o755)?;
        ensure_private_dir(&d)?;
        assert_eq!(mode_of(&d)?, 0o700);
        Ok(())
    }
}
