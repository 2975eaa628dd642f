//! Tests for push, pull and list over an in-memory pipe.
use super::*;
use crate::files::FilesConfig;

fn policy(root: &Path) -> PathPolicy {
    PathPolicy::new(
        &FilesConfig {
            allowed_paths: vec!["~".into()],
            denied_paths: vec!["~/deny".into()],
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
    let p = policy(root);
    let (c, mut srv) = tokio::io::duplex(64 * 1024);
    (
        c,
        tokio::spawn(async move { handle(&mut srv, &p, may_read, may_write).await }),
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
        false,
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
        false,
        &Progress::default(),
    )
    .await?;
    server.await??;
    assert_eq!(out.resumed_from, 1_000_000);
    assert_eq!(std::fs::read(a.path().join("back.bin"))?, data);
    assert!(!a.path().join(".back.bin.loopsy-bb02.part").exists());

    // A corrupted partial fails the checksum and leaves no file under the destination name.
    std::fs::write(a.path().join(".bad.bin.loopsy-cc03.part"), vec![0u8; 1000])?;
    let (mut c, server) = serve(b.path(), true, true);
    let r = pull(
        &mut c,
        &pa,
        "dst.bin",
        "bad.bin",
        "cc03",
        false,
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
            false,
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
        false,
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
