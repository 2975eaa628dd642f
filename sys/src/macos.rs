//! macOS only (one `unsafe` call: nix has no wrapper for `F_NOCACHE`): `F_NOCACHE` for uncached writes, `open` for URLs. macOS has no
//! `TCP_USER_TIMEOUT`: keepalive probes alone watch the path there.

use std::io;
use std::time::Duration;

pub(crate) const PLATFORM: &str = "macOS";
pub(crate) const OS: crate::Os = crate::Os::MacOs;

/// Opens URLs in the default browser.
pub(crate) const OPENER: &str = "open";

/// Nothing to do: the memory footprint macOS shows (Activity Monitor, `footprint`) leaves
/// out clean pages of the executable.
pub(crate) fn release_code_pages() -> io::Result<usize> {
    Ok(0)
}

pub(crate) fn set_user_timeout(_sock: &socket2::SockRef<'_>, _t: Duration) -> io::Result<()> {
    Ok(())
}

pub(crate) mod fs {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::path::Path;

    use std::os::fd::AsRawFd;

    pub(crate) const UNCACHED_IO: bool = true;

    /// `F_NOCACHE`: writes bypass the unified buffer cache; no alignment is required.
    pub(crate) fn open_uncached(o: &mut OpenOptions, path: &Path) -> io::Result<File> {
        let f = o.open(path)?;
        // SAFETY: fcntl(F_NOCACHE) on a descriptor `f` owns and keeps open; no pointers.
        let r = unsafe { nix::libc::fcntl(f.as_raw_fd(), nix::libc::F_NOCACHE, 1) };
        if r == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncached_files_take_unaligned_writes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("d");
        let f = fs::open_uncached(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .read(true),
            &p,
        )?;
        crate::fs::write_all_at(&f, b"abc", 1)?;
        assert_eq!(std::fs::read(&p)?, b"\0abc");
        Ok(())
    }
}
