//! Terminal-session benchmarks (`scripts/bench`): output throughput through a session to an
//! attached client against a bare PTY (`script`), keystroke-to-echo latency against a bare PTY,
//! attach-to-first-screen with 2 MiB of scrollback, and the memory of 100 idle sessions.
//! `--quick`: 20 MiB instead of 200 MiB, fewer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loopsy_term::proto::{Kind, read_frame, write_frame};
use serde_json::json;

mod common;

use common::{Mcp, loopsy, median, ok};

/// Start `sh -c script` in an 80x24 session; its id and host pid.
fn start(mcp: &mut Mcp, script: &str) -> (String, u64) {
    let s = mcp.tool(
        "loopsy_session_start",
        json!({"kind":"custom","command":"/bin/sh","args":["-c", script],"cols":80,"rows":24}),
    );
    (
        s["id"].as_str().unwrap().to_string(),
        s["host_pid"].as_u64().unwrap(),
    )
}

fn status_kib(pid: u64, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn write_lines(path: &Path, bytes: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let line: Vec<u8> = (0..79)
        .map(|i| b'a' + (i % 26) as u8)
        .chain([b'\n'])
        .collect();
    for _ in 0..bytes / 80 {
        f.write_all(&line).unwrap();
    }
}

/// Read frames until `marker` shows up in the output; returns the bytes seen.
/// Output bytes received until `marker` shows, and how many `Screen` frames came instead of
/// output the host skipped for this client (a client that lags gets a fresh screen, not
/// every byte: then it did not receive what `script` copies, and the row says so).
async fn until(rx: &mut loopsy_term::client::Rx, marker: &[u8]) -> (u64, u64) {
    let mut tail: Vec<u8> = Vec::new();
    let mut n = 0u64;
    let mut screens = 0u64;
    loop {
        let f = read_frame(rx).await.unwrap().expect("host closed");
        if f.kind == Kind::Screen {
            screens += 1;
            tail.extend_from_slice(&f.data);
        }
        if f.kind != Kind::Output && f.kind != Kind::Screen {
            continue;
        }
        if f.kind == Kind::Output {
            n += f.data.len() as u64;
            tail.extend_from_slice(&f.data);
        }
        n += f.data.len() as u64;
        tail.extend_from_slice(&f.data);
        if tail.windows(marker.len()).any(|w| w == marker) {
            return (n, screens);
        }
        let keep = tail.len().saturating_sub(marker.len());
        tail.drain(..keep);
    }
}

fn bare_pty_echo_latency(runs: usize) -> Vec<f64> {
    use portable_pty::CommandBuilder;
    let pair = common::pty_80x24();
    let mut child = pair
        .slave
        .spawn_command(CommandBuilder::new("cat"))
        .unwrap();
    drop(pair.slave);
    let mut r = pair.master.try_clone_reader().unwrap();
    let mut w = pair.master.take_writer().unwrap();
    let mut buf = [0u8; 256];
    let mut out = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        w.write_all(b"x").unwrap();
        w.flush().unwrap();
        loop {
            let n = r.read(&mut buf).unwrap();
            if buf[..n].contains(&b'x') {
                break;
            }
        }
        out.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let _ = child.kill();
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (mib, runs) = if quick { (20u64, 100) } else { (200u64, 500) };
    let tmp = tempfile::Builder::new()
        .prefix("ls")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    ok(&mut loopsy(&home, &["init", "--name", "bench"]));
    std::fs::write(
        home.join("config.toml"),
        "[node]\nname = \"bench\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    ok(&mut loopsy(&home, &["start"]));
    let daemon_pid: u64 = std::fs::read_to_string(home.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut mcp = Mcp::new(&home);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = |id: &str| home.join("sessions").join(id).join("host.sock");

    // 1. Output throughput: cat a file through a session to one attached client, against the
    //    same cat under `script` (a bare PTY whose output is copied to a pipe).
    let flood = tmp.path().join("flood.txt");
    write_lines(&flood, mib << 20);
    let t0 = Instant::now();
    let st = Command::new("script")
        .args(["-qfec", &format!("cat {}", flood.display()), "/dev/null"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let base_s = t0.elapsed().as_secs_f64();
    let (id, _) = start(
        &mut mcp,
        &format!("read go; cat {}; echo END-OF-FLOOD", flood.display()),
    );
    let (loopsy_s, (flood_bytes, flood_screens)) = rt.block_on(async {
        let mut a = loopsy_term::client::attach(&sock(&id), 80, 24)
            .await
            .unwrap();
        let t0 = Instant::now();
        write_frame(&mut a.tx, Kind::Input, b"go\r").await.unwrap();
        let got = until(&mut a.rx, b"END-OF-FLOOD").await;
        (t0.elapsed().as_secs_f64(), got)
    });

    // 2. Keystroke to echo: one byte into `cat` through a local attach, against a bare PTY.
    let (id, _) = start(&mut mcp, "exec cat");
    let mut through = rt.block_on(async {
        let mut a = loopsy_term::client::attach(&sock(&id), 80, 24)
            .await
            .unwrap();
        let mut v = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            write_frame(&mut a.tx, Kind::Input, b"x").await.unwrap();
            until(&mut a.rx, b"x").await;
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        v
    });
    let mut bare = bare_pty_echo_latency(runs);

    // 3. Attach to first screen with the 2 MiB scrollback ring full.
    let big = tmp.path().join("big.txt");
    write_lines(&big, 3 << 20);
    let (id, _) = start(
        &mut mcp,
        &format!("cat {}; echo READY; exec sleep 3600", big.display()),
    );
    mcp.tool(
        "loopsy_session_wait",
        json!({"id": id, "pattern": "READY", "timeout_s": 300}),
    );
    let mut first = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..50 {
            let (c, r) = if i % 2 == 0 { (80, 24) } else { (132, 43) };
            let t0 = Instant::now();
            let mut a = loopsy_term::client::attach(&sock(&id), c, r).await.unwrap();
            loop {
                let f = read_frame(&mut a.rx).await.unwrap().unwrap();
                if f.kind == Kind::Output {
                    break;
                }
            }
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        v
    });

    // 4. 100 idle sessions.
    let daemon_before = status_kib(daemon_pid, "status", "VmRSS:");
    let mut hosts = Vec::new();
    for _ in 0..100 {
        hosts.push(start(&mut mcp, "exec sleep 3600").1);
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss: u64 = hosts
        .iter()
        .map(|p| status_kib(*p, "status", "VmRSS:"))
        .sum();
    let pss: u64 = hosts
        .iter()
        .map(|p| status_kib(*p, "smaps_rollup", "Pss:"))
        .sum();
    let daemon_after = status_kib(daemon_pid, "status", "VmRSS:");
    let list_t0 = Instant::now();
    let listed = mcp.tool("loopsy_session_list", json!({}));
    let list_ms = list_t0.elapsed().as_secs_f64() * 1e3;
    assert!(listed["sessions"].as_array().unwrap().len() >= 100);

    drop(mcp);
    ok(&mut loopsy(&home, &["stop"]));
    for p in hosts {
        let _ = Command::new("kill").arg(p.to_string()).status();
    }
    let _ = Command::new("pkill")
        .args(["-f", &format!("session-host --sessions {}", home.display())])
        .status();

    let mibf = mib as f64;
    let flood_size = std::fs::metadata(&flood).map(|m| m.len()).unwrap_or(0);
    let delivered = if flood_screens == 0 && flood_bytes >= flood_size {
        format!(
            "every byte delivered ({:.1} MiB)",
            flood_bytes as f64 / 1048576.0
        )
    } else {
        format!(
            "**not like for like**: {:.1} MiB reached the client for {:.1} MiB printed; the host skipped the rest for it (a client that falls behind gets a fresh screen, {flood_screens} as `Screen` frames, the others as output)",
            flood_bytes as f64 / 1048576.0,
            flood_size as f64 / 1048576.0
        )
    };
    println!(
        "\n## sessions ({}; baselines: a bare PTY in the same run)\n",
        if quick { "quick" } else { "full" }
    );
    println!("| measure | loopsy | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| `cat` {mib} MiB through a session to one attached client; {delivered} | {:.1} MiB/s ({loopsy_s:.1} s) | {:.1} MiB/s (`script`, {base_s:.1} s, every byte) | {:.2}× | ≥ 0.8× tmux |",
        mibf / loopsy_s,
        mibf / base_s,
        base_s / loopsy_s
    );
    let (t, b) = (median(&mut through), median(&mut bare));
    println!(
        "| keystroke → echo, local attach (median of {runs}) | {t:.3} ms | {b:.3} ms (bare PTY) | +{:.3} ms | ≤ +1 ms |",
        t - b
    );
    println!(
        "| attach → first screen, 2 MiB scrollback (median of 50) | {:.2} ms | — | — | ≤ 20 ms |",
        median(&mut first)
    );
    println!(
        "| 100 idle sessions: per session RSS / PSS (host) + daemon growth | {:.2} / {:.2} MiB + {:.2} MiB | — | — | ≤ 5 MB each |",
        rss as f64 / 100.0 / 1024.0,
        pss as f64 / 100.0 / 1024.0,
        daemon_after.saturating_sub(daemon_before) as f64 / 100.0 / 1024.0
    );
    println!("| `loopsy_session_list` with 100+ sessions | {list_ms:.1} ms | — | — | — |");
}
