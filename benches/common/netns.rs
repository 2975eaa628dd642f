//! The network-namespace lab the multi-daemon benches run in (`scripts/netns-lab`; needs
//! root): namespaces on one virtual switch, torn down when the guard drops.

use std::path::Path;
use std::process::Command;

use super::BIN;

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
