//! Removal propagation (`scripts/bench`; needs root for network namespaces): five daemons on
//! one switch, paired through the first (introductions complete the mesh). Each round a new
//! machine M pairs with the first daemon and is introduced to the others; then the *second*
//! daemon removes M from the mesh, and the clock runs until every other member has dropped
//! it (the signed removal passed on, member to member). `--quick`: 3 rounds instead of 9.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;

use common::netns::{Lab, in_ns, lab, pair_with_first};
use common::{Mcp, loopsy, median, ok};

fn names(m: &mut Mcp, online_only: bool) -> Vec<String> {
    m.tool("loopsy_list_peers", json!({}))["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !online_only || p["online"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 9 };
    let n = 5;
    // n members, and one namespace for the machine removed each round.
    let prefix = format!("rm{:04x}", std::process::id() & 0xffff);
    lab(&["up", &prefix, &(n + 1).to_string()]);
    let _lab = Lab(prefix.clone());
    let tmp = tempfile::Builder::new()
        .prefix("lr")
        .tempdir_in("/tmp")
        .unwrap();
    let ns = |i: usize| format!("{prefix}-h{}", i + 1);
    let homes: Vec<PathBuf> = (1..=n).map(|i| tmp.path().join(format!("h{i}"))).collect();
    for (i, h) in homes.iter().enumerate() {
        ok(&mut loopsy(h, &["init", "--name", &format!("m{}", i + 1)]));
        ok(&mut in_ns(&ns(i), h, &["start", "--port", "7830"]));
    }
    for i in 1..n {
        pair_with_first(&ns(0), &homes[0], &ns(i), &homes[i]);
    }
    let mut mcp: Vec<Mcp> = homes.iter().map(|h| Mcp::new(h)).collect();
    wait("a full mesh", Duration::from_secs(120), || {
        mcp.iter_mut().all(|m| names(m, true).len() == n - 1)
    });
    let mut times = Vec::new();
    for round in 0..rounds {
        let mh = tmp.path().join(format!("victim{round}"));
        let name = format!("lost{round}");
        ok(&mut loopsy(&mh, &["init", "--name", &name]));
        ok(&mut in_ns(&ns(n), &mh, &["start", "--port", "7830"]));
        pair_with_first(&ns(0), &homes[0], &ns(n), &mh);
        wait(
            "the newcomer introduced everywhere",
            Duration::from_secs(60),
            || mcp.iter_mut().all(|m| names(m, true).contains(&name)),
        );
        // Removed by a member it never paired with: the removal travels.
        let t0 = Instant::now();
        // (Trust changes are served only to the CLI's own session, never to agents.)
        ok(&mut in_ns(&ns(1), &homes[1], &["peers", "remove", &name]));
        let issued = t0.elapsed();
        wait("every member drops it", Duration::from_secs(30), || {
            mcp.iter_mut()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .all(|(_, m)| !names(m, false).contains(&name))
        });
        let t = t0.elapsed().as_secs_f64();
        println!(
            "round {}: `peers remove` returned in {:.1} ms; all {} other members dropped it in {:.0} ms",
            round + 1,
            issued.as_secs_f64() * 1000.0,
            n - 1,
            t * 1000.0
        );
        times.push(t);
        let _ = in_ns(&ns(n), &mh, &["stop"]).output();
    }
    let p50 = median(&mut times);
    let max = times.iter().copied().fold(0.0, f64::max);
    println!("\n| Removal propagation ({n} daemons, netns switch) | loopsy | target |");
    println!("|---|---|---|");
    println!(
        "| `peers remove` on one member → dropped by all others (p50 of {rounds}; max {:.0} ms) | {:.0} ms | p50 ≤ 1 s |",
        max * 1000.0,
        p50 * 1000.0
    );
    drop(mcp);
    for (i, h) in homes.iter().enumerate() {
        let _ = in_ns(&ns(i), h, &["stop"]).output();
    }
}
