//! Messages on a real (namespaced) network: five daemons all writing to each other, every
//! message in each inbox exactly once with delivery and read acks back; and 10,000 messages
//! sent while the recipient is killed with `kill -9` twice and its cable pulled once — none
//! lost, none duplicated, all acknowledged in the end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    McpPipe, NetnsLab, TestHome, agent, counts, inbox_all, kill9, pair, tool, wait_until,
};
use serde_json::{Value, json};

fn started(ns: &str, name: &str) -> TestHome {
    let h = TestHome::in_netns(ns);
    h.ok(&["init", "--name", name]);
    std::fs::write(
        h.path().join("config.toml"),
        format!("[node]\nname = \"{name}\"\n[discovery]\nmdns = false\n"),
    )
    .unwrap();
    h.ok(&["start"]);
    h
}

fn online_peers(h: &TestHome) -> usize {
    serde_json::from_str::<Value>(&h.ok(&["peers", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["online"] == true)
        .count()
}

#[test]
fn five_daemons_each_message_exactly_once_with_acks() {
    let Some(lab) = NetnsLab::up(5) else { return };
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let homes: Vec<TestHome> = names
        .iter()
        .enumerate()
        .map(|(i, n)| started(&lab.host(i + 1), n))
        .collect();
    for h in &homes[1..] {
        pair(&homes[0], h);
    }
    for h in &homes {
        wait_until("a full mesh", Duration::from_secs(60), || {
            online_peers(h) == 4
        });
    }
    let mut agents: Vec<McpPipe> = homes.iter().map(agent).collect();
    for (i, m) in agents.iter_mut().enumerate() {
        for (j, to) in names.iter().enumerate() {
            if i == j {
                continue;
            }
            for k in 0..10 {
                tool(
                    m,
                    "loopsy_send_message",
                    json!({"to": to, "body": format!("{}→{to} #{k}", names[i]), "wait_s": 0}),
                );
            }
        }
        tool(
            m,
            "loopsy_send_message",
            json!({"to": "*", "body": format!("all from {}", names[i]), "wait_s": 0}),
        );
    }
    for (i, m) in agents.iter_mut().enumerate() {
        for (j, to) in names.iter().enumerate() {
            if i != j {
                wait_until("delivered", Duration::from_secs(60), || {
                    counts(m, to)["delivered"] == 11
                });
            }
        }
    }
    for (j, m) in agents.iter_mut().enumerate() {
        let inbox = inbox_all(m);
        assert_eq!(
            inbox.len(),
            44,
            "{}: 10 from each of 4, plus 4 broadcasts",
            names[j]
        );
        let ids: HashSet<(String, String)> = inbox
            .iter()
            .map(|v| {
                (
                    v["id"].as_str().unwrap().into(),
                    v["from"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(ids.len(), 44, "no duplicates");
        for (i, from) in names.iter().enumerate() {
            if i == j {
                continue;
            }
            let mine: Vec<&Value> = inbox.iter().filter(|v| v["from_name"] == *from).collect();
            assert_eq!(mine.len(), 11, "{} from {from}", names[j]);
            assert!(mine.iter().any(|v| v["type"] == "broadcast"));
        }
        // Read receipts: acknowledge everything from n1 (n1 itself skips).
        if j != 0 {
            for v in inbox.iter().filter(|v| v["from_name"] == "n1") {
                tool(m, "loopsy_ack_message", json!({"id": v["id"]}));
            }
        }
    }
    for to in &names[1..] {
        wait_until("read receipts back at n1", Duration::from_secs(60), || {
            counts(&mut agents[0], to)["read"] == 11
        });
    }
}

#[test]
fn ten_thousand_messages_survive_kill_9_twice_and_a_pulled_cable() {
    const N: usize = 10_000;
    let Some(lab) = NetnsLab::up(2) else { return };
    let a = started(&lab.host(1), "alpha");
    let b = started(&lab.host(2), "beta");
    pair(&a, &b);
    wait_until("connected", Duration::from_secs(30), || {
        online_peers(&a) == 1
    });

    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = sent.clone();
        let mut ma = agent(&a);
        std::thread::spawn(move || {
            let mut ids = Vec::with_capacity(N);
            for i in 0..N {
                let r = tool(
                    &mut ma,
                    "loopsy_send_message",
                    json!({"to": "beta", "body": format!("m{i}"), "wait_s": 0}),
                );
                ids.push(r["id"].as_str().unwrap().to_string());
                sent.store(i + 1, Ordering::SeqCst);
            }
            (ids, ma)
        })
    };
    let t0 = std::time::Instant::now();
    let reached = |n: usize| {
        wait_until("the sender to get there", Duration::from_secs(300), || {
            sent.load(Ordering::SeqCst) >= n
        });
        eprintln!("{:>6.1} s: {n} sent", t0.elapsed().as_secs_f64());
    };
    let restart_b = || {
        kill9(b.pid());
        b.ok(&["start"]);
    };
    reached(2_000);
    restart_b();
    reached(4_000);
    lab.link(2, false);
    // The outage lasts while the sender queues another thousand.
    let at_cut = sent.load(Ordering::SeqCst);
    reached(at_cut + 1_000);
    lab.link(2, true);
    reached(7_000);
    restart_b();
    let (ids, mut ma) = sender.join().unwrap();
    eprintln!("{:>6.1} s: all sent", t0.elapsed().as_secs_f64());

    let mut last_print = std::time::Instant::now();
    wait_until("every message delivered", Duration::from_secs(300), || {
        let c = counts(&mut ma, "beta");
        if last_print.elapsed() > Duration::from_secs(3) {
            eprintln!("{:>6.1} s: {c}", t0.elapsed().as_secs_f64());
            last_print = std::time::Instant::now();
        }
        c["delivered"] == N && c["pending"].is_null()
    });
    eprintln!("{:>6.1} s: all delivered", t0.elapsed().as_secs_f64());

    let mut mb = agent(&b);
    let inbox = inbox_all(&mut mb);
    assert_eq!(inbox.len(), N, "0 lost, 0 duplicated");
    let got: HashSet<&str> = inbox.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got, want);
}
