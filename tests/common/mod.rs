//! Test helpers: a temp `LOOPSY_HOME` that runs the real `loopsy` binary and stops (or, if it
//! must, kills) its daemon on drop; a minimal JSON-RPC line client for `loopsy mcp`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod disk;
pub mod sshd;

/// A bare mesh swarm for `identity` (no mDNS, no relay serving), as the tests' made-up
/// peers and strangers use it to speak the protocols directly.
pub fn test_swarm(
    identity: &loopsy_mesh::Identity,
) -> libp2p::Swarm<loopsy_mesh::behaviour::MeshBehaviour> {
    loopsy_mesh::behaviour::build(
        identity,
        false,
        true,
        None,
        Default::default(),
        Default::default(),
    )
    .expect("build a test swarm")
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loopsy"))
}

/// Wait until `cond` holds, polling, or panic after `timeout` naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A data dir in /tmp (short, for the socket path) with its daemon cleaned up on drop.
pub struct TestHome {
    dir: tempfile::TempDir,
    netns: Option<String>,
}

impl TestHome {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lt")
            .tempdir_in("/tmp")
            .expect("tempdir");
        Self { dir, netns: None }
    }

    /// A home in a new directory under `parent` (a disk under test).
    pub fn new_in(parent: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lt")
            .tempdir_in(parent)
            .expect("tempdir");
        Self { dir, netns: None }
    }

    /// A home whose commands (and so its daemon) run inside network namespace `ns`.
    pub fn in_netns(ns: &str) -> Self {
        let mut h = Self::new();
        h.netns = Some(ns.to_string());
        h
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `loopsy --home <dir> args…` with a clean environment for loopsy's own variables.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        c.arg("--home").arg(self.path()).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("LOOPSY_") {
                c.env_remove(k);
            }
        }
        c.env("NO_COLOR", "1").env_remove("CLICOLOR_FORCE");
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run loopsy")
    }

    /// Run and assert success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "loopsy {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run and assert failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "loopsy {args:?} unexpectedly succeeded:\nstdout: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Start a daemon on loopback with an ephemeral mesh port.
    pub fn start(&self) {
        self.ok(&["start", "--port", "0", "--local-only"]);
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status json")
    }

    pub fn pid(&self) -> u32 {
        self.status()["pid"].as_u64().expect("pid") as u32
    }

    /// Is a daemon answering on the socket?
    pub fn running(&self) -> bool {
        self.run(&["status", "--json"]).status.success()
    }

    /// Spawn `loopsy mcp` as an agent would.
    pub fn mcp(&self) -> McpPipe {
        let mut child = self
            .cmd(&["mcp"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn loopsy mcp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        McpPipe {
            child,
            stdin: Some(stdin),
            stdout,
            next_id: 1,
        }
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
        // If stop could not do it, make sure no daemon outlives the test.
        if let Ok(s) = std::fs::read_to_string(self.path().join("daemon.pid"))
            && let Ok(pid) = s.trim().parse::<u32>()
            && Path::new(&format!("/proc/{pid}")).exists()
            && self.running()
        {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        // Session hosts outlive the daemon on purpose; a test's must not outlive the test.
        for e in std::fs::read_dir(self.path().join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(s) = std::fs::read_to_string(e.path().join("record.json"))
                && let Ok(v) = serde_json::from_str::<Value>(&s)
                && let Some(pid) = v["host_pid"].as_u64()
                && v["state"] == "running"
            {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// A home named `name`, configured for loopback only on a free port, with its daemon started.
pub fn started_on_loopback(name: &str) -> TestHome {
    start_on_loopback(TestHome::new(), name)
}

/// [`started_on_loopback`] for a home made elsewhere (on a disk under test).
pub fn start_on_loopback(h: TestHome, name: &str) -> TestHome {
    h.ok(&["init", "--name", name]);
    std::fs::write(
        h.path().join("config.toml"),
        format!("[node]\nname = \"{name}\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n"),
    )
    .unwrap();
    h.ok(&["start"]);
    h
}

/// Like [`started_on_loopback`], on a fixed free port, so the daemon is found again at the
/// same address after a restart (as with the default port on a real machine).
pub fn started_on_fixed_port(name: &str) -> TestHome {
    let port = loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let h = TestHome::new();
    h.ok(&["init", "--name", name]);
    std::fs::write(
        h.path().join("config.toml"),
        format!("[node]\nname = \"{name}\"\n[mesh]\nlisten_port = {port}\nlocal_only = true\n"),
    )
    .unwrap();
    h.ok(&["start"]);
    h
}

/// A test that cannot run here fails, because a skip reads as a pass in the runner's summary:
/// only with `LOOPSY_ALLOW_SKIP=1`, set by hand on a machine without root, does it pass
/// without testing anything (saying so on stderr, and never under `CI`).
pub fn skip_or_fail(why: &str) {
    let allowed = std::env::var("LOOPSY_ALLOW_SKIP").is_ok_and(|v| v == "1")
        && std::env::var_os("CI").is_none();
    assert!(
        allowed,
        "{why}\n(this test needs it; on a machine without it, LOOPSY_ALLOW_SKIP=1 skips the \
         test instead, never under CI)"
    );
    eprintln!("SKIP (LOOPSY_ALLOW_SKIP=1): {why}");
}

/// A LAN of network namespaces (`scripts/netns-lab`), torn down on drop.
pub struct NetnsLab {
    pub prefix: String,
}

impl NetnsLab {
    /// Build `n` hosts. Where namespaces are unavailable the test fails, unless skips were
    /// allowed by hand ([`skip_or_fail`]): then `None`.
    pub fn up(n: usize) -> Option<Self> {
        let prefix = format!("l{:05x}", (std::process::id() ^ rand_u32()) & 0xfffff);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/netns-lab");
        let o = Command::new(&script)
            .args(["up", &prefix, &n.to_string()])
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Self { prefix }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                skip_or_fail(&format!(
                    "network namespaces unavailable here (need root + iproute2): {why}"
                ));
                None
            }
        }
    }

    /// Namespace of host `i` (1-based).
    pub fn host(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// Plug host `i` in (`true`) or pull its cable.
    pub fn link(&self, i: usize, up: bool) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/netns-lab");
        let st = Command::new(script)
            .args([
                "link",
                &self.prefix,
                &i.to_string(),
                if up { "up" } else { "down" },
            ])
            .status()
            .expect("netns-lab link");
        assert!(st.success());
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/netns-lab");
        let _ = Command::new(script).args(["down", &self.prefix]).status();
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// `kill -9 pid` and wait until the process is gone (or a zombie).
pub fn kill9(pid: u32) {
    let st = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(st.success());
    // Dead means every thread has exited and every file (sockets, locks) is closed: the main
    // thread can show as a zombie while the others are still tearing down.
    wait_until("killed process to die", Duration::from_secs(10), || {
        let zombie = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
                .unwrap_or(true),
        };
        let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        zombie && open_fds == 0 && threads <= 1
    });
}

/// A `loopsy mcp` child spoken to in newline-delimited JSON-RPC.
pub struct McpPipe {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl McpPipe {
    pub fn send(&mut self, v: &Value) {
        let stdin = self.stdin.as_mut().expect("open stdin");
        writeln!(stdin, "{v}").expect("write");
        stdin.flush().expect("flush");
    }

    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read");
        assert!(n > 0, "loopsy mcp closed its stdout");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad JSON from loopsy mcp ({e}): {line}"))
    }

    /// Send, reporting (not panicking on) a closed pipe.
    pub fn try_send(&mut self, v: &Value) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        writeln!(stdin, "{v}").and_then(|()| stdin.flush()).is_ok()
    }

    /// The next message, or None once the bridge has closed its stdout.
    pub fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
            _ => None,
        }
    }

    /// Send a request and return its response (skipping notifications).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let v = self.recv();
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
        }
    }

    /// initialize + initialized.
    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "loopsy-tests", "version": "0"}
            }),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    pub fn call_tool(&mut self, name: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": args}))
    }

    /// Close stdin and wait for the bridge to exit.
    pub fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait")
    }
}

