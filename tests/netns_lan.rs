//! Three daemons on a LAN of network namespaces: found by mDNS with no configuration,
//! paired by PeerId, running jobs both ways, and a third machine reaching the others after
//! pairing with just one of them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::{NetnsLab, TestHome, peers, wait_until};
use serde_json::Value;

/// `b` pairs with `a` by PeerId alone, once mDNS has shown b where a is.
fn pair_by_peer_id(a: &TestHome, b: &TestHome) {
    use std::io::{BufRead, BufReader};
    let mut child = a
        .cmd(&["pair", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let t: Value = serde_json::from_str(&line).unwrap();
    let (code, id) = (
        t["code"].as_str().unwrap().to_string(),
        t["peer_id"].as_str().unwrap().to_string(),
    );
    // mDNS queries go out every 5 s; allow a generous margin under a loaded CI, and show both
    // daemons' logs if discovery still does not happen.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = b.run(&["pair", &id, "--code", &code]);
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("has not been seen on the LAN"),
            "pairing failed: {err}"
        );
        if std::time::Instant::now() > deadline {
            let logs = |h: &TestHome| {
                std::fs::read_to_string(h.path().join("logs/daemon.log")).unwrap_or_default()
            };
            panic!(
                "no mDNS discovery within 60 s\n--- code holder ---\n{}\n--- joiner ---\n{}",
                logs(a),
                logs(b)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn lan_discovery_pairing_exec_and_introductions() {
    let Some(lab) = NetnsLab::up(3) else { return };
    let hosts: Vec<TestHome> = (1..=3).map(|i| TestHome::in_netns(&lab.host(i))).collect();
    for (i, h) in hosts.iter().enumerate() {
        h.ok(&["init", "--name", &format!("host{}", i + 1)]);
        // Default port, all interfaces, mDNS on: no configuration at all.
        h.ok(&["start"]);
    }
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let addrs = a.status()["listen_addrs"].to_string();
    assert!(addrs.contains("/ip4/10.201.0.1/tcp/19532/"), "{addrs}");

    pair_by_peer_id(a, b);
    let p = &peers(b)[0];
    assert_eq!(p["name"], "host1");
    assert!(
        p["address"]
            .as_str()
            .unwrap()
            .starts_with("/ip4/10.201.0.1/"),
        "{p}"
    );
    assert_eq!(b.ok(&["exec", "host1", "--", "printf", "from-b"]), "from-b");
    assert_eq!(a.ok(&["exec", "host2", "--", "printf", "from-a"]), "from-a");

    // host3 pairs with host2 only, and reaches host1 through host2's introduction.
    pair_by_peer_id(b, c);
    wait_until("host3 reaches host1", Duration::from_secs(30), || {
        peers(c)
            .iter()
            .any(|p| p["name"] == "host1" && p["online"] == true)
    });
    assert_eq!(
        c.ok(&["exec", "host1", "--", "printf", "via-intro"]),
        "via-intro"
    );
    assert_eq!(a.ok(&["exec", "host3", "--", "printf", "back"]), "back");

    // Pull host1's cable: the others see it go; plug it back: they reconnect by themselves.
    lab.link(1, false);
    wait_until("host2 sees host1 offline", Duration::from_secs(45), || {
        peers(b)
            .iter()
            .any(|p| p["name"] == "host1" && p["online"] == false)
    });
    lab.link(1, true);
    wait_until("host2 sees host1 again", Duration::from_secs(45), || {
        peers(b)
            .iter()
            .any(|p| p["name"] == "host1" && p["online"] == true)
    });
    assert_eq!(b.ok(&["exec", "host1", "--", "printf", "again"]), "again");
    for h in &hosts {
        h.ok(&["stop"]);
    }
}
