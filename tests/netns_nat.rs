//! Beyond the LAN, in the NAT lab (`scripts/nat-lab`): two daemons behind different NAT
//! routers, paired through a relay node on the public side, reach each other through the
//! relay, upgrade to a direct connection by hole punching where the NATs allow it, stay
//! relayed (and working, past libp2p's 2-minute circuit limit) where they do not, and come
//! back when the relay node does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{NatLab, TestHome, kill9, pair_at, peers, wait_until};
use serde_json::Value;

/// Daemon logs with the NAT machinery's decisions (shown when a test fails).
const LOG: &str = "[log]\nlevel = \"info,loopsy_mesh::node_nat=debug,libp2p_dcutr=debug\"\n";

/// The relay node's TCP address.
fn relay_addr(r: &TestHome) -> String {
    let st = r.status();
    st["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.starts_with("/ip4/198.51.100.10/tcp/"))
        .unwrap_or_else(|| panic!("relay not on the public segment: {st}"))
        .to_string()
}

fn peer(h: &TestHome, name: &str) -> Value {
    peers(h)
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no peer {name}"))
}

fn reserved(h: &TestHome) -> bool {
    h.status()["mesh"]["relays"]
        .as_array()
        .is_some_and(|v| v.iter().any(|r| !r["reserved_since"].is_null()))
}

/// Wait for `cond`, or fail showing every daemon's status, peers and NAT log lines.
fn wait_for(m: &Mesh, what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > end {
            let mut dump = String::new();
            for (n, h) in [
                ("relay", &m.r),
                ("alice", &m.a),
                ("bob", &m.b),
                ("carol", &m.c),
            ] {
                let st = h.run(&["status", "--json"]);
                let ps = h.run(&["peers", "list", "--json"]);
                let ps: Vec<String> = serde_json::from_slice::<Value>(&ps.stdout)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} online={} path={} via={} addr={}",
                            p["name"], p["peer_id"], p["online"], p["path"], p["via"], p["address"]
                        )
                    })
                    .collect();
                let lines: Vec<String> = log(h)
                    .lines()
                    .filter(|l| {
                        l.contains("node_nat")
                            || l.contains("dcutr")
                            || l.contains("WARN")
                            || l.contains("ERROR")
                    })
                    .map(|l| l.chars().take(300).collect())
                    .collect();
                dump += &format!(
                    "\n--- {n}\nstatus: {}\npeers: {}\nlog:\n{}\n",
                    String::from_utf8_lossy(&st.stdout),
                    ps.join("\n  "),
                    lines.join("\n")
                );
            }
            panic!("timed out after {secs} s waiting for {what}{dump}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log(h: &TestHome) -> String {
    std::fs::read_to_string(h.path().join("logs/daemon.log")).unwrap_or_default()
}

/// Relay node `r` (serving), `a` + `c` behind router 1, `b` behind router 2. `a` learns the
/// relay from pairing with it; `b` has it in `relay.nodes`. `c` pairs with `a` on their LAN.
struct Mesh {
    r: TestHome,
    a: TestHome,
    b: TestHome,
    c: TestHome,
}

