//! Context convergence after a partition heals (`scripts/bench`; needs root for network
//! namespaces): N daemons (default 20) on one switch, paired through one of them (introductions
//! complete the mesh). The switch is split in two halves; once each half sees the other
//! offline, every daemon writes its own key and one daemon on each side writes the same key.
//! The halves are joined again and the clock runs until all N replicas have the same heads.
//! `--quick`: one round instead of three. `--nodes N` changes N.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::netns::{Lab, in_ns, lab, pair_with_first};
use common::{Mcp, loopsy, median, ok};

fn online(m: &mut Mcp) -> Vec<String> {
    m.tool("loopsy_list_peers", json!({}))["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["online"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn heads(m: &mut Mcp) -> Value {
    m.tool("loopsy_context_get", json!({"key": "probe"}))["heads"].clone()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n: usize = args
        .iter()
        .position(|a| a == "--nodes")
        .and_then(|i| args.get(i + 1))
        .map_or(20, |v| v.parse().unwrap());
    let rounds = if quick { 1 } else { 3 };
    let prefix = format!("cv{:04x}", std::process::id() & 0xffff);
    lab(&["up", &prefix, &n.to_string()]);
    let _lab = Lab(prefix.clone());
    let tmp = tempfile::Builder::new()
        .prefix("lv")
        .tempdir_in("/tmp")
        .unwrap();
    let homes: Vec<PathBuf> = (1..=n).map(|i| tmp.path().join(format!("h{i}"))).collect();
    let ns = |i: usize| format!("{prefix}-h{}", i + 1);
    for (i, h) in homes.iter().enumerate() {
        ok(&mut loopsy(
            h,
            &["init", "--name", &format!("n{:02}", i + 1)],
        ));
        ok(&mut in_ns(&ns(i), h, &["start", "--port", "7820"]));
    }
    let t_pair = Instant::now();
    for i in 1..n {
        pair_with_first(&ns(0), &homes[0], &ns(i), &homes[i]);
    }
    let mut mcp: Vec<Mcp> = homes.iter().map(|h| Mcp::new(h)).collect();
    let meshed = wait("a full mesh", Duration::from_secs(120), || {
        mcp.iter_mut().all(|m| online(m).len() == n - 1)
    });
    println!(
        "{n} daemons paired in {:.1} s; full mesh (introductions) {:.1} s later",
        (t_pair.elapsed() - meshed).as_secs_f64(),
        meshed.as_secs_f64()
    );

    let half = n / 2;
    let mut converge = Vec::new();
    for round in 0..rounds {
        lab(&["split", &prefix, &(half + 1).to_string(), &n.to_string()]);
        // A real partition: each side has seen the other go offline.
        let detect = wait(
            "each side to see the other offline",
            Duration::from_secs(120),
            || {
                mcp.iter_mut()
                    .enumerate()
                    .all(|(i, m)| online(m).len() == if i < half { half - 1 } else { n - half - 1 })
            },
        );
        for (i, m) in mcp.iter_mut().enumerate() {
            m.tool(
                "loopsy_context_set",
                json!({"key": format!("r{round}/from/{i}"), "value": i}),
            );
        }
        mcp[0].tool(
            "loopsy_context_set",
            json!({"key": format!("r{round}/same"), "value": "left"}),
        );
        mcp[half].tool(
            "loopsy_context_set",
            json!({"key": format!("r{round}/same"), "value": "right"}),
        );
        let t0 = Instant::now();
        lab(&["join", &prefix]);
        wait("convergence", Duration::from_secs(300), || {
            let first = heads(&mut mcp[0]);
            mcp.iter_mut().skip(1).all(|m| heads(m) == first)
        });
        let t = t0.elapsed().as_secs_f64();
        // Same entries and the same winner everywhere, the loser kept as a conflict.
        let want = mcp[0].tool(
            "loopsy_context_get",
            json!({"key": format!("r{round}/same")}),
        );
        assert_eq!(
            want["entry"]["conflicts"].as_array().map(Vec::len),
            Some(1),
            "{want}"
        );
        for m in mcp.iter_mut() {
            let got = m.tool(
                "loopsy_context_get",
                json!({"key": format!("r{round}/same")}),
            );
            assert_eq!(got["entry"], want["entry"]);
            let keys = m.tool(
                "loopsy_context_list",
                json!({"prefix": format!("r{round}/from/"), "limit": 1000}),
            );
            assert_eq!(keys["entries"].as_array().unwrap().len(), n);
        }
        println!(
            "round {}: partition seen after {:.1} s; healed → all {n} converged in {:.3} s",
            round + 1,
            detect.as_secs_f64(),
            t
        );
        converge.push(t);
    }
    let med = median(&mut converge);
    println!(
        "\n| Context convergence ({n} daemons, partition into two halves) | loopsy | target |"
    );
    println!("|---|---|---|");
    println!(
        "| heal → every replica has the same heads (median of {rounds}) | {med:.3} s | ≤ 2 s |"
    );
    drop(mcp);
    for (i, h) in homes.iter().enumerate() {
        let _ = in_ns(&ns(i), h, &["stop"]).output();
    }
}
