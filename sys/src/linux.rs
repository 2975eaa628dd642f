//! Linux only: `O_DIRECT`, `TCP_USER_TIMEOUT`, `xdg-open`.

use std::io;
use std::time::Duration;

pub(crate) const PLATFORM: &str = "Linux";
pub(crate) const OS: crate::Os = crate::Os::Linux;

/// Opens URLs in the desktop's browser.
pub(crate) const OPENER: &str = "xdg-open";

pub(crate) fn set_user_timeout(sock: &socket2::SockRef<'_>, t: Duration) -> io::Result<()> {
    sock.set_tcp_user_timeout(Some(t))
}

pub(crate) mod fs {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    pub(crate) const UNCACHED_IO: bool = true;

    /// `O_DIRECT`: straight to the disk; unaligned writes fail with `EINVAL`.
    pub(crate) fn open_uncached(o: &mut OpenOptions, path: &Path) -> io::Result<File> {
        o.custom_flags(nix::libc::O_DIRECT).open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_user_timeout_is_set() -> io::Result<()> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let c = tokio::net::TcpStream::connect(l.local_addr()?).await?;
        let s = socket2::SockRef::from(&c);
        set_user_timeout(&s, Duration::from_secs(42))?;
        assert_eq!(s.tcp_user_timeout()?, Some(Duration::from_secs(42)));
        Ok(())
    }

    #[test]
    fn direct_io_writes_aligned_blocks() -> io::Result<()> {
        // /var/tmp is on a disk (tmpfs, often /tmp, refuses O_DIRECT).
        let dir = tempfile::tempdir_in("/var/tmp")?;
        let p = dir.path().join("d");
        let f = fs::open_uncached(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .read(true),
            &p,
        );
        let f = match f {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(()),
            r => r?,
        };
        // One aligned 4 KiB page.
        let mut mem = vec![0u8; 8192];
        let off = mem.as_ptr().align_offset(4096);
        mem[off..off + 4096].fill(7);
        crate::fs::write_all_at(&f, &mem[off..off + 4096], 0)?;
        assert_eq!(std::fs::read(&p)?, vec![7u8; 4096]);
        Ok(())
    }
}
