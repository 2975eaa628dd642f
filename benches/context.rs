//! Context benchmarks (`scripts/bench`): `loopsy_context_set` through MCP against the fsync
//! floor (write + fsync of a small file, same disk, same run), set-on-A-visible-on-B between
//! two daemons, and loading and writing a 100,000-key document. `--quick`: fewer runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::Write;
use std::time::Instant;

use serde_json::json;

mod common;

use common::{Mcp, loopsy, ok, paired_on_loopback, pct};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 100 } else { 500 };
    let tmp = tempfile::Builder::new()
        .prefix("lc")
        .tempdir_in("/tmp")
        .unwrap();
    let (a, b) = &paired_on_loopback(tmp.path(), "");
    let homes = [a, b];
    let mut ma = Mcp::new(a);
    let mut mb = Mcp::new(b);

    // 1. Set through MCP, against write+fsync of a small file on the same disk.
    let mut set: Vec<f64> = (0..runs)
        .map(|i| {
            let t0 = Instant::now();
            ma.tool(
                "loopsy_context_set",
                json!({"key": format!("bench/{i}"), "value": "x".repeat(64)}),
            );
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let floor_file = tmp.path().join("floor");
    let mut floor: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&floor_file)
                .unwrap();
            f.write_all(&[b'x'; 100]).unwrap();
            f.sync_data().unwrap();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    // 2. Set on A, visible on B (B polled as fast as MCP answers).
    let mut visible: Vec<f64> = (0..(runs / 5))
        .map(|i| {
            let key = format!("seen/{i}");
            let t0 = Instant::now();
            ma.tool("loopsy_context_set", json!({"key": key, "value": i}));
            while mb.tool("loopsy_context_get", json!({"key": key}))["found"] != true {}
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    drop((ma, mb));
    for h in &homes {
        ok(&mut loopsy(h, &["stop"]));
    }

    // 3. A 100,000-key document: load it, then write one key into it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = tmp.path().join("big");
    let (load_ms, write_ms, n) = rt.block_on(async {
        {
            use automerge::transaction::Transactable;
            let mut doc = automerge::AutoCommit::new();
            for i in 0..100_000u32 {
                let v =
                    json!({"value": format!("value {i}"), "written_by": "bench", "written_at": 1});
                doc.put(automerge::ROOT, format!("key/{i:06}"), v.to_string())
                    .unwrap();
            }
            std::fs::create_dir_all(&big).unwrap();
            std::fs::write(big.join("doc.snapshot"), doc.save()).unwrap();
        }
        let t0 = Instant::now();
        let c = loopsy_mesh::context::ContextHandle::open(&big, Default::default()).unwrap();
        let first = c.get("key/099999").await.unwrap();
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        assert!(first.is_some());
        let mut w: Vec<f64> = Vec::new();
        for i in 0..50 {
            let t0 = Instant::now();
            c.set(&format!("new/{i}"), json!(i), None, "bench")
                .await
                .unwrap();
            w.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let n = c.list("", 1000, None).await.unwrap().entries.len();
        (load_ms, pct(&mut w, 0.5), n)
    });
    assert_eq!(n, 1000);

    // 4. Sync traffic: a 10,000-key document once, then one small write.
    let (full_bytes, one_bytes) = rt.block_on(async {
        use loopsy_mesh::context::{ContextConfig, ContextHandle, sync::session};
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let a = ContextHandle::open(&tmp.path().join("sa"), ContextConfig::default()).unwrap();
        let b = ContextHandle::open(&tmp.path().join("sb"), ContextConfig::default()).unwrap();
        for i in 0..10_000u32 {
            a.set(&format!("key/{i:05}"), json!(i), None, "a")
                .await
                .unwrap();
        }
        let pair = || async {
            let (x, y) = tokio::io::duplex(1 << 20);
            let (mut x, mut y) = (x.compat(), y.compat());
            let (ra, rb) = tokio::join!(
                session(&mut x, &a, "out:b", true),
                session(&mut y, &b, "in:a", false)
            );
            ra.unwrap() + rb.unwrap()
        };
        let full = pair().await;
        a.set("key/00042", json!("changed"), None, "a")
            .await
            .unwrap();
        let one = pair().await;
        (full, one)
    });

    println!(
        "\n## context ({}; baseline: write + fsync of a small file, same run)\n",
        if quick { "quick" } else { "full" }
    );
    println!("| measure | loopsy | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    let (s50, f50) = (pct(&mut set, 0.5), pct(&mut floor, 0.5));
    println!(
        "| `loopsy_context_set` through MCP, durable (median of {runs}) | {s50:.3} ms | {f50:.3} ms (fsync floor) | {:.2}× | ≤ 1 ms |",
        s50 / f50
    );
    println!(
        "| set on A → readable on B, p50 / p99 (of {}) | {:.2} / {:.2} ms | — | — | ≤ 10 / ≤ 50 ms |",
        runs / 5,
        pct(&mut visible, 0.5),
        pct(&mut visible, 0.99)
    );
    println!("| open a 100,000-key document and read a key | {load_ms:.0} ms | — | — | ≤ 500 ms |");
    println!("| one write into it (median of 50) | {write_ms:.2} ms | — | — | ≤ 2 ms |");
    println!(
        "| sync bytes: a 10,000-key document the first time / one small write after | {full_bytes} / {one_bytes} B | — | {:.4}× | O(change) |",
        one_bytes as f64 / full_bytes as f64
    );
}