/// Where `h` may send and receive files (beside its data dir, which is never allowed).
fn files_dir(h: &TestHome) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(format!("{}.files", h.path().display()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write `h`'s config: its name, `extra` sections, files allowed in [`files_dir`].
fn config(h: &TestHome, name: &str, extra: &str) {
    std::fs::write(
        h.path().join("config.toml"),
        format!(
            "[node]\nname = \"{name}\"\n{extra}[files]\nallowed_paths = [\"{}\"]\n{LOG}",
            files_dir(h).display()
        ),
    )
    .unwrap();
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for h in [&self.r, &self.a, &self.b, &self.c] {
            let _ = std::fs::remove_dir_all(format!("{}.files", h.path().display()));
        }
    }
}

/// The `[relay]` section: the relay node to reserve on, if any, and hole punching off when
/// `punch` is false.
fn relay_section(node: Option<&str>, punch: bool) -> String {
    let mut s = String::from("[relay]\n");
    if let Some(n) = node {
        s.push_str(&format!("nodes = [\"{n}\"]\n"));
    }
    if !punch {
        s.push_str("hole_punching = false\n");
    }
    s
}

fn mesh(lab: &NatLab) -> Mesh {
    mesh_punching(lab, true)
}

/// The mesh, with hole punching (DCUtR) on or off on every member.
fn mesh_punching(lab: &NatLab, punch: bool) -> Mesh {
    let home = |ns: &str, name: &str| {
        let h = TestHome::in_netns(&lab.ns(ns));
        h.ok(&["init", "--name", name]);
        config(&h, name, &relay_section(None, punch));
        h
    };
    let (r, a, b, c) = (
        home("r", "relay"),
        home("a", "alice"),
        home("b", "bob"),
        home("c", "carol"),
    );
    r.ok(&["relay-node"]);
    let raddr = relay_addr(&r);
    config(&b, "bob", &relay_section(Some(&raddr), punch));
    // carol listens on another port than alice: behind one NAT, two hosts on the same port
    // cannot both keep it, and whoever loses gets a random one (hole punching then fails,
    // as it does behind a real router).
    config(
        &c,
        "carol",
        &format!(
            "[mesh]\nlisten_port = 19533\n{}",
            relay_section(None, punch)
        ),
    );
    for h in [&a, &b, &c] {
        h.ok(&["start"]);
    }
    // b names a relay it has not paired with yet: status says what to do.
    let st = b.status();
    assert!(
        st["mesh"]["relays"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("pair")),
        "{st}"
    );
    pair_at(&r, &a);
    pair_at(&r, &b);
    pair_at(&a, &c);
    Mesh { r, a, b, c }
}

/// a and b meet through the relay, run a job, exchange a message and a context key.
fn talk(m: &Mesh, tag: &str) {
    let out = m.a.ok(&["exec", "bob", "--", "printf", tag]);
    assert_eq!(out, tag);
    let out = m.b.ok(&["exec", "alice", "--", "printf", tag]);
    assert_eq!(out, tag);
    m.a.ok(&["msg", "send", "bob", &format!("hello-{tag}")]);
    wait_until("bob's inbox", Duration::from_secs(20), || {
        m.b.ok(&["msg", "inbox", "--all"])
            .contains(&format!("hello-{tag}"))
    });
    m.a.ok(&["ctx", "set", &format!("nat/{tag}"), "shared"]);
    wait_until("the context key at bob", Duration::from_secs(20), || {
        m.b.run(&["ctx", "get", &format!("nat/{tag}")])
            .status
            .success()
    });
}

/// Bring bob back on another port: alice's NAT has no hole for it, so bob's direct dials are
/// dropped and the relay carries the new connection. Returns alice's log from then on.
fn bob_moves(m: &Mesh, punch: bool) -> usize {
    m.b.ok(&["stop"]);
    wait_for(m, "alice sees bob go", 30, || {
        peer(&m.a, "bob")["online"] == false
    });
    config(
        &m.b,
        "bob",
        &format!(
            "[mesh]\nlisten_port = 19600\n{}",
            relay_section(Some(&relay_addr(&m.r)), punch)
        ),
    );
    let mark = log(&m.a).len();
    m.b.ok(&["start"]);
    mark
}

/// `mesh.hole_punches` in `h`'s status.
fn punches(h: &TestHome) -> (u64, u64) {
    let st = h.status();
    let p = &st["mesh"]["hole_punches"];
    (
        p["succeeded"].as_u64().unwrap_or(0),
        p["failed"].as_u64().unwrap_or(0),
    )
}

#[test]
fn behind_two_port_keeping_nats_the_relayed_connection_is_hole_punched_to_direct() {
    let Some(lab) = NatLab::up("eim", "eim") else {
        return;
    };
    let m = mesh(&lab);
    wait_for(&m, "both reserve on the relay", 20, || {
        reserved(&m.a) && reserved(&m.b)
    });
    // The relay introduced them; they have only each other's NATed addresses and the relay.
    wait_for(&m, "alice and bob connect", 30, || {
        peer(&m.a, "bob")["online"] == true
    });
    // Introduced at the same moment, they often dial each other's NAT mappings at once and
    // meet directly (a simultaneous open through two port-keeping NATs) — or through the relay.
    talk(&m, "first");
    let alice_before = punches(&m.a).0;

    // bob comes back on another port; the relay carries the new connection, then DCUtR
    // punches a hole. It reports the upgrade on the side whose dial won: that side counts it
    // and calls the path hole-punched (the other sees a direct connection). bob is a new
    // process, so its count starts again from zero.
    let mark = bob_moves(&m, true);
    wait_for(&m, "the path is upgraded by DCUtR", 30, || {
        peer(&m.a, "bob")["path"] == "hole-punched" || peer(&m.b, "alice")["path"] == "hole-punched"
    });
    // A path read as hole-punched implies a success already counted on that side (the count
    // only grows): read the path first, then the count.
    let a_side = peer(&m.a, "bob")["path"] == "hole-punched";
    let alice_now = punches(&m.a).0 - alice_before;
    let b_side = peer(&m.b, "alice")["path"] == "hole-punched";
    let bob_now = punches(&m.b).0;
    assert!(
        alice_now + bob_now >= 1,
        "hole-punched without a DCUtR success counted on either side"
    );
    assert!(
        !a_side || alice_now >= 1,
        "alice calls it hole-punched without a counted success"
    );
    assert!(
        !b_side || bob_now >= 1,
        "bob calls it hole-punched without a counted success"
    );
    // The change is visible: relayed (via the relay node) first, then direct.
    let bob_id = peer(&m.a, "bob")["peer_id"].as_str().unwrap().to_string();
    let after_log = log(&m.a)[mark..].to_string();
    let relayed = after_log
        .find(&format!("peer={bob_id} path=relayed via=Some(\"relay\")"))
        .unwrap_or_else(|| panic!("no relayed start logged:\n{after_log}"));
    if a_side {
        let punched = after_log
            .find(&format!("peer={bob_id} path=hole-punched"))
            .expect("the upgrade was logged");
        assert!(relayed < punched, "{after_log}");
        let shown = m.a.ok(&["mesh", "status"]);
        assert!(shown.contains("hole-punched"), "{shown}");
        assert!(shown.contains("upgraded to direct"), "{shown}");
    }
    wait_for(&m, "alice's path to bob is direct", 10, || {
        matches!(
            peer(&m.a, "bob")["path"].as_str(),
            Some("direct" | "hole-punched")
        )
    });
    let doc = String::from_utf8_lossy(&m.a.run(&["doctor"]).stdout).into_owned();
    assert!(doc.contains("reserved on relay"), "{doc}");
    let p = peer(&m.a, "bob");
    assert!(
        p["address"].as_str().unwrap().contains("198.51.100.2"),
        "{p}"
    );
    assert!(p["via"].is_null(), "{p}");
    assert!(p["path_since"].as_u64().is_some(), "{p}");
    talk(&m, "punched");
    for h in [&m.a, &m.b, &m.c, &m.r] {
        h.ok(&["stop"]);
    }
}

/// The control: the same network and the same move with DCUtR off on every member. The
/// connection stays relayed, so the upgrade above is DCUtR's doing.
#[test]
fn with_hole_punching_off_the_same_move_stays_relayed() {
    let Some(lab) = NatLab::up("eim", "eim") else {
        return;
    };
    let m = mesh_punching(&lab, false);
    wait_for(&m, "both reserve on the relay", 20, || {
        reserved(&m.a) && reserved(&m.b)
    });
    wait_for(&m, "alice and bob connect", 30, || {
        peer(&m.a, "bob")["online"] == true
    });
    talk(&m, "first");
    bob_moves(&m, false);
    wait_for(&m, "bob back, relayed", 30, || {
        peer(&m.a, "bob")["path"] == "relayed"
    });
    talk(&m, "relayed");
    // The window in which the run above upgrades (seconds; 30 s at most): the path stays
    // relayed on both sides, and nothing counts a punch.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            peer(&m.a, "bob")["path"],
            "relayed",
            "alice's path changed without DCUtR"
        );
        assert_eq!(
            peer(&m.b, "alice")["path"],
            "relayed",
            "bob's path changed without DCUtR"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(m.a.status()["mesh"]["hole_punches"].is_null());
    for h in [&m.a, &m.b, &m.c, &m.r] {
        h.ok(&["stop"]);
    }
}

#[test]
fn behind_a_symmetric_nat_the_connection_stays_relayed_lasts_and_survives_the_relay() {
    let Some(lab) = NatLab::up("eim", "symmetric") else {
        return;
    };
    let m = mesh(&lab);
    wait_for(&m, "both reserve on the relay", 20, || {
        reserved(&m.a) && reserved(&m.b)
    });
    wait_for(&m, "alice and bob connect", 30, || {
        peer(&m.a, "bob")["online"] == true
    });
    talk(&m, "relayed");
    let p = peer(&m.a, "bob");
    assert_eq!(p["path"], "relayed", "{p}");
    assert_eq!(p["via"], "relay", "{p}");
    let since = p["path_since"].clone();
    let shown = m.a.ok(&["mesh", "status"]);
    assert!(shown.contains("relayed via relay"), "{shown}");
    // A file goes through too, past libp2p's default 128 KiB circuit limit, with a warning
    // that it took the relay.
    let src = files_dir(&m.a).join("over-the-relay.bin");
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let dest = files_dir(&m.b).join("got.bin");
    let o = m.a.run(&[
        "cp",
        src.to_str().unwrap(),
        &format!("bob:{}", dest.display()),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("no direct path to bob"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // Light traffic well past libp2p's default 2-minute circuit limit: nothing is cut.
    let soak = std::env::var("LOOPSY_NAT_SOAK_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600u64);
    let end = Instant::now() + Duration::from_secs(soak);
    let mut n = 0;
    while Instant::now() < end {
        let tag = format!("tick{n}");
        assert_eq!(m.a.ok(&["exec", "bob", "--", "printf", &tag]), tag);
        let p = peer(&m.a, "bob");
        assert_eq!(p["path"], "relayed", "after {n} rounds: {p}");
        assert_eq!(
            p["path_since"], since,
            "the relayed connection was cut: {p}"
        );
        n += 1;
        // Pacing, not waiting for a state: light traffic is one job every 10 s (the
        // connection carries only pings between them).
        std::thread::sleep(
            Duration::from_secs(10).min(end.saturating_duration_since(Instant::now())),
        );
    }
    eprintln!("{n} jobs over {soak} s on one relayed connection");

    // The relay node dies: the LAN peers do not notice; the NATed pair loses its path.
    kill9(m.r.pid());
    wait_for(&m, "alice sees bob go", 30, || {
        peer(&m.a, "bob")["online"] == false
    });
    let c = peer(&m.a, "carol");
    assert_eq!(c["online"], true, "{c}");
    assert_eq!(c["path"], "direct", "{c}");
    assert_eq!(m.c.ok(&["exec", "alice", "--", "printf", "lan"]), "lan");
    // It comes back: reservations are renewed and the pair reconnects through it.
    m.r.ok(&["relay-node"]);
    wait_for(&m, "both reserve again", 45, || {
        reserved(&m.a) && reserved(&m.b)
    });
    wait_for(&m, "alice and bob reconnect", 45, || {
        peer(&m.a, "bob")["online"] == true
    });
    talk(&m, "again");
    for h in [&m.a, &m.b, &m.c, &m.r] {
        h.ok(&["stop"]);
    }
}
