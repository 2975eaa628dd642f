//! Terminal sessions on a real daemon with real PTYs: type and read the screen, survive a
//! daemon stop/start and a `kill -9`, attach a full-screen program at another size and match
//! a reference terminal, and refuse bad input clearly.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "common/relay.rs"]
mod relay_support;

use std::time::{Duration, Instant};

use common::{McpPipe, TestHome, kill9, started_on_loopback, wait_until};
use loopsy_term::proto::{Kind, read_frame};
use serde_json::{Value, json};

fn mcp(h: &TestHome) -> McpPipe {
    let mut m = h.mcp();
    m.initialize();
    m
}

/// Call a tool that must succeed; its structured content.
fn ok(m: &mut McpPipe, tool: &str, args: Value) -> Value {
    let r = m.call_tool(tool, args);
    assert_eq!(r["result"]["isError"], false, "{tool}: {r}");
    r["result"]["structuredContent"].clone()
}

/// Call a tool that must fail; its error code.
fn fails(m: &mut McpPipe, tool: &str, args: Value) -> (String, String) {
    let r = m.call_tool(tool, args);
    assert_eq!(r["result"]["isError"], true, "{tool} should fail: {r}");
    let c = &r["result"]["structuredContent"];
    (
        c["code"].as_str().unwrap().to_string(),
        c["message"].as_str().unwrap().to_string(),
    )
}

fn sh(m: &mut McpPipe, script: &str) -> String {
    let s = ok(
        m,
        "loopsy_session_start",
        json!({"kind": "custom", "command": "/bin/sh", "args": ["-c", script], "cols": 80, "rows": 24}),
    );
    s["id"].as_str().unwrap().to_string()
}

#[test]
fn type_into_a_shell_and_read_the_screen() {
    let h = started_on_loopback("alpha");
    let mut m = mcp(&h);
    let s = ok(
        &mut m,
        "loopsy_session_start",
        json!({"kind": "custom", "command": "/bin/sh", "name": "work", "cols": 80, "rows": 24}),
    );
    assert_eq!(s["state"], "running");
    assert_eq!(s["name"], "work");
    let id = s["id"].as_str().unwrap().to_string();
    ok(
        &mut m,
        "loopsy_session_write",
        json!({"id": "work", "text": "echo hi-$((40+2))", "keys": ["Enter"]}),
    );
    let w = ok(
        &mut m,
        "loopsy_session_wait",
        json!({"id": id, "pattern": "(?m)^hi-42$", "timeout_s": 20}),
    );
    assert_eq!(w["reason"], "pattern", "{w}");
    let screen = ok(&mut m, "loopsy_session_read", json!({"id": id}));
    assert!(
        screen["text"]
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l == "hi-42"),
        "{screen}"
    );
    // Incremental reads: only what came after the cursor.
    let cursor = screen["cursor"].as_str().unwrap().to_string();
    ok(
        &mut m,
        "loopsy_session_write",
        json!({"id": id, "text": "echo second", "keys": ["Enter"]}),
    );
    ok(
        &mut m,
        "loopsy_session_wait",
        json!({"id": id, "pattern": "(?m)^second", "timeout_s": 20}),
    );
    let since = ok(
        &mut m,
        "loopsy_session_read",
        json!({"id": id, "mode": "since", "cursor": cursor}),
    );
    let t = since["text"].as_str().unwrap();
    assert!(t.contains("second") && !t.contains("hi-42"), "{t:?}");
    // Exit: the code is recorded, the session stays listed and readable.
    ok(
        &mut m,
        "loopsy_session_write",
        json!({"id": id, "text": "exit 7", "keys": ["Enter"]}),
    );
    let w = ok(
        &mut m,
        "loopsy_session_wait",
        json!({"id": id, "exit": true, "timeout_s": 20}),
    );
    assert_eq!(w["reason"], "exit");
    assert_eq!(w["session"]["exit_code"], 7);
    let list = ok(&mut m, "loopsy_session_list", json!({}));
    assert_eq!(list["sessions"][0]["state"], "exited");
    let scroll = ok(
        &mut m,
        "loopsy_session_read",
        json!({"id": id, "mode": "scrollback"}),
    );
    assert!(scroll["text"].as_str().unwrap().contains("hi-42"));
    ok(&mut m, "loopsy_session_remove", json!({"id": id}));
    let (code, _) = fails(&mut m, "loopsy_session_read", json!({"id": id}));
    assert_eq!(code, "not_found");
}

