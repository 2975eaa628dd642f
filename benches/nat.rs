//! NAT traversal benchmarks (`scripts/bench`) in the NAT lab (`scripts/nat-lab`; needs root,
//! iproute2 and nftables): a relay node on a "public" segment, alice behind router 1
//! (endpoint-independent NAT), bob behind router 2 (endpoint-independent, then symmetric).
//!
//! Each trial restarts bob's daemon on a new port (so no NAT mapping from an earlier trial
//! helps) and times, from the daemon's own log: start → a usable relayed connection
//! (a job run through it), and relayed → direct (hole punched). Then RTT and a file's
//! throughput relayed vs direct, each against the other in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loopsy");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Lab {
    prefix: String,
}

impl Lab {
    fn up(prefix: &str, nat1: &str, nat2: &str) -> Self {
        let _ = Command::new(root().join("scripts/nat-lab"))
            .args(["down", prefix])
            .status();
        let st = Command::new(root().join("scripts/nat-lab"))
            .args(["up", prefix, nat1, nat2])
            .status()
            .unwrap();
        assert!(
            st.success(),
            "the NAT lab needs root, iproute2 and nftables"
        );
        Self {
            prefix: prefix.into(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/nat-lab"))
            .args(["down", &self.prefix])
            .status();
    }
}

/// A daemon's home inside a lab host.
struct Host {
    ns: String,
    home: PathBuf,
    name: String,
}

impl Host {
    fn new(lab: &Lab, tmp: &Path, host: &str, name: &str) -> Self {
        let h = Self {
            ns: format!("{}-{host}", lab.prefix),
            home: tmp.join(name),
            name: name.into(),
        };
        h.ok(&["init", "--name", name]);
        h.config("");
        h
    }

    fn config(&self, extra: &str) {
        std::fs::write(
            self.home.join("config.toml"),
            format!(
                "[node]\nname = \"{}\"\n{extra}[files]\nallowed_paths = [\"{}\"]\n",
                self.name,
                self.files().display()
            ),
        )
        .unwrap();
    }

    fn files(&self) -> PathBuf {
        let d = PathBuf::from(format!("{}.files", self.home.display()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, BIN, "--home"])
            .arg(&self.home)
            .args(args)
            .env_remove("LOOPSY_HOME")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn peer(&self, name: &str) -> Value {
        self.json(&["peers", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("logs/daemon.log")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
        let _ = std::fs::remove_dir_all(self.files());
    }
}

fn pair(holder: &Host, joiner: &Host) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("ip")
        .args(["netns", "exec", &holder.ns, BIN, "--home"])
        .arg(&holder.home)
        .args(["pair", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let t: Value = serde_json::from_str(&line).unwrap();
    let addr = t["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("/tcp/") && !a.contains("/127.0.0.1/"))
        .unwrap()
        .to_string();
    joiner.ok(&["pair", &addr, "--code", t["code"].as_str().unwrap()]);
    child.wait().unwrap();
}

/// Seconds between two RFC 3339 log timestamps of the same day.
fn ts(line: &str) -> f64 {
    let t = &line[11..26]; // HH:MM:SS.ffffff
    let h: f64 = t[0..2].parse().unwrap();
    let m: f64 = t[3..5].parse().unwrap();
    let s: f64 = t[6..].parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// First log line after byte `from` containing all of `needles`, as a time.
fn when(log: &str, from: usize, needles: &[&str]) -> Option<f64> {
    log[from..]
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(ts)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Trials {
    to_relayed: Vec<f64>,
    to_direct: Vec<f64>,
    punched: usize,
    fallback: Vec<f64>,
    n: usize,
}

/// Restart bob `n` times on fresh ports; time each reconnection from alice's and bob's logs.
fn trials(prefix: &str, nat2: &str, n: usize) -> (Trials, Option<(f64, f64, f64)>) {
    let lab = Lab::up(prefix, "eim", nat2);
    let tmp = tempfile::Builder::new()
        .prefix("lb")
        .tempdir_in("/tmp")
        .unwrap();
    let r = Host::new(&lab, tmp.path(), "r", "relay");
    let a = Host::new(&lab, tmp.path(), "a", "alice");
    let b = Host::new(&lab, tmp.path(), "b", "bob");
    let log_cfg = "[log]\nlevel = \"info,libp2p_dcutr=debug,loopsy_mesh::node_nat=debug\"\n";
    a.config(log_cfg);
    r.ok(&["relay-node"]);
    a.ok(&["start"]);
    b.ok(&["start"]);
    pair(&r, &a);
    pair(&r, &b);
    let mut t = Trials {
        to_relayed: Vec::new(),
        to_direct: Vec::new(),
        punched: 0,
        fallback: Vec::new(),
        n,
    };
    let bob_id = a.peer("bob")["peer_id"].as_str().unwrap().to_string();
    for i in 0..n {
        b.ok(&["stop"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.peer("bob")["online"] == true && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        b.config(&format!("[mesh]\nlisten_port = {}\n{log_cfg}", 20000 + i));
        let mark_a = a.log().len();
        let mark_b = b.log().len();
        let started = Instant::now();
        b.ok(&["start"]);
        // Usable: a job through whatever path there is.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o = b.run(&["exec", "alice", "--", "true"]);
            if o.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "trial {i}: bob never reached alice"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t.to_relayed.push(started.elapsed().as_secs_f64());
        // Relayed → direct; behind the symmetric NAT, once, how long until hole punching is
        // given up (the relayed connection works all along).
        if nat2 != "eim" && i > 0 {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(if nat2 == "eim" { 20 } else { 60 });
        loop {
            let la = a.log();
            let lb = b.log();
            let relayed = when(&la, mark_a, &[&bob_id, "path=relayed"]);
            let punched = when(&la, mark_a, &[&bob_id, "path=hole-punched"]);
            let failed = when(&lb, mark_b, &["hole punching failed"])
                .or_else(|| when(&la, mark_a, &[&bob_id, "hole punching failed"]));
            if let (Some(r0), Some(p)) = (relayed, punched) {
                t.punched += 1;
                t.to_direct.push(p - r0);
                break;
            }
            if nat2 != "eim"
                && let (Some(r0), Some(f)) = (relayed, failed)
            {
                t.fallback.push(f - r0);
                break;
            }
            if Instant::now() > deadline {
                eprintln!("trial {i}: no hole punch and no failure seen");
                for (who, log, mark) in [("alice", &la, mark_a), ("bob", &lb, mark_b)] {
                    for l in log[mark..].lines().filter(|l| {
                        (l.contains("node_nat") || l.contains("dcutr"))
                            && !l.contains("reservation")
                    }) {
                        eprintln!("  {who}: {}", l.chars().take(260).collect::<String>());
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // RTT and throughput on the last path, and on the other kind in the other lab.
    let path = a.peer("bob")["path"].as_str().unwrap_or("?").to_string();
    let mut rtts = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        a.ok(&["exec", "bob", "--", "true"]);
        rtts.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    let src = a.files().join("bench.bin");
    std::fs::write(&src, vec![7u8; 32 << 20]).unwrap();
    let dest = b.files().join("bench.bin");
    let s = Instant::now();
    a.ok(&[
        "cp",
        "--overwrite",
        src.to_str().unwrap(),
        &format!("bob:{}", dest.display()),
    ]);
    let mib_s = 32.0 / s.elapsed().as_secs_f64();
    let ping = a.peer("bob")["rtt_ms"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "{nat2}: last path {path}, ping {ping:.2} ms, exec round trip median {:.1} ms, 32 MiB at {mib_s:.1} MiB/s",
        median(&mut rtts)
    );
    let _ = (&r, &lab);
    (t, Some((ping, median(&mut rtts), mib_s)))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 10 } else { 50 };
    let (mut eim, eim_io) = trials("nbe", "eim", n);
    let (mut sym, sym_io) = trials("nbs", "symmetric", n);
    println!("\n## NAT traversal (`cargo bench --bench nat`)\n");
    println!("| measure | endpoint-independent NAT | symmetric NAT | target |");
    println!("|---|---|---|---|");
    println!(
        "| daemon start → first job through the peer, median (p90) | {:.2} s ({:.2}) | {:.2} s ({:.2}) | ≤ 3 s |",
        median(&mut eim.to_relayed),
        pct(&mut eim.to_relayed, 0.9),
        median(&mut sym.to_relayed),
        pct(&mut sym.to_relayed, 0.9)
    );
    println!(
        "| hole punching succeeded | **{}/{}** | {}/{} | 100 % / clear fallback |",
        eim.punched, eim.n, sym.punched, sym.n
    );
    println!(
        "| relayed → direct, median (p90) | {:.2} s ({:.2}) | — | ≤ 5 s |",
        median(&mut eim.to_direct),
        pct(&mut eim.to_direct, 0.9)
    );
    println!(
        "| hole punching given up, after the relayed connection was up (it works all along) | — | {:.1} s | fast fallback |",
        median(&mut sym.fallback),
    );
    if let (Some((d_ping, d_rtt, d_tp)), Some((r_ping, r_rtt, r_tp))) = (eim_io, sym_io) {
        println!(
            "| ping RTT (libp2p ping) | direct {d_ping:.2} ms | relayed {r_ping:.2} ms ({:.2}×) | — |",
            r_ping / d_ping
        );
        println!(
            "| `loopsy exec` round trip, median | direct {d_rtt:.1} ms | relayed {r_rtt:.1} ms ({:.2}×) | — |",
            r_rtt / d_rtt
        );
        println!(
            "| 32 MiB file push | direct {d_tp:.1} MiB/s | relayed {r_tp:.1} MiB/s ({:.2}×) | — |",
            r_tp / d_tp
        );
    }
}
