//! Daemon lifecycle against the real binary: init, start, status, MCP through `loopsy mcp`,
//! stop, double start, crash recovery, side-by-side daemons.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::{TestHome, kill9, wait_until};
use serde_json::{Value, json};

#[test]
fn init_start_status_mcp_stop() {
    let h = TestHome::new();
    let init: Value = serde_json::from_str(&h.ok(&["init", "--name", "alpha", "--json"])).unwrap();
    assert_eq!(init["name"], "alpha");
    assert_eq!(init["created"], true);
    let peer_id = init["peer_id"].as_str().unwrap().to_string();
    assert!(peer_id.starts_with("12D3KooW"), "{peer_id}");

    h.start();
    let s = h.status();
    assert_eq!(s["name"], "alpha");
    assert_eq!(s["peer_id"], peer_id.as_str());
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["pid"].as_u64().unwrap() > 0);
    let addrs: Vec<&str> = s["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "TCP and QUIC: {addrs:?}");
    let tcp = addrs.iter().find(|a| a.contains("/tcp/")).unwrap();
    let quic = addrs.iter().find(|a| a.contains("/quic-v1/")).unwrap();
    for a in [tcp, quic] {
        assert!(
            a.starts_with("/ip4/127.0.0.1/") && a.ends_with(&format!("/p2p/{peer_id}")),
            "{a}"
        );
        assert!(
            !a.contains("/tcp/0/") && !a.contains("/udp/0/"),
            "port 0 must be resolved: {a}"
        );
    }

    // An agent's view, through the stdio bridge.
    let mut mcp = h.mcp();
    let init = mcp.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "loopsy");
    let tools = mcp.request("tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"loopsy_status"), "{names:?}");
    let r = mcp.call_tool("loopsy_status", json!({}));
    assert_eq!(r["result"]["isError"], false);
    assert_eq!(
        r["result"]["structuredContent"]["peer_id"],
        peer_id.as_str()
    );
    assert!(mcp.close().success());

    // Every call is audited (written in the background, so wait for it; the CLI's own calls
    // are there too, as caller "admin").
    let local_status = || {
        std::fs::read_to_string(h.path().join("logs/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["caller"] == "local")
    };
    wait_until("the call is audited", Duration::from_secs(10), || {
        local_status().is_some()
    });
    let rec = local_status().unwrap();
    assert_eq!(rec["tool"], "loopsy_status");
    assert_eq!(rec["outcome"], "ok");

    let out = h.ok(&["stop"]);
    assert!(out.contains("stopped"), "{out}");
    let st = h.run(&["status"]);
    assert_eq!(st.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&st.stderr).contains("loopsy start"));
    assert!(
        !h.path().join("loopsy.sock").exists(),
        "socket removed on clean stop"
    );
    let again = h.ok(&["stop"]);
    assert!(again.is_empty());
}

#[test]
fn init_is_idempotent_and_keeps_identity() {
    let h = TestHome::new();
    let a: Value = serde_json::from_str(&h.ok(&["init", "--json"])).unwrap();
    let b: Value = serde_json::from_str(&h.ok(&["init", "--json"])).unwrap();
    assert_eq!(a["peer_id"], b["peer_id"]);
    assert_eq!(b["created"], false);
    let err = h.fails(&["init", "--name", "other"]);
    assert!(err.contains("edit node.name"), "{err}");
    let c: Value =
        serde_json::from_str(&h.ok(&["init", "--force", "--name", "other", "--json"])).unwrap();
    assert_ne!(a["peer_id"], c["peer_id"]);
    assert_eq!(c["name"], "other");
    for f in ["identity.key", "api.token", "config.toml"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(h.path().join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

#[test]
fn second_start_is_refused_clearly() {
    let h = TestHome::new();
    h.start();
    let pid = h.pid();
    let o = h.run(&["start", "--port", "0", "--local-only"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already running") && err.contains(&pid.to_string()),
        "{err}"
    );
    // A second daemon process for the same home is refused by the lock, even bypassing `start`.
    let o = h.run(&["daemon", "--port", "0", "--local-only"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another loopsy daemon is running") && err.contains(&pid.to_string()),
        "{err}"
    );
    assert_eq!(h.pid(), pid, "the first daemon is untouched");
}

#[test]
fn kill9_then_start_recovers_stale_pidfile_and_socket() {
    let h = TestHome::new();
    h.start();
    let pid = h.pid();
    kill9(pid);
    assert!(
        h.path().join("loopsy.sock").exists(),
        "a killed daemon leaves its socket behind"
    );
    assert_eq!(h.run(&["status"]).status.code(), Some(3));
    h.start();
    let new_pid = h.pid();
    assert_ne!(pid, new_pid);
    let doctor = h.run(&["doctor"]);
    assert!(
        doctor.status.success(),
        "{}",
        String::from_utf8_lossy(&doctor.stdout)
    );
}

#[test]
fn restart_replaces_the_daemon_and_keeps_its_flags() {
    let h = TestHome::new();
    h.ok(&["start", "--port", "0", "--local-only", "--http-port", "0"]);
    let pid = h.pid();
    let loopback_only = |s: &serde_json::Value| {
        let addrs = s["listen_addrs"].as_array().expect("listen_addrs");
        assert!(!addrs.is_empty(), "{s}");
        addrs.iter().all(|a| {
            let a = a.as_str().unwrap_or("");
            a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/")
        })
    };
    assert!(loopback_only(&h.status()));

    // No flags: the same ones as before (a local-only daemon does not start listening on
    // every interface because it was restarted).
    h.ok(&["restart"]);
    let s = h.status();
    assert_ne!(s["pid"].as_u64(), Some(u64::from(pid)));
    assert!(loopback_only(&s), "restart dropped --local-only: {s}");
    assert!(
        s["http_url"].is_string(),
        "restart dropped --http-port: {s}"
    );

    // Flags given: those instead.
    h.ok(&["restart", "--port", "0", "--local-only"]);
    let s = h.status();
    assert!(loopback_only(&s));
    assert!(s["http_url"].is_null(), "{s}");
    // …and they are what the next bare restart keeps.
    h.ok(&["restart"]);
    let s = h.status();
    assert!(loopback_only(&s) && s["http_url"].is_null(), "{s}");

    // Stopped, then started by an agent's `loopsy mcp`: it runs as it last ran, and the
    // recorded flags are left as they were (a later restart keeps them too).
    h.ok(&["stop"]);
    let flags = std::fs::read(h.path().join("daemon.flags.json")).unwrap();
    let mut mcp = h.mcp();
    mcp.initialize();
    let r = mcp.call_tool("loopsy_status", json!({}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    drop(mcp);
    let s = h.status();
    assert!(loopback_only(&s), "`loopsy mcp` dropped --local-only: {s}");
    assert_eq!(
        std::fs::read(h.path().join("daemon.flags.json")).unwrap(),
        flags,
        "the auto-start rewrote the recorded flags"
    );
    // The service managers' units run `daemon --last-flags`: the same.
    h.ok(&["stop"]);
    let mut d = h.cmd(&["daemon", "--last-flags"]).spawn().unwrap();
    common::wait_until("the unit's daemon", Duration::from_secs(10), || h.running());
    assert!(
        loopback_only(&h.status()),
        "--last-flags dropped --local-only"
    );
    h.ok(&["stop"]);
    let _ = d.wait();
    assert_eq!(
        std::fs::read(h.path().join("daemon.flags.json")).unwrap(),
        flags
    );
}

#[test]
fn side_by_side_daemons_and_port_conflicts() {
    let a = TestHome::new();
    let b = TestHome::new();
    a.start();
    b.start();
    assert_ne!(a.status()["peer_id"], b.status()["peer_id"]);

    // A fixed port held by one daemon is refused for the next, with advice.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = TestHome::new();
    let d = TestHome::new();
    c.ok(&["start", "--port", &port.to_string(), "--local-only"]);
    let err = d.fails(&["start", "--port", &port.to_string(), "--local-only"]);
    assert!(
        err.contains(&format!("mesh port {port}")) && err.contains("LOOPSY_MESH_PORT"),
        "{err}"
    );
    assert!(!d.running());
}

#[test]
fn mcp_bridge_starts_the_daemon_when_needed() {
    let h = TestHome::new();
    std::fs::create_dir_all(h.path()).unwrap();
    // Fresh home, nothing running: the bridge initializes and starts it.
    let cfg = "[mesh]\nlisten_port = 0\nlocal_only = true\n";
    h.ok(&["init"]);
    std::fs::write(h.path().join("config.toml"), cfg).unwrap();
    assert!(!h.running());
    let mut mcp = h.mcp();
    let init = mcp.initialize();
    assert!(init["result"]["protocolVersion"].is_string(), "{init}");
    let r = mcp.call_tool("loopsy_status", json!({}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    drop(mcp);
    assert!(h.running());
}

#[test]
fn unknown_method_and_bad_arguments() {
    let h = TestHome::new();
    h.start();
    let mut mcp = h.mcp();
    mcp.initialize();
    let started = std::time::Instant::now();
    let r = mcp.request("server/frobnicate", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let r = mcp.call_tool("loopsy_status", json!({"bogus": 1}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(
        r["result"]["structuredContent"]["code"], "invalid_arguments",
        "{r}"
    );
    let r = mcp.call_tool("loopsy_nope", json!({}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{r}"
    );
    // Garbage on the wire takes neither the session nor the daemon down: it is answered
    // (a JSON-RPC error, or nothing) and the next call on the same session works…
    let pid = h.pid();
    mcp.send(&json!("not a request"));
    mcp.send(&json!({"jsonrpc": "2.0", "id": "x", "method": 7}));
    let r = mcp.call_tool("loopsy_status", json!({}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(r["result"]["structuredContent"]["pid"], pid, "{r}");
    drop(mcp);
    // …and so does a new one, served by the same daemon.
    let mut again = h.mcp();
    again.initialize();
    let r = again.call_tool("loopsy_status", json!({}));
    assert_eq!(r["result"]["structuredContent"]["pid"], pid, "{r}");
}

#[test]
fn relay_status_exits_3_until_a_relay_is_connected() {
    let h = TestHome::new();
    h.start();
    let o = h.run(&["relay", "status"]);
    assert_eq!(o.status.code(), Some(3), "unconfigured is not connected");
    assert!(String::from_utf8_lossy(&o.stdout).contains("unconfigured"));
    // And `msg status` takes no argument: the last messages sent (none yet).
    let o = h.run(&["msg", "status", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}

#[test]
fn the_daemon_going_away_mid_command_is_one_clear_line() {
    let h = TestHome::new();
    h.ok(&["init", "--name", "alpha"]);
    h.start();
    let spawn = |args: &[&str]| {
        h.cmd(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = spawn(&["msg", "wait", "--timeout", "60"]);
    let mut exec = spawn(&["exec", "alpha", "--", "sh", "-c", "echo up; sleep 60"]);
    let mut first = [0u8; 3];
    std::io::Read::read_exact(exec.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"up\n");
    h.ok(&["stop"]);
    for (what, child, needles) in [
        ("msg wait", wait, &["the local daemon went away"][..]),
        // Its job ran under the daemon that stopped: the job's end says so, or (when the
        // daemon closed the connection first) the lost connection does.
        (
            "exec",
            exec,
            &["was killed (the daemon stopped)", "the connection was lost"][..],
        ),
    ] {
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what} exited 0");
        assert!(
            needles.iter().any(|n| err.contains(n)) && err.trim().lines().count() == 1,
            "{what}: {err:?}"
        );
    }
}
