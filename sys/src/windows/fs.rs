//! Files on Windows: privacy is the data dir's ACL (the user and SYSTEM, inherited by all
//! that is made inside it), so file modes are accepted and not applied; positional I/O goes
//! through `seek_read`/`seek_write`. Writes always go through the cache here
//! (`FILE_FLAG_NO_BUFFERING` wants sector-aligned buffers the sink does not promise).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::fs::FileExt;
use std::path::Path;

use windows_sys::Win32::Security::{
    DACL_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, SetFileSecurityW,
};

use super::check;
use super::security::{Descriptor, owner_only, wide};

pub(crate) const UNCACHED_IO: bool = false;

pub(crate) fn with_mode(o: &mut OpenOptions, _mode: u32) -> &mut OpenOptions {
    o
}

pub(crate) fn set_file_mode(_f: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

pub(crate) fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// What the data dir's ACL stands for: owner-only.
pub(crate) fn mode_of(meta: &Metadata) -> io::Result<u32> {
    Ok(if meta.is_dir() {
        crate::fs::PRIVATE_DIR
    } else {
        crate::fs::PRIVATE_FILE
    })
}

/// Give `dir` a protected DACL: full control for the user and SYSTEM, inherited by files and
/// subdirectories made in it; nobody else.
pub(crate) fn make_private_dir(dir: &Path) -> io::Result<()> {
    let sd = Descriptor::from_sddl(&owner_only("FA", "OICI")?)?;
    let name = wide(&dir.to_string_lossy());
    // SAFETY: `name` is NUL-terminated and `sd` a valid descriptor; both outlive the call.
    check(unsafe {
        SetFileSecurityW(
            name.as_ptr(),
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            sd.as_ptr(),
        )
    })
}

/// NTFS journals directory changes; a renamed file's entry needs no flush of its own.
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// An extension listed in `PATHEXT` (`.EXE`, `.CMD`, …).
pub(crate) fn is_executable(path: &Path, _meta: &Metadata) -> bool {
    let exts = std::env::var("PATHEXT").unwrap_or_else(|_| ".COM;.EXE;.BAT;.CMD".into());
    path.extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .is_some_and(|e| exts.split(';').any(|x| x.eq_ignore_ascii_case(&e)))
}

pub(crate) fn read_at(f: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    f.seek_read(buf, pos)
}

pub(crate) fn write_at(f: &File, buf: &[u8], pos: u64) -> io::Result<usize> {
    f.seek_write(buf, pos)
}

pub(crate) fn open_uncached(_o: &mut OpenOptions, _path: &Path) -> io::Result<File> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "uncached writes are not used on Windows",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_known_by_their_extension() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let exe = dir.path().join("tool.exe");
        let txt = dir.path().join("notes.txt");
        std::fs::write(&exe, b"MZ")?;
        std::fs::write(&txt, b"hi")?;
        assert!(crate::fs::is_executable(&exe, &std::fs::metadata(&exe)?));
        assert!(!crate::fs::is_executable(&txt, &std::fs::metadata(&txt)?));
        Ok(())
    }

    #[test]
    fn a_new_private_dir_gets_its_acl() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().join("data");
        crate::fs::ensure_private_dir(&d)?;
        // Files made inside are readable and writable by their maker.
        std::fs::write(d.join("f"), b"x")?;
        assert_eq!(std::fs::read(d.join("f"))?, b"x");
        Ok(())
    }
}
