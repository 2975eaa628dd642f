//! The phone relay end to end, against the real Worker under `wrangler dev` (workerd) and a real
//! daemon: register, pair (token + code), connect, a shell session over the end-to-end channel,
//! reconnect to the same screen; the relay sees only ciphertext; attacks are refused.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "common/relay_proxy.rs"]
mod relay_proxy;
#[path = "common/relay.rs"]
mod relay_support;

use std::time::Duration;

use base64::Engine;
use common::{TestHome, wait_until};
use loopsy_relay::app::{self, Control};
use loopsy_relay::e2e::KeyPair;
use relay_support::{PhoneConn, Wrangler, redeem, redeem_with};
use serde_json::{Value, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A daemon on loopback (heartbeat `hb` s) configured to use the relay `w`.
fn daemon_on(w: &Wrangler, name: &str, hb: u64) -> TestHome {
    daemon_at(&w.url(), name, hb, w)
}

/// A daemon on loopback configured to use the relay at `url` (`w` behind it, for its log).
fn daemon_at(url: &str, name: &str, hb: u64, w: &Wrangler) -> TestHome {
    let h = TestHome::new();
    h.ok(&["init", "--name", name]);
    std::fs::write(
        h.path().join("config.toml"),
        format!(
            "[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[relay]\nheartbeat_s = {hb}\n"
        ),
    )
    .unwrap();
    h.ok(&["start"]);
    let out = h.ok(&["relay", "configure", url, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["state"], "connected", "{out}\n{}", w.log());
    h
}

/// `loopsy relay status --json` (which exits 3 while the link is down).
fn relay_state(h: &TestHome) -> Value {
    let o = h.run(&["relay", "status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

/// `loopsy mobile pair --json`: (link, code, pair id from the link's token).
fn pair_link(h: &TestHome) -> (String, String) {
    let v: Value = serde_json::from_str(&h.ok(&["mobile", "pair", "--json"])).unwrap();
    (
        v["link"].as_str().unwrap().to_string(),
        v["code"].as_str().unwrap().to_string(),
    )
}

/// A phone paired with `h` through the relay: redeem, connect, hello with the code.
async fn paired_phone(h: &TestHome) -> (relay_support::PhoneCreds, PhoneConn) {
    let (link, code) = pair_link(h);
    let creds = redeem(&link).await;
    let mut conn = PhoneConn::connect(&creds).await.unwrap();
    let w = conn.hello(Some((&creds.pair_id, &code))).await.unwrap();
    assert!(
        matches!(&w, Control::Welcome { paired: true, phone_id, .. } if *phone_id == creds.phone_id),
        "{w:?}"
    );
    (creds, conn)
}

fn session_id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn phone_shell_through_the_relay_end_to_end_and_blind() {
    let w = Wrangler::start(None);
    let h = daemon_on(&w, "lap", 15);
    let rt = rt();
    rt.block_on(async {
        let (creds, mut phone) = paired_phone(&h).await;
        // A shell on the laptop, started and driven from the phone.
        let (ok, s) = phone
            .call(
                "loopsy_session_start",
                json!({"name": "phone-sh", "cols": 100, "rows": 30}),
            )
            .await
            .unwrap();
        assert!(ok, "{s}");
        let id = session_id(&s);
        let info = phone.attach(&id, 100, 30).await.unwrap();
        assert_eq!(info["id"], id.as_str());
        // Markers typed (split, so the echo and the output differ) and printed.
        phone
            .input(b"echo hi-$((6*7))-TYPEDMARKER\r")
            .await
            .unwrap();
        phone
            .wait_output("hi-42-TYPEDMARKER", Duration::from_secs(10))
            .await
            .unwrap();
        phone
            .input(b"printf 'PRINTED%sMARKER\\n' -SECRET-\r")
            .await
            .unwrap();
        phone
            .wait_output("PRINTED-SECRET-MARKER", Duration::from_secs(10))
            .await
            .unwrap();
        // The session list, as a tool call over the channel.
        let (ok, list) = phone.call("loopsy_session_list", json!({})).await.unwrap();
        assert!(ok);
        assert!(
            list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == id.as_str())
        );
        // A tool phones may not use.
        let (ok, v) = phone
            .call("loopsy_execute", json!({"command": "true"}))
            .await
            .unwrap();
        assert!(!ok);
        assert_eq!(v["code"], "permission_denied", "{v}");

        // Disconnect, reconnect: same session, screen intact.
        phone.close().await;
        let mut again = PhoneConn::connect(&creds).await.unwrap();
        let w2 = again.hello(None).await.unwrap();
        assert!(
            matches!(w2, Control::Welcome { paired: false, .. }),
            "{w2:?}"
        );
        again.attach(&id, 100, 30).await.unwrap();
        again
            .wait_output("PRINTED-SECRET-MARKER", Duration::from_secs(10))
            .await
            .unwrap();
        again.input(b"echo again-$((1+1))\r").await.unwrap();
        again
            .wait_output("again-2", Duration::from_secs(10))
            .await
            .unwrap();

        // A phone that asks for a small window (as the web app does, to paint every frame)
        // never has more than that in flight, nor gets a message larger than it, through a
        // flood; the output after the flood still arrives. Out-of-range asks are clamped.
        for (ask, cap) in [(16 * 1024, 16 * 1024), (1, app::MIN_WINDOW)] {
            again.attach_with(&id, 100, 30, Some(ask)).await.unwrap();
            let cmd = format!(
                "head -c 3000000 /dev/zero | tr '\\0' y; echo; echo FLOOD-$((1+{ask}))-DONE\r"
            );
            again.input(cmd.as_bytes()).await.unwrap();
            again
                .until(
                    format!("FLOOD-{}-DONE", ask + 1).as_bytes(),
                    Duration::from_secs(60),
                )
                .await
                .unwrap();
            assert!(
                again.largest_output as u64 <= cap && again.most_unacked <= cap,
                "window {ask}: largest message {}, most unacknowledged {} (cap {cap})",
                again.largest_output,
                again.most_unacked
            );
        }

        // A phone that stops painting (no acknowledgements) while a flood runs, then comes
        // back, is not sent the stale output queued for it: the first thing it gets is a
        // fresh screen, then what came after.
        again
            .attach_with(&id, 100, 30, Some(16 * 1024))
            .await
            .unwrap();
        again.hold_acks = true;
        again.input(b"yes stale-line\r").await.unwrap();
        again
            .until(b"stale-line", Duration::from_secs(10))
            .await
            .unwrap();
        let at_stall = again.received();
        // Wait until the session has printed far more than the phone got (megabytes queued
        // for it on the laptop, had nothing been skipped).
        let mut produced = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let (ok, list) = again.call("loopsy_session_list", json!({})).await.unwrap();
            assert!(ok, "{list}");
            produced = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id.as_str())
                .and_then(|s| s["output_bytes"].as_u64())
                .unwrap_or(0);
            if produced > 4_000_000 {
                break;
            }
        }
        assert!(
            produced > 4_000_000,
            "the flood printed only {produced} bytes"
        );
        assert!(
            again.received() - at_stall <= 16 * 1024,
            "output past the window"
        );
        again.input(b"\x03").await.unwrap();
        again.output.clear();
        again.ack_now().await.unwrap();
        again.input(b"echo SKIPPED-$((3+4))-DONE\r").await.unwrap();
        again
            .wait_output("SKIPPED-7-DONE", Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            again.output.starts_with(b"\x1b[?1049l"),
            "the first output after the stall is not a fresh screen: {:?}",
            String::from_utf8_lossy(&again.output[..again.output.len().min(200)])
        );

        // A phone that acknowledges each message as it paints it (as the web app does) is
        // sent fresh screens through a flood, about one per acknowledgement, instead of the
        // flood itself; once the flood ends, output comes byte for byte again.
        again
            .attach_with(&id, 100, 30, Some(16 * 1024))
            .await
            .unwrap();
        again.ack_each_message();
        again.track_screen();
        again.paint = Duration::from_millis(40);
        let produced = |list: &Value| {
            list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id.as_str())
                .and_then(|s| s["output_bytes"].as_u64())
                .unwrap_or(0)
        };
        let (ok, list) = again.call("loopsy_session_list", json!({})).await.unwrap();
        assert!(ok, "{list}");
        let before = produced(&list);
        again.input(b"yes screens-line\r").await.unwrap();
        again
            .until_screens(40, Duration::from_secs(30))
            .await
            .unwrap();
        // After the first fresh screen of the flood (the first screen is the attach's), the
        // phone got screens, and output between them at most twice (an acknowledgement that
        // comes while the session happened to print less than the phone can take lets output
        // through; without the hold it is a window of output after every screen).
        let after: Vec<(bool, usize)> = again
            .messages
            .iter()
            .copied()
            .skip_while(|(screen, _)| !screen)
            .skip(1)
            .skip_while(|(screen, _)| !screen)
            .collect();
        let raw: usize = after.iter().filter(|m| !m.0).map(|m| m.1).sum();
        assert!(
            raw <= 2 * 16 * 1024,
            "{raw} bytes of output between the flood's {} screens",
            after.iter().filter(|m| m.0).count()
        );
        again.paint = Duration::ZERO;
        let (ok, list) = again.call("loopsy_session_list", json!({})).await.unwrap();
        assert!(ok, "{list}");
        let printed = produced(&list) - before;
        assert!(
            again.received() * 10 < printed,
            "through the flood the phone got {} bytes of the {printed} printed: the flood itself, not screens",
            again.received()
        );
        again.input(b"\x03").await.unwrap();
        again.input(b"echo FLOOD-$((1+1))-OVER\r").await.unwrap();
        again
            .wait_screen("FLOOD-2-OVER", Duration::from_secs(20))
            .await
            .unwrap();
        // The screens went as diffs from one to the next: what the phone shows is what the
        // laptop shows (once the shell's next prompt has reached both).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (phone, laptop) = loop {
            let (ok, read) = again
                .call("loopsy_session_read", json!({"id": id}))
                .await
                .unwrap();
            assert!(ok, "{read}");
            let laptop = read["text"].as_str().unwrap().trim_end().to_string();
            let phone = again.screen_text().trim_end().to_string();
            if phone == laptop || std::time::Instant::now() > deadline {
                break (phone, laptop);
            }
            again.pump_for(Duration::from_millis(100)).await.unwrap();
        };
        let differ: Vec<_> = phone
            .lines()
            .zip(laptop.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .collect();
        assert!(
            phone == laptop,
            "the phone's screen differs from the laptop's in rows {differ:?} (rows {} / {}); \
             the last messages: {:?}",
            phone.lines().count(),
            laptop.lines().count(),
            again.recent_text()
        );
        again.output.clear();
        again
            .input(b"seq 1 3000; echo SEQ-$((2+3))-DONE\r")
            .await
            .unwrap();
        again
            .wait_output("SEQ-5-DONE", Duration::from_secs(20))
            .await
            .unwrap();
        let all: String = (1..=3000).map(|n| format!("{n}\r\n")).collect();
        let text = String::from_utf8_lossy(&again.output).to_string();
        let gap = (2..=3000).find(|n| !text.contains(&format!("{}\r\n{n}\r\n", n - 1)));
        assert!(
            text.contains(&all),
            "the output after the flood is not byte for byte (the first break is before {gap:?}): {:?}",
            gap.and_then(|n| text.find(&format!("\r\n{}\r\n", n - 1)))
                .map(|i| text[i..].chars().take(300).collect::<String>())
        );
        again.close().await;
    });

    // Blindness: every frame that passed through the Durable Object, and everything it
    // stored, holds none of the markers.
    let device_id = relay_state(&h)["device_id"].as_str().unwrap().to_string();
    let secret: Value =
        serde_json::from_slice(&std::fs::read(h.path().join("relay.json")).unwrap()).unwrap();
    let (status, body) = relay_support::http(
        "POST",
        &format!("{}/v1/device/{device_id}/tap", w.url()),
        &[(
            "Authorization",
            &format!("Bearer {}", secret["device_secret"].as_str().unwrap()),
        )],
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let frames: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(frames.len() > 10, "only {} frames tapped", frames.len());
    let mut tapped = Vec::new();
    for f in &frames {
        tapped.extend(
            base64::engine::general_purpose::STANDARD
                .decode(f["data"].as_str().unwrap())
                .unwrap(),
        );
    }
    let stored = relay_support::tree_bytes(&w.state_dir());
    assert!(!stored.is_empty());
    for marker in [
        "TYPEDMARKER",
        "PRINTED-SECRET-MARKER",
        "SECRET",
        "echo hi",
        "printf",
        "loopsy_session_start",
        "phone-sh",
    ] {
        for (what, bytes) in [("tapped frames", &tapped), ("relay storage", &stored)] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{marker:?} found in the {what}"
            );
        }
    }
}