fn count_in(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("n="))
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn sessions_survive_a_daemon_restart_and_kill_9() {
    let h = started_on_loopback("alpha");
    let mut m = mcp(&h);
    let id = sh(
        &mut m,
        "i=0; while true; do i=$((i+1)); echo n=$i; sleep 0.05; done",
    );
    let now = |m: &mut McpPipe| {
        let r = ok(
            m,
            "loopsy_session_read",
            json!({"id": id, "mode": "scrollback"}),
        );
        count_in(r["text"].as_str().unwrap())
    };
    wait_until("counting", Duration::from_secs(20), || now(&mut m) >= 3);
    let host_pid = |m: &mut McpPipe| {
        let l = ok(m, "loopsy_session_list", json!({}));
        l["sessions"][0]["host_pid"].as_u64().expect("host_pid")
    };
    let host = host_pid(&mut m);
    drop(m);

    h.ok(&["stop"]);
    h.ok(&["start"]);
    let mut m = mcp(&h);
    let before = now(&mut m);
    wait_until(
        "still counting after restart",
        Duration::from_secs(20),
        || now(&mut m) > before,
    );
    let l = ok(&mut m, "loopsy_session_list", json!({}));
    assert_eq!(l["sessions"][0]["state"], "running", "{l}");
    drop(m);

    kill9(h.pid());
    h.ok(&["start"]);
    let mut m = mcp(&h);
    let before = now(&mut m);
    wait_until(
        "still counting after kill -9",
        Duration::from_secs(20),
        || now(&mut m) > before,
    );
    // The same host and the same program: not a respawn. The scrollback from before both
    // restarts is still there, and the count never started over nor skipped.
    assert_eq!(host_pid(&mut m), host, "the session host was replaced");
    let r = ok(
        &mut m,
        "loopsy_session_read",
        json!({"id": id, "mode": "scrollback"}),
    );
    let lines: Vec<&str> = r["text"].as_str().unwrap().lines().collect();
    // (The last line may still be being written.)
    let counts: Vec<u64> = lines[..lines.len().saturating_sub(1)]
        .iter()
        .filter_map(|l| l.trim().strip_prefix("n="))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(counts.first(), Some(&1), "{counts:?}");
    let expected: Vec<u64> = (1..=counts.len() as u64).collect();
    assert_eq!(counts, expected, "the count is one continuous run");
    let s = ok(&mut m, "loopsy_session_stop", json!({"id": id}));
    assert_eq!(s["state"], "exited", "{s}");
}

