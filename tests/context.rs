//! The context store on real daemons: keys through the CLI and MCP, on a peer with the
//! `context` capability, clear errors for bad input, and every acknowledged write surviving a
//! `kill -9` in the middle of a stream of writes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::{TestHome, kill9, pair, started_on_loopback, wait_until};
use serde_json::{Value, json};

#[test]
fn keys_through_the_cli_and_on_a_peer() {
    let a = started_on_loopback("alpha");
    let b = started_on_loopback("beta");
    a.ok(&["ctx", "set", "build/status", "green"]);
    a.ok(&["ctx", "set", "build/n", "{\"passed\": 12}", "--json"]);
    assert_eq!(a.ok(&["ctx", "get", "build/status"]).trim(), "green");
    let e: Value = serde_json::from_str(&a.ok(&["ctx", "get", "build/n", "--json"])).unwrap();
    assert_eq!(e["entry"]["value"]["passed"], 12);
    assert_eq!(e["entry"]["written_by"], "alpha");
    let ls: Value = serde_json::from_str(&a.ok(&["ctx", "ls", "build/", "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2);
    a.ok(&["ctx", "rm", "build/n"]);
    assert!(!a.run(&["ctx", "get", "build/n"]).status.success());
    // Survives a restart.
    a.ok(&["restart"]);
    assert_eq!(a.ok(&["ctx", "get", "build/status"]).trim(), "green");

    // On a peer: alpha writes into beta's context and reads beta's copy.
    pair(&a, &b);
    a.ok(&["ctx", "set", "from-alpha", "hi", "--peer", "beta"]);
    assert_eq!(b.ok(&["ctx", "get", "from-alpha"]).trim(), "hi");
    let e: Value = serde_json::from_str(&b.ok(&["ctx", "get", "from-alpha", "--json"])).unwrap();
    assert_eq!(e["entry"]["written_by"], "alpha");
    assert_eq!(
        a.ok(&["ctx", "get", "from-alpha", "--peer", "beta"]).trim(),
        "hi"
    );
    // A peer read reports the replica's lag. Alpha stops sharing with beta (beta may still
    // be read), writes, and beta's replica is behind until sharing resumes.
    a.ok(&["peers", "revoke", "beta", "context"]);
    a.ok(&["ctx", "set", "only-here", "1"]);
    let r: Value = serde_json::from_slice(
        &a.run(&["ctx", "get", "only-here", "--peer", "beta", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(r["found"], false, "{r}");
    assert_eq!(r["sync"]["peer"], "beta", "{r}");
    assert_eq!(r["sync"]["in_sync"], false, "{r}");
    assert!(r["sync"]["changes_they_lack"].as_u64().unwrap() >= 1, "{r}");
    let text = a.run(&["ctx", "get", "only-here", "--peer", "beta"]);
    let err = String::from_utf8_lossy(&text.stderr);
    assert!(
        err.contains("replica on beta") && err.contains("behind"),
        "{err}"
    );
    a.ok(&["peers", "grant", "beta", "context"]);
    wait_until("beta's replica catches up", Duration::from_secs(20), || {
        let r: Value = serde_json::from_slice(
            &a.run(&["ctx", "get", "only-here", "--peer", "beta", "--json"])
                .stdout,
        )
        .unwrap();
        r["found"] == true && r["sync"]["in_sync"] == true && r["sync"]["last_sync_ms_ago"].is_u64()
    });

    // Without the capability, beta refuses.
    b.ok(&["peers", "revoke", "alpha", "context"]);
    let err = a.fails(&["ctx", "get", "from-alpha", "--peer", "beta"]);
    assert!(err.contains("context"), "{err}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let a = started_on_loopback("alpha");
    let mut m = a.mcp();
    m.initialize();
    let big = "x".repeat(300_000);
    for (args, want) in [
        (json!({"key": "", "value": 1}), "invalid_arguments"),
        (
            json!({"key": "k".repeat(513), "value": 1}),
            "invalid_arguments",
        ),
        (json!({"key": "a\u{0}b", "value": 1}), "invalid_arguments"),
        (json!({"key": "big", "value": big}), "invalid_arguments"),
        (
            json!({"key": "t", "value": 1, "ttl_s": 0}),
            "invalid_arguments",
        ),
    ] {
        let r = m.call_tool("loopsy_context_set", args.clone());
        assert_eq!(r["result"]["isError"], true, "{args}: {r}");
        assert_eq!(r["result"]["structuredContent"]["code"], want, "{r}");
    }
    let r = m.call_tool("loopsy_context_list", json!({}));
    assert_eq!(r["result"]["structuredContent"]["entries"], json!([]));
    // A wait that sees no change says so when its time is up.
    let r = m.call_tool(
        "loopsy_context_wait",
        json!({"key": "quiet", "timeout_s": 1}),
    );
    assert_eq!(r["result"]["structuredContent"]["changed"], false, "{r}");
    let r = m.call_tool(
        "loopsy_context_wait",
        json!({"key": "quiet", "timeout_s": 301}),
    );
    assert_eq!(
        r["result"]["structuredContent"]["code"],
        "invalid_arguments"
    );
    let err = a.fails(&["ctx", "set", "k", "{not json", "--json"]);
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let a = started_on_loopback("alpha");
    let pid = a.pid();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let mut m = a.mcp();
    m.initialize();
    let sink = acked.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            let id = i as u64 + 100;
            let sent = m.try_send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "loopsy_context_set", "arguments": {"key": format!("k{i:05}"), "value": i}}}));
            if !sent {
                break;
            }
            // The bridge ends when the daemon dies: stop at the first missing answer.
            let Some(v) = m.try_recv() else { break };
            if v["result"]["isError"] == false {
                sink.lock().unwrap().push(i);
            } else {
                break;
            }
        }
    });
    wait_until("writes acknowledged", Duration::from_secs(60), || {
        acked.lock().unwrap().len() >= 500
    });
    kill9(pid);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 500);
    a.ok(&["start"]);
    let all: Value = serde_json::from_str(&a.ok(&["ctx", "ls", "--json"])).unwrap();
    let have: std::collections::HashSet<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_u64().unwrap())
        .collect();
    let lost: Vec<&u32> = acked
        .iter()
        .filter(|i| !have.contains(&(**i as u64)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Nothing else appeared, and the store still takes writes.
    assert!(
        have.len() <= acked.len() + 1,
        "{} keys for {} acks",
        have.len(),
        acked.len()
    );
    a.ok(&["ctx", "set", "after", "crash"]);
}

/// Durability without the page cache's kindness: the data dir is on a disk whose power is
/// cut right after the last acknowledged write (the daemon killed, the device's blocks copied
/// as they are and mounted in its place). Every write the daemon acknowledged is there.
#[test]
fn every_acknowledged_write_survives_a_power_cut() {
    let Some(mut disk) = common::disk::CutDisk::up() else {
        return;
    };
    let a = common::start_on_loopback(TestHome::new_in(&disk.path()), "alpha");
    // What was set up so far is on the device; only the writes below are at stake.
    disk.sync();
    let mut m = a.mcp();
    m.initialize();
    let n = 300u64;
    for i in 0..n {
        let r = m.call_tool(
            "loopsy_context_set",
            json!({"key": format!("cut/{i:04}"), "value": i}),
        );
        assert_eq!(r["result"]["isError"], false, "{r}");
    }
    kill9(a.pid());
    drop(m);
    disk.cut();
    a.ok(&["start"]);
    let all: Value = serde_json::from_str(&a.ok(&["ctx", "ls", "cut/", "--json"])).unwrap();
    let have: std::collections::HashSet<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["value"].as_u64())
        .collect();
    let lost: Vec<u64> = (0..n).filter(|i| !have.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} of {n} acknowledged writes lost in the power cut, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// `ctx get --json` (exit code 1 when the key is not set, with the same JSON).
fn get_json(h: &TestHome, key: &str) -> Value {
    let o = h.run(&["ctx", "get", key, "--json"]);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn a_key_set_on_one_machine_is_readable_on_the_others() {
    let a = started_on_loopback("alpha");
    let b = started_on_loopback("beta");
    let c = started_on_loopback("gamma");
    a.ok(&["ctx", "set", "before-pairing", "1"]);
    pair(&a, &b);
    pair(&a, &c);
    // Existing keys arrive when peers meet; new ones as they are written.
    for h in [&b, &c] {
        wait_until("initial sync", Duration::from_secs(20), || {
            get_json(h, "before-pairing")["found"] == true
        });
    }
    a.ok(&["ctx", "set", "plan", "ship it"]);
    for h in [&b, &c] {
        wait_until("replicated write", Duration::from_secs(20), || {
            get_json(h, "plan")["entry"]["value"] == "ship it"
        });
    }
    // A write on beta reaches gamma too (through alpha, or directly once introduced).
    b.ok(&["ctx", "set", "from-beta", "b"]);
    wait_until("beta's write on gamma", Duration::from_secs(20), || {
        get_json(&c, "from-beta")["found"] == true
    });
    assert_eq!(get_json(&c, "from-beta")["entry"]["written_by"], "beta");
    // A broadcast reports who has the write.
    let mut m = a.mcp();
    m.initialize();
    let r = m.call_tool(
        "loopsy_broadcast_context",
        json!({"key": "release", "value": "v2", "wait_s": 20}),
    );
    let out = &r["result"]["structuredContent"];
    assert_eq!(r["result"]["isError"], false, "{r}");
    let mut confirmed: Vec<&str> = out["confirmed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    confirmed.sort();
    assert_eq!(confirmed, ["beta", "gamma"], "{out}");
    assert_eq!(out["pending"], json!([]));
    // A waiting agent on gamma wakes when alpha's write arrives (it saw no key: 0).
    let mut mc = c.mcp();
    mc.initialize();
    let waiter = std::thread::spawn(move || {
        let r = mc.call_tool(
            "loopsy_context_wait",
            json!({"key": "signal", "until_change_from": 0, "timeout_s": 30}),
        );
        r["result"]["structuredContent"].clone()
    });
    a.ok(&["ctx", "set", "signal", "go"]);
    let w = waiter.join().unwrap();
    assert_eq!(w["changed"], true, "{w}");
    assert_eq!(w["entry"]["value"], "go");
    // Deletes replicate.
    a.ok(&["ctx", "rm", "plan"]);
    for h in [&b, &c] {
        wait_until("replicated delete", Duration::from_secs(20), || {
            get_json(h, "plan")["found"] == false
        });
    }
}

#[test]
fn export_and_import_merge_documents() {
    let a = started_on_loopback("alpha");
    let b = started_on_loopback("beta");
    a.ok(&["ctx", "set", "from-a", "1"]);
    a.ok(&["ctx", "set", "obj", "{\"x\": [1, 2]}", "--json"]);
    a.ok(&["ctx", "set", "brief", "soon gone", "--ttl", "3600"]);
    b.ok(&["ctx", "set", "from-b", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let am = dir.path().join("ctx.automerge");
    let js = dir.path().join("ctx.json");
    a.ok(&[
        "ctx",
        "export",
        "--format",
        "automerge",
        "-o",
        &am.display().to_string(),
    ]);
    a.ok(&["ctx", "export", "-o", &js.display().to_string()]);
    let j: Value = serde_json::from_slice(&std::fs::read(&js).unwrap()).unwrap();
    assert_eq!(j["obj"]["value"]["x"], json!([1, 2]));
    // Merging alpha's binary document into beta keeps beta's own key.
    b.ok(&["ctx", "import", &am.display().to_string()]);
    let keys: Vec<String> = serde_json::from_str::<Value>(&b.ok(&["ctx", "ls", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["brief", "from-a", "from-b", "obj"]);
    // JSON imports too; garbage is refused clearly and changes nothing.
    let c = started_on_loopback("gamma");
    c.ok(&["ctx", "import", &js.display().to_string()]);
    assert_eq!(c.ok(&["ctx", "get", "from-a"]).trim(), "1");
    // A TTL survives a JSON round trip (as what is left of it).
    let brief: Value = serde_json::from_str(&c.ok(&["ctx", "get", "brief", "--json"])).unwrap();
    assert!(brief["entry"]["expires_at"].as_u64().is_some(), "{brief}");
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"\x00\x01 not a document").unwrap();
    let err = c.fails(&["ctx", "import", &junk.display().to_string()]);
    assert!(err.contains("automerge"), "{err}");
}

#[test]
fn ctx_watch_prints_each_change() {
    use std::io::{BufRead, BufReader};
    let a = started_on_loopback("alpha");
    let mut w = a
        .cmd(&["ctx", "watch", "light"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(w.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "(unset)");
    for v in ["red", "green"] {
        a.ok(&["ctx", "set", "light", v]);
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), v);
    }
    a.ok(&["ctx", "rm", "light"]);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "(unset)");
    let _ = w.kill();
    let _ = w.wait();
}

/// `node tests/js/automerge.mjs …` (the JS automerge package, installed by scripts/setup-test).
fn js(args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/automerge.mjs");
    let o = std::process::Command::new("node")
        .arg(&script)
        .args(args)
        .output()
        .expect("node (run scripts/setup-test)");
    assert!(
        o.status.success(),
        "node automerge.mjs {args:?}: {} (run scripts/setup-test to install @automerge/automerge)",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn documents_interoperate_with_the_js_automerge_package() {
    let a = started_on_loopback("alpha");
    a.ok(&["ctx", "set", "greeting", "hello"]);
    a.ok(&["ctx", "set", "count", "3", "--json"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ctx.automerge");
    a.ok(&[
        "ctx",
        "export",
        "--format",
        "automerge",
        "-o",
        &file.display().to_string(),
    ]);
    // JS loads loopsy's document: the same keys, each an entry whose value matches.
    let seen: Value = serde_json::from_str(&js(&["read", &file.display().to_string()])).unwrap();
    let entry = |k: &str| -> Value { serde_json::from_str(seen[k].as_str().unwrap()).unwrap() };
    assert_eq!(entry("greeting")["value"], "hello", "{seen}");
    assert_eq!(entry("count")["value"], 3, "{seen}");
    assert_eq!(entry("greeting")["written_by"], "alpha");
    // loopsy loads (merges) a document JS wrote, including a JS string (a text object).
    let from_js = dir.path().join("js.automerge");
    js(&["write", &from_js.display().to_string()]);
    a.ok(&["ctx", "import", &from_js.display().to_string()]);
    assert_eq!(a.ok(&["ctx", "get", "js_text"]).trim(), "typed in js");
    assert_eq!(a.ok(&["ctx", "get", "js_number"]).trim(), "7");
    assert_eq!(a.ok(&["ctx", "get", "greeting"]).trim(), "hello");
}

/// A peer whose `context` was revoked here cannot write here through a member that still
/// grants it: its entries reach this replica (the document stays one) but are not shown,
/// and are counted; a grant shows them again.
#[test]
fn a_revoked_peer_cannot_write_through_another_member() {
    let a = started_on_loopback("alpha");
    let b = started_on_loopback("beta");
    let c = started_on_loopback("gamma");
    pair(&a, &b);
    pair(&a, &c);
    wait_until("gamma meets beta", Duration::from_secs(20), || {
        common::peers(&c)
            .iter()
            .any(|p| p["name"] == "beta" && p["online"] == true)
    });
    c.ok(&["peers", "revoke", "beta", "context"]);
    b.ok(&["ctx", "set", "from-beta", "planted"]);
    a.ok(&["ctx", "set", "from-alpha", "fine"]);
    // alpha has both; gamma gets alpha's (and with it the document beta's change is in).
    wait_until("alpha has beta's key", Duration::from_secs(20), || {
        a.run(&["ctx", "get", "from-beta"]).status.success()
    });
    wait_until("gamma has alpha's key", Duration::from_secs(20), || {
        c.run(&["ctx", "get", "from-alpha"]).status.success()
    });
    wait_until(
        "gamma counted beta's change",
        Duration::from_secs(20),
        || c.status()["mesh"]["context_refused"].as_u64().unwrap_or(0) >= 1,
    );
    assert!(!c.run(&["ctx", "get", "from-beta"]).status.success());
    let ls: Value = serde_json::from_str(&c.ok(&["ctx", "ls", "--json"])).unwrap();
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .all(|e| e["key"] != "from-beta"),
        "{ls}"
    );
    // written_by is the machine whose change it is.
    let e: Value = serde_json::from_str(&c.ok(&["ctx", "get", "from-alpha", "--json"])).unwrap();
    assert_eq!(e["entry"]["written_by"], "alpha");
    c.ok(&["peers", "grant", "beta", "context"]);
    wait_until(
        "beta's entry shown once granted",
        Duration::from_secs(20),
        || c.run(&["ctx", "get", "from-beta"]).status.success(),
    );
}
