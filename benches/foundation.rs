//! Foundation benchmarks (`scripts/bench foundation`): daemon cold start to a served MCP call,
//! idle RSS, `loopsy mcp` spawn → initialized → tools/list, and the `loopsy_status` round
//! trip — each beside the same measurement of the official Python MCP SDK's stdio server
//! (a typical interpreted MCP server) taken in the same run, so the ratios are like for like.
//!
//! Idle RSS and wake-ups are taken three ways: no peers on loopback, two peers connected
//! (three daemons in a full mesh), and no peers in LAN mode (mDNS on, as a user's daemon
//! starts).
//!
//! Flags: `--quick` (5 s idle instead of 60 s, fewer runs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_loopsy");

const PY_SERVER: &str = r#"
from mcp.server.mcpserver import MCPServer
app = MCPServer("baseline")
@app.tool()
def status() -> dict:
    """A small status object, like loopsy_status."""
    return {"name": "baseline", "version": "0", "listen_addrs": ["/ip4/127.0.0.1/tcp/1"]}
app.run()
"#;

struct Rpc<R: BufRead, W: Write> {
    r: R,
    w: W,
    id: u64,
}

impl<R: BufRead, W: Write> Rpc<R, W> {
    fn new(r: R, w: W) -> Self {
        Self { r, w, id: 0 }
    }
    fn notify(&mut self, method: &str) {
        writeln!(self.w, "{}", json!({"jsonrpc":"2.0","method":method})).unwrap();
        self.w.flush().unwrap();
    }
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let msg = json!({"jsonrpc":"2.0","id":self.id,"method":method,"params":params});
        writeln!(self.w, "{msg}").unwrap();
        self.w.flush().unwrap();
        loop {
            let mut line = String::new();
            assert!(self.r.read_line(&mut line).unwrap() > 0, "server closed");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == json!(self.id) {
                assert!(v.get("error").is_none(), "{v}");
                return v;
            }
        }
    }
    fn initialize(&mut self) {
        self.call(
            "initialize",
            json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}),
        );
        self.notify("notifications/initialized");
    }
    fn tool(&mut self, name: &str) -> Value {
        self.call("tools/call", json!({"name": name, "arguments": {}}))
    }
}

fn python() -> PathBuf {
    std::env::var_os("LOOPSY_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn spawn_stdio(
    cmd: &mut Command,
) -> (
    Child,
    Rpc<BufReader<std::process::ChildStdout>, std::process::ChildStdin>,
) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let w = child.stdin.take().unwrap();
    let r = BufReader::new(child.stdout.take().unwrap());
    (child, Rpc::new(r, w))
}

fn py_cmd() -> Command {
    let mut c = Command::new(python());
    c.arg("-c").arg(PY_SERVER);
    c
}

fn loopsy(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("LOOPSY_HOME");
    c
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Context switches so far of each of `pid`'s threads (by thread id): each is a wake-up (a
/// thread that slept and ran again), what a laptop's battery pays for an idle process.
fn switches(pid: u32) -> std::collections::HashMap<String, u64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?;
            let s = std::fs::read_to_string(t.path().join("status")).ok()?;
            let n = s
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .sum();
            Some((t.file_name().to_string_lossy().into_owned(), n))
        })
        .collect()
}