/// Feed frames from an attachment into a reference vt100 until `done` holds.
async fn reference_screen(
    att: &mut loopsy_term::client::Attached,
    cols: u16,
    rows: u16,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut p = vt100::Parser::new(
        std::num::NonZeroU16::new(rows).unwrap(),
        std::num::NonZeroU16::new(cols).unwrap(),
        0,
    );
    let t0 = Instant::now();
    loop {
        let contents = p.screen().contents();
        if done(&contents) {
            return contents;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "screen never settled:\n{contents}"
        );
        let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut att.rx))
            .await
            .expect("no output")
            .unwrap()
            .expect("host closed");
        if f.kind == Kind::Output {
            p.process(&f.data);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_screen_program_reattached_at_another_size_matches_a_reference_terminal() {
    let h = started_on_loopback("alpha");
    let text: String = (1..=200).map(|i| format!("line {i:03}\n")).collect();
    std::fs::write(h.path().join("f.txt"), text).unwrap();
    let file = h.path().join("f.txt").display().to_string();
    let id = tokio::task::block_in_place(|| {
        let mut m = mcp(&h);
        let s = ok(
            &mut m,
            "loopsy_session_start",
            json!({"kind": "custom", "command": "less", "args": [file], "cols": 80, "rows": 24}),
        );
        s["id"].as_str().unwrap().to_string()
    });
    let dir = h.path().join("sessions").join(&id);
    let sock = dir.join("host.sock");

    // First client at 80x24: less shows lines 1-23.
    let mut a = loopsy_term::client::attach(&sock, 80, 24).await.unwrap();
    reference_screen(&mut a, 80, 24, |s| {
        s.contains("line 023") && !s.contains("line 024")
    })
    .await;
    drop(a); // detach

    // Reattach at 100x40: less redraws for the new size; a fresh reference parser fed only
    // what this client receives (snapshot + live output) must match the host's own screen.
    let mut b = loopsy_term::client::attach(&sock, 100, 40).await.unwrap();
    let seen = reference_screen(&mut b, 100, 40, |s| s.contains("line 039")).await;
    let host = tokio::task::block_in_place(|| {
        let mut m = mcp(&h);
        ok(&mut m, "loopsy_session_read", json!({"id": id}))
    });
    assert_eq!(
        host["alternate_screen"], true,
        "less uses the alternate screen"
    );
    let host_text = host["text"].as_str().unwrap();
    assert_eq!(seen.trim_end(), host_text.trim_end());
    assert!(seen.lines().count() <= 40);

    // A second live client at the same time sees the same screen; input from either works.
    let mut c = loopsy_term::client::attach(&sock, 100, 40).await.unwrap();
    let seen_c = reference_screen(&mut c, 100, 40, |s| s.contains("line 039")).await;
    assert_eq!(seen_c.trim_end(), host_text.trim_end());
    loopsy_term::proto::write_frame(&mut c.tx, Kind::Input, b"q")
        .await
        .unwrap();
    let t0 = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), read_frame(&mut b.rx))
            .await
            .expect("no exit frame")
            .unwrap()
        {
            Some(f) if f.kind == Kind::Exit => break,
            Some(_) => {}
            None => panic!("closed without an exit frame"),
        }
        assert!(t0.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let h = started_on_loopback("alpha");
    let mut m = mcp(&h);
    for (tool, args, want) in [
        ("loopsy_session_read", json!({"id": "nope"}), "not_found"),
        (
            "loopsy_session_remove",
            json!({"id": "../.."}),
            "invalid_arguments",
        ),
        (
            "loopsy_session_remove",
            json!({"id": "a/b"}),
            "invalid_arguments",
        ),
        (
            "loopsy_session_read",
            json!({"id": "../../etc"}),
            "invalid_arguments",
        ),
        (
            "loopsy_session_start",
            json!({"command": "/bin/sh", "cols": 0, "rows": 0}),
            "invalid_arguments",
        ),
        (
            "loopsy_session_start",
            json!({"command": "/bin/sh", "cols": 65535, "rows": 24}),
            "invalid_arguments",
        ),
        (
            "loopsy_session_start",
            json!({"kind": "custom", "command": "/no/such/program"}),
            "invalid_arguments",
        ),
        (
            "loopsy_session_start",
            json!({"command": "/bin/sh", "cwd": "/no/such/dir"}),
            "invalid_arguments",
        ),
        // A custom session with no command is the caller's arguments, not a missing thing.
        (
            "loopsy_session_start",
            json!({"kind": "custom"}),
            "invalid_arguments",
        ),
    ] {
        let (code, msg) = fails(&mut m, tool, args.clone());
        assert_eq!(code, want, "{tool} {args}: {msg}");
    }
    let id = sh(&mut m, "cat >/dev/null");
    let big = "x".repeat(70 * 1024);
    let (code, msg) = fails(
        &mut m,
        "loopsy_session_write",
        json!({"id": id, "text": big}),
    );
    assert_eq!(code, "invalid_arguments", "{msg}");
    let (code, msg) = fails(
        &mut m,
        "loopsy_session_write",
        json!({"id": id, "keys": ["Hyper-Q"]}),
    );
    assert_eq!(code, "invalid_arguments", "{msg}");
    let (code, _) = fails(
        &mut m,
        "loopsy_session_wait",
        json!({"id": id, "pattern": "(unclosed", "timeout_s": 1}),
    );
    assert_eq!(code, "invalid_arguments");
    let (code, _) = fails(
        &mut m,
        "loopsy_session_read",
        json!({"id": id, "mode": "since", "cursor": "not-a-number"}),
    );
    assert_eq!(code, "invalid_arguments");
    // A bad resize from an attached client is ignored, and the session lives on.
    ok(&mut m, "loopsy_session_stop", json!({"id": id}));
    let err = h.fails(&["attach", &id]);
    assert!(err.contains("cannot be attached"), "{err}");
    // The daemon is still fine.
    ok(&mut m, "loopsy_session_list", json!({}));
}

