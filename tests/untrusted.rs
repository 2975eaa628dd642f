//! A raw libp2p node that was never paired connects to a real daemon: every loopsy protocol
//! is refused, with or without an open pairing window, and nothing runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "common/gossip.rs"]
mod gossip;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::TestHome;
use futures::StreamExt;
use libp2p::request_response::{Event, Message, OutboundFailure};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use loopsy_mesh::Identity;
use loopsy_mesh::behaviour::MeshBehaviourEvent;
use loopsy_mesh::files::FILE_PROTOCOL;
use loopsy_mesh::wire::{RpcRequest, RpcResponse};

/// Open a pairing window on `h` (`loopsy pair --json`); it stays open until the child is killed.
fn pairing_window(h: &TestHome) -> std::process::Child {
    let mut pair = h
        .cmd(&["pair", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(pair.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    pair
}

enum Outcome {
    Denied,
    Closed,
    Answered(String),
}

/// Dial `addr` as a stranger and ask it to run a command.
async fn stranger_exec(addr: &str, marker: &std::path::Path) -> Outcome {
    let mut swarm = common::test_swarm(&Identity::generate());
    let addr: Multiaddr = addr.parse().unwrap();
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
        panic!("no /p2p in {addr}")
    };
    let peer: PeerId = peer;
    swarm.add_peer_address(peer, addr);
    let req = RpcRequest {
        tool: "loopsy_execute".into(),
        args: serde_json::json!({ "command": format!("touch {}", marker.display()) }).to_string(),
    };
    let id = swarm.behaviour_mut().rpc.send_request(&peer, req);
    let run = async {
        loop {
            if let SwarmEvent::Behaviour(MeshBehaviourEvent::Rpc(e)) =
                swarm.select_next_some().await
            {
                match e {
                    Event::Message {
                        message:
                            Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } if request_id == id => {
                        return match response {
                            RpcResponse::Denied => Outcome::Denied,
                            RpcResponse::Result(r) => Outcome::Answered(r),
                            RpcResponse::Unavailable => Outcome::Answered("unavailable".into()),
                        };
                    }
                    Event::OutboundFailure {
                        request_id, error, ..
                    } if request_id == id => {
                        // TCP reports a closed connection; QUIC a lost one (an I/O error).
                        assert!(
                            matches!(
                                error,
                                OutboundFailure::ConnectionClosed
                                    | OutboundFailure::UnsupportedProtocols
                                    | OutboundFailure::Io(_)
                            ),
                            "unexpected failure {error:?}"
                        );
                        return Outcome::Closed;
                    }
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("no answer from the daemon")
}

/// Dial `addr` as a stranger, open `protocol` and send `payload`.
/// Returns what came back (anything at all is a failure).
async fn stranger_stream(
    addr: &str,
    protocol: &'static str,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut swarm = common::test_swarm(&Identity::generate());
    let addr: Multiaddr = addr.parse().unwrap();
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
        panic!("no /p2p in {addr}")
    };
    swarm.dial(addr).unwrap();
    let mut control = swarm.behaviour().streams.new_control();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let run = async {
        let mut s = control
            .open_stream(peer, libp2p::StreamProtocol::new(protocol))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(payload).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
        Ok(got)
    };
    let r = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the daemon neither answered nor closed the stream");
    driver.abort();
    r
}

#[tokio::test]
async fn a_stranger_can_run_nothing() {
    let a = TestHome::new();
    a.ok(&["init", "--name", "alpha"]);
    a.start();
    let addr = a.status()["listen_addrs"][0].as_str().unwrap().to_string();
    // What the stranger asks for would create this file.
    let marker = a.path().join("pwned");

    // No pairing window: the connection is dropped at once.
    let o = stranger_exec(&addr, &marker).await;
    assert!(
        matches!(o, Outcome::Closed | Outcome::Denied),
        "stranger got an answer"
    );

    // With a window open the stranger may connect (to pair), but RPC is still denied.
    let mut pair = pairing_window(&a);
    let o = stranger_exec(&addr, &marker).await;
    assert!(
        matches!(o, Outcome::Denied),
        "with a window open the RPC must be explicitly denied"
    );
    // …and the file protocol gives it nothing either (no listing, not a byte).
    let body = br#"{"op":"list","path":"/"}"#;
    let mut list = (body.len() as u32).to_be_bytes().to_vec();
    list.extend_from_slice(body);
    // …nor the context (a sync opening that any member would answer) or a session attach.
    for (protocol, payload) in [
        (FILE_PROTOCOL, list),
        (loopsy_mesh::context::sync::SYNC_PROTOCOL, vec![0u8]),
        ("/loopsy/attach/1", vec![1, 0, 0, 0, 2, b'{', b'}']),
    ] {
        match stranger_stream(&addr, protocol, &payload).await {
            // Nothing, or a plain refusal.
            Ok(got) => assert!(
                got.is_empty() || String::from_utf8_lossy(&got).contains("permission_denied"),
                "stranger got data on {protocol}: {got:?}"
            ),
            Err(e) => eprintln!("{protocol} refused: {e}"),
        }
    }
    let _ = pair.kill();
    let _ = pair.wait();

    if let Outcome::Answered(r) = o {
        panic!("stranger got a result: {r}");
    }
    // Nothing ran: the file the command would make is not there, and the audit log (written
    // in the background, in order) has no call from a peer once a later local call shows in it.
    let mut mcp = a.mcp();
    mcp.initialize();
    let r = mcp.call_tool("loopsy_status", serde_json::json!({}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let audit_path = a.path().join("logs/audit.jsonl");
    let audit = || std::fs::read_to_string(&audit_path).unwrap_or_default();
    common::wait_until(
        "the local call in the audit log",
        Duration::from_secs(10),
        || {
            audit()
                .lines()
                .any(|l| l.contains(r#""caller":"local""#) && l.contains("loopsy_status"))
        },
    );
    let log = audit();
    assert!(
        !log.lines().any(|l| l.contains(r#""caller":"peer:"#)),
        "a stranger's call reached the tools: {log}"
    );
    assert!(!marker.exists(), "the stranger's command ran");
}

/// Ask the daemon at `addr` for a relay reservation as a stranger; the listener's end reason,
/// or `None` if the reservation was accepted.
async fn stranger_reserve(addr: &str) -> Option<String> {
    let mut swarm = common::test_swarm(&Identity::generate());
    let addr: Multiaddr = addr.parse().unwrap();
    let listener = swarm
        .listen_on(addr.with(libp2p::multiaddr::Protocol::P2pCircuit))
        .unwrap();
    let run = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(MeshBehaviourEvent::RelayClient(
                    libp2p::relay::client::Event::ReservationReqAccepted { .. },
                )) => return None,
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if listener_id == listener => return Some(format!("{reason:?}")),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the relay neither accepted nor refused")
}

#[tokio::test]
async fn a_stranger_cannot_reserve_on_a_relay_node() {
    let r = TestHome::new();
    r.ok(&["init", "--name", "relay"]);
    std::fs::write(
        r.path().join("config.toml"),
        "[node]\nname = \"relay\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n[relay]\nserve = true\n",
    )
    .unwrap();
    r.ok(&["start"]);
    let st = r.status();
    assert_eq!(st["mesh"]["relay_serving"], true, "{st}");
    let addr = st["listen_addrs"][0].as_str().unwrap().to_string();

    // No pairing window: the stranger is dropped before it can ask.
    let why = stranger_reserve(&addr).await;
    assert!(why.is_some(), "a stranger got a reservation");

    // A pairing window lets the stranger stay connected (to pair), and the relay's own gate
    // still refuses it, counted.
    let mut pair = pairing_window(&r);
    let why = stranger_reserve(&addr).await;
    let _ = pair.kill();
    let _ = pair.wait();
    let why = why.expect("a stranger got a reservation during a pairing window");
    eprintln!("refused: {why}");
    let st = r.status();
    assert!(
        st["mesh"]["relay_refused"].as_u64().unwrap() >= 1,
        "the refusal is counted: {st}"
    );
}

/// Dial `circuit` (a relayed address) as a stranger: `Ok` if a connection came up.
async fn stranger_circuit(circuit: &str) -> Result<(), String> {
    let mut swarm = common::test_swarm(&Identity::generate());
    let addr: Multiaddr = circuit.parse().unwrap();
    swarm.dial(addr).unwrap();
    let run = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { endpoint, .. } if endpoint.is_relayed() => {
                    return Ok(());
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(error.to_string());
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the relay neither connected nor refused")
}

#[tokio::test]
async fn a_stranger_cannot_use_a_relay_node_to_reach_a_member() {
    // A relay node, and a member reserved on it.
    let r = TestHome::new();
    r.ok(&["init", "--name", "relay"]);
    std::fs::write(
        r.path().join("config.toml"),
        "[node]\nname = \"relay\"\n[mesh]\nlisten_port = 0\nlocal_only = true\n",
    )
    .unwrap();
    r.ok(&["relay-node"]);
    let raddr = r.status()["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("/tcp/"))
        .unwrap()
        .to_string();
    let d = TestHome::new();
    d.ok(&["init", "--name", "member"]);
    // Reservations are made only by a node that is not loopback-only; it listens on an
    // ephemeral port for the length of the test.
    std::fs::write(
        d.path().join("config.toml"),
        format!(
            "[node]\nname = \"member\"\n[mesh]\nlisten_port = 0\n[discovery]\nmdns = false\n[relay]\nnodes = [\"{raddr}\"]\n"
        ),
    )
    .unwrap();
    d.ok(&["start"]);
    common::pair_at(&r, &d);
    common::wait_until("the member's reservation", Duration::from_secs(20), || {
        d.status()["mesh"]["relays"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["reserved_since"].is_u64()))
    });
    let member = d.status()["peer_id"].as_str().unwrap().to_string();
    let circuit = format!("{raddr}/p2p-circuit/p2p/{member}");

    // With a pairing window open on the relay, the stranger stays connected to it, and the
    // relay still refuses to carry it to the member.
    let mut pair = pairing_window(&r);
    let before = r.status()["mesh"]["relay_refused"].as_u64().unwrap();
    let got = stranger_circuit(&circuit).await;
    let _ = pair.kill();
    let _ = pair.wait();
    assert!(
        got.is_err(),
        "a stranger reached the member through the relay"
    );
    eprintln!("refused: {got:?}");
    let after = r.status()["mesh"]["relay_refused"].as_u64().unwrap();
    assert!(
        after > before,
        "the refusal is counted ({before} → {after})"
    );
}

/// A stranger (connected while a pairing window is open) publishes mail on a daemon's inbox
/// topic: a signed message and a read receipt (which carries no signature of its own). Both
/// are dropped and counted, nothing is stored, nothing is answered. A second stranger that
/// subscribes to a paired peer's inbox topic, to read mail meant for it, is disconnected at
/// once and counted; the mail still reaches its recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_can_neither_send_mail_nor_read_anyones() {
    use common::{agent, counts, inbox_all, pair, started_on_fixed_port, tool, wait_until};
    use loopsy_mesh::msg::deliver::encode_batch;
    use loopsy_mesh::msg::{Envelope, MsgType, Signed, WireItem};
    use serde_json::json;

    let a = started_on_fixed_port("alpha");
    let b = started_on_fixed_port("beta");
    pair(&a, &b);
    let a_status = a.status();
    let a_peer = a_status["peer_id"].as_str().unwrap().to_string();
    let addr = a_status["listen_addrs"][0].as_str().unwrap().to_string();
    let b_peer: PeerId = b.status()["peer_id"].as_str().unwrap().parse().unwrap();
    let mut window = pairing_window(&a);

    let stranger = Identity::generate();
    let mut raw = gossip::RawPeer::connect(&stranger, &addr, &[stranger.peer_id()]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let env = Envelope {
        id: loopsy_mesh::msg::envelope::new_id(now),
        from: stranger.peer_id().to_string(),
        to: a_peer.clone(),
        ts: now,
        kind: MsgType::Chat,
        body: "let me in".into(),
        ttl_s: 3600,
        reply_to: None,
        thread: None,
    };
    let signed = Signed::sign(&env, stranger.keypair()).unwrap();
    raw.publish(encode_batch(1, &[WireItem::Msg(signed)]));
    raw.publish(encode_batch(
        2,
        &[WireItem::Read("1800000000000-0000000000000000".into(), 1)],
    ));
    let mut ma = agent(&a);
    wait_until(
        "both batches dropped as untrusted",
        Duration::from_secs(20),
        || tool(&mut ma, "loopsy_check_inbox", json!({}))["dropped"]["untrusted"] == 2,
    );
    assert!(
        inbox_all(&mut ma).is_empty(),
        "a stranger's mail was stored"
    );
    drop(raw);

    // A stranger that reads beta's inbox topic is cut off as soon as it says so.
    let snoop = Identity::generate();
    let mut raw = gossip::RawPeer::dial(&snoop, &addr, &[snoop.peer_id(), b_peer]);
    match raw.next(Duration::from_secs(20)).await {
        Some(gossip::Seen::Disconnected) => {}
        Some(gossip::Seen::Frame(src, topic, _)) => {
            panic!("the snoop got a frame from {src} on {topic}")
        }
        None => panic!("the snoop was not disconnected"),
    }
    assert_eq!(a.status()["mesh"]["inbox_snoops"], 1);
    let _ = window.kill();
    let _ = window.wait();

    // Mail for beta still goes to beta, and to nobody else.
    let id = tool(
        &mut ma,
        "loopsy_send_message",
        json!({"to": "beta", "body": "for beta only"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("beta has it", Duration::from_secs(20), || {
        counts(&mut ma, "beta")["delivered"] == 1
    });
    let mut mb = agent(&b);
    let got = inbox_all(&mut mb);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["body"], "for beta only");
}
