//! Phone relay benchmarks (`scripts/bench`), against the real Worker under `wrangler dev` on
//! loopback, each with its baseline from the same run: keystroke-to-echo through the relay
//! with end-to-end encryption against a direct local attach; terminal throughput through the
//! relay against a direct attach; what an idle relay link costs the daemon (RSS, wake-ups)
//! against the same daemon before it had one; and the Worker bundle's size.
//! `--quick`: 20 MiB instead of 100 MiB, fewer runs, shorter idle windows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use loopsy_term::proto::{Kind, read_frame, write_frame};
use serde_json::{Value, json};

mod common;
#[path = "../tests/common/relay.rs"]
mod relay_support;

use common::{Mcp, loopsy, median, ok, pct};
use relay_support::{PhoneConn, Wrangler};

/// Sum of context switches over the threads of `pid` (all, or those named `only`): each one
/// is a wake-up.
fn wakeups(pid: u64, only: Option<&str>) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        if let Some(name) = only
            && std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                != name
        {
            continue;
        }
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Wake-ups per second (whole process; the relay link's thread), and RSS, over an idle
/// window.
fn idle(pid: u64, secs: u64) -> (f64, f64, u64) {
    let (w0, r0) = (wakeups(pid, None), wakeups(pid, Some("loopsy-relay")));
    std::thread::sleep(Duration::from_secs(secs));
    let (w1, r1) = (wakeups(pid, None), wakeups(pid, Some("loopsy-relay")));
    (
        (w1 - w0) as f64 / secs as f64,
        (r1 - r0) as f64 / secs as f64,
        rss_kib(pid),
    )
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

async fn until(rx: &mut loopsy_term::client::Rx, marker: &[u8]) -> u64 {
    let mut tail: Vec<u8> = Vec::new();
    let mut n = 0u64;
    loop {
        let f = read_frame(rx).await.unwrap().expect("host closed");
        if f.kind != Kind::Output {
            continue;
        }
        n += f.data.len() as u64;
        tail.extend_from_slice(&f.data);
        if tail.windows(marker.len()).any(|w| w == marker) {
            return n;
        }
        let keep = tail.len().saturating_sub(marker.len());
        tail.drain(..keep);
    }
}

fn gz_len(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    enc.finish().unwrap().len()
}

/// Register a second device by hand and time 64 MiB of 64 KB frames from its socket to a
/// phone's: the Worker and Durable Object alone, with no terminal behind them.
async fn raw_relay(w: &Wrangler) -> f64 {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (s, b) =
        relay_support::http("POST", &format!("{}/v1/register", w.url()), &[], None).unwrap();
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let dev = v["device_id"].as_str().unwrap().to_string();
    let sec = v["device_secret"].as_str().unwrap().to_string();
    let (s, b) = relay_support::http(
        "POST",
        &format!("{}/v1/device/{dev}/pair", w.url()),
        &[("Authorization", &format!("Bearer {sec}"))],
        Some("{}"),
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let link = format!(
        "{}/app#pair={}.{}",
        w.url(),
        v["token"].as_str().unwrap(),
        "A".repeat(43)
    );
    let creds = relay_support::redeem(&link).await;
    let durl = format!(
        "{}/v1/device/{dev}/connect",
        w.url().replace("http://", "ws://")
    );
    let mut d = relay_support::open_ws(&durl, &format!("loopsy.v1, loopsy.bearer.{sec}"))
        .await
        .unwrap();
    let mut p = relay_support::open_ws(
        &relay_support::phone_url(&creds),
        &format!("loopsy.v1, loopsy.bearer.{}", creds.phone_secret),
    )
    .await
    .unwrap();
    let ch = loop {
        if let Some(Ok(Message::Binary(b))) = d.next().await {
            let f = loopsy_relay::Frame::decode(&b).unwrap();
            if f.kind == loopsy_relay::FrameKind::Open {
                break f.channel;
            }
        }
    };
    let size = 65000usize;
    let n = (64 << 20) / size;
    let frame = loopsy_relay::Frame::new(loopsy_relay::FrameKind::Data, ch, vec![7u8; size])
        .encode()
        .unwrap();
    let t0 = Instant::now();
    let send = async {
        for _ in 0..n {
            d.send(Message::Binary(frame.clone().into())).await.unwrap();
        }
    };
    let recv = async {
        let mut got = 0usize;
        while got < n * size {
            match tokio::time::timeout(Duration::from_secs(30), p.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => got += b.len(),
                Ok(Some(Ok(_))) => {}
                other => panic!("raw relay: {other:?}"),
            }
        }
    };
    tokio::join!(send, recv);
    (n * size) as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (mib, runs, idle_s) = if quick {
        (20u64, 100, 10)
    } else {
        (100u64, 300, 60)
    };
    let heartbeat_s = 5;
    let tmp = tempfile::Builder::new()
        .prefix("lr")
        .tempdir_in("/tmp")
        .unwrap();

    // Bundle size (what `loopsy relay deploy` uploads).
    let build = relay_support::root().join("relay/worker/build");
    let wasm_gz = gz_len(&build.join("index_bg.wasm"));
    let js_gz = gz_len(&build.join("index.js"));

    let w = Wrangler::start_with(None, false);
    let home = tmp.path().join("h");
    ok(&mut loopsy(&home, &["init", "--name", "bench"]));
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[node]\nname = \"bench\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[relay]\nheartbeat_s = {heartbeat_s}\n"
        ),
    )
    .unwrap();
    ok(&mut loopsy(&home, &["start"]));
    let pid: u64 = std::fs::read_to_string(home.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // 1. Idle cost of the relay link: the same daemon before and after it has one. The
    //    baseline comes after a first admin session (its one-time allocations are not the
    //    link's).
    for _ in 0..2 {
        let _ = loopsy(&home, &["relay", "status"]).output();
    }
    std::thread::sleep(Duration::from_secs(3));
    let (wake_before, _, rss_before) = idle(pid, idle_s);
    ok(&mut loopsy(&home, &["relay", "configure", &w.url()]));
    std::thread::sleep(Duration::from_secs(3));
    let (wake_after, link_wake, rss_after) = idle(pid, idle_s);

    // A phone, paired, and a session to drive.
    let mut mcp = Mcp::new(&home);
    let pair: Value =
        serde_json::from_str(&ok(&mut loopsy(&home, &["mobile", "pair", "--json"]))).unwrap();
    let link = pair["link"].as_str().unwrap().to_string();
    let code = pair["code"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let creds = rt.block_on(relay_support::redeem(&link));
    let sock = |id: &str| home.join("sessions").join(id).join("host.sock");
    let start = |mcp: &mut Mcp, script: &str| -> String {
        let s = mcp.tool(
            "loopsy_session_start",
            json!({"kind":"custom","command":"/bin/sh","args":["-c", script],"cols":80,"rows":24}),
        );
        s["id"].as_str().unwrap().to_string()
    };

    // 2. Keystroke to echo into `cat`: through the relay (E2E) and through a direct attach.
    let id = start(&mut mcp, "exec cat");
    let (mut relay_ms, mut connect_ms) = rt.block_on(async {
        let t0 = Instant::now();
        let mut p = PhoneConn::connect(&creds).await.unwrap();
        let w = p.hello(Some((&creds.pair_id, &code))).await.unwrap();
        assert!(
            matches!(w, loopsy_relay::app::Control::Welcome { .. }),
            "{w:?}"
        );
        let connect = t0.elapsed().as_secs_f64() * 1e3;
        p.attach(&id, 80, 24).await.unwrap();
        let mut v = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            p.input(b"x").await.unwrap();
            p.until(b"x", Duration::from_secs(10)).await.unwrap();
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        p.close().await;
        // Reconnects (new socket, new handshake, hello): what a phone pays after sleep.
        let mut c = vec![connect];
        for _ in 0..20 {
            let t0 = Instant::now();
            let mut p = PhoneConn::connect(&creds).await.unwrap();
            p.hello(None).await.unwrap();
            c.push(t0.elapsed().as_secs_f64() * 1e3);
            p.close().await;
        }
        (v, c)
    });
    let mut direct_ms = rt.block_on(async {
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

    // 3. Throughput: `cat` a file through a session, to a direct attach and to the phone.
    let flood = tmp.path().join("flood.txt");
    write_lines(&flood, mib << 20);
    let script = format!("read go; cat {}; echo END-OF-FLOOD", flood.display());
    let id = start(&mut mcp, &script);
    let direct_s = rt.block_on(async {
        let mut a = loopsy_term::client::attach(&sock(&id), 80, 24)
            .await
            .unwrap();
        let t0 = Instant::now();
        write_frame(&mut a.tx, Kind::Input, b"go\r").await.unwrap();
        until(&mut a.rx, b"END-OF-FLOOD").await;
        t0.elapsed().as_secs_f64()
    });
    let id = start(&mut mcp, &script);
    let (relay_s, delivered) = rt.block_on(async {
        let mut p = PhoneConn::connect(&creds).await.unwrap();
        p.hello(None).await.unwrap();
        p.attach(&id, 80, 24).await.unwrap();
        p.until(b"\x1b", Duration::from_secs(5)).await.ok();
        let t0 = Instant::now();
        p.input(b"go\r").await.unwrap();
        let n = p
            .until(b"END-OF-FLOOD", Duration::from_secs(600))
            .await
            .unwrap();
        (t0.elapsed().as_secs_f64(), n)
    });
    let file_mib = mib as f64;

    // 3b. The same through the relay, paced: the share of output a phone keeps up with.
    let paced = |rate: u64, mcp: &mut Mcp| -> f64 {
        let total = 40u64 << 20;
        let script = format!(
            "read go; python3 -c 'import sys,time\nline=(\"a\"*79+\"\\n\").encode()*800\nrate={rate}*1048576\nt0=time.time();n=0\nwhile n<{total}:\n sys.stdout.buffer.write(line);sys.stdout.flush();n+=len(line)\n d=n/rate-(time.time()-t0)\n if d>0: time.sleep(d)\n'; echo END-OF-FLOOD"
        );
        let id = start(mcp, &script);
        rt.block_on(async {
            let mut p = PhoneConn::connect(&creds).await.unwrap();
            p.hello(None).await.unwrap();
            p.attach(&id, 80, 24).await.unwrap();
            p.input(b"go\r").await.unwrap();
            let n = p
                .until(b"END-OF-FLOOD", Duration::from_secs(600))
                .await
                .unwrap();
            n as f64 / total as f64
        })
    };
    let paced10 = paced(10, &mut mcp);
    let paced20 = paced(20, &mut mcp);

    // 3c. The relay hop alone: 64 KB frames from a device socket to a phone socket.
    let raw_mib_s = rt.block_on(raw_relay(&w));

    let med_relay = median(&mut relay_ms);
    let med_direct = median(&mut direct_ms);
    println!(
        "\n## Phone relay (`cargo bench --bench relay`{})\n",
        if quick { " -- --quick" } else { "" }
    );
    println!(
        "Worker under `wrangler dev` (workerd) on loopback; daemon heartbeat {heartbeat_s} s.\n"
    );
    println!(
        "| measure | loopsy through the relay | baseline (same run) | ratio / delta | target |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| keystroke → echo, median (p99) | {med_relay:.2} ms ({:.2}) | direct local attach {med_direct:.2} ms ({:.2}) | +{:.2} ms | ≤ +5 ms |",
        pct(&mut relay_ms, 0.99),
        pct(&mut direct_ms, 0.99),
        med_relay - med_direct
    );
    println!(
        "| terminal output, {mib} MiB `cat` | {:.1} MiB/s ({:.1} MiB delivered) | direct attach {:.1} MiB/s | {:.2}× | ≥ 20 MiB/s |",
        file_mib / relay_s,
        delivered as f64 / (1 << 20) as f64,
        file_mib / direct_s,
        direct_s / relay_s
    );
    println!(
        "| terminal output paced at 10 / 20 MiB/s, 40 MiB | {:.0} % / {:.0} % reached the phone | — | — | ≥ 20 MiB/s |",
        paced10 * 100.0,
        paced20 * 100.0
    );
    println!(
        "| the relay hop alone: 64 KB frames device → phone | {raw_mib_s:.1} MiB/s | — | — | ≥ 20 MiB/s |"
    );
    println!(
        "| phone connect + handshake + hello, median | {:.1} ms | — | — | — |",
        median(&mut connect_ms)
    );
    println!(
        "| idle daemon RSS | {:.1} MiB with the link | {:.1} MiB before | +{:.2} MiB | ≤ +2 MB |",
        rss_after as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        (rss_after as f64 - rss_before as f64) / 1024.0
    );
    println!(
        "| idle wake-ups of the link's thread | {:.2} per {heartbeat_s} s heartbeat | — | — | ≤ 1 per heartbeat |",
        link_wake * heartbeat_s as f64
    );
    println!(
        "| idle wake-ups, whole daemon (context switches, all threads) | {:.2}/s with the link | {:.2}/s before | {:+.2} per {heartbeat_s} s heartbeat | ≤ 1 per heartbeat |",
        wake_after,
        wake_before,
        (wake_after - wake_before) * heartbeat_s as f64
    );
    println!(
        "| Worker bundle, gzipped | {:.0} KiB (wasm {:.0} + js {:.0}) | Free plan limit 3072 KiB | {:.2}× of the limit | ≤ 300 KiB |",
        (wasm_gz + js_gz) as f64 / 1024.0,
        wasm_gz as f64 / 1024.0,
        js_gz as f64 / 1024.0,
        (wasm_gz + js_gz) as f64 / (3072.0 * 1024.0)
    );
    // Session hosts outlive their daemon on purpose; this run's must not outlive it.
    for s in mcp.tool("loopsy_session_list", json!({}))["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        mcp.tool("loopsy_session_stop", json!({"id": s["id"]}));
    }
    let _ = loopsy(&home, &["stop"]).status();
}