fn vm_hwm_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A client that stops reading for a moment while a program prints line by line (each line a
/// PTY read, so a frame) gets every line afterwards: a client is stalled by the bytes queued
/// for it (256 KiB), not by frames. Counted in frames (64), a client whose reader was off the
/// CPU for a moment (a loaded laptop) was skipped to a fresh screen after 64 short lines, and
/// a phone lost them.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pauses_while_lines_print_gets_every_line() {
    let h = started_on_loopback("alpha");
    let id = tokio::task::block_in_place(|| {
        let mut m = mcp(&h);
        let s = ok(
            &mut m,
            "loopsy_session_start",
            json!({"kind": "custom", "command": "/bin/sh", "args": ["-c",
                "read go; i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo L$i; done; echo LINES-$((1+1))-DONE; sleep 60"],
                "cols": 80, "rows": 24}),
        );
        s["id"].as_str().unwrap().to_string()
    });
    let sock = h.path().join("sessions").join(&id).join("host.sock");
    let mut a = loopsy_term::client::attach(&sock, 80, 24).await.unwrap();
    loopsy_term::proto::write_frame(&mut a.tx, Kind::Input, b"go\r")
        .await
        .unwrap();
    // Not reading while the lines print: everything waits in the host's queue for this client.
    tokio::task::block_in_place(|| {
        let mut m = mcp(&h);
        wait_until("the lines printed", Duration::from_secs(30), || {
            let r = ok(
                &mut m,
                "loopsy_session_read",
                json!({"id": id, "mode": "scrollback"}),
            );
            r["text"].as_str().unwrap().contains("LINES-2-DONE")
        });
    });
    let mut out: Vec<u8> = Vec::new();
    let mut screens = 0;
    while !out.windows(12).any(|w| w == b"LINES-2-DONE") {
        let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut a.rx))
            .await
            .expect("no more output")
            .unwrap()
            .expect("host closed");
        match f.kind {
            Kind::Output => out.extend_from_slice(&f.data),
            Kind::Screen => screens += 1,
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&out);
    let all: String = (1..=2000).map(|i| format!("L{i}\r\n")).collect();
    let gap = (2..=2000).find(|i| !text.contains(&format!("L{}\r\nL{i}\r\n", i - 1)));
    assert!(
        screens == 0 && text.contains(&all),
        "lines lost while the client paused (first gap before L{gap:?}; {screens} screens): {:?}",
        &text[text.len().saturating_sub(300)..]
    );
}

/// 500 MB of 80-column lines (a PTY moves short lines like `yes`'s at only ~5 MB/s here, so the
/// flood uses full lines, as `cat` of a log would).
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_does_not_hold_back_a_live_one_and_memory_stays_bounded() {
    let h = started_on_loopback("alpha");
    let (id, host_pid) = tokio::task::block_in_place(|| {
        let mut m = mcp(&h);
        let s = ok(
            &mut m,
            "loopsy_session_start",
            json!({"kind": "custom", "command": "/bin/sh", "args": ["-c",
                "read go; yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c 500000000; echo; echo END-OF-FLOOD; sleep 60"],
                "cols": 80, "rows": 24}),
        );
        (
            s["id"].as_str().unwrap().to_string(),
            s["host_pid"].as_u64().unwrap(),
        )
    });
    let sock = h.path().join("sessions").join(&id).join("host.sock");
    // One client that never reads, one that does.
    let _stalled = loopsy_term::client::attach(&sock, 80, 24).await.unwrap();
    let mut live = loopsy_term::client::attach(&sock, 80, 24).await.unwrap();
    loopsy_term::proto::write_frame(&mut live.tx, Kind::Input, b"go\r")
        .await
        .unwrap();
    let mut bytes = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    let t0 = Instant::now();
    loop {
        let f = tokio::time::timeout(Duration::from_secs(60), read_frame(&mut live.rx))
            .await
            .expect("the live client starved")
            .unwrap()
            .expect("host closed");
        bytes += f.data.len() as u64;
        tail.extend_from_slice(&f.data);
        if tail.windows(12).any(|w| w == b"END-OF-FLOOD") {
            break;
        }
        let keep = tail.len().saturating_sub(12);
        tail.drain(..keep);
        assert!(t0.elapsed() < Duration::from_secs(240), "flood never ended");
    }
    eprintln!(
        "live client: {} MB in {:.1} s",
        bytes / 1_000_000,
        t0.elapsed().as_secs_f64()
    );
    let host_mib = vm_hwm_kib(host_pid) / 1024;
    let daemon_mib = vm_hwm_kib(h.pid() as u64) / 1024;
    assert!(host_mib < 64, "session host peaked at {host_mib} MiB");
    assert!(daemon_mib < 64, "daemon peaked at {daemon_mib} MiB");
    // The session and the daemon are still responsive.
    tokio::task::block_in_place(|| {
        let mut m = mcp(&h);
        let r = ok(&mut m, "loopsy_session_read", json!({"id": id}));
        assert!(r["text"].as_str().unwrap().contains("END-OF-FLOOD"));
        ok(&mut m, "loopsy_session_stop", json!({"id": id}));
    });
}