impl Drop for McpPipe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `a pair --json` in the background: returns the child, the code and the first address.
pub fn open_window(a: &TestHome) -> (Child, BufReader<ChildStdout>, String, String) {
    let mut child = a
        .cmd(&["pair", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let t: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let code = t["code"].as_str().unwrap().to_string();
    // A LAN address where there is one (hosts in namespaces), else loopback.
    let addrs: Vec<&str> = t["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let addr = addrs
        .iter()
        .find(|a| !a.starts_with("/ip4/127.") && !a.starts_with("/ip6/::1"))
        .or(addrs.first())
        .unwrap()
        .to_string();
    (child, out, code, addr)
}

/// Pair `b` with `a` (the code holder); returns (a's view of b, b's view of a).
pub fn pair(a: &TestHome, b: &TestHome) -> (Value, Value) {
    let (mut child, mut out, code, addr) = open_window(a);
    let b_view: Value =
        serde_json::from_str(&b.ok(&["pair", &addr, "--code", &code, "--json"])).unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success());
    let a_view: Value = serde_json::from_str(&line).unwrap();
    (a_view, b_view)
}

/// `peers list --json` as values.
pub fn peers(h: &TestHome) -> Vec<Value> {
    serde_json::from_str::<Value>(&h.ok(&["peers", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A tool call that must succeed; its structured content.
pub fn tool(m: &mut McpPipe, name: &str, args: Value) -> Value {
    let r = m.call_tool(name, args);
    assert_eq!(r["result"]["isError"], false, "{name}: {r}");
    r["result"]["structuredContent"].clone()
}

/// `loopsy mcp` on `h`, initialized.
pub fn agent(h: &TestHome) -> McpPipe {
    let mut m = h.mcp();
    m.initialize();
    m
}

/// Every inbox message (paging through), oldest first.
pub fn inbox_all(m: &mut McpPipe) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let mut args = json!({"unread_only": false, "limit": 1000});
        if let Some(last) = out.last() {
            args["after"] = last["id"].clone();
        }
        let page = tool(m, "loopsy_check_inbox", args)["messages"]
            .as_array()
            .unwrap()
            .clone();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Sent messages to `peer` by status (`loopsy_check_ack` counts).
pub fn counts(m: &mut McpPipe, peer: &str) -> Value {
    tool(m, "loopsy_check_ack", json!({"peer": peer}))["counts"].clone()
}

/// The NAT lab (`scripts/nat-lab`): a relay host `r` on a public segment, hosts `a` and `c`
/// behind router 1, `b` behind router 2. Torn down on drop.
pub struct NatLab {
    pub prefix: String,
}

impl NatLab {
    /// Build it with routers of the given NAT types (`eim` or `symmetric`). A lab that does not
    /// come up fails the test, unless skips were allowed by hand ([`skip_or_fail`]).
    pub fn up(nat1: &str, nat2: &str) -> Option<Self> {
        let prefix = format!("n{:05x}", (std::process::id() ^ rand_u32()) & 0xfffff);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/nat-lab");
        let o = Command::new(&script)
            .args(["up", &prefix, nat1, nat2])
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Self { prefix }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                skip_or_fail(&format!(
                    "NAT lab unavailable here (need root, iproute2, nftables): {why}"
                ));
                None
            }
        }
    }

    /// Namespace of host `name` (`r`, `a`, `b`, `c`).
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Plug host `name` in (`true`) or pull its cable.
    pub fn link(&self, name: &str, up: bool) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/nat-lab");
        let st = Command::new(script)
            .args(["link", &self.prefix, name, if up { "up" } else { "down" }])
            .status()
            .expect("nat-lab link");
        assert!(st.success());
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/nat-lab");
        let _ = Command::new(script).args(["down", &self.prefix]).status();
    }
}

/// `joiner` pairs with `holder` at one of its TCP addresses.
pub fn pair_at(holder: &TestHome, joiner: &TestHome) {
    pair_via(holder, joiner, "/tcp/");
}

/// `joiner` pairs with `holder` at one of its addresses containing `transport` (`/tcp/`,
/// `/quic-v1/`): not loopback when there is another (the joiner may be elsewhere).
pub fn pair_via(holder: &TestHome, joiner: &TestHome, transport: &str) {
    let mut child = holder
        .cmd(&["pair", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open until the command ends: it prints the pairing's result too.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let t: Value = serde_json::from_str(&line).unwrap();
    let code = t["code"].as_str().unwrap().to_string();
    let addrs: Vec<&str> = t["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.contains(transport) && !a.contains("p2p-circuit"))
        .collect();
    let addr = addrs
        .iter()
        .find(|a| !a.contains("/127.0.0.1/"))
        .or(addrs.first())
        .unwrap_or_else(|| panic!("no {transport} address to pair at in {t}"))
        .to_string();
    joiner.ok(&["pair", &addr, "--code", &code]);
    assert!(child.wait().unwrap().success());
    drop(out);
}
