//! Mesh benchmarks (`scripts/bench`): `loopsy exec <peer> true` A→B against `ssh` with a warm
//! ControlMaster to localhost, a 1 GiB push A→B against `scp` to localhost (with the
//! daemons' peak RSS; B writes with direct I/O, a third daemon C receives the same pushes
//! through the page cache, `files.direct_io = false`), and 100 concurrent small jobs — all in
//! the same run.
//!
//! Needs `sshd` (scripts/bench installs openssh-server when missing). `--quick`: fewer runs,
//! 256 MiB instead of 1 GiB.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

mod common;
#[path = "../tests/common/sshd.rs"]
mod sshd;

use common::{Mcp, loopsy, median, ok, pct};
use sshd::Sshd;

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (runs, mib) = if quick { (100, 256u64) } else { (500, 1024u64) };
    let tmp = tempfile::Builder::new()
        .prefix("lm")
        .tempdir_in("/tmp")
        .unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("in")).unwrap();
    std::fs::create_dir_all(data.join("out")).unwrap();
    let homes: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();
    for (h, name) in homes.iter().zip(["alpha", "beta", "gamma"]) {
        ok(&mut loopsy(h, &["init", "--name", name]));
        let cfg = format!(
            // The bench starts ~700 jobs a minute: lift the per-caller rate limit (600/min).
            "[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[exec]\nrate_per_minute = 100000\n[files]\nallowed_paths = [\"{}\"]\ndirect_io = {}\n",
            data.display(),
            name != "gamma"
        );
        std::fs::write(h.join("config.toml"), cfg).unwrap();
        ok(&mut loopsy(h, &["start"]));
    }
    let (a, b, c) = (&homes[0], &homes[1], &homes[2]);
    common::pair(a, b);
    common::pair(a, c);
    let pid_of = |h: &Path| -> u32 {
        let s: Value = serde_json::from_str(&ok(&mut loopsy(h, &["status", "--json"]))).unwrap();
        s["pid"].as_u64().unwrap() as u32
    };
    let (pid_a, pid_b, pid_c) = (pid_of(a), pid_of(b), pid_of(c));
    let sshd = Sshd::start(tmp.path());

    // 1. exec `true` A→B: the tool round trip an agent sees.
    let mut mcp = Mcp::new(a);
    let args = json!({"name":"loopsy_execute","arguments":{"peer":"beta","command":"true","args":[],"wait_s":10}});
    for _ in 0..20 {
        mcp.call("tools/call", args.clone());
    }
    let mut ex: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            let r = mcp.call("tools/call", args.clone());
            assert_eq!(
                r["result"]["structuredContent"]["job"]["exit_code"], 0,
                "{r}"
            );
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut ssh: Vec<f64> = (0..runs.min(200))
        .map(|_| {
            let t0 = Instant::now();
            assert!(sshd.ssh(&["true"]).status.success());
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // The CLI end to end, whole process against whole process: `loopsy exec beta -- true`
    // (process start, control socket, exec stream) against `ssh … true` over the warm master.
    let mut cli: Vec<f64> = (0..runs.min(200))
        .map(|_| {
            let t0 = Instant::now();
            ok(loopsy(a, &["exec", "beta", "-n", "--", "true"]).stdin(Stdio::null()));
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    // 2. 100 concurrent small jobs, pipelined on one session.
    let t0 = Instant::now();
    let ids: Vec<u64> = (0..100)
        .map(|i| mcp.send("tools/call", json!({"name":"loopsy_execute","arguments":{"peer":"beta","command":format!("echo {i}"),"wait_s":30}})))
        .collect();
    let mut errors = 0;
    for _ in &ids {
        let r = mcp.recv();
        if r["result"]["isError"] != false
            || r["result"]["structuredContent"]["job"]["exit_code"] != 0
        {
            errors += 1;
        }
    }
    let concurrent_ms = t0.elapsed().as_secs_f64() * 1e3;

    // 3. Bulk transfer.
    let src = data.join("in/big.bin");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
    }
    // Each timed copy starts with no dirty pages queued for the disk (a writer that runs right
    // after another pays for its writeback), right after its own previous copy is deleted. On
    // a VM that hands free memory back to its host (virtio-balloon free page reporting, as on
    // the machine of the numbers in BENCHMARKS.md), the first write into memory the host took
    // back costs the guest about 10 s per GiB, so a copy into freshly freed memory and a copy
    // into memory freed seconds ago are not comparable. Deleting each tool's own output just
    // before it runs gives both the same start. One untimed round warms this up, and the order
    // alternates from round to round.
    let sync = || ok(&mut Command::new("sync"));
    // The RSS target is for the transfer: forget the peaks of the job phases above (writing
    // 5 to clear_refs resets a process's VmHWM to its current RSS).
    let jobs_peak = (
        vm_hwm_kib(pid_a) as f64 / 1024.0,
        vm_hwm_kib(pid_b) as f64 / 1024.0,
    );
    for pid in [pid_a, pid_b, pid_c] {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    }
    let rounds = if quick { 1 } else { 5 };
    // Four copies a round: scp over the warm master with AES-128-GCM, the cipher the mesh's
    // TLS uses (0), loopsy to beta with direct I/O (1), loopsy to gamma through the page
    // cache (2), and scp as a user runs it by default, with ChaCha20-Poly1305 on its own
    // connection (3); the order rotates from round to round.
    let mut runs_by: [Vec<f64>; 4] = Default::default();
    for round in 0..=rounds {
        for k in 0..4 {
            let tool = (round + k) % 4;
            let dest = data.join(
                [
                    "out/scp.bin",
                    "out/loopsy.bin",
                    "out/cached.bin",
                    "out/scp-default.bin",
                ][tool],
            );
            sync();
            let _ = std::fs::remove_file(&dest);
            let t0 = Instant::now();
            if tool == 0 {
                sshd.scp(&[], &src, &dest);
            } else if tool == 3 {
                sshd.scp_default(&src, &dest);
            } else {
                let peer = ["", "beta", "gamma"][tool];
                let r = mcp.call(
                    "tools/call",
                    json!({"name":"loopsy_transfer_file","arguments":{"direction":"push","peer":peer,"source":src.display().to_string(),"dest":dest.display().to_string(),"overwrite":true}}),
                );
                assert_eq!(r["result"]["isError"], false, "round {round}: {r}");
            }
            if round > 0 {
                runs_by[tool].push(t0.elapsed().as_secs_f64());
            }
        }
    }
    let [
        mut scp_runs,
        mut push_runs,
        mut cached_runs,
        mut scp_default_runs,
    ] = runs_by;
    eprintln!(
        "push runs: scp {scp_runs:.2?} s, loopsy {push_runs:.2?} s, loopsy through the page cache {cached_runs:.2?} s, scp default {scp_default_runs:.2?} s"
    );
    let (scp_s, push_s, cached_s, scp_default_s) = (
        median(&mut scp_runs),
        median(&mut push_runs),
        median(&mut cached_runs),
        median(&mut scp_default_runs),
    );
    let (rss_a, rss_b, rss_c) = (
        vm_hwm_kib(pid_a) as f64 / 1024.0,
        vm_hwm_kib(pid_b) as f64 / 1024.0,
        vm_hwm_kib(pid_c) as f64 / 1024.0,
    );
    for pid in [pid_a, pid_b] {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    }
    // 4. A stream through exec (after the push peaks are read; its own peaks are below): `cat` of the bulk file into /dev/null on this side, whole
    // process both ways (ssh over the warm master, AES-128-GCM as the mesh's TLS).
    let mut cat_by: [Vec<f64>; 2] = Default::default();
    let src_s = src.display().to_string();
    for round in 0..=rounds {
        for k in 0..2 {
            let tool = (round + k) % 2;
            let mut c = if tool == 0 {
                sshd.command(&["cat", &src_s])
            } else {
                loopsy(a, &["exec", "beta", "-n", "--", "cat", &src_s])
            };
            let t0 = Instant::now();
            let st = c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "cat through {}", ["ssh", "loopsy"][tool]);
            if round > 0 {
                cat_by[tool].push(t0.elapsed().as_secs_f64());
            }
        }
    }
    let [mut ssh_cat, mut loopsy_cat] = cat_by;
    eprintln!("cat runs: ssh {ssh_cat:.2?} s, loopsy exec {loopsy_cat:.2?} s");
    let (ssh_cat_s, loopsy_cat_s) = (median(&mut ssh_cat), median(&mut loopsy_cat));
    let cat_peak = (
        vm_hwm_kib(pid_a) as f64 / 1024.0,
        vm_hwm_kib(pid_b) as f64 / 1024.0,
    );
    drop(mcp);
    for h in &homes {
        ok(&mut loopsy(h, &["stop"]));
    }

    let mibf = mib as f64;
    println!(
        "\n## mesh ({}; TCP; baselines: OpenSSH on 127.0.0.1 with a warm ControlMaster, same run)\n",
        if quick { "quick" } else { "full" }
    );
    println!("| measure | loopsy | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| exec `true` A→B through MCP, one call on a warm session (median of {runs}); **not like for like**: each `ssh` is a new process (the whole-process row below is) | {:.3} ms | {:.3} ms (`ssh true`, warm master) | {:.3}× | ≤ 2 ms |",
        median(&mut ex),
        median(&mut ssh),
        median(&mut ex) / median(&mut ssh)
    );
    println!(
        "| exec `true` A→B (p99) | {:.3} ms | {:.3} ms | {:.3}× | |",
        pct(&mut ex, 0.99),
        pct(&mut ssh, 0.99),
        pct(&mut ex, 0.99) / pct(&mut ssh, 0.99)
    );
    println!(
        "| `loopsy exec beta -- true` against `ssh … true` (warm master), whole process each (median of {}): like for like | {:.3} ms | {:.3} ms | {:.3}× | ≤ 0.5× ssh |",
        cli.len(),
        median(&mut cli),
        median(&mut ssh),
        median(&mut cli) / median(&mut ssh)
    );
    println!(
        "| `exec beta -- cat` {mib} MiB > /dev/null (median of {rounds}) | {:.0} MiB/s ({loopsy_cat_s:.2} s) | {:.0} MiB/s (`ssh … cat`, {ssh_cat_s:.2} s) | {:.2}× | — |",
        mibf / loopsy_cat_s,
        mibf / ssh_cat_s,
        ssh_cat_s / loopsy_cat_s
    );
    println!(
        "| daemon peak RSS during the `cat` streams (A caller / B runner) | {:.1} / {:.1} MiB | — | — | — |",
        cat_peak.0, cat_peak.1
    );
    println!(
        "| push {mib} MiB A→B (median of {rounds}) | {:.0} MiB/s ({push_s:.2} s) | {:.0} MiB/s (`scp`, {scp_s:.2} s) | {:.2}× | ≥ 2× scp |",
        mibf / push_s,
        mibf / scp_s,
        scp_s / push_s
    );
    println!(
        "| the same push written through the page cache (`files.direct_io = false`) | {:.0} MiB/s ({cached_s:.2} s) | {:.0} MiB/s (`scp`, {scp_s:.2} s) | {:.2}× | — |",
        mibf / cached_s,
        mibf / scp_s,
        scp_s / cached_s
    );
    println!(
        "| the same push against `scp` as a user runs it by default (ChaCha20-Poly1305, its own connection) | {:.0} MiB/s ({push_s:.2} s) | {:.0} MiB/s (`scp`, {scp_default_s:.2} s) | {:.2}× | — |",
        mibf / push_s,
        mibf / scp_default_s,
        scp_default_s / push_s
    );
    println!(
        "| daemon peak RSS during the pushes (A sender / B receiver / C receiver) | {rss_a:.1} / {rss_b:.1} / {rss_c:.1} MiB | — | — | ≤ 64 MiB |"
    );
    println!(
        "| daemon peak RSS before the pushes, over the job phases (A / B) | {:.1} / {:.1} MiB | — | — | — |",
        jobs_peak.0, jobs_peak.1
    );
    println!(
        "| 100 concurrent `echo` jobs A→B | {concurrent_ms:.0} ms, {errors} errors | — | — | no error |"
    );
}