#[test]
fn attach_to_a_session_on_a_peer_over_the_mesh() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let a = started_on_loopback("alpha");
    let b = started_on_loopback("beta");
    common::pair(&a, &b);
    let mut m = mcp(&a);
    let s = ok(
        &mut m,
        "loopsy_session_start",
        json!({"peer": "beta", "kind": "custom", "command": "/bin/sh", "name": "far"}),
    );
    let id = s["id"].as_str().unwrap().to_string();
    // The session lives on beta.
    assert!(b.path().join("sessions").join(&id).is_dir());

    let mut child = a
        .cmd(&["attach", "--peer", "beta", "far"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut so = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = so.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo remote-$((40+2))\r").unwrap();
    stdin.flush().unwrap();
    let seen = |s: &str| String::from_utf8_lossy(&out.lock().unwrap()).contains(s);
    wait_until("output from beta", Duration::from_secs(20), || {
        seen("remote-42")
    });
    // Ctrl-] detaches; the session keeps running on beta.
    stdin.write_all(&[0x1d]).unwrap();
    stdin.flush().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("detached"));
    let l = ok(&mut m, "loopsy_session_list", json!({"peer": "beta"}));
    assert_eq!(l["sessions"][0]["state"], "running");

    // Attached again, then pty is revoked: the live attach ends within seconds.
    let mut again = a
        .cmd(&["attach", "--peer", "beta", "far"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("second attach", Duration::from_secs(20), || {
        let l = ok(&mut m, "loopsy_session_list", json!({"peer": "beta"}));
        l["sessions"][0]["clients"] == 1
    });
    b.ok(&["peers", "revoke", "alpha", "pty"]);
    let t0 = Instant::now();
    wait_until("revoked attach ends", Duration::from_secs(15), || {
        again.try_wait().unwrap().is_some()
    });
    let o = again.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a revoked attach is a failure");
    assert!(
        err.contains("beta revoked this machine's pty capability"),
        "the reason, not 'the host went away': {err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // Without the pty capability, beta refuses the stream with a clear message.
    let err = a.fails(&["attach", "--peer", "beta", "far"]);
    assert!(err.contains("pty"), "{err}");
    // …also at the stream level, when the listing is skipped.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let s = tokio::net::UnixStream::connect(a.path().join("loopsy.sock"))
            .await
            .unwrap();
        let (r, mut w) = s.into_split();
        let mut r = tokio::io::BufReader::new(r);
        loopsy_mcp::control::handshake(&mut r, &mut w, loopsy_mcp::control::Verb::Attach)
            .await
            .unwrap();
        w.write_all(format!("{{\"peer\":\"beta\",\"session\":\"{id}\"}}\n").as_bytes())
            .await
            .unwrap();
        loopsy_term::client::attach_on(Box::new(r), Box::new(w), 80, 24)
            .await
            .err()
            .expect("attach must be refused")
            .to_string()
    });
    assert!(err.contains("pty capability"), "{err}");
}

#[test]
fn the_cli_starts_lists_kills_and_removes_sessions() {
    let h = started_on_loopback("alpha");
    let id = h
        .ok(&["shell", "-d", "--name", "cli", "--", "sleep", "300"])
        .trim()
        .to_string();
    let list: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["name"], "cli");
    assert_eq!(list[0]["state"], "running");
    assert!(h.ok(&["sessions"]).contains("cli"));
    let out = h.ok(&["kill", "cli"]);
    assert!(out.contains("cli"), "{out}");
    let list: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    assert_eq!(list[0]["state"], "exited");
    assert!(
        h.fails(&["kill", "--rm", "../x"])
            .contains("may contain only")
    );
    h.ok(&["kill", "--rm", &id]);
    assert_eq!(h.ok(&["sessions", "--json"]).trim(), "[]");
    assert!(!h.path().join("sessions").join(&id).exists());
}

