//! Messaging benchmarks (`scripts/bench`): two daemons on loopback, paired.
//! 1. send on A → B's blocked `loopsy_wait_for_message` returns, at 200 messages/s;
//! 2. sustained messages/s A→B with delivery acks (4 agents sending at once);
//! 3. RSS of A's daemon with 10,000 messages waiting in its outbox (B stopped);
//! 4. those 10,000 delivered with acks once B starts: the daemons' own rate, no agents in it.
//!
//! Baseline, same disk, same run: the durability floor of one message, an append + fdatasync
//! on each side. `--quick`: fewer messages.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Mcp, loopsy, ok, paired_on_loopback, pct};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn pid(home: &Path) -> u32 {
    let s: Value = serde_json::from_str(&ok(&mut loopsy(home, &["status", "--json"]))).unwrap();
    s["pid"].as_u64().unwrap() as u32
}

/// Messages to beta that are in its inbox: `delivered`, or already `read` there (a read
/// receipt may land while the bench counts).
fn delivered(m: &mut Mcp) -> u64 {
    let c = &m.tool("loopsy_check_ack", json!({"peer": "beta"}))["counts"];
    c["delivered"].as_u64().unwrap_or(0) + c["read"].as_u64().unwrap_or(0)
}

/// `agents` threads, each with its own MCP session on `home`, send `n` messages in all.
fn blast(home: &Path, agents: usize, n: usize, tag: &str) {
    let hs: Vec<_> = (0..agents)
        .map(|k| {
            let home = home.to_path_buf();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut m = Mcp::new(&home);
                for i in (k..n).step_by(agents) {
                    m.tool(
                        "loopsy_send_message",
                        json!({"to": "beta", "body": format!("{tag} {i} {}", "x".repeat(100)), "wait_s": 0}),
                    );
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (lat_n, thr_n) = if quick { (100, 5_000) } else { (500, 20_000) };
    let tmp = tempfile::Builder::new()
        .prefix("lm")
        .tempdir_in("/tmp")
        .unwrap();
    let (a, b) = &paired_on_loopback(tmp.path(), "[messages]\noutbox_max = 50000\n");
    let mut ma = Mcp::new(a);
    let mut mb = Mcp::new(b);

    // Baseline: one durable append on each side.
    let floor_file = tmp.path().join("floor");
    let mut floor: Vec<f64> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..2 {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&floor_file)
                    .unwrap();
                f.write_all(&[b'x'; 300]).unwrap();
                f.sync_data().unwrap();
            }
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    // 1. Latency at 200 messages/s: B is blocked in a wait when A sends.
    let mut lat = Vec::new();
    let period = Duration::from_millis(5);
    let mut next = Instant::now();
    for i in 0..lat_n {
        let wait_id = mb.send(
            "tools/call",
            json!({"name": "loopsy_wait_for_message", "arguments": {"timeout_s": 30}}),
        );
        // Let the wait reach the daemon before sending (it is what an idle agent does).
        std::thread::sleep(Duration::from_millis(1));
        let t0 = Instant::now();
        ma.tool(
            "loopsy_send_message",
            json!({"to": "beta", "body": format!("lat {i}"), "wait_s": 0}),
        );
        let r = loop {
            let v = mb.recv();
            if v["id"] == json!(wait_id) {
                break v;
            }
        };
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        let id = r["result"]["structuredContent"]["message"]["id"].clone();
        mb.tool("loopsy_ack_message", json!({"id": id}));
        next += period;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }

    // 2. Throughput with delivery acks: 4 agents on A send as fast as they can.
    let before = delivered(&mut ma);
    let t0 = Instant::now();
    blast(a, 4, thr_n, "thr");
    let want = before + thr_n as u64;
    while delivered(&mut ma) < want {
        std::thread::sleep(Duration::from_millis(10));
    }
    let thr_s = t0.elapsed().as_secs_f64();

    // 3. Outbox memory: B offline, 10,000 messages waiting on A.
    drop(mb);
    ok(&mut loopsy(b, &["stop"]));
    let a_pid = pid(a);
    let idle = rss_kib(a_pid);
    blast(a, 4, 10_000, "outbox");
    let pending = ma.tool("loopsy_check_ack", json!({"peer": "beta"}))["counts"]["pending"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(pending, 10_000);
    let full = rss_kib(a_pid);

    // 4. Daemon to daemon: B comes back and A's 10,000 waiting messages move to B's inbox,
    // each acknowledged (timed from B's daemon being ready to the last delivery ack).
    let before = delivered(&mut ma);
    let t0 = Instant::now();
    ok(&mut loopsy(b, &["start"]));
    let b_up = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    while delivered(&mut ma) < before + 10_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain_s = t1.elapsed().as_secs_f64();
    drop(ma);
    ok(&mut loopsy(a, &["stop"]));
    ok(&mut loopsy(b, &["stop"]));

    let fl = pct(&mut floor, 0.5);
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!(
        "\n| Messages (two daemons on loopback) | loopsy | baseline | ratio | target | original (TS, quoted) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| send → recipient's wait returns, p50 / p99 (of {lat_n}, 200 msg/s) | {p50:.2} / {p99:.2} ms | {fl:.2} ms (2 × append+fdatasync) | {:.1}× | ≤ 5 / ≤ 25 ms | 5–10 s (agents poll) |",
        p50 / fl
    );
    println!(
        "| sustained A→B with delivery acks, 4 senders ({thr_n} msgs) | {:.0} msg/s | — | — | ≥ 2,000 msg/s | — |",
        thr_n as f64 / thr_s
    );
    println!(
        "| daemon to daemon: 10,000 waiting messages into B's inbox with delivery acks, once B is up | {:.0} msg/s ({drain_s:.2} s; B started in {b_up:.2} s) | — | — | ≥ 2,000 msg/s | — |",
        10_000.0 / drain_s
    );
    println!(
        "| daemon RSS with 10,000 messages in the outbox | {:.1} MiB (idle {:.1} MiB, +{:.1} MiB) | — | — | ≤ 20 MB | — |",
        full as f64 / 1024.0,
        idle as f64 / 1024.0,
        (full.saturating_sub(idle)) as f64 / 1024.0
    );
}
