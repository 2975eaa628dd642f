//! Two and three real daemons on loopback: pairing (right code, wrong codes, attempt limit),
//! remote jobs both ways, capability and trust revocation, reconnect after restart, and
//! refusals of untrusted peers.
// Unix file modes, PTYs and POSIX shells: this suite runs on Linux and macOS; Windows is
// covered by the wine smoke test (scripts/test-windows).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestHome, open_window, pair, peers, wait_until};
use serde_json::Value;

fn started(name: &str) -> TestHome {
    let h = TestHome::new();
    h.ok(&["init", "--name", name]);
    h.start();
    h
}

#[test]
fn pair_then_exec_both_ways() {
    let a = started("alpha");
    let b = started("beta");
    assert!(peers(&a).is_empty());
    let (a_sees, b_sees) = pair(&a, &b);
    assert_eq!(a_sees["name"], "beta");
    assert_eq!(b_sees["name"], "alpha");
    assert_eq!(a_sees["peer_id"], b.status()["peer_id"]);
    assert_eq!(
        b_sees["caps"].as_array().unwrap().len(),
        7,
        "a paired machine may do everything by default"
    );

    // b runs on a, a runs on b; output and exit codes come back intact.
    let o = b
        .cmd(&[
            "exec",
            "alpha",
            "--",
            "sh",
            "-c",
            "echo out-$0; echo err >&2; exit 7",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out-x\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // The command runs in the peer's environment, in its home directory (as with ssh): not in
    // the caller's environment nor its working directory.
    let o = a
        .cmd(&[
            "exec",
            "beta",
            "--",
            "sh",
            "-c",
            "echo mark=$LOOPSY_TEST_MARK; pwd",
        ])
        .env("LOOPSY_TEST_MARK", "from-the-caller")
        .current_dir(a.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let home = std::env::var("HOME").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("mark=\n{home}\n")
    );

    // Both see each other online with an RTT, via the mesh status.
    wait_until("RTT measured", Duration::from_secs(15), || {
        peers(&a)[0]["rtt_ms"].is_number()
    });
    let st: Value = serde_json::from_str(&a.ok(&["mesh", "status", "--json"])).unwrap();
    assert_eq!(st["peers"][0]["online"], true);
    assert_eq!(st["peers"][0]["path"], "direct");

    // Both trust files are private.
    for h in [&a, &b] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(h.path().join("trust.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn wrong_codes_fail_and_the_attempt_limit_holds() {
    let a = started("alpha");
    let b = started("beta");
    let (mut child, _out, code, addr) = open_window(&a);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..3 {
        let err = b.fails(&["pair", &addr, "--code", wrong]);
        assert!(err.contains("wrong pairing code"), "{err}");
    }
    // Out of attempts: even the right code is refused now.
    let err = b.fails(&["pair", &addr, "--code", &code]);
    assert!(
        err.contains("too many wrong codes") || err.contains("not waiting to pair"),
        "{err}"
    );
    assert!(peers(&a).is_empty() && peers(&b).is_empty());
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the waiting `loopsy pair` reports the failure"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("too many wrong codes"), "{err}");

    // Malformed codes never reach the wire.
    let err = b.fails(&["pair", &addr, "--code", "12ab"]);
    assert!(err.contains("6 digits"), "{err}");
}

#[test]
fn no_window_means_no_pairing() {
    let a = started("alpha");
    let b = started("beta");
    let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_string();
    let err = b.fails(&["pair", &addr, "--code", "123456"]);
    assert!(
        err.contains("not waiting to pair") || err.contains("unreachable"),
        "{err}"
    );
    let err = b.fails(&["exec", "alpha", "--", "true"]);
    assert!(err.contains("no trusted peer \"alpha\""), "{err}");
}

#[test]
fn capabilities_and_removal_take_effect_at_once() {
    let a = started("alpha");
    let b = started("beta");
    pair(&a, &b);
    b.ok(&["exec", "alpha", "--", "true"]);

    a.ok(&["peers", "revoke", "beta", "exec"]);
    let err = b.fails(&["exec", "alpha", "--", "true"]);
    assert!(err.contains("exec") && err.contains("capability"), "{err}");
    // Through the agent surface too, the refusal says whose policy and what to run where.
    let mut m = b.mcp();
    m.initialize();
    let r = m.call_tool(
        "loopsy_execute",
        serde_json::json!({"peer": "alpha", "command": "true"}),
    );
    let msg = r["result"]["structuredContent"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("alpha's policy")
            && msg.contains("on alpha, run `loopsy peers grant beta exec`"),
        "{r}"
    );
    drop(m);
    a.ok(&["peers", "grant", "beta", "exec"]);
    b.ok(&["exec", "alpha", "--", "true"]);
    let err = a.fails(&["peers", "grant", "beta", "root"]);
    assert!(
        err.contains("unknown capability") && err.contains("files-write"),
        "{err}"
    );

    a.ok(&["peers", "rename", "beta", "kai"]);
    assert_eq!(peers(&a)[0]["name"], "kai");

    a.ok(&["peers", "remove", "kai"]);
    assert!(peers(&a).is_empty());
    let err = b.fails(&["exec", "alpha", "--", "true"]);
    assert!(
        err.contains("does not trust this machine")
            || err.contains("no longer trust this machine")
            || err.contains("unreachable"),
        "{err}"
    );
}

#[test]
fn jobs_time_out_and_can_be_inspected_remotely() {
    let a = started("alpha");
    let b = started("beta");
    pair(&a, &b);
    let o = b
        .cmd(&["exec", "alpha", "--timeout", "1", "--", "sleep", "30"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(137));
    assert!(String::from_utf8_lossy(&o.stderr).contains("timeout"));

    // Through the agent surface: execute without waiting, then wait, page and list.
    let mut mcp = b.mcp();
    mcp.initialize();
    let r = mcp.call_tool(
        "loopsy_execute",
        serde_json::json!({"peer": "alpha", "command": "sleep 1; seq 1 5000", "wait_s": 0}),
    );
    let job = &r["result"]["structuredContent"]["job"];
    assert_eq!(job["state"], "running", "{r}");
    let id = job["id"].as_str().unwrap().to_string();
    let w = mcp.call_tool(
        "loopsy_job_wait",
        serde_json::json!({"peer": "alpha", "job_id": id, "timeout_s": 30}),
    );
    assert_eq!(w["result"]["structuredContent"]["exit_code"], 0, "{w}");
    let p = mcp.call_tool(
        "loopsy_job_output",
        serde_json::json!({"peer": "alpha", "job_id": id, "stream": "stdout", "offset": 0, "limit": 10}),
    );
    let page = &p["result"]["structuredContent"];
    assert_eq!(page["data"], "1\n2\n3\n4\n5\n");
    assert_eq!(page["next_offset"], 10);
    let l = mcp.call_tool("loopsy_job_list", serde_json::json!({"peer": "alpha"}));
    assert_eq!(
        l["result"]["structuredContent"]["jobs"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{l}"
    );
    // On alpha, alpha's own agent sees the jobs beta started there, as beta's.
    let mut ma = a.mcp();
    ma.initialize();
    let l = ma.call_tool("loopsy_job_list", serde_json::json!({}));
    let jobs = l["result"]["structuredContent"]["jobs"].as_array().unwrap();
    let beta_id = b.status()["peer_id"].as_str().unwrap().to_string();
    let mine = jobs
        .iter()
        .find(|j| j["id"] == id.as_str())
        .expect("listed");
    assert_eq!(mine["started_by"], format!("peer:{beta_id}"), "{l}");
    // A machine's own name runs the command here.
    assert_eq!(a.ok(&["exec", "alpha", "--", "echo", "here"]), "here\n");
    // Unknown job ids are a clear not_found.
    let n = mcp.call_tool(
        "loopsy_job_status",
        serde_json::json!({"peer": "alpha", "job_id": "job-nope"}),
    );
    assert_eq!(n["result"]["structuredContent"]["code"], "not_found", "{n}");
    // A blank peer (an unfilled template) is an error, not "run it here".
    let e = mcp.call_tool(
        "loopsy_execute",
        serde_json::json!({"peer": "", "command": "true"}),
    );
    assert_eq!(
        e["result"]["structuredContent"]["code"], "invalid_arguments",
        "{e}"
    );
    // Agents have no pairing tools.
    let tools = mcp.request("tools/list", serde_json::json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"loopsy_execute")
            && !names
                .iter()
                .any(|n| n.contains("pair") || n.contains("grant")),
        "{names:?}"
    );
}

#[test]
fn peers_reconnect_after_a_restart() {
    let a = started("alpha");
    let b = started("beta");
    pair(&a, &b);
    b.ok(&["stop"]);
    // A stop closes beta's connections (QUIC's too): alpha hears of it at once instead of
    // after QUIC's 30 s idle timeout.
    wait_until("alpha sees beta offline", Duration::from_secs(5), || {
        peers(&a)[0]["online"] == false
    });
    b.start();
    // beta redials alpha from its persisted trust list (alpha also redials beta).
    wait_until(
        "alpha sees beta online again",
        Duration::from_secs(20),
        || peers(&a)[0]["online"] == true,
    );
    a.ok(&["exec", "beta", "--", "true"]);
}

/// Every mesh TCP link, dialled or accepted, has the kernel's keepalive timer running (`tr`
/// 02 in /proc/net/tcp): that, not a frequent ping, is what notices a silently dead peer.
#[cfg(target_os = "linux")]
#[test]
fn mesh_links_are_watched_by_the_kernel() {
    let a = started("alpha");
    let b = started("beta");
    common::pair_via(&a, &b, "/tcp/");
    assert_eq!(peers(&b)[0]["transport"], "tcp");
    let port = |h: &TestHome| -> u16 {
        let st = h.status();
        let addrs = st["listen_addrs"].as_array().unwrap();
        let tcp = addrs
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
            .unwrap_or_else(|| panic!("no loopback TCP address in {st}"));
        tcp.split('/').nth(4).unwrap().parse().unwrap()
    };
    let ports = [port(&a), port(&b)];
    // (local port, remote port, timer) of each established loopback socket.
    let links = || -> Vec<(u16, u16, String)> {
        let t = std::fs::read_to_string("/proc/net/tcp").unwrap();
        t.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = |s: &str| u16::from_str_radix(s.split(':').nth(1)?, 16).ok();
                (f.get(3) == Some(&"01")).then_some(())?;
                let timer = f.get(5)?.split(':').next()?.to_string();
                Some((port(f.get(1)?)?, port(f.get(2)?)?, timer))
            })
            .filter(|(l, r, _)| ports.contains(l) || ports.contains(r))
            .collect()
    };
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        seen = links();
        if seen.len() >= 2 && seen.iter().all(|(_, _, timer)| timer == "02") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "mesh ports {ports:?}: links (local, remote, timer) {seen:?}; {}",
        a.ok(&["peers", "list"])
    );
}

#[test]
fn oversize_requests_are_refused_and_the_daemon_survives() {
    let a = started("alpha");
    let b = started("beta");
    pair(&a, &b);
    // A 2 MiB command line: over the 1 MiB RPC request cap, refused by alpha's decoder.
    let mut mcp = b.mcp();
    mcp.initialize();
    let big = format!("echo {}", "x".repeat(2 * 1024 * 1024));
    let r = mcp.call_tool(
        "loopsy_execute",
        serde_json::json!({"peer": "alpha", "command": big}),
    );
    assert_eq!(r["result"]["isError"], true);
    assert_eq!(
        r["result"]["structuredContent"]["code"],
        "unavailable",
        "{}",
        &r.to_string()[..300]
    );
    // Both daemons are fine and the peers still talk.
    b.ok(&["exec", "alpha", "--", "true"]);
    a.ok(&["exec", "beta", "--", "true"]);
}

#[test]
fn a_third_machine_meets_the_others_through_an_introduction() {
    let a = started("alpha");
    let b = started("beta");
    let c = started("gamma");
    pair(&a, &b);
    pair(&a, &c); // gamma pairs only with alpha
    // beta and gamma learn of each other from alpha, then connect directly.
    wait_until("gamma trusts beta", Duration::from_secs(15), || {
        peers(&c)
            .iter()
            .any(|p| p["name"] == "beta" && p["online"] == true)
    });
    wait_until("beta trusts gamma", Duration::from_secs(15), || {
        peers(&b)
            .iter()
            .any(|p| p["name"] == "gamma" && p["online"] == true)
    });
    assert_eq!(c.ok(&["exec", "beta", "--", "printf", "hi"]), "hi");
    assert_eq!(b.ok(&["exec", "gamma", "--", "printf", "ho"]), "ho");
    // Removal, here only and mesh-wide: tests/members.rs.
}

#[test]
fn a_gigabyte_of_output_streams_whole_while_the_daemon_keeps_only_its_cap() {
    let a = started("alpha");
    let b = started("beta");
    pair(&a, &b);
    let pid = a.pid();
    let hwm = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = hwm();
    // 1 GiB on stdout: the CLI streams every byte (nothing cut, nothing added); alpha's job
    // keeps only 256 KiB of it (the client has had it all) and counts the rest.
    let mut child = b
        .cmd(&[
            "exec",
            "alpha",
            "-v",
            "--",
            "head",
            "-c",
            "1073741824",
            "/dev/zero",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut total, mut nonzero) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        nonzero += buf[..n].iter().filter(|&&x| x != 0).count() as u64;
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        (total, nonzero),
        (1 << 30, 0),
        "the stream was cut or altered"
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let job = err
        .split_whitespace()
        .find_map(|w| w.strip_prefix("job-"))
        .map(|id| format!("job-{id}"))
        .unwrap_or_else(|| panic!("no job id in {err:?}"));
    let mut m = b.mcp();
    m.initialize();
    let info = common::tool(
        &mut m,
        "loopsy_job_status",
        serde_json::json!({"peer": "alpha", "job_id": job}),
    );
    assert_eq!(
        (&info["stdout_bytes"], &info["stdout_truncated"]),
        (&Value::from(1u64 << 30), &Value::Bool(true)),
        "{info}"
    );
    let page = common::tool(
        &mut m,
        "loopsy_job_output",
        serde_json::json!({"peer": "alpha", "job_id": job, "stream": "stdout", "limit": 1}),
    );
    assert_eq!(page["kept"], 256 * 1024, "{page}");
    // Growth is bounded by the cap and the pipe's small queue, nowhere near the 1 GiB the
    // job printed.
    let grown = hwm().saturating_sub(before);
    assert!(
        grown < 128 * 1024,
        "alpha's peak RSS grew by {grown} KiB while a job printed 1 GiB"
    );
}

#[test]
fn peers_talk_over_quic_too() {
    let a = started("alpha");
    let b = started("beta");
    // Pair through alpha's QUIC address: the connection (and the jobs after it) use QUIC.
    common::pair_via(&a, &b, "/quic-v1/");
    let p = &peers(&b)[0];
    assert_eq!(p["transport"], "quic", "{p}");
    assert_eq!(
        b.ok(&["exec", "alpha", "--", "printf", "over-quic"]),
        "over-quic"
    );
}

#[test]
fn a_killed_pair_command_closes_its_window() {
    let a = started("alpha");
    let b = started("beta");
    let (mut child, out, code, addr) = open_window(&a);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(out);
    // The code dies with the session that showed it.
    wait_until("the window to close", Duration::from_secs(10), || {
        a.ok(&["logs", "-n", "500"])
            .contains("pairing window closed")
    });
    let err = b.fails(&["pair", &addr, "--code", &code]);
    assert!(err.contains("not waiting to pair"), "{err}");
    assert!(peers(&a).is_empty());
}

#[test]
fn peers_add_says_whether_the_peer_answered() {
    let a = started("alpha");
    let b = started("beta");
    pair(&a, &b);
    // beta comes back on another port: alpha cannot find it until told where.
    b.ok(&["stop"]);
    b.start();
    let addr = b.status()["listen_addrs"][0].as_str().unwrap().to_string();
    let out = a.ok(&["peers", "add", &addr]);
    assert!(out.contains("connected to beta"), "{out}");
    assert!(
        peers(&a)
            .iter()
            .any(|p| p["name"] == "beta" && p["online"] == true)
    );
    // Nothing listens there: a clear failure (not "✓ dialling"), within seconds.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = b.status()["peer_id"].as_str().unwrap().to_string();
    b.ok(&["stop"]);
    for bad in [
        format!("/ip4/127.0.0.1/tcp/{closed}/p2p/{id}"),
        format!("127.0.0.1:{closed}"),
    ] {
        let t0 = std::time::Instant::now();
        let err = a.fails(&["peers", "add", &bad]);
        assert!(err.contains("no trusted peer answered"), "{bad}: {err}");
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "{bad}: {:?}",
            t0.elapsed()
        );
    }
}
