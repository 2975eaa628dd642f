//! POSIX file modes and positional I/O.

use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub(crate) use crate::os::fs::{UNCACHED_IO, open_uncached};

pub(crate) fn with_mode(o: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    o.mode(mode)
}

pub(crate) fn set_file_mode(f: &File, mode: u32) -> io::Result<()> {
    f.set_permissions(Permissions::from_mode(mode))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
}

pub(crate) fn mode_of(meta: &Metadata) -> io::Result<u32> {
    Ok(meta.permissions().mode() & 0o777)
}

pub(crate) fn make_private_dir(dir: &Path) -> io::Result<()> {
    set_mode(dir, crate::fs::PRIVATE_DIR)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn is_executable(_path: &Path, meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

pub(crate) fn read_at(f: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    f.read_at(buf, pos)
}

pub(crate) fn write_at(f: &File, buf: &[u8], pos: u64) -> io::Result<usize> {
    f.write_at(buf, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{PRIVATE_FILE, ensure_private_dir, is_loose};

    #[test]
    fn modes_are_exact_and_loose_ones_are_seen() -> io::Result<()> {
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
        assert_eq!(crate::fs::mode_of(&d)?, 0o700);
        Ok(())
    }

    #[test]
    fn only_files_with_an_x_bit_are_executable() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("tool");
        fs::write(&p, b"#!/bin/sh\n")?;
        assert!(!crate::fs::is_executable(&p, &fs::metadata(&p)?));
        set_mode(&p, 0o755)?;
        assert!(crate::fs::is_executable(&p, &fs::metadata(&p)?));
        assert!(!crate::fs::is_executable(
            dir.path(),
            &fs::metadata(dir.path())?
        ));
        Ok(())
    }
}