/// The device's id and secret, as `loopsy relay configure` stored them.
fn device_creds(h: &TestHome) -> (String, String) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(h.path().join("relay.json")).unwrap()).unwrap();
    (
        v["device_id"].as_str().unwrap().to_string(),
        v["device_secret"].as_str().unwrap().to_string(),
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Redeem a raw token at the relay (the body a phone would send); (status, error code).
async fn redeem_token(w: &Wrangler, device: &str, token: &str) -> (u16, String) {
    let key = KeyPair::generate().unwrap();
    let link = format!(
        "{}/app#pair={token}.{}",
        w.url(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    match redeem_with(&link, key, "attacker").await {
        Ok(_) => (200, String::new()),
        Err((s, v)) if s != 0 => (s, v["error"].as_str().unwrap_or_default().to_string()),
        Err(_) => {
            // Not even a well-formed link: send it raw.
            let (s, b) = relay_support::http(
                "POST",
                &format!("{}/v1/device/{device}/redeem", w.url()),
                &[],
                Some(&json!({"token": token, "phone_key": "A".repeat(43)}).to_string()),
            )
            .unwrap();
            let v: Value = serde_json::from_str(&b).unwrap_or_default();
            (s, v["error"].as_str().unwrap_or_default().to_string())
        }
    }
}

fn token_of(link: &str) -> String {
    loopsy_relay::link::PairLink::parse(link).unwrap().token
}

#[test]
fn relay_refuses_bad_tokens_codes_keys_and_frames() {
    let w = Wrangler::start(None);
    let h = daemon_on(&w, "lap", 15);
    let (device, device_secret) = device_creds(&h);
    let rt = rt();
    rt.block_on(async {
        // A good token works once; reused, forged, tampered and expired ones are refused.
        let (link, _) = pair_link(&h);
        assert_eq!(redeem_token(&w, &device, &token_of(&link)).await.0, 200);
        assert_eq!(
            redeem_token(&w, &device, &token_of(&link)).await,
            (409, "conflict".into())
        );
        let forged = loopsy_relay::token::issue(
            b"not-the-relay-key-not-the-relay-key!!",
            &device,
            "00112233445566778899aabbccddeeff",
            now_s() + 300,
        )
        .unwrap();
        assert_eq!(
            redeem_token(&w, &device, &forged).await,
            (401, "token_invalid".into())
        );
        let (link2, _) = pair_link(&h);
        let mut t = token_of(&link2).into_bytes();
        t[10] = if t[10] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(t).unwrap();
        let (s, code) = redeem_token(&w, &device, &tampered).await;
        // (A tampered token may name another device, which the relay does not know.)
        assert!(s == 401 || s == 400 || s == 404, "{s} {code}");
        let expired = loopsy_relay::token::issue(
            relay_support::TOKEN_KEY.as_bytes(),
            &device,
            "00112233445566778899aabbccddeef0",
            now_s() - 5,
        )
        .unwrap();
        assert_eq!(
            redeem_token(&w, &device, &expired).await,
            (401, "token_expired".into())
        );
        // The untouched second link still works (a success ends the failure streak).
        let link2_creds = redeem(&link2).await;

        // Wrong codes: refused by the laptop, three strikes close the pairing for good.
        let (link3, code3) = pair_link(&h);
        let c3 = redeem(&link3).await;
        let wrong = if code3 == "000000" {
            "111111"
        } else {
            "000000"
        };
        for expect in [
            "wrong_code",
            "wrong_code",
            "too_many_attempts",
            "pair_failed",
        ] {
            let mut p = PhoneConn::connect(&c3).await.unwrap();
            let attempt = if expect == "pair_failed" {
                code3.as_str()
            } else {
                wrong
            };
            let r = p.hello(Some((&c3.pair_id, attempt))).await.unwrap();
            assert!(
                matches!(&r, Control::Error { code, fatal: true, .. } if code == expect),
                "{expect}: {r:?}"
            );
            p.wait_closed(Duration::from_secs(5)).await.unwrap();
        }
        // A redeemed-but-unpaired phone with a valid relay secret and no code: unknown.
        let mut p = PhoneConn::connect(&link2_creds).await.unwrap();
        let r = p.hello(None).await.unwrap();
        assert!(
            matches!(&r, Control::Error { code, .. } if code == "unknown_phone"),
            "{r:?}"
        );

        // A paired phone's relay secret with another static key: unknown to the laptop.
        let (good, conn) = paired_phone(&h).await;
        conn.close().await;
        let other = KeyPair::generate().unwrap();
        let mut p = PhoneConn::connect_with_key(&good, &other).await.unwrap();
        let r = p.hello(None).await.unwrap();
        assert!(
            matches!(&r, Control::Error { code, .. } if code == "unknown_phone"),
            "{r:?}"
        );

        // Replayed and reordered ciphertext end the connection; the session is untouched.
        let mut p = PhoneConn::connect(&good).await.unwrap();
        assert!(matches!(
            p.hello(None).await.unwrap(),
            Control::Welcome { .. }
        ));
        let (ok, _) = p.call("loopsy_status", json!({})).await.unwrap();
        assert!(ok);
        let replay = p.sent[0].clone();
        p.send_raw(replay).await.unwrap();
        let how = p.wait_closed(Duration::from_secs(5)).await.unwrap();
        assert!(how.contains("4004"), "{how}");
        let mut p = PhoneConn::connect(&good).await.unwrap();
        assert!(matches!(
            p.hello(None).await.unwrap(),
            Control::Welcome { .. }
        ));
        // Sealed in order, sent swapped.
        let first = p.seal(&Control::Ping { n: 1 });
        let second = p.seal(&Control::Ping { n: 2 });
        p.send_raw(second).await.unwrap();
        p.send_raw(first).await.unwrap();
        let how = p.wait_closed(Duration::from_secs(5)).await.unwrap();
        assert!(how.contains("4004"), "{how}");

        // Oversize frames: closed by the relay before they reach the laptop.
        let mut p = PhoneConn::connect(&good).await.unwrap();
        p.send_raw(vec![0u8; 70_000]).await.unwrap();
        let how = p.wait_closed(Duration::from_secs(5)).await.unwrap();
        assert!(how.contains("1009"), "{how}");
        // Text other than "ping": closed with a protocol error.
        let mut p = PhoneConn::connect(&good).await.unwrap();
        use futures::SinkExt;
        p.ws.send(tokio_tungstenite::tungstenite::Message::Text(
            "hello?".into(),
        ))
        .await
        .unwrap();
        let how = p.wait_closed(Duration::from_secs(5)).await.unwrap();
        assert!(how.contains("4400"), "{how}");

        // Bearer in the query string, or a protocol version the relay does not speak.
        let url = relay_support::phone_url(&good).replace("ws://", "http://");
        let (s, b) = relay_support::http(
            "GET",
            &format!("{url}?token={}", good.phone_secret),
            &[("Upgrade", "websocket")],
            None,
        )
        .unwrap();
        assert_eq!(s, 400, "{b}");
        assert!(b.contains("credential_in_url"), "{b}");
        let e = relay_support::open_ws(
            &relay_support::phone_url(&good),
            &format!("loopsy.v9, loopsy.bearer.{}", good.phone_secret),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("400"), "{e}");
        let e = relay_support::open_ws(
            &relay_support::phone_url(&good),
            "loopsy.v1, loopsy.bearer.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("403"), "{e}");

        // Revoked on the laptop: the live connection ends, and the relay refuses new ones.
        // (Either end may close it first here; that the laptop alone ends it, with the relay
        // keeping the phone, is a_hostile_relay_can_neither_type_into_a_terminal_nor_keep_a_revoked_phone.)
        let mut live = PhoneConn::connect(&good).await.unwrap();
        assert!(matches!(
            live.hello(None).await.unwrap(),
            Control::Welcome { .. }
        ));
        h.ok(&["phone", "revoke", &good.phone_id]);
        let how = live.wait_closed(Duration::from_secs(5)).await.unwrap();
        assert!(how.contains("4003") || how.contains("revoked"), "{how}");
        let e = PhoneConn::connect(&good).await.err().unwrap_or_default();
        assert!(e.contains("403"), "{e}");

        // A relay that still accepts a phone the laptop revoked: the laptop refuses it.
        let (q, qc) = paired_phone(&h).await;
        qc.close().await;
        h.ok(&["stop"]);
        let phones = h.path().join("phones.json");
        let list: Vec<Value> = serde_json::from_slice(&std::fs::read(&phones).unwrap()).unwrap();
        let kept: Vec<Value> = list
            .into_iter()
            .filter(|p| p["phone_id"] != q.phone_id.as_str())
            .collect();
        std::fs::write(&phones, serde_json::to_vec(&kept).unwrap()).unwrap();
        h.ok(&["start"]);
        wait_until("relay link back", Duration::from_secs(10), || {
            relay_state(&h)["state"] == "connected"
        });
        let mut p = PhoneConn::connect(&q).await.unwrap();
        let r = p.hello(None).await.unwrap();
        assert!(
            matches!(&r, Control::Error { code, .. } if code == "unknown_phone"),
            "{r:?}"
        );

        // Five bad tokens in a row lock redemption for that client, good tokens included…
        let (link4, _) = pair_link(&h);
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(redeem_token(&w, &device, &forged).await.0);
        }
        assert_eq!(statuses, vec![401; 5]);
        let (s, code) = redeem_token(&w, &device, &token_of(&link4)).await;
        assert_eq!((s, code.as_str()), (429, "rate_limited"));
        // …for that client address only: a stranger who knows the device id (it is in
        // every pair link) cannot stop the owner's phone from pairing elsewhere.
        let (s, b) = relay_support::http(
            "POST",
            &format!("{}/v1/device/{device}/redeem", w.url()),
            &[("CF-Connecting-IP", "198.51.100.9")],
            Some(
                &json!({
                    "token": token_of(&link4),
                    "phone_key": base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(KeyPair::generate().unwrap().public),
                    "label": "owner's phone",
                })
                .to_string(),
            ),
        )
        .unwrap();
        assert_eq!(s, 200, "{b}");

        // A frame kind the relay does not know, from the device side: refused with a notice.
        let dev_url = format!(
            "{}/v1/device/{device}/connect",
            w.url().replace("http://", "ws://")
        );
        let mut dev = relay_support::open_ws(
            &dev_url,
            &format!("loopsy.v1, loopsy.bearer.{device_secret}"),
        )
        .await
        .unwrap();
        use futures::StreamExt;
        dev.send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![9u8, 0, 0, 0, 1].into(),
        ))
        .await
        .unwrap();
        let notice = loop {
            match tokio::time::timeout(Duration::from_secs(5), dev.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) => {
                    let f = loopsy_relay::Frame::decode(&b).unwrap();
                    if f.kind == loopsy_relay::FrameKind::Notice {
                        break String::from_utf8_lossy(&f.payload).into_owned();
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no notice: {other:?}"),
            }
        };
        assert!(notice.contains("unknown frame kind 9"), "{notice}");
    });
}

#[test]
fn registration_needs_the_secret_and_is_rate_limited() {
    let secret = "operator-chosen registration secret";
    let w = Wrangler::start(Some(secret));
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    // Without it: refused before anything is stored, and the CLI says how to give it.
    let err = h.fails(&["relay", "configure", &w.url()]);
    assert!(err.contains("--registration-secret-stdin"), "{err}");
    assert!(!h.path().join("relay.json").exists());
    // A wrong one, through stdin.
    let mut c = h.cmd(&[
        "relay",
        "configure",
        &w.url(),
        "--registration-secret-stdin",
    ]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"wrong secret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong registration secret"));
    // The right one.
    let mut c = h.cmd(&[
        "relay",
        "configure",
        &w.url(),
        "--registration-secret-stdin",
        "--json",
    ]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(h.path().join("relay.json"))
            .unwrap()
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    // The secret never reached the arguments or the stored file.
    let stored = std::fs::read_to_string(h.path().join("relay.json")).unwrap();
    assert!(!stored.contains(secret));
    // Wrong secrets from one address lock it out (kept in a Durable Object, not a cache).
    let url = format!("{}/v1/register", w.url());
    let mut last = 0;
    for _ in 0..12 {
        last = relay_support::http(
            "POST",
            &url,
            &[("X-Loopsy-Registration-Secret", "nope")],
            None,
        )
        .unwrap()
        .0;
    }
    assert_eq!(last, 429);
    let (s, _) = relay_support::http(
        "POST",
        &url,
        &[("X-Loopsy-Registration-Secret", secret)],
        None,
    )
    .unwrap();
    assert_eq!(s, 429, "locked out even with the right secret");
}

/// Poll the daemon's relay state until `want`, returning how long it took.
fn time_until_state(h: &TestHome, want: &str, timeout: Duration) -> Duration {
    let t = std::time::Instant::now();
    wait_until(&format!("relay state {want}"), timeout, || {
        relay_state(h)["state"] == want
    });
    t.elapsed()
}

#[test]
fn relay_restart_and_cut_network_keep_the_session() {
    let mut w = Wrangler::start(None);
    let proxy = relay_support::CutProxy::start(w.port);
    // The laptop reaches the relay through a link that can be cut; heartbeats every second.
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    std::fs::write(
        h.path().join("config.toml"),
        "[node]\nname = \"lap\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[relay]\nheartbeat_s = 1\n",
    )
    .unwrap();
    h.ok(&["start"]);
    h.ok(&["relay", "configure", &proxy.url()]);
    time_until_state(&h, "connected", Duration::from_secs(10));
    let rt = rt();
    rt.block_on(async {
        let (mut creds, mut phone) = paired_phone(&h).await;
        // The phone's own network is fine: it talks to the relay directly.
        creds.relay = w.url();
        let (ok, s) = phone
            .call(
                "loopsy_session_start",
                json!({"name": "keep", "cols": 80, "rows": 24}),
            )
            .await
            .unwrap();
        assert!(ok, "{s}");
        let id = session_id(&s);
        phone.attach(&id, 80, 24).await.unwrap();
        phone.input(b"echo before-$((2+3))\r").await.unwrap();
        phone
            .wait_output("before-5", Duration::from_secs(10))
            .await
            .unwrap();
        phone.close().await;

        // A silent cut: the daemon notices by its heartbeats and reconnects once the network
        // is back, within 5 s of that.
        proxy.cut(true);
        time_until_state(&h, "offline", Duration::from_secs(20));
        proxy.cut(false);
        let took = time_until_state(&h, "connected", Duration::from_secs(10));
        eprintln!("reconnected {took:?} after the network came back");
        assert!(took <= Duration::from_secs(5), "took {took:?}");
        let mut p = PhoneConn::connect(&creds).await.unwrap();
        assert!(matches!(
            p.hello(None).await.unwrap(),
            Control::Welcome { .. }
        ));
        p.attach(&id, 80, 24).await.unwrap();
        p.wait_output("before-5", Duration::from_secs(10))
            .await
            .unwrap();
        p.input(b"echo after-cut-$((3+4))\r").await.unwrap();
        p.wait_output("after-cut-7", Duration::from_secs(10))
            .await
            .unwrap();

        // The relay killed and started again (same state): the daemon is back within 5 s of
        // the relay, the phone reconnects to the same session and screen.
        w.kill();
        let how = p.wait_closed(Duration::from_secs(10)).await.unwrap();
        eprintln!("phone connection ended: {how}");
        time_until_state(&h, "offline", Duration::from_secs(10));
        w.restart();
        let took = time_until_state(&h, "connected", Duration::from_secs(10));
        eprintln!("reconnected {took:?} after the relay came back");
        assert!(took <= Duration::from_secs(5), "took {took:?}");
        let mut p = PhoneConn::connect(&creds).await.unwrap();
        assert!(matches!(
            p.hello(None).await.unwrap(),
            Control::Welcome { .. }
        ));
        p.attach(&id, 80, 24).await.unwrap();
        p.wait_output("after-cut-7", Duration::from_secs(10))
            .await
            .unwrap();
        p.input(b"echo after-restart-$((4+5))\r").await.unwrap();
        p.wait_output("after-restart-9", Duration::from_secs(10))
            .await
            .unwrap();
        let (ok, list) = p.call("loopsy_session_list", json!({})).await.unwrap();
        assert!(ok);
        assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    });
}

#[test]
fn deploy_dry_run_builds_a_small_bundle() {
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("dist");
    h.ok(&["relay", "deploy", "--dry-run", dir.to_str().unwrap()]);
    let mut total = 0usize;
    let mut gz = 0usize;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".js") || name.ends_with(".wasm") {
            let bytes = std::fs::read(e.path()).unwrap();
            total += bytes.len();
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, &bytes).unwrap();
            gz += enc.finish().unwrap().len();
        }
    }
    eprintln!("bundle: {total} bytes, {gz} gzipped");
    assert!(total > 100_000, "no bundle in {}", dir.display());
    assert!(
        gz <= 300 * 1024,
        "bundle is {gz} bytes gzipped (limit 300 KiB)"
    );
}

