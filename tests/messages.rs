//! Messages between real daemons: exactly-once delivery into the inbox, delivery and read
//! acks back to the sender, an outbox that survives restarts and waits for offline peers, and
//! bad input from a trusted-but-misbehaving peer (a raw libp2p node holding its key) dropped,
//! counted and never stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "common/gossip.rs"]
mod gossip;

use std::collections::HashSet;
use std::time::Duration;

use common::{
    agent, counts, inbox_all, kill9, pair, peers, started_on_fixed_port, tool, wait_until,
};
use serde_json::{Value, json};

#[test]
fn messages_arrive_once_with_delivery_and_read_acks() {
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    pair(&a, &b);
    let mut ma = agent(&a);
    let mut mb = agent(&b);

    // Online: the send returns once beta's daemon has it.
    let sent = tool(
        &mut ma,
        "loopsy_send_message",
        json!({"to": "beta", "body": "build is green", "thread": "ci", "type": "request"}),
    );
    let id = sent["id"].as_str().unwrap().to_string();
    assert_eq!(sent["recipients"][0]["to"], "beta");
    assert_eq!(sent["recipients"][0]["status"], "delivered", "{sent}");

    // Beta's agent waits (it does not poll) and sees it, with alpha's name.
    let got = tool(
        &mut mb,
        "loopsy_wait_for_message",
        json!({"thread": "ci", "timeout_s": 10}),
    );
    let m = &got["message"];
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["from_name"], "alpha");
    assert_eq!(m["type"], "request");
    assert_eq!(m["body"], "build is green");

    // Read receipt: beta acks, alpha sees "read".
    tool(&mut mb, "loopsy_ack_message", json!({"id": id}));
    wait_until(
        "alpha sees the read receipt",
        Duration::from_secs(20),
        || tool(&mut ma, "loopsy_check_ack", json!({"id": id}))["messages"][0]["status"] == "read",
    );
    // Acked: no longer unread; a wait now times out.
    let empty = tool(&mut mb, "loopsy_wait_for_message", json!({"timeout_s": 1}));
    assert!(empty["message"].is_null(), "{empty}");

    // A burst: 200 messages, every one exactly once and in order.
    let mut ids = Vec::new();
    for i in 0..200 {
        let s = tool(
            &mut ma,
            "loopsy_send_message",
            json!({"to": "beta", "body": format!("n{i}"), "wait_s": 0}),
        );
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    wait_until("all 200 delivered", Duration::from_secs(30), || {
        counts(&mut ma, "beta")["delivered"] == 200
    });
    let inbox = inbox_all(&mut mb);
    let got: Vec<&str> = inbox.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(got.len(), 201);
    assert_eq!(
        &got[1..],
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Beta offline: messages wait in alpha's outbox, across alpha's own restart, and go out
    // when beta is back — nobody sends them again.
    b.ok(&["stop"]);
    let mut waiting = Vec::new();
    for i in 0..5 {
        let s = tool(
            &mut ma,
            "loopsy_send_message",
            json!({"to": "beta", "body": format!("offline {i}")}),
        );
        assert_eq!(s["recipients"][0]["status"], "pending", "{s}");
        waiting.push(s["id"].as_str().unwrap().to_string());
    }
    drop(ma);
    a.ok(&["restart"]);
    let mut ma = agent(&a);
    assert_eq!(counts(&mut ma, "beta")["pending"], 5);
    b.ok(&["start"]);
    wait_until(
        "queued messages delivered on reconnect",
        Duration::from_secs(30),
        || counts(&mut ma, "beta")["pending"].is_null(),
    );
    let mut mb = agent(&b);
    let unread = tool(&mut mb, "loopsy_check_inbox", json!({"limit": 1000}))["messages"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(unread, 205, "200 unread from the burst plus the 5 queued");
    let st = tool(&mut mb, "loopsy_status", json!({}));
    assert_eq!(st["messages"]["unread"], 205, "{st}");
    assert_eq!(st["messages"]["inbox"], 206, "{st}");
    let all: HashSet<String> = inbox_all(&mut mb)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 206);
    assert!(waiting.iter().all(|w| all.contains(w)));

    // Broadcast reaches every trusted peer; unknown peers are a clear error.
    let s = tool(
        &mut ma,
        "loopsy_send_message",
        json!({"to": "*", "body": "hello all"}),
    );
    assert_eq!(s["recipients"].as_array().unwrap().len(), 1);
    let r = ma.call_tool("loopsy_send_message", json!({"to": "nobody", "body": "x"}));
    assert_eq!(r["result"]["isError"], true);
    assert_eq!(r["result"]["structuredContent"]["code"], "not_found");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("beta"), "lists the known peers: {text}");

    // The CLI says the same things.
    let out = b.ok(&["msg", "inbox", "--from", "alpha", "--limit", "1"]);
    let first_unread = "n0";
    assert!(
        out.contains(first_unread) && !out.contains("build is green") && !out.contains("n1"),
        "the oldest unread message, and only it: {out}"
    );
    let id2 = a
        .ok(&["msg", "send", "beta", "from the cli"])
        .trim()
        .to_string();
    let w: serde_json::Value =
        serde_json::from_str(&b.ok(&["msg", "wait", "--from", "alpha", "--json"])).unwrap();
    // Unread mail is there already: `wait` answers at once with the oldest unread message.
    assert_eq!(w["body"], first_unread, "{w}");
    assert_eq!(w["from_name"], "alpha", "{w}");
    b.ok(&["msg", "ack", &id2]);
    wait_until("cli status shows read", Duration::from_secs(20), || {
        a.ok(&["msg", "status", &id2]).contains("read")
    });
    // Without arguments: the last messages sent, to anyone (the README's `[ID]` is optional).
    let all = a.ok(&["msg", "status"]);
    assert!(all.contains(&id2) && all.contains("read"), "{all}");
}

