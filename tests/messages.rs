//! Messages between real daemons: exactly-once delivery into the inbox, delivery and read
//! acks back to the sender, an outbox that survives restarts and waits for offline peers, and
//! bad input from a trusted-but-misbehaving peer (a raw libp2p node holding its key) dropped,
//! counted and never stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{McpPipe, TestHome, pair, started_on_fixed_port, wait_until};
use serde_json::{Value, json};

fn tool(m: &mut McpPipe, name: &str, args: Value) -> Value {
    let r = m.call_tool(name, args);
    assert_eq!(r["result"]["isError"], false, "{name}: {r}");
    r["result"]["structuredContent"].clone()
}

fn agent(h: &TestHome) -> McpPipe {
    let mut m = h.mcp();
    m.initialize();
    m
}

/// Every inbox message (paging through), oldest first.
fn inbox_all(m: &mut McpPipe) -> Vec<Value> {
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

fn counts(m: &mut McpPipe, peer: &str) -> Value {
    tool(m, "loopsy_check_ack", json!({"peer": peer}))["counts"].clone()
}

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
    assert!(
        out.contains("build is green") || out.contains("n0"),
        "{out}"
    );
    let id2 = a
        .ok(&["msg", "send", "beta", "from the cli"])
        .trim()
        .to_string();
    let w = b.ok(&["msg", "wait", "--from", "alpha", "--json"]);
    assert!(!w.is_empty());
    b.ok(&["msg", "ack", &id2]);
    wait_until("cli status shows read", Duration::from_secs(20), || {
        a.ok(&["msg", "status", &id2]).contains("read")
    });
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