#[test]
fn phone_self_revoke_connect_lockout_and_hibernation() {
    let w = Wrangler::start(None);
    let h = daemon_on(&w, "lap", 15);
    let rt = rt();
    rt.block_on(async {
        let (creds, mut phone) = paired_phone(&h).await;
        let (ok, s) = phone
            .call("loopsy_session_start", json!({"name": "idle"}))
            .await
            .unwrap();
        assert!(ok, "{s}");
        let id = session_id(&s);
        phone.attach(&id, 80, 24).await.unwrap();
        // Idle long enough for local workerd to evict the Durable Object (about 10 s): the
        // sockets survive hibernation by their tags, and traffic flows again at once.
        let constructed = || {
            let (device, secret) = device_creds(&h);
            let (s, b) = relay_support::http(
                "POST",
                &format!("{}/v1/device/{device}/tap", w.url()),
                &[("Authorization", &format!("Bearer {secret}"))],
                None,
            )
            .unwrap();
            assert_eq!(s, 200, "{b}");
            let frames: Vec<Value> = serde_json::from_str(&b).unwrap();
            frames.iter().filter(|f| f["dir"] == "constructed").count()
        };
        let _ = constructed();
        std::thread::sleep(Duration::from_secs(12));
        phone.input(b"echo woke-$((5*5))\r").await.unwrap();
        phone
            .wait_output("woke-25", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(
            constructed() >= 1,
            "the Durable Object was not evicted while idle"
        );
        phone.close().await;

        // Wrong phone secrets, ten in a row from one address, lock that address out of
        // that phone's connects for a while (the right secret included)…
        let url = relay_support::phone_url(&creds);
        let attacker = "203.0.113.66";
        for _ in 0..10 {
            let e = relay_support::open_ws_from(
                &url,
                "loopsy.v1, loopsy.bearer.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                attacker,
            )
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(e.contains("403"), "{e}");
        }
        let e = relay_support::open_ws_from(
            &url,
            &format!("loopsy.v1, loopsy.bearer.{}", creds.phone_secret),
            attacker,
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("429"), "{e}");
        // The lockout is the guessing client's: the phone itself, from its own address,
        // still gets in.
        let ws = relay_support::open_ws_from(
            &url,
            &format!("loopsy.v1, loopsy.bearer.{}", creds.phone_secret),
            "198.51.100.23",
        )
        .await;
        assert!(ws.is_ok(), "{:?}", ws.err());
        drop(ws);

        // A second phone revokes itself with its own bearer: the relay forgets it and tells
        // the laptop, which forgets it too.
        let (second, conn) = paired_phone(&h).await;
        conn.close().await;
        let phones = |h: &TestHome| -> Vec<String> {
            let v: Value = serde_json::from_str(&h.ok(&["phone", "list", "--json"])).unwrap();
            v["phones"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["phone_id"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(phones(&h).contains(&second.phone_id));
        let (s, b) = relay_support::http(
            "DELETE",
            &format!(
                "{}/v1/device/{}/phones/{}",
                w.url(),
                second.device_id,
                second.phone_id
            ),
            &[("Authorization", &format!("Bearer {}", second.phone_secret))],
            None,
        )
        .unwrap();
        assert_eq!(s, 200, "{b}");
        wait_until(
            "the laptop forgets the phone",
            Duration::from_secs(5),
            || !phones(&h).contains(&second.phone_id),
        );
        let e = PhoneConn::connect(&second).await.err().unwrap_or_default();
        assert!(e.contains("403"), "{e}");
        // Another phone's bearer cannot revoke it.
        let (third, conn) = paired_phone(&h).await;
        conn.close().await;
        let (s, _) = relay_support::http(
            "DELETE",
            &format!(
                "{}/v1/device/{}/phones/{}",
                w.url(),
                third.device_id,
                third.phone_id
            ),
            &[("Authorization", &format!("Bearer {}", second.phone_secret))],
            None,
        )
        .unwrap();
        assert_eq!(s, 403);
    });
}

#[test]
fn relay_dev_serves_the_worker_locally() {
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = std::process::Command::new("setsid");
    c.arg(common::bin())
        .arg("--home")
        .arg(h.path())
        .args(["relay", "dev", "--port", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let up = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        relay_support::http_get(&format!("{url}/health")).is_ok_and(|b| b.contains("loopsy-relay"))
    });
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    if up {
        // A laptop can register with it and pair (its pair-token key was generated, 0600).
        // Any free mesh port: another daemon on this machine may hold the default.
        h.ok(&["start", "--port", "0"]);
        h.ok(&["relay", "configure", &url]);
        let v: Value = serde_json::from_str(&h.ok(&["mobile", "pair", "--json"])).unwrap();
        assert!(
            v["link"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{url}/app#pair="))
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(h.path().join("relay-dev/.dev.vars"))
                .unwrap()
                .permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600);
    }
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        up,
        "loopsy relay dev did not serve {url}/health within 60 s"
    );
}

/// Strangers who know a device id cannot lock its owner out, make the relay store anything
/// for ids nobody registered, or pair more phones than a device may have.
#[test]
fn strangers_cannot_lock_the_owner_out_or_fill_the_relay() {
    let w = Wrangler::start(None);
    let h = daemon_on(&w, "lap", 15);
    let (device, device_secret) = device_creds(&h);
    let phones_url = format!("{}/v1/device/{device}/phones", w.url());
    // Twenty wrong device bearers from one address: that address is locked out…
    let mut last = 0;
    for _ in 0..20 {
        last = relay_support::http(
            "GET",
            &phones_url,
            &[
                (
                    "Authorization",
                    "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
                ("CF-Connecting-IP", "203.0.113.7"),
            ],
            None,
        )
        .unwrap()
        .0;
    }
    assert_eq!(last, 429);
    // …the owner is not: its bearer works from its own address, its link stays up, and
    // `loopsy phone list` (the daemon asking the relay) works.
    let bearer = format!("Bearer {device_secret}");
    let (s, b) = relay_support::http(
        "GET",
        &phones_url,
        &[
            ("Authorization", &bearer),
            ("CF-Connecting-IP", "198.51.100.1"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    h.ok(&["phone", "list"]);
    assert_eq!(relay_state(&h)["state"], "connected");
    // Ids nobody registered: refused, and nothing is stored for them.
    let before = stored(&w.state_dir());
    for i in 0..30u8 {
        let id = loopsy_relay::secret::id_from(&[i; 16]);
        let (s, _) = relay_support::http(
            "GET",
            &format!("{}/v1/device/{id}/phones", w.url()),
            &[(
                "Authorization",
                "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
            None,
        )
        .unwrap();
        assert_eq!(s, 404);
    }
    // (The local runtime opens a database file for every object it starts; what counts is
    // that nothing is written in it: no table, no row.)
    assert_eq!(
        stored(&w.state_dir()),
        before,
        "unknown device ids stored something"
    );
}

/// A laptop holds at most `MAX_PHONES` paired phones: the next redemption is refused with
/// what to do, nothing is stored for it, and revoking one makes room again.
#[test]
fn a_laptop_holds_at_most_64_phones() {
    let w = Wrangler::start(None);
    let h = daemon_on(&w, "lap", 15);
    let (device, device_secret) = device_creds(&h);
    let redeem_url = format!("{}/v1/device/{device}/redeem", w.url());
    // Each phone redeems from its own address, as phones on their own networks do (one
    // address may redeem only 20 links in 10 minutes).
    let redeem_from = |i: usize| {
        let (link, _) = pair_link(&h);
        let key = KeyPair::generate().unwrap();
        let body = json!({
            "token": token_of(&link),
            "phone_key": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public),
            "label": format!("phone {i}"),
        });
        let ip = format!("198.51.{}.{}", 100 + i / 200, 1 + i % 200);
        let (status, b) = relay_support::http(
            "POST",
            &redeem_url,
            &[
                ("CF-Connecting-IP", &ip),
                ("Content-Type", "application/json"),
            ],
            Some(&body.to_string()),
        )
        .unwrap();
        (
            status,
            serde_json::from_str::<Value>(&b).unwrap_or_default(),
        )
    };
    let max = loopsy_relay::limit::MAX_PHONES;
    let mut first = String::new();
    for i in 0..max {
        let (status, v) = redeem_from(i);
        assert_eq!(status, 200, "phone {i}: {v}");
        if i == 0 {
            first = v["phone_id"].as_str().unwrap().to_string();
        }
    }
    // What the relay holds for the device (redeemed phones, confirmed or not).
    let bearer = format!("Bearer {device_secret}");
    let phones_url = format!("{}/v1/device/{device}/phones", w.url());
    let listed = || -> usize {
        let (status, b) =
            relay_support::http("GET", &phones_url, &[("Authorization", &bearer)], None).unwrap();
        assert_eq!(status, 200, "{b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        v["phones"].as_array().or(v.as_array()).unwrap().len()
    };
    assert_eq!(listed(), max);
    let (status, v) = redeem_from(max);
    assert_eq!(status, 409, "{v}");
    let msg = v["error"].as_str().unwrap_or_default().to_string()
        + v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("already has {max} phones")) && msg.contains("loopsy phone revoke"),
        "{v}"
    );
    assert_eq!(listed(), max, "the refused phone was stored");
    // Revoking one makes room for the next.
    h.ok(&["phone", "revoke", &first]);
    let (status, v) = redeem_from(max + 1);
    assert_eq!(status, 200, "{v}");
    assert_eq!(listed(), max);
}

/// Durable Object databases under `dir` that hold one of the relay's tables (SQLite keeps
/// each table's `CREATE TABLE` text in the file, or in its write-ahead log until a
/// checkpoint; the runtime's own bookkeeping tables do not count).
fn stored(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    stored(&p)
                } else {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    usize::from(bytes.windows(11).any(|w| w == b"limits (key"))
                }
            })
            .sum()
    })
}

/// The relay turns hostile (a proxy in front of the Worker, `common/relay_proxy.rs`): it
/// replays what the phone sent, injects frames of its own, and pretends to revoke a phone
/// while keeping it. Nothing replayed or injected reaches the terminal, and the laptop's own
/// revocation holds: the live connection ends with the laptop's word and the phone, still
/// let through by the relay, is refused by the laptop.
#[test]
fn a_hostile_relay_can_neither_type_into_a_terminal_nor_keep_a_revoked_phone() {
    use loopsy_relay::frame::{Frame, FrameKind};
    let w = Wrangler::start(None);
    let rt = rt();
    let proxy = rt.block_on(relay_proxy::HostileProxy::start(w.port));
    let h = daemon_at(&proxy.url(), "lap", 15, &w);
    let mut m = h.mcp();
    m.initialize();
    // The laptop's own view of the terminal: lines that are exactly `line`.
    let mut count_lines = |id: &str, line: &str| {
        let r = m.call_tool(
            "loopsy_session_read",
            json!({"id": id, "mode": "scrollback"}),
        );
        r["result"]["structuredContent"]["text"]
            .as_str()
            .unwrap()
            .lines()
            .filter(|l| l.trim_end() == line)
            .count()
    };
    let id = rt.block_on(async {
        let (creds, mut phone) = paired_phone(&h).await;
        let (ok, s) = phone
            .call(
                "loopsy_session_start",
                json!({"name": "sh", "cols": 80, "rows": 24}),
            )
            .await
            .unwrap();
        assert!(ok, "{s}");
        let id = session_id(&s);
        phone.attach(&id, 80, 24).await.unwrap();
        let frames_before = proxy.state.recorded().len();
        phone.input(b"echo TYPED-$((40+2))\r").await.unwrap();
        phone
            .wait_output("TYPED-42", Duration::from_secs(10))
            .await
            .unwrap();

        // Replayed: every frame the relay has passed to the laptop since, again, twice.
        let recorded = proxy.state.recorded();
        let channel = Frame::decode(&recorded[frames_before]).unwrap().channel;
        for _ in 0..2 {
            for f in &recorded[frames_before..] {
                proxy.state.inject(f.clone());
            }
        }
        // Injected: made-up ciphertext on the phone's channel, and a channel of its own
        // opened for a made-up phone with data on it.
        let fake = loopsy_relay::secret::id_from(&[7; 16]);
        for f in [
            Frame::new(FrameKind::Data, channel, vec![0x42; 64]),
            Frame::new(FrameKind::Open, 999, fake.into_bytes()),
            Frame::new(FrameKind::Data, 999, b"echo INJECTED\r".to_vec()),
            Frame::new(FrameKind::Data, 999, vec![0; 40]),
        ] {
            proxy.state.inject(f.encode().unwrap());
        }
        // A marker typed after all of it (on a new connection if the laptop dropped the one
        // the garbage came on) shows the terminal took whatever it was going to take.
        let mut phone = match phone.input(b"echo AFTER-$((1+1))\r").await {
            Ok(())
                if phone
                    .wait_output("AFTER-2", Duration::from_secs(5))
                    .await
                    .is_ok() =>
            {
                phone
            }
            _ => {
                let mut p = PhoneConn::connect(&creds).await.unwrap();
                p.hello(None).await.unwrap();
                p.attach(&id, 80, 24).await.unwrap();
                p.input(b"echo AFTER-$((1+1))\r").await.unwrap();
                p.wait_output("AFTER-2", Duration::from_secs(10))
                    .await
                    .unwrap();
                p
            }
        };
        assert_eq!(
            count_lines(&id, "TYPED-42"),
            1,
            "the replayed input ran again"
        );
        assert_eq!(count_lines(&id, "INJECTED"), 0, "injected input ran");
        assert_eq!(count_lines(&id, "AFTER-2"), 1);
        assert!(h.running());

        // Revoked on the laptop; the relay says yes and keeps the phone.
        let out = h.ok(&["phone", "revoke", &creds.phone_id]);
        assert_eq!(
            proxy
                .state
                .swallowed
                .load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{out}"
        );
        let how = phone.wait_closed(Duration::from_secs(5)).await.unwrap();
        assert!(
            how.contains("this phone was revoked on the laptop"),
            "the laptop itself ended the live connection: {how}"
        );
        // The relay still lets the phone through; the laptop refuses it.
        let mut again = PhoneConn::connect(&creds).await.unwrap();
        let r = again.hello(None).await.unwrap();
        assert!(
            matches!(&r, Control::Error { code, .. } if code == "unknown_phone"),
            "{r:?}"
        );
        // Whatever it sends now goes nowhere.
        let _ = again.input(b"echo REVOKED-TYPED\r").await;
        let _ = again.pump_for(Duration::from_millis(500)).await;
        id
    });
    let mut m = h.mcp();
    m.initialize();
    let r = m.call_tool(
        "loopsy_session_write",
        json!({"id": id, "text": "echo MARK-$((2+3))\n"}),
    );
    assert_eq!(r["result"]["isError"], false, "{r}");
    wait_until("the laptop's own input", Duration::from_secs(10), || {
        count_lines(&id, "MARK-5") == 1
    });
    assert_eq!(
        count_lines(&id, "REVOKED-TYPED"),
        0,
        "a revoked phone typed"
    );
}