/// Wake-ups between two [`switches`] readings. A thread that ended between them (a blocking
/// pool thread retiring) takes its count with it and is left out: a slight undercount.
fn wakeups_between(
    before: &std::collections::HashMap<String, u64>,
    after: &std::collections::HashMap<String, u64>,
) -> u64 {
    after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A new home at `dir` named `name`, `[mesh]` set to `mesh`, its daemon started: the home
/// and the daemon's pid.
fn started(dir: &Path, name: &str, mesh: &str) -> (PathBuf, u32) {
    common::ok(&mut loopsy(dir, &["init", "--name", name]));
    std::fs::write(
        dir.join("config.toml"),
        format!("[node]\nname = \"{name}\"\n[mesh]\n{mesh}"),
    )
    .unwrap();
    common::ok(&mut loopsy(dir, &["start"]));
    let pid = std::fs::read_to_string(dir.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (dir.to_path_buf(), pid)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Daemon process start → first `loopsy_status` answered on the control socket.
fn loopsy_cold_start(home: &Path) -> (f64, Child) {
    let sock = home.join("loopsy.sock");
    let t0 = Instant::now();
    let child = loopsy(home, &["daemon", "--port", "0", "--local-only"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stream = loop {
        if let Ok(s) = loopsy_sys::ipc::connect_blocking(&sock) {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let mut w = stream.try_clone().unwrap();
    w.write_all(b"LOOPSY/1 mcp\n").unwrap();
    let mut r = BufReader::new(stream);
    let mut ok = String::new();
    r.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK"), "{ok}");
    let mut rpc = Rpc::new(r, w);
    rpc.initialize();
    rpc.tool("loopsy_status");
    (ms(t0.elapsed()), child)
}

/// Cold against cold, whole process against whole process: nothing of loopsy running,
/// `loopsy mcp` spawned as an agent would (it starts the daemon) → initialized → a tool call
/// answered. The baseline's [`python_cold_start`] is the same path for the Python server.
fn loopsy_bridge_cold_start(home: &Path) -> f64 {
    let t0 = Instant::now();
    let (mut child, mut rpc) = spawn_stdio(&mut loopsy(home, &["mcp"]));
    rpc.initialize();
    rpc.tool("loopsy_status");
    let t = ms(t0.elapsed());
    drop(rpc);
    let _ = child.wait();
    assert!(loopsy(home, &["stop"]).output().unwrap().status.success());
    t
}

fn python_cold_start() -> f64 {
    let t0 = Instant::now();
    let (mut child, mut rpc) = spawn_stdio(&mut py_cmd());
    rpc.initialize();
    rpc.tool("status");
    let t = ms(t0.elapsed());
    drop(rpc);
    let _ = child.wait();
    t
}

fn spawn_to_list(cmd: &mut Command) -> f64 {
    let t0 = Instant::now();
    let (mut child, mut rpc) = spawn_stdio(cmd);
    rpc.initialize();
    rpc.call("tools/list", json!({}));
    let t = ms(t0.elapsed());
    drop(rpc);
    let _ = child.wait();
    t
}

fn round_trips(rpc: &mut Rpc<impl BufRead, impl Write>, tool: Option<&str>, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            match tool {
                Some(t) => {
                    rpc.tool(t);
                }
                None => {
                    rpc.call("ping", json!({}));
                }
            }
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn row(what: &str, loopsy: f64, base: f64, unit: &str, target: &str) {
    println!(
        "| {what} | {loopsy:.3} {unit} | {base:.3} {unit} | {:.3}× | {target} |",
        loopsy / base
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (cold_runs, spawn_runs, rtt_n, idle) = if quick {
        (5, 10, 500, Duration::from_secs(5))
    } else {
        (15, 30, 3000, Duration::from_secs(60))
    };
    assert!(
        python().exists(),
        "{} missing: run scripts/setup-test",
        python().display()
    );

    let tmp = tempfile::Builder::new()
        .prefix("lb")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    assert!(
        loopsy(&home, &["init", "--name", "bench"])
            .output()
            .unwrap()
            .status
            .success()
    );

    // 1. Cold start to a served call: the whole `loopsy mcp` process starting the daemon, like
    // for like with the Python server's process; then the daemon alone (its own start-up).
    std::fs::write(
        home.join("config.toml"),
        "[node]\nname = \"bench\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    let mut bridge_cold: Vec<f64> = (0..cold_runs)
        .map(|_| loopsy_bridge_cold_start(&home))
        .collect();
    let mut cold = Vec::new();
    let mut daemon = None;
    for i in 0..cold_runs {
        let (t, mut child) = loopsy_cold_start(&home);
        cold.push(t);
        if i + 1 == cold_runs {
            daemon = Some(child);
        } else {
            assert!(loopsy(&home, &["stop"]).output().unwrap().status.success());
            let _ = child.wait();
        }
    }
    let mut py_cold: Vec<f64> = (0..cold_runs.min(8)).map(|_| python_cold_start()).collect();

    // 2. `loopsy mcp` spawn → initialized → tools/list (daemon running).
    let mut spawn: Vec<f64> = (0..spawn_runs)
        .map(|_| spawn_to_list(&mut loopsy(&home, &["mcp"])))
        .collect();
    let mut py_spawn: Vec<f64> = (0..spawn_runs.min(8))
        .map(|_| spawn_to_list(&mut py_cmd()))
        .collect();

    // 3. Round trips through one bridge session.
    let (mut bridge, mut rpc) = spawn_stdio(&mut loopsy(&home, &["mcp"]));
    rpc.initialize();
    round_trips(&mut rpc, Some("loopsy_status"), 50);
    let mut status = round_trips(&mut rpc, Some("loopsy_status"), rtt_n);
    let mut ping = round_trips(&mut rpc, None, rtt_n);
    drop(rpc);
    let _ = bridge.wait();
    // The same calls straight on the control socket, to isolate what the bridge adds.
    let stream = loopsy_sys::ipc::connect_blocking(&home.join("loopsy.sock")).unwrap();
    let mut w = stream.try_clone().unwrap();
    w.write_all(b"LOOPSY/1 mcp\n").unwrap();
    let mut r = BufReader::new(stream);
    let mut ok = String::new();
    r.read_line(&mut ok).unwrap();
    let mut direct_rpc = Rpc::new(r, w);
    direct_rpc.initialize();
    round_trips(&mut direct_rpc, Some("loopsy_status"), 50);
    let mut direct = round_trips(&mut direct_rpc, Some("loopsy_status"), rtt_n);
    drop(direct_rpc);
    let (mut py, mut prpc) = spawn_stdio(&mut py_cmd());
    prpc.initialize();
    round_trips(&mut prpc, Some("status"), 50);
    let mut py_status = round_trips(&mut prpc, Some("status"), rtt_n.min(1000));

    // 4. Idle RSS and wake-ups (no peers, no phone; the bridge and the baseline connected).
    let mut daemon = daemon.unwrap();
    let (d0, p0, t0) = (switches(daemon.id()), switches(py.id()), Instant::now());
    std::thread::sleep(idle);
    let secs = t0.elapsed().as_secs_f64();
    let wakes = wakeups_between(&d0, &switches(daemon.id())) as f64 / secs;
    let py_wakes = wakeups_between(&p0, &switches(py.id())) as f64 / secs;
    let rss = rss_kib(daemon.id()) as f64 / 1024.0;
    let py_rss = rss_kib(py.id()) as f64 / 1024.0;
    drop(prpc);
    let _ = py.wait();

    // 5. The same with peers connected: two more daemons, both paired with this one (the
    // second meets the first through this one's introduction), so each of the three has two
    // peers; all left alone (keep-alives, gossip and context upkeep are what remains). After a
    // settle, so pairing, introductions, the first context syncs and identify are over.
    let peers: Vec<(PathBuf, u32)> = ["p", "q"]
        .iter()
        .map(|n| {
            let p = started(
                &tmp.path().join(n),
                &format!("peer-{n}"),
                "listen_port = 0\nlocal_only = true\n",
            );
            common::pair(&home, &p.0);
            p
        })
        .collect();
    std::thread::sleep(if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(20)
    });
    let pids = [daemon.id(), peers[0].1, peers[1].1];
    let (before, t0) = (pids.map(switches), Instant::now());
    std::thread::sleep(idle);
    let secs = t0.elapsed().as_secs_f64();
    let peer_wakes: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(pid, b)| wakeups_between(b, &switches(*pid)) as f64 / secs)
        .collect();
    let peer_rss: Vec<f64> = pids
        .iter()
        .map(|pid| rss_kib(*pid) as f64 / 1024.0)
        .collect();
    for (p, _) in &peers {
        let listed = String::from_utf8(
            loopsy(p, &["peers", "list", "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let online = serde_json::from_str::<Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["online"] == true)
            .count();
        assert_eq!(online, 2, "a full mesh of three: {listed}");
    }
    for (p, _) in &peers {
        common::ok(&mut loopsy(p, &["stop"]));
    }
    assert!(loopsy(&home, &["stop"]).output().unwrap().status.success());
    let _ = daemon.wait();

    // 6. No peers, as a user's daemon starts by default: on the LAN, mDNS on. A home of its
    // own (the first one now trusts a peer that is gone, and would redial it).
    let (lan, lan_pid) = started(&tmp.path().join("lan"), "lan", "listen_port = 0\n");
    std::thread::sleep(Duration::from_secs(if quick { 2 } else { 15 }));
    let (l0, t0) = (switches(lan_pid), Instant::now());
    std::thread::sleep(idle);
    let lan_wakes = wakeups_between(&l0, &switches(lan_pid)) as f64 / t0.elapsed().as_secs_f64();
    let lan_rss = rss_kib(lan_pid) as f64 / 1024.0;
    common::ok(&mut loopsy(&lan, &["stop"]));

    println!(
        "\n## foundation ({}; baseline: Python `mcp` SDK stdio server, same run)\n",
        if quick { "quick" } else { "full" }
    );
    println!("| measure | loopsy | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    row(
        "cold start, whole process: `loopsy mcp` with nothing running (it starts the daemon) → initialized → a tool call answered, against the Python server's process the same way (median)",
        median(&mut bridge_cold),
        median(&mut py_cold),
        "ms",
        "≤ 50 ms",
    );
    row(
        "warm: `loopsy mcp` spawn → initialized → tools/list with the daemon running, against the Python server's only way, a new process (median)",
        median(&mut spawn),
        median(&mut py_spawn),
        "ms",
        "≤ 30 ms",
    );
    row(
        "tool call round trip (median)",
        median(&mut status),
        median(&mut py_status),
        "ms",
        "≤ 1 ms",
    );
    row(
        "tool call round trip (p99)",
        pct(&mut status, 0.99),
        pct(&mut py_status, 0.99),
        "ms",
        "",
    );
    row(
        &format!("idle RSS after {}s", idle.as_secs()),
        rss,
        py_rss,
        "MiB",
        "≤ 15 MiB",
    );
    row(
        &format!("idle wake-ups/s over {}s, no peers", idle.as_secs()),
        wakes,
        py_wakes,
        "/s",
        "≤ 1 /s",
    );
    let list = |v: &[f64], unit: &str| {
        v.iter()
            .map(|x| format!("{x:.2} {unit}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| idle wake-ups/s over {}s, two peers connected (each of three daemons in a full mesh) | {} | — | — | ≤ 2 /s |",
        idle.as_secs(),
        list(&peer_wakes, "/s"),
    );
    println!(
        "| idle RSS after {}s, two peers connected (each) | {} | — | — | ≤ 15 MiB |",
        idle.as_secs(),
        list(&peer_rss, "MiB"),
    );
    println!(
        "| idle wake-ups/s over {}s, no peers, LAN mode (mDNS on, the default) | {lan_wakes:.2} /s | — | — | ≤ 1 /s |",
        idle.as_secs()
    );
    println!(
        "| idle RSS after {}s, no peers, LAN mode | {lan_rss:.1} MiB | — | — | ≤ 15 MiB |",
        idle.as_secs()
    );
    println!(
        "\nThe daemon alone, process start → first `loopsy_status` on its control socket: median {:.3} ms.",
        median(&mut cold)
    );
    println!(
        "\nMCP `ping` through the bridge (protocol floor): median {:.3} ms; loopsy_status adds {:.3} ms over it.",
        median(&mut ping),
        median(&mut status) - median(&mut ping)
    );
    println!(
        "loopsy_status straight on the control socket: median {:.3} ms, so the `loopsy mcp` bridge adds {:.3} ms (target < 5 ms).",
        median(&mut direct),
        median(&mut status) - median(&mut direct)
    );
}
