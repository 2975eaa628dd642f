//! A disk whose power can be cut (issue #24): ext4 on a loop device over an image file.
//! [`CutDisk::cut`] copies the device's blocks as they are at that moment, which is what a
//! power cut leaves: whatever the kernel still held in its page cache (written, never
//! fsynced) is not in the copy. The copy is then mounted in the disk's place, its journal
//! replayed as at boot after a crash. Durability is proven by that, not by the page cache
//! surviving a `kill -9` of the process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct CutDisk {
    dir: tempfile::TempDir,
    dev: Option<String>,
}

fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{prog} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Attach `img` to a free loop device and mount it on `mnt`; the device.
fn attach(img: &Path, mnt: &Path) -> Result<String, String> {
    let dev = run("losetup", &["-f", "--show", &img.display().to_string()])?;
    // commit=60: ext4 commits its journal (and the ordered data with it) every 60 s, not 5,
    // so nothing but an fsync moves a write to the device within a test.
    if let Err(e) = run(
        "mount",
        &["-o", "commit=60", &dev, &mnt.display().to_string()],
    ) {
        let _ = run("losetup", &["-d", &dev]);
        return Err(e);
    }
    Ok(dev)
}

impl CutDisk {
    /// A fresh 128 MiB ext4 disk, mounted. Needs root, losetup and mkfs.ext4: where they are
    /// missing the test fails, unless skips were allowed by hand (then `None`).
    pub fn up() -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ld")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let made = (|| {
            let img = dir.path().join("disk.img");
            std::fs::create_dir(dir.path().join("m")).map_err(|e| e.to_string())?;
            let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
            f.set_len(128 << 20).map_err(|e| e.to_string())?;
            run("mkfs.ext4", &["-q", "-F", &img.display().to_string()])?;
            attach(&img, &dir.path().join("m"))
        })();
        match made {
            Ok(dev) => Some(Self {
                dir,
                dev: Some(dev),
            }),
            Err(why) => {
                super::skip_or_fail(&format!(
                    "a loop-device disk cannot be made here (needs root, losetup, mkfs.ext4): {why}"
                ));
                None
            }
        }
    }

    /// Where the disk is mounted.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("m")
    }

    /// Flush everything written so far to the device (what a test sets up before the writes
    /// it checks).
    pub fn sync(&self) {
        run("sync", &["-f", &self.path().display().to_string()]).unwrap();
    }

    /// Cut the power: the device's blocks as they are now replace the disk, at the same path.
    /// Stop (kill -9) whatever writes to it first.
    pub fn cut(&mut self) {
        let snap = self.dir.path().join("cut.img");
        std::fs::copy(self.dir.path().join("disk.img"), &snap).unwrap();
        self.detach();
        self.dev = Some(attach(&snap, &self.path()).unwrap());
    }

    fn detach(&mut self) {
        let _ = run("umount", &["-l", &self.path().display().to_string()]);
        if let Some(dev) = self.dev.take() {
            let _ = run("losetup", &["-d", &dev]);
        }
    }
}

impl Drop for CutDisk {
    fn drop(&mut self) {
        self.detach();
    }
}