#[test]
fn a_full_outbox_refuses_clearly_and_loses_nothing() {
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    pair(&a, &b);
    b.ok(&["stop"]);
    // Shrink alpha's outbox.
    let cfg = a.path().join("config.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[messages]\noutbox_max = 3\n");
    std::fs::write(&cfg, text).unwrap();
    a.ok(&["restart"]);
    let mut ma = agent(&a);
    for i in 0..3 {
        tool(
            &mut ma,
            "loopsy_send_message",
            json!({"to": "beta", "body": format!("{i}")}),
        );
    }
    let r = ma.call_tool("loopsy_send_message", json!({"to": "beta", "body": "4th"}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(r["result"]["structuredContent"]["code"], "unavailable");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("outbox is full") && text.contains("outbox_max"),
        "{text}"
    );
    // Oversize bodies are refused up front.
    let big = "x".repeat(70_000);
    let r = ma.call_tool("loopsy_send_message", json!({"to": "beta", "body": big}));
    assert_eq!(
        r["result"]["structuredContent"]["code"],
        "invalid_arguments"
    );
    // The three queued ones are all delivered once beta is back.
    b.ok(&["start"]);
    wait_until(
        "the queued three delivered",
        Duration::from_secs(30),
        || counts(&mut ma, "beta")["delivered"] == 3,
    );
    let mut mb = agent(&b);
    let bodies: Vec<String> = inbox_all(&mut mb)
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies, ["0", "1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_from_a_trusted_peer_are_dropped_counted_and_never_stored() {
    use loopsy_mesh::msg::deliver::encode_batch;
    use loopsy_mesh::msg::{Envelope, MsgType, Outcome, Signed, WireItem};
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    let g = started_on_fixed_port("gamma");
    pair(&b, &a);
    pair(&b, &g);
    // Gamma's daemon steps aside; a raw node with gamma's key speaks for it, once beta has
    // seen gamma go (gossipsub tells its subscriptions only on a peer's first connection).
    g.ok(&["stop"]);
    wait_until("beta sees gamma offline", Duration::from_secs(5), || {
        peers(&b)
            .iter()
            .any(|p| p["name"] == "gamma" && p["online"] == false)
    });
    let gid = loopsy_mesh::Identity::load(&g.path().join("identity.key")).unwrap();
    let g_peer = gid.peer_id().to_string();
    let a_peer = a.status()["peer_id"].as_str().unwrap().to_string();
    let b_status = b.status();
    let b_peer = b_status["peer_id"].as_str().unwrap().to_string();
    let addr = b_status["listen_addrs"][0].as_str().unwrap().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let env = |from: &str, to: &str, body: &str| Envelope {
        id: loopsy_mesh::msg::envelope::new_id(now),
        from: from.into(),
        to: to.into(),
        ts: now,
        kind: MsgType::Chat,
        body: body.into(),
        ttl_s: 3600,
        reply_to: None,
        thread: None,
    };
    let sign = |e: &Envelope| Signed::sign(e, gid.keypair()).unwrap();
    let one = |s: Signed| {
        let n = rand::random::<u64>();
        (n, encode_batch(n, &[WireItem::Msg(s)]))
    };

    let good = sign(&env(&g_peer, &b_peer, "legit"));
    let forged_from = sign(&env(&a_peer, &b_peer, "I am alpha"));
    let stranger = loopsy_mesh::Identity::generate();
    let other_key = Signed::sign(
        &env(&stranger.peer_id().to_string(), &b_peer, "relayed"),
        stranger.keypair(),
    )
    .unwrap();
    let mut tampered = sign(&env(&g_peer, &b_peer, "pay 1"));
    tampered.env = tampered.env.replace("pay 1", "pay 9");
    let mut malformed = sign(&env(&g_peer, &b_peer, "x"));
    malformed.env = "{\"not\": \"an envelope\"}".into();
    malformed.sig = gid
        .keypair()
        .sign(&[b"loopsy-msg-v1\0".as_slice(), malformed.env.as_bytes()].concat())
        .unwrap();
    let oversize = sign(&env(&g_peer, &b_peer, &"x".repeat(70_000)));
    let misaddressed = sign(&env(&g_peer, &a_peer, "for alpha"));
    let garbage = (0, vec![0xff; 9]);

    let mut raw = gossip::RawPeer::connect(&gid, &addr, &[gid.peer_id()]).await;
    let got = raw
        .exchange(
            vec![
                one(good.clone()),
                one(forged_from),
                one(other_key),
                one(tampered),
                one(malformed),
                one(oversize),
                one(misaddressed),
                garbage,
                // A retry of the good one: still only once in the inbox.
                one(good),
            ],
            &[7],
        )
        .await;
    assert_eq!(got[0], Some(vec![Outcome::Ok]));
    for (i, why) in [
        (1, "from does not match"),
        (2, "signed by a key other than"),
        (3, "does not verify"),
        (4, "malformed"),
        (5, "limit"),
        (6, "not addressed"),
    ] {
        match &got[i] {
            Some(v) => assert!(
                matches!(&v[..], [Outcome::Rejected(r)] if r.contains(why)),
                "batch {i}: {v:?}"
            ),
            None => panic!("batch {i}: no answer"),
        }
    }
    assert_eq!(got[8], Some(vec![Outcome::Ok]));

    // Without the messages capability: refused for now, not stored.
    b.ok(&["peers", "revoke", "gamma", "messages"]);
    let late = raw
        .exchange(vec![one(sign(&env(&g_peer, &b_peer, "after revoke")))], &[])
        .await;
    assert!(
        matches!(&late[0].as_deref(), Some([Outcome::Later(r)]) if r.contains("messages")),
        "{late:?}"
    );

    let mut mb = agent(&b);
    let inbox = inbox_all(&mut mb);
    let bodies: Vec<&str> = inbox.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["legit"]);
    let dropped = tool(&mut mb, "loopsy_check_inbox", json!({}))["dropped"].clone();
    assert_eq!(dropped["bad_signature"], 3, "{dropped}");
    assert_eq!(dropped["oversize"], 1, "{dropped}");
    assert_eq!(dropped["not_permitted"], 1, "{dropped}");
    assert!(dropped["malformed"].as_u64().unwrap() >= 2, "{dropped}");
}

#[test]
fn two_workers_on_two_machines_claim_one_task_and_exactly_one_wins() {
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    let c = started_on_fixed_port("gamma");
    pair(&a, &b);
    pair(&a, &c);
    let mut ma = agent(&a);
    let t = tool(
        &mut ma,
        "loopsy_task_create",
        json!({"assignee": "*", "description": "first one takes it"}),
    );
    let id = t["id"].as_str().unwrap().to_string();
    assert_eq!(t["status"], "submitted");
    // Updating a task nobody claimed says to claim it first (not "permission denied").
    let r = ma.call_tool(
        "loopsy_task_update",
        json!({"id": id, "status": "completed"}),
    );
    let e = &r["result"]["structuredContent"];
    assert_eq!(e["code"], "not_claimed", "{r}");
    assert!(
        e["message"].as_str().unwrap().contains("loopsy_task_claim"),
        "{r}"
    );
    // Both hear of it by message, then race to claim.
    let claims: Vec<Value> = [&b, &c]
        .map(|h| {
            let mut m = agent(h);
            let got = tool(&mut m, "loopsy_wait_for_message", json!({"timeout_s": 20}));
            assert_eq!(got["message"]["thread"], id.as_str());
            m
        })
        .into_iter()
        .map(|mut m| {
            let id = id.clone();
            std::thread::spawn(move || m.call_tool("loopsy_task_claim", json!({"id": id})))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let wins: Vec<&Value> = claims
        .iter()
        .filter(|r| r["result"]["isError"] == false)
        .collect();
    let losses: Vec<&Value> = claims
        .iter()
        .filter(|r| r["result"]["isError"] == true)
        .collect();
    assert_eq!((wins.len(), losses.len()), (1, 1), "{claims:?}");
    let winner = wins[0]["result"]["structuredContent"]["claimed_by_name"]
        .as_str()
        .unwrap()
        .to_string();
    let loss = &losses[0]["result"]["structuredContent"];
    assert_eq!(loss["code"], "conflict");
    assert!(
        loss["message"].as_str().unwrap().contains("claimed by"),
        "{loss}"
    );
    // The owner's record agrees, and only the winner can finish it.
    let listed = tool(&mut ma, "loopsy_task_list", json!({"status": "working"}));
    assert_eq!(listed["tasks"][0]["claimed_by_name"], winner.as_str());
    let loser = if winner == "beta" { &c } else { &b };
    let mut ml = agent(loser);
    let r = ml.call_tool(
        "loopsy_task_update",
        json!({"id": id, "status": "completed", "result": 1}),
    );
    assert_eq!(
        r["result"]["structuredContent"]["code"], "permission_denied",
        "{r}"
    );
    // Bad ids are clear errors.
    let r = ml.call_tool("loopsy_task_claim", json!({"id": "../../etc"}));
    assert_eq!(
        r["result"]["structuredContent"]["code"],
        "invalid_arguments"
    );

    // A task for beta is invisible to gamma: not found, whatever gamma asks.
    let for_b = tool(
        &mut ma,
        "loopsy_task_create",
        json!({"assignee": "beta", "description": "only for beta"}),
    );
    let mut mc = agent(&c);
    for (name, args) in [
        (
            "loopsy_task_wait",
            json!({"id": for_b["id"], "timeout_s": 1}),
        ),
        ("loopsy_task_claim", json!({"id": for_b["id"]})),
    ] {
        let r = mc.call_tool(name, args);
        assert_eq!(
            r["result"]["structuredContent"]["code"], "not_found",
            "{name}: {r}"
        );
    }
}

#[test]
fn a_group_message_reaches_each_member_and_unknown_groups_are_named() {
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    let c = started_on_fixed_port("gamma");
    pair(&a, &b);
    pair(&a, &c);
    let cfg = a.path().join("config.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[messages.groups]\nreviewers = [\"beta\", \"gamma\"]\n");
    std::fs::write(&cfg, text).unwrap();
    a.ok(&["restart"]);
    let mut ma = agent(&a);
    let s = tool(
        &mut ma,
        "loopsy_send_message",
        json!({"to": "group:reviewers", "body": "please review", "wait_s": 20}),
    );
    let mut to: Vec<&str> = s["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["to"].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(to, ["beta", "gamma"]);
    for h in [&b, &c] {
        let mut m = agent(h);
        let got = tool(&mut m, "loopsy_wait_for_message", json!({"timeout_s": 20}));
        assert_eq!(got["message"]["body"], "please review");
        assert_eq!(got["message"]["type"], "broadcast");
    }
    let r = ma.call_tool(
        "loopsy_send_message",
        json!({"to": "group:nobody", "body": "x"}),
    );
    assert_eq!(r["result"]["structuredContent"]["code"], "not_found");
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("reviewers")
    );
}

/// The sender killed with `kill -9` in the middle of a batch, while deliveries are in
/// flight: every message it acknowledged arrives once it is back, and none twice (the
/// outbox is durable and delivery is deduplicated by id).
#[test]
fn a_sender_killed_mid_batch_delivers_every_acknowledged_message_exactly_once() {
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    pair(&a, &b);
    let mut mb = agent(&b);
    let pid = a.status()["pid"].as_u64().unwrap() as u32;
    // An agent that sends without waiting for each answer (requests pipelined), so the
    // outbox runs ahead of delivery.
    let mut bridge = a
        .cmd(&["mcp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = bridge.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(bridge.stdout.take().unwrap());
    let line = |v: Value| format!("{v}\n");
    use std::io::{BufRead, Write};
    stdin
        .write_all(
            line(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}),
            )
            .as_bytes(),
        )
        .unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    stdin
        .write_all(
            line(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).as_bytes(),
        )
        .unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..5000u64 {
            let req = json!({"jsonrpc": "2.0", "id": i + 100, "method": "tools/call",
                "params": {"name": "loopsy_send_message",
                           "arguments": {"to": "beta", "body": format!("batch {i}"), "wait_s": 0}}});
            if stdin.write_all(line(req).as_bytes()).is_err() {
                break;
            }
        }
    });
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sink = acked.clone();
    let reader = std::thread::spawn(move || {
        let mut l = String::new();
        while stdout.read_line(&mut l).is_ok_and(|n| n > 0) {
            if let Ok(v) = serde_json::from_str::<Value>(&l)
                && v["result"]["isError"] == false
                && let Some(id) = v["id"].as_u64()
            {
                sink.lock().unwrap().push(id - 100);
            }
            l.clear();
        }
    });
    // Killed once a good number are acknowledged and some have been delivered.
    wait_until("deliveries under way", Duration::from_secs(30), || {
        acked.lock().unwrap().len() >= 300
            && tool(&mut mb, "loopsy_status", json!({}))["messages"]["inbox"]
                .as_u64()
                .is_some_and(|n| n >= 20)
    });
    kill9(pid);
    reader.join().unwrap();
    writer.join().unwrap();
    let _ = bridge.wait();
    let acked = acked.lock().unwrap().clone();
    let sent_before_kill = inbox_all(&mut mb).len();
    a.ok(&["start"]);
    let body_counts = |mb: &mut common::McpPipe| {
        let mut n = std::collections::HashMap::<String, usize>::new();
        for m in inbox_all(mb) {
            *n.entry(m["body"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        n
    };
    wait_until(
        "every acknowledged message delivered",
        Duration::from_secs(30),
        || {
            let n = body_counts(&mut mb);
            acked.iter().all(|i| n.contains_key(&format!("batch {i}")))
        },
    );
    let n = body_counts(&mut mb);
    let twice: Vec<_> = n.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // (Requests the daemon took but never answered before it died may have gone out too,
    // like a reply lost on the way; each still once.)
    eprintln!(
        "{} acknowledged, {sent_before_kill} delivered before the kill, all {} after",
        acked.len(),
        n.len()
    );
}

/// A sender killed with `kill -9` and started again reconnects while the peer still holds its
/// old QUIC connection, and gossipsub tells subscriptions only over a first connection: the
/// sender never heard that the peer reads its inbox, and its mail waited (for over 30 s in
/// every try before the first fix; 15-21 s with only the 5 s reset of a connection on which a
/// peer's inbox is not heard of, as the peer held the dead connection until its idle
/// timeout). Now the peer sees the sender identify with a new boot id while it still holds
/// the old connection, and closes both: mail goes out after one redial, within seconds.
/// Whether the old connection is still alive at the peer varies from run to run (here: from
/// every round to one round in twelve), so four rounds.
#[test]
fn mail_goes_out_after_the_sender_is_killed_and_restarted() {
    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    pair(&a, &b);
    let mut mb = agent(&b);
    for round in 0..4 {
        let pid = a.status()["pid"].as_u64().unwrap() as u32;
        kill9(pid);
        a.ok(&["start"]);
        let mut ma = agent(&a);
        tool(
            &mut ma,
            "loopsy_send_message",
            json!({"to": "beta", "body": format!("after kill {round}")}),
        );
        let t0 = std::time::Instant::now();
        let body = format!("after kill {round}");
        let deadline = t0 + Duration::from_secs(6);
        while !inbox_all(&mut mb)
            .iter()
            .any(|m| m["body"] == body.as_str())
        {
            if std::time::Instant::now() > deadline {
                let logs = |h: &common::TestHome| h.ok(&["logs", "-n", "60"]);
                panic!(
                    "round {round}: no message 6 s after the restart\n--- alpha:\n{}\n--- beta:\n{}",
                    logs(&a),
                    logs(&b)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("round {round}: delivered in {:?}", t0.elapsed());
    }
}

#[test]
fn peer_text_reaches_the_terminal_escaped_unless_raw() {
    let a = common::started_on_loopback("alpha");
    let b = common::started_on_loopback("beta");
    pair(&a, &b);
    // A body that would retitle the terminal, clear it and fake a prompt.
    let evil = "\x1b]0;pwned\x07hi\x1b[2J\r$ sudo rm -rf ~\u{202e}";
    let out = a.run(&["msg", "send", "beta", evil, "--wait", "10"]);
    assert!(out.status.success(), "{out:?}");
    let inbox = b.ok(&["msg", "inbox"]);
    assert!(
        !inbox.contains('\x1b') && !inbox.contains('\r'),
        "{inbox:?}"
    );
    assert!(
        inbox.contains("\\x1b]0;pwned\\x07hi\\x1b[2J\\r$ sudo rm -rf ~\\u{202e}"),
        "{inbox:?}"
    );
    assert!(b.ok(&["msg", "inbox", "--raw"]).contains(evil));
    let json: Value = serde_json::from_str(&b.ok(&["msg", "inbox", "--json"])).unwrap();
    assert_eq!(json[0]["body"], evil);
    // Context values and keys from a peer, likewise.
    a.ok(&["ctx", "set", "note", evil]);
    wait_until("note replicated", Duration::from_secs(20), || {
        b.run(&["ctx", "get", "note"]).status.success()
    });
    let got = b.ok(&["ctx", "get", "note"]);
    assert!(
        !got.contains('\x1b') && got.contains("\\x1b]0;pwned"),
        "{got:?}"
    );
    assert_eq!(
        b.ok(&["ctx", "get", "note", "--raw"])
            .trim_end_matches('\n'),
        evil
    );
    let ls = b.ok(&["ctx", "ls"]);
    assert!(!ls.contains('\x1b'), "{ls:?}");
}
