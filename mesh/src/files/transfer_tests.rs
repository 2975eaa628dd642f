//! Tests for push, pull and list over an in-memory pipe.
use super::*;
use crate::files::FilesConfig;

fn policy(root: &Path) -> PathPolicy {
    policy_io(root, true)
}

fn policy_io(root: &Path, direct_io: bool) -> PathPolicy {
    PathPolicy::new(
        &FilesConfig {
            allowed_paths: vec!["~".into()],
            denied_paths: vec!["~/deny".into()],
            direct_io,
            ..FilesConfig::default()
        },
        root,
    )
}

/// A server end (serving `root` with the given capabilities) and the client end.
fn serve(
    root: &Path,
    may_read: bool,
    may_write: bool,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    serve_with(policy(root), may_read, may_write)
}

/// Copy options of a first copy: nothing to replace, mode and mtime kept.
const NEW: CopyOpts = CopyOpts {
    overwrite: false,
    preserve: true,
};

fn serve_with(
    p: PathPolicy,
    may_read: bool,
    may_write: bool,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (c, mut srv) = tokio::io::duplex(64 * 1024);
    (
        c,
        tokio::spawn(async move {
            let no = |cap: &str| Err(format!("not granted {cap}"));
            let access = Access {
                read: if may_read { Ok(()) } else { no("files-read") },
                write: if may_write { Ok(()) } else { no("files-write") },
            };
            handle(&mut srv, &p, &access).await
        }),
    )
}

#[tokio::test]
async fn push_pull_resume_and_refusals() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(a.path().join("src.bin"), &data)?;
    let pa = policy(a.path());

    // Push a → b.
    let (mut c, server) = serve(b.path(), true, true);
    let out = push(
        &mut c,
        &pa,
        "src.bin",
        "dst.bin",
        "aa01",
        NEW,
        &Progress::default(),
    )
    .await?;
    server.await??;
    assert_eq!(out.bytes, 3_000_000);
    assert_eq!(std::fs::read(b.path().join("dst.bin"))?, data);

    // A leftover half from an interrupted attempt is resumed, and the result is exact.
    std::fs::write(
        a.path().join(".back.bin.loopsy-bb02.part"),
        &data[..1_000_000],
    )?;
    let (mut c, server) = serve(b.path(), true, true);
    let out = pull(
        &mut c,
        &pa,
        "dst.bin",
        "back.bin",
        "bb02",
        NEW,
        &Progress::default(),
    )
    .await?;
    server.await??;
    // Kept down to a whole number of 4 KiB blocks (what direct writes need).
    assert_eq!(out.resumed_from, 1_000_000 / 4096 * 4096);
    assert_eq!(std::fs::read(a.path().join("back.bin"))?, data);
    assert!(!a.path().join(".back.bin.loopsy-bb02.part").exists());

    // A corrupted partial fails the checksum and leaves no file under the destination name.
    // (Longer than one 4 KiB block: a resume keeps whole blocks only.)
    std::fs::write(
        a.path().join(".bad.bin.loopsy-cc03.part"),
        vec![0u8; 10_000],
    )?;
    let (mut c, server) = serve(b.path(), true, true);
    let r = pull(
        &mut c,
        &pa,
        "dst.bin",
        "bad.bin",
        "cc03",
        NEW,
        &Progress::default(),
    )
    .await;
    let _ = server.await?;
    assert!(matches!(r, Err(FileError::Checksum)), "{r:?}");
    assert!(!a.path().join("bad.bin").exists());

    // Refusals: exists, denied, capability, escape.
    for (dest, want) in [
        ("dst.bin", "exists"),
        ("deny/x", "denied"),
        ("../x", "not_allowed"),
    ] {
        std::fs::create_dir_all(b.path().join("deny"))?;
        let (mut c, server) = serve(b.path(), true, true);
        let r = push(
            &mut c,
            &pa,
            "src.bin",
            dest,
            "dd04",
            NEW,
            &Progress::default(),
        )
        .await;
        let _ = server.await?;
        assert!(
            matches!(&r, Err(FileError::Remote { code, .. }) if code == want),
            "{dest}: {r:?}"
        );
    }
    let (mut c, server) = serve(b.path(), true, false);
    let r = push(
        &mut c,
        &pa,
        "src.bin",
        "new.bin",
        "ee05",
        NEW,
        &Progress::default(),
    )
    .await;
    let _ = server.await?;
    assert!(
        matches!(&r, Err(FileError::Remote { code, .. }) if code == "permission_denied"),
        "{r:?}"
    );
    Ok(())
}

