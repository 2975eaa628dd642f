//! Linux only: `O_DIRECT`, `TCP_USER_TIMEOUT`, `xdg-open`.

use std::io;
use std::time::Duration;

pub(crate) const PLATFORM: &str = "Linux";
pub(crate) const OS: crate::Os = crate::Os::Linux;

/// Opens URLs in the desktop's browser.
pub(crate) const OPENER: &str = "xdg-open";

/// `MADV_DONTNEED` over each mapping of this executable that is read-only and holds no
/// copied-on-write page (the code and read-only data; never the relocated `RELRO` part, whose
/// pages were written at load and would revert to the file's bytes).
#[allow(unsafe_code)]
pub(crate) fn release_code_pages() -> io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata("/proc/self/exe")?.ino();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for (start, len) in clean_exe_mappings(&smaps, exe) {
        // SAFETY: [start, start + len) is one whole mapping of this process's executable,
        // private, read-only and without a copied-on-write page (checked in smaps just
        // now; being read-only, none can appear since). MADV_DONTNEED there only drops page table
        // entries: the next access maps the same bytes of the file again. The executable
        // cannot change under us while it runs (the kernel refuses writes: ETXTBSY).
        let r = unsafe { nix::libc::madvise(start as *mut _, len, nix::libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        released += len;
    }
    Ok(released)
}

/// The (start, length) of each mapping in `smaps` of the file with inode `exe` that is
/// read-only, private and has no anonymous (copied-on-write) page.
fn clean_exe_mappings(smaps: &str, exe: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // The mapping being read: (start, length), and whether it qualifies so far.
    let mut cur: Option<(usize, usize)> = None;
    let mut clean = false;
    let close = |cur: Option<(usize, usize)>, clean: bool, out: &mut Vec<_>| {
        if let Some(m) = cur.filter(|_| clean) {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let (Some(first), Some(second)) = (f.next(), f.next()) else {
            continue;
        };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            close(cur.take(), clean, &mut out);
            let inode = f.nth(2).and_then(|i| i.parse::<u64>().ok());
            clean = (second == "r-xp" || second == "r--p") && inode == Some(exe) && b > a;
            cur = Some((a, b.saturating_sub(a)));
            continue;
        }
        // Copied-on-write pages are anonymous. (Dirty file pages are not: a binary just
        // written by the linker is dirty in the file cache, and its bytes are there.)
        if first == "Anonymous:" && second != "0" {
            clean = false;
        }
    }
    close(cur, clean, &mut out);
    out
}

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

    const SMAPS: &str = "\
55d000000000-55d000824000 r--p 00000000 fd:01 4242 /usr/bin/loopsy
Rss:                3152 kB
Private_Dirty:       604 kB
Anonymous:             0 kB
55d000825000-55d002396000 r-xp 00824000 fd:01 4242 /usr/bin/loopsy (deleted)
Rss:               17596 kB
Shared_Dirty:          0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55d002397000-55d002476000 r--p 02395000 fd:01 4242 /usr/bin/loopsy
Rss:                 900 kB
Private_Dirty:       900 kB
Anonymous:           900 kB
55d002390000-55d002391000 r--p 02395000 fd:01 4242 /usr/bin/loopsy
Private_Dirty:         4 kB
Anonymous:             4 kB
55d002478000-55d00247f000 rw-p 02475000 fd:01 4242 /usr/bin/loopsy
Anonymous:            28 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 77 /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00000000 00:00 0
Anonymous:             0 kB
";

    #[test]
    fn only_the_executables_clean_read_only_mappings_are_released() {
        assert_eq!(
            clean_exe_mappings(SMAPS, 4242),
            vec![
                (0x55d000000000, 0x824000),
                (0x55d000825000, 0x55d002396000 - 0x55d000825000)
            ]
        );
        assert!(clean_exe_mappings(SMAPS, 9).is_empty());
        assert!(clean_exe_mappings("garbage\n1-2 r-xp\n", 0).is_empty());
    }

    #[test]
    fn releasing_drops_resident_code_and_the_program_runs_on() -> io::Result<()> {
        let rss = || -> io::Result<u64> {
            let s = std::fs::read_to_string("/proc/self/status")?;
            Ok(s.lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or(0))
        };
        let before = rss()?;
        let released = release_code_pages()?;
        assert!(released > 0, "nothing of the test binary was released");
        let after = rss()?;
        assert!(after < before, "RssFile {before} kB → {after} kB");
        // Code runs again from the released pages.
        assert_eq!(clean_exe_mappings(SMAPS, 4242).len(), 2);
        Ok(())
    }

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
