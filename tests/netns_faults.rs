//! Faults on a real (namespaced) network: a file transfer whose cable is pulled mid-file
//! resumes when it is plugged back in, and the result's checksum matches.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{NetnsLab, TestHome, pair, wait_until};
use serde_json::Value;

/// A daemon in namespace `ns`, on the LAN, confined to `root` for transfers.
fn started(ns: &str, name: &str, root: &Path) -> TestHome {
    let h = TestHome::in_netns(ns);
    h.ok(&["init", "--name", name]);
    let cfg = format!(
        "[node]\nname = \"{name}\"\n[discovery]\nmdns = false\n[files]\nallowed_paths = [\"{}\"]\n",
        root.display()
    );
    std::fs::write(h.path().join("config.toml"), cfg).unwrap();
    h.ok(&["start"]);
    h
}

fn part_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_transfer_resumes_after_the_cable_is_pulled_mid_file() {
    let Some(lab) = NetnsLab::up(2) else { return };
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = started(&lab.host(1), "alpha", ra.path());
    let b = started(&lab.host(2), "beta", rb.path());
    pair(&a, &b);

    // Slow alpha's uplink to 40 Mbit/s so the copy is still running when the cable goes.
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host(1),
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
        ])
        .args([
            "root", "tbf", "rate", "40mbit", "burst", "64kb", "latency", "20ms",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "tc tbf");

    let src = ra.path().join("big.bin");
    let bytes: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &bytes).unwrap();
    let want = blake3::hash(&bytes).to_hex().to_string();
    let dest = rb.path().join("big.bin");
    let cp = a
        .cmd(&[
            "cp",
            "--json",
            &src.display().to_string(),
            &format!("beta:{}", dest.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_until("4 MiB received", Duration::from_secs(30), || {
        part_len(rb.path()) >= 4 << 20
    });
    lab.link(2, false);
    // The sender notices the dead link by itself (stalled stream or failed pings).
    let log = a.path().join("logs/daemon.log");
    wait_until("alpha notices the cut", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("transfer interrupted")
    });
    let at_cut = part_len(rb.path());
    assert!(at_cut < bytes.len() as u64, "finished before the cut");
    lab.link(2, true);

    let o = cp.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(out["attempts"].as_u64().unwrap() > 1, "{out}");
    assert!(out["resumed_from"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["blake3"].as_str().unwrap(), want, "{out}");
    assert_eq!(
        blake3::hash(&std::fs::read(&dest).unwrap())
            .to_hex()
            .to_string(),
        want
    );
    assert!(part_len(rb.path()) == 0, "a .part file was left behind");
    a.ok(&["stop"]);
    b.ok(&["stop"]);
}

fn ctx_get(h: &TestHome, key: &str) -> Value {
    let o = h.run(&["ctx", "get", key, "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_context_converges_after_a_partition_heals() {
    let Some(lab) = NetnsLab::up(3) else { return };
    let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = started(&lab.host(1), "alpha", roots[0].path());
    let b = started(&lab.host(2), "beta", roots[1].path());
    let c = started(&lab.host(3), "gamma", roots[2].path());
    pair(&a, &b);
    pair(&a, &c);
    a.ok(&["ctx", "set", "shared", "v1"]);
    for h in [&b, &c] {
        wait_until("first write everywhere", Duration::from_secs(30), || {
            ctx_get(h, "shared")["entry"]["value"] == "v1"
        });
    }

    // Partition: alpha | beta, gamma. Both sides write their own key and the same key.
    lab.link(1, false);
    a.ok(&["ctx", "set", "only-alpha", "a"]);
    a.ok(&["ctx", "set", "same", "from-alpha"]);
    b.ok(&["ctx", "set", "only-beta", "b"]);
    b.ok(&["ctx", "set", "same", "from-beta"]);
    b.ok(&["ctx", "set", "short-lived", "x", "--ttl", "3"]);
    wait_until("gamma follows beta", Duration::from_secs(30), || {
        ctx_get(&c, "only-beta")["found"] == true
    });
    assert_eq!(ctx_get(&c, "only-alpha")["found"], false, "partitioned");

    // Heal: everyone converges to the same entries and the same winner; the loser shows.
    lab.link(1, true);
    let snapshot = |h: &TestHome| {
        let s = ctx_get(h, "same");
        (
            ctx_get(h, "only-alpha")["found"] == true,
            ctx_get(h, "only-beta")["found"] == true,
            s["entry"]["value"].clone(),
            s["entry"]["conflicts"].clone(),
        )
    };
    wait_until("all three converge", Duration::from_secs(120), || {
        let (sa, sb, sc) = (snapshot(&a), snapshot(&b), snapshot(&c));
        sa.0 && sa.1 && sa == sb && sb == sc && sa.3.as_array().is_some_and(|c| c.len() == 1)
    });
    let (_, _, winner, conflicts) = snapshot(&a);
    assert!(winner == "from-alpha" || winner == "from-beta", "{winner}");
    assert_ne!(conflicts[0], winner);
    // The TTL'd key expired everywhere.
    for h in [&a, &b, &c] {
        wait_until("expired everywhere", Duration::from_secs(30), || {
            ctx_get(h, "short-lived")["found"] == false
        });
    }
    // The next write to the key clears the conflict, everywhere.
    c.ok(&["ctx", "set", "same", "settled"]);
    for h in [&a, &b] {
        wait_until("settled", Duration::from_secs(30), || {
            let s = ctx_get(h, "same");
            s["entry"]["value"] == "settled" && s["entry"]["conflicts"].is_null()
        });
    }
}
