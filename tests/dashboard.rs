//! `loopsy dashboard` keeps its secret (issue #22): the one-time link reaches the browser
//! through a file only this user can read, never as a process argument, and the dashboard's
//! WebSocket serves only a tab that redeemed a link.
#![cfg(target_os = "linux")] // the fake browser is an `xdg-open` on PATH
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "common/relay.rs"]
mod relay_support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{started_on_loopback, wait_until};
use serde_json::Value;

#[test]
fn the_link_goes_through_a_private_file_not_a_process_argument() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let h = started_on_loopback("lap");
    let bin = tempfile::tempdir().unwrap();
    let seen = bin.path().join("argv");
    // The "browser": records the arguments it was started with (what `ps` would show).
    let opener = bin.path().join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    // In a terminal, so the CLI opens the browser.
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(common::bin());
    cmd.args(["--home", &h.path().display().to_string(), "dashboard"]);
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap()
        ),
    );
    cmd.env("NO_COLOR", "1");
    cmd.env_remove("LOOPSY_HOME");
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut out = String::new();
    let _ = pair
        .master
        .try_clone_reader()
        .unwrap()
        .read_to_string(&mut out);
    assert!(child.wait().unwrap().success(), "{out}");
    assert!(out.contains("opened the dashboard"), "{out}");
    wait_until("the browser ran", Duration::from_secs(10), || seen.exists());
    let argv = std::fs::read_to_string(&seen).unwrap();
    let page = h.path().join("dashboard.html");
    assert_eq!(argv.trim(), format!("file://{}", page.display()), "{argv}");
    assert!(!argv.contains("pair=") && !argv.contains("#"), "{argv}");
    // The page is this user's alone and sends the browser on to the link.
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("/app#pair="), "{html}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_socket_serves_only_a_tab_that_redeemed() {
    use relay_support::{PhoneConn, redeem};
    let h = started_on_loopback("lap");
    let dash: Value = serde_json::from_str(&h.ok(&["dashboard", "--json"])).unwrap();
    let (link, code) = dash["url"].as_str().unwrap().rsplit_once('.').unwrap();
    let creds = redeem(link).await;
    // A tab that skipped the redeem (a made-up phone id on the same device) gets no socket.
    let mut forged = redeem_less(&creds);
    forged.phone_id = loopsy_relay::secret::id_from(&[7u8; 16]);
    let err = PhoneConn::connect(&forged).await.err().unwrap_or_default();
    assert!(err.contains("403"), "{err}");
    // The tab that redeemed pairs with the code.
    let mut phone = PhoneConn::connect(&creds).await.unwrap();
    let w = phone.hello(Some((&creds.pair_id, code))).await.unwrap();
    assert!(format!("{w:?}").contains("Welcome"), "{w:?}");
}

fn redeem_less(c: &relay_support::PhoneCreds) -> relay_support::PhoneCreds {
    relay_support::PhoneCreds {
        relay: c.relay.clone(),
        device_id: c.device_id.clone(),
        phone_id: c.phone_id.clone(),
        phone_secret: c.phone_secret.clone(),
        pair_id: c.pair_id.clone(),
        key: loopsy_relay::e2e::KeyPair::generate().unwrap(),
        daemon_key: c.daemon_key,
    }
}
