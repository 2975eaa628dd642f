//! What the mesh, sessions and context benches share: running the `loopsy` binary, an MCP
//! session over `loopsy mcp`, and percentiles.
#![allow(dead_code)] // each bench uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

pub mod netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_loopsy");

/// `loopsy --home <home> args…`, ignoring the caller's LOOPSY_HOME.
pub fn loopsy(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("LOOPSY_HOME");
    c
}

/// Run a command that must succeed; its stdout.
pub fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An initialized MCP session through `loopsy mcp`.
pub struct Mcp {
    child: Child,
    w: ChildStdin,
    r: BufReader<ChildStdout>,
    id: u64,
}

impl Mcp {
    pub fn new(home: &Path) -> Self {
        let mut child = loopsy(home, &["mcp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let w = child.stdin.take().unwrap();
        let r = BufReader::new(child.stdout.take().unwrap());
        let mut m = Self { child, w, r, id: 0 };
        m.call("initialize", json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}));
        writeln!(
            m.w,
            "{}",
            json!({"jsonrpc":"2.0","method":"notifications/initialized"})
        )
        .unwrap();
        m
    }

    /// Send a request without waiting; its id.
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        self.id += 1;
        writeln!(
            self.w,
            "{}",
            json!({"jsonrpc":"2.0","id":self.id,"method":method,"params":params})
        )
        .unwrap();
        self.w.flush().unwrap();
        self.id
    }

    /// The next response (any id; notifications skipped).
    pub fn recv(&mut self) -> Value {
        loop {
            let mut line = String::new();
            assert!(self.r.read_line(&mut line).unwrap() > 0);
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("id").is_some() {
                return v;
            }
        }
    }

    /// A request and its response.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        loop {
            let v = self.recv();
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// A tool call that must succeed; its structured content.
    pub fn tool(&mut self, name: &str, args: Value) -> Value {
        let r = self.call("tools/call", json!({"name": name, "arguments": args}));
        assert_eq!(r["result"]["isError"], false, "{name}: {r}");
        r["result"]["structuredContent"].clone()
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `p` quantile (0.5 = median).
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

/// The median.
pub fn median(v: &mut [f64]) -> f64 {
    pct(v, 0.5)
}

/// Two daemons on loopback ("alpha" in `<dir>/a`, "beta" in `<dir>/b`), each with `extra`
/// appended to its config.toml, started and paired. Returns their homes.
pub fn paired_on_loopback(dir: &Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let homes: Vec<_> = ["a", "b"].iter().map(|n| dir.join(n)).collect();
    for (h, name) in homes.iter().zip(["alpha", "beta"]) {
        ok(&mut loopsy(h, &["init", "--name", name]));
        std::fs::write(
            h.join("config.toml"),
            format!(
                "[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n{extra}"
            ),
        )
        .unwrap();
        ok(&mut loopsy(h, &["start"]));
    }
    let (a, b) = (homes[0].clone(), homes[1].clone());
    pair(&a, &b);
    (a, b)
}

/// Pair `joiner` with `holder` (both started): `holder` opens a window, `joiner` dials its
/// TCP address with the code. Over TCP, so the figures are for TCP + noise + yamux.
pub fn pair(holder: &Path, joiner: &Path) {
    let mut window = loopsy(holder, &["pair", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(window.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let t: Value = serde_json::from_str(&line).unwrap();
    let tcp = t["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .find(|a| a.contains("/tcp/"))
        .unwrap();
    ok(&mut loopsy(
        joiner,
        &["pair", tcp, "--code", t["code"].as_str().unwrap()],
    ));
    window.wait().unwrap();
}

/// A plain 80×24 PTY (the baselines beside loopsy's sessions).
pub fn pty_80x24() -> portable_pty::PtyPair {
    portable_pty::native_pty_system()
        .openpty(portable_pty::PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap()
}