#[test]
fn auto_approve_needs_the_users_confirmation_on_the_machine() {
    use std::os::unix::fs::PermissionsExt;
    let h = TestHome::new();
    h.ok(&["init", "--name", "alpha"]);
    std::fs::write(
        h.path().join("config.toml"),
        "[node]\nname = \"alpha\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    // A stand-in `claude` on the daemon's PATH that shows the flags it got.
    let bin = h.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("claude");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"claude-args:[$*]\"\nexec sleep 300\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let o = h.cmd(&["start"]).env("PATH", &path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut m = mcp(&h);
    let screen_of = |m: &mut McpPipe, id: &str| {
        ok(
            m,
            "loopsy_session_wait",
            json!({"id": id, "pattern": "claude-args:\\[.*\\]", "timeout_s": 20}),
        )["matched"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Without auto-approve: no flag.
    let s = ok(&mut m, "loopsy_session_start", json!({"kind": "claude"}));
    assert_eq!(
        screen_of(&mut m, s["id"].as_str().unwrap()),
        "claude-args:[]"
    );

    // With it: refused until the user approves on this machine.
    let (code, msg) = fails(
        &mut m,
        "loopsy_session_start",
        json!({"kind": "claude", "auto_approve": true}),
    );
    assert_eq!(code, "permission_denied", "{msg}");
    let id = regex::Regex::new(r"loopsy approve (\w+)")
        .unwrap()
        .captures(&msg)
        .unwrap()[1]
        .to_string();
    let again = json!({"kind": "claude", "auto_approve": true, "approval": id});
    let (code, _) = fails(&mut m, "loopsy_session_start", again.clone());
    assert_eq!(code, "permission_denied");
    // Agents cannot approve: the tool does not exist on their sessions.
    let r = m.call_tool("loopsy_approve", json!({"id": id}));
    assert!(r.get("error").is_some(), "{r}");

    assert!(h.ok(&["approve"]).contains(&id));
    assert!(h.ok(&["approve", &id]).contains("approved"));
    let s = ok(&mut m, "loopsy_session_start", again.clone());
    assert_eq!(
        screen_of(&mut m, s["id"].as_str().unwrap()),
        "claude-args:[--dangerously-skip-permissions]"
    );
    // Used once.
    let (code, _) = fails(&mut m, "loopsy_session_start", again);
    assert_eq!(code, "permission_denied");
    // The flag cannot be smuggled in through args.
    let (code, msg) = fails(
        &mut m,
        "loopsy_session_start",
        json!({"kind": "claude", "args": ["--dangerously-skip-permissions"]}),
    );
    assert_eq!(code, "permission_denied", "{msg}");
    // Nor through another kind or another spelling (the whole table: term/src/bypass.rs).
    for args in [
        json!({"kind": "custom", "command": "claude", "args": ["--dangerously-skip-permissions"]}),
        json!({"kind": "custom", "command": "claude --permission-mode bypassPermissions"}),
        json!({"command": "sh", "args": ["-c", "gemini --approval-mode=yolo"]}),
        json!({"command": "env", "args": ["codex", "--yolo"]}),
        json!({"kind": "claude", "args": ["--permission-mode", "bypassPermissions"]}),
    ] {
        let (code, msg) = fails(&mut m, "loopsy_session_start", args.clone());
        assert_eq!(code, "permission_denied", "{args}: {msg}");
        assert!(msg.contains("loopsy approve"), "{msg}");
    }
    // Kinds without such a flag, and agents that are not installed, say so.
    let (code, _) = fails(
        &mut m,
        "loopsy_session_start",
        json!({"kind": "shell", "auto_approve": true}),
    );
    assert_eq!(code, "invalid_arguments");
    let (code, msg) = fails(&mut m, "loopsy_session_start", json!({"kind": "gemini"}));
    assert_eq!(code, "not_found");
    assert!(msg.contains("gemini") && msg.contains("install"), "{msg}");
}

#[test]
fn loopsy_attach_in_a_real_terminal_takes_its_size_and_detaches_on_ctrl_close_bracket() {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    use std::io::{Read, Write};
    let h = started_on_loopback("alpha");
    let id = h
        .ok(&["shell", "-d", "--name", "tty", "--", "/bin/sh"])
        .trim()
        .to_string();
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(common::bin());
    cmd.args(["--home", &h.path().display().to_string(), "attach", "tty"]);
    cmd.env_remove("LOOPSY_HOME");
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut r = pair.master.try_clone_reader().unwrap();
    let mut w = pair.master.take_writer().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_until("attached", Duration::from_secs(20), || {
        seen.lock().unwrap().contains("attached to tty")
    });
    w.write_all(b"echo in-$((6*7))-pty\r").unwrap();
    w.flush().unwrap();
    wait_until("output through the attach", Duration::from_secs(20), || {
        seen.lock().unwrap().contains("in-42-pty")
    });
    // The session took the attached terminal's size.
    let list: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    let s = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (s["cols"].as_u64(), s["rows"].as_u64()),
        (Some(100), Some(30))
    );
    assert_eq!(s["clients"], 1);
    w.write_all(&[0x1d]).unwrap();
    w.flush().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "attach did not detach"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    wait_until("detach message", Duration::from_secs(5), || {
        seen.lock().unwrap().contains("detached from tty")
    });
    let list: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    assert_eq!(list[0]["state"], "running");
}

/// The parent of `pid` (for a session's shell: its session host).
fn parent_of(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // `pid (comm) state ppid …`; comm may hold spaces, so count from its closing parenthesis.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// While a phone (here: the local dashboard's channel, the same code) is connected, the daemon
/// keeps a shell started ahead of use. It is never listed, ends unclaimed after
/// `sessions.spare_shell_s`, is taken by the next plain shell start under that start's name
/// and size, is replaced at once, is left alone by a start that asks for something else, and
/// is still taken after a daemon restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_phone_finds_a_spare_shell_ready() {
    use relay_support::{PhoneConn, redeem};
    let h = TestHome::new();
    h.ok(&["init", "--name", "lap"]);
    let home = h.path().join("user");
    std::fs::create_dir_all(&home).unwrap();
    // Every shell notes its pid when its start-up file runs.
    std::fs::write(
        home.join(".bashrc"),
        "echo $$ >> \"$HOME/started\"\nPS1='ready$ '\n",
    )
    .unwrap();
    let config = |spare_s: u64| {
        std::fs::write(
            h.path().join("config.toml"),
            format!(
                "[node]\nname = \"lap\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n\
                 [sessions]\nspare_shell_s = {spare_s}\n"
            ),
        )
        .unwrap()
    };
    let start = || {
        let st = h
            .cmd(&["start"])
            .env("SHELL", "/bin/bash")
            .env("HOME", &home)
            .status()
            .unwrap();
        assert!(st.success(), "loopsy start failed");
    };
    let started = || -> Vec<u64> {
        std::fs::read_to_string(home.join("started"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let dirs = || std::fs::read_dir(h.path().join("sessions")).map_or(0, |d| d.count());
    let alive = |pid: u64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    async fn listed(p: &mut PhoneConn) -> Vec<String> {
        let (ok, v) = p.call("loopsy_session_list", json!({})).await.unwrap();
        assert!(ok, "{v}");
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    }

    // A browser tab on the dashboard (paired afresh: each daemon run has its own key).
    async fn dashboard_tab(h: &TestHome) -> PhoneConn {
        let dash: Value = serde_json::from_str(&h.ok(&["dashboard", "--json"])).unwrap();
        let (link, code) = dash["url"].as_str().unwrap().rsplit_once('.').unwrap();
        let creds = redeem(link).await;
        let mut phone = PhoneConn::connect(&creds).await.unwrap();
        let w = phone.hello(Some((&creds.pair_id, code))).await.unwrap();
        assert!(format!("{w:?}").contains("Welcome"), "{w:?}");
        phone
    }

    // A spare nobody takes ends after its second, leaving nothing behind.
    config(1);
    start();
    let mut phone = dashboard_tab(&h).await;
    wait_until("a spare shell", Duration::from_secs(20), || {
        started().len() == 1
    });
    let first = started()[0];
    assert_eq!(
        listed(&mut phone).await,
        Vec::<String>::new(),
        "a spare is never listed"
    );
    wait_until(
        "the unclaimed spare to end",
        Duration::from_secs(20),
        || !alive(first) && dirs() == 0,
    );
    phone.close().await;

    // With the default time: the next plain shell start takes the spare.
    h.ok(&["stop"]);
    config(600);
    start();
    let mut phone = dashboard_tab(&h).await;
    wait_until("a spare shell", Duration::from_secs(20), || {
        started().len() == 2
    });
    let spare = started()[1];
    let (done, s) = phone
        .call(
            "loopsy_session_start",
            json!({"kind": "shell", "name": "phone-shell", "cols": 50, "rows": 20}),
        )
        .await
        .unwrap();
    assert!(done, "{s}");
    assert_eq!(s["name"], "phone-shell");
    assert_eq!(
        (s["cols"].as_u64(), s["rows"].as_u64()),
        (Some(50), Some(20))
    );
    assert_eq!(s["host_pid"].as_u64(), Some(parent_of(spare)), "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    phone.attach(&id, 50, 20).await.unwrap();
    phone
        .input(b"echo pid=$$ size=$(stty size)\r")
        .await
        .unwrap();
    phone
        .wait_output(&format!("pid={spare} size=20 50"), Duration::from_secs(10))
        .await
        .unwrap();
    // The next spare is started at once, and still only the claimed session is listed.
    wait_until("the next spare", Duration::from_secs(20), || {
        started().len() == 3
    });
    let next = started()[2];
    assert_eq!(listed(&mut phone).await, vec!["phone-shell".to_string()]);

    // A start that asks for another directory does not take it.
    let (done, s) = phone
        .call(
            "loopsy_session_start",
            json!({"kind": "shell", "cwd": "/tmp", "cols": 80, "rows": 24}),
        )
        .await
        .unwrap();
    assert!(done, "{s}");
    assert_ne!(s["host_pid"].as_u64(), Some(parent_of(next)), "{s}");
    assert!(alive(next), "the spare is still there");
    phone.close().await;

    // A restarted daemon finds the spare its predecessor left and hands it out.
    h.ok(&["stop"]);
    start();
    let mut m = mcp(&h);
    let s = ok(
        &mut m,
        "loopsy_session_start",
        json!({"name": "after-restart", "cols": 80, "rows": 24}),
    );
    assert_eq!(s["host_pid"].as_u64(), Some(parent_of(next)), "{s}");
    assert!(
        !ok(&mut m, "loopsy_session_list", json!({}))["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"].as_str().unwrap().starts_with("spare-")),
        "no spare is listed"
    );
    // The one started to replace it (ended with the test's sessions).
    wait_until(
        "the spare after the restart",
        Duration::from_secs(20),
        || started().len() == 5,
    );
}

#[test]
fn a_session_that_ends_while_attached_shows_no_clients_after() {
    use std::io::Write;
    let h = started_on_loopback("alpha");
    h.ok(&[
        "shell",
        "-d",
        "--name",
        "brief",
        "--",
        "sh",
        "-c",
        "read x; exit 3",
    ]);
    let mut child = h
        .cmd(&["attach", "brief"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let clients = || -> Value {
        let l: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
        l[0]["clients"].clone()
    };
    wait_until("the attach", Duration::from_secs(20), || clients() == 1);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\r").unwrap();
    stdin.flush().unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let l: Value = serde_json::from_str(&h.ok(&["sessions", "--json"])).unwrap();
    assert_eq!(
        (&l[0]["state"], &l[0]["clients"]),
        (&json!("exited"), &json!(0)),
        "{l}"
    );
}