/// Files big enough for direct I/O (and an odd size, so the tail is not a whole block) come
/// out exact with it on and off, both ways, also resumed from an odd-sized partial; a
/// corrupted partial still fails the checksum.
#[tokio::test]
async fn large_files_with_and_without_direct_io() -> Result<(), Box<dyn std::error::Error>> {
    let size = 9 * 1024 * 1024 + 12_345;
    let data: Vec<u8> = (0..size as u32).map(|i| (i * 31 % 253) as u8).collect();
    for direct in [true, false] {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        std::fs::write(a.path().join("big.bin"), &data)?;
        let (pa, pb) = (policy_io(a.path(), direct), policy_io(b.path(), direct));

        let (mut c, server) = serve_with(pb.clone(), true, true);
        let out = push(
            &mut c,
            &pa,
            "big.bin",
            "big.bin",
            "f1",
            NEW,
            &Progress::default(),
        )
        .await?;
        server.await??;
        assert_eq!(out.bytes, size as u64);
        assert!(
            std::fs::read(b.path().join("big.bin"))? == data,
            "push, direct {direct}"
        );

        std::fs::write(
            a.path().join(".back.bin.loopsy-f2.part"),
            &data[..1_234_567],
        )?;
        let (mut c, server) = serve_with(pb.clone(), true, true);
        let out = pull(
            &mut c,
            &pa,
            "big.bin",
            "back.bin",
            "f2",
            NEW,
            &Progress::default(),
        )
        .await?;
        server.await??;
        assert_eq!(out.resumed_from, 1_234_567 / 4096 * 4096);
        assert!(
            std::fs::read(a.path().join("back.bin"))? == data,
            "pull, direct {direct}"
        );
        assert!(!a.path().join(".back.bin.loopsy-f2.part").exists());

        let mut bad = data[..2 * 1024 * 1024].to_vec();
        bad[5] ^= 1;
        std::fs::write(a.path().join(".bad.bin.loopsy-f3.part"), &bad)?;
        let (mut c, server) = serve_with(pb, true, true);
        let r = pull(
            &mut c,
            &pa,
            "big.bin",
            "bad.bin",
            "f3",
            NEW,
            &Progress::default(),
        )
        .await;
        let _ = server.await?;
        assert!(
            matches!(r, Err(FileError::Checksum)),
            "direct {direct}: {r:?}"
        );
        assert!(!a.path().join("bad.bin").exists());
        assert!(!a.path().join(".bad.bin.loopsy-f3.part").exists());
    }
    Ok(())
}

/// Modes and mtimes travel both ways unless asked not to; a directory is refused before
/// anything is sent (no `.part` left behind), and so is a destination under a file.
#[cfg(unix)]
#[tokio::test]
async fn modes_and_mtimes_are_kept_and_bad_shapes_refused_cleanly()
-> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::PermissionsExt;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let pa = policy(a.path());
    let script = a.path().join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n")?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o4755))?;
    let old = std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(&script)?
        .set_modified(old)?;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o7777);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());

    let (mut c, server) = serve(b.path(), true, true);
    push(
        &mut c,
        &pa,
        "run.sh",
        "run.sh",
        "a1",
        NEW,
        &Progress::default(),
    )
    .await?;
    server.await??;
    let pushed = b.path().join("run.sh");
    assert_eq!(mode(&pushed)?, 0o755, "mode kept, setuid dropped");
    assert_eq!(mtime(&pushed)?, old);

    let (mut c, server) = serve(b.path(), true, true);
    pull(
        &mut c,
        &pa,
        "run.sh",
        "back.sh",
        "a2",
        NEW,
        &Progress::default(),
    )
    .await?;
    server.await??;
    assert_eq!(mode(&a.path().join("back.sh"))?, 0o755);
    assert_eq!(mtime(&a.path().join("back.sh"))?, old);

    // Without preserve: an ordinary file's mode, and the time of the copy.
    let plain = CopyOpts {
        overwrite: false,
        preserve: false,
    };
    let (mut c, server) = serve(b.path(), true, true);
    push(
        &mut c,
        &pa,
        "run.sh",
        "plain.sh",
        "a3",
        plain,
        &Progress::default(),
    )
    .await?;
    server.await??;
    assert_eq!(mode(&b.path().join("plain.sh"))?, 0o644);
    assert!(mtime(&b.path().join("plain.sh"))? > old);

    std::fs::create_dir(a.path().join("dir"))?;
    let (mut c, server) = serve(b.path(), true, true);
    let r = push(&mut c, &pa, "dir", "dir", "a4", NEW, &Progress::default()).await;
    drop(c);
    let _ = server.await?;
    assert!(
        matches!(&r, Err(FileError::Path(PathError::Invalid(m))) if m.contains("not a file")),
        "{r:?}"
    );
    let (mut c, server) = serve(b.path(), true, true);
    let r = push(
        &mut c,
        &pa,
        "run.sh",
        "run.sh/inside",
        "a5",
        NEW,
        &Progress::default(),
    )
    .await;
    let _ = server.await?;
    assert!(
        matches!(&r, Err(FileError::Remote { code, message }) if code == "invalid" && message.contains("not a directory")),
        "{r:?}"
    );
    let left: Vec<_> = std::fs::read_dir(b.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}
