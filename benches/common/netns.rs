//! The network-namespace lab the multi-daemon benches run in (`scripts/netns-lab`; needs
//! root): namespaces on one virtual switch, torn down when the guard drops.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{BIN, ok};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-lab");

/// Run `scripts/netns-lab ARGS…`; a failure ends the bench.
pub fn lab(args: &[&str]) {
    let st = Command::new(LAB).args(args).status().unwrap();
    assert!(
        st.success(),
        "netns-lab {args:?} failed (needs root + iproute2)"
    );
}

/// Takes the lab `prefix` down when dropped.
pub struct Lab(pub String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(LAB).args(["down", &self.0]).status();
    }
}

/// `loopsy --home HOME ARGS…` inside namespace `ns`.
pub fn in_ns(ns: &str, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, BIN, "--home"])
        .arg(home)
        .args(args)
        .env_remove("LOOPSY_HOME");
    c
}

/// Pair the daemon at `home` (in `ns`) with the lab's first daemon (in `ns0`, at `home0`,
/// 10.201.0.1), as a user would: `pair --json` there, `pair <addr> --code` here.
pub fn pair_with_first(ns0: &str, home0: &Path, ns: &str, home: &Path) {
    let mut w = in_ns(ns0, home0, &["pair", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(w.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let t: Value = serde_json::from_str(&line).unwrap();
    let code = t["code"].as_str().unwrap();
    let addr = t["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with("/ip4/10.201.0.1/tcp/"))
        .unwrap();
    ok(&mut in_ns(ns, home, &["pair", addr, "--code", code]));
    assert!(w.wait().unwrap().success());
}
