//! Entry points for fuzzing every decoder that reads bytes from a peer or a file. The
//! cargo-fuzz targets in `fuzz/` call these; a unit test below drives them with random
//! and mutated inputs so they are exercised on every test run too. None may panic.

use std::path::Path;

use crate::config::Config;
use crate::pair::Window;
use crate::trust::Trust;
use crate::wire::{
    MembersRequest, MembersResponse, PairRequest, PairResponse, RpcRequest, RpcResponse,
};

/// Pairing messages (CBOR), and a pairing start with whatever SPAKE2 bytes they carry.
pub fn pair_messages(data: &[u8]) {
    let _ = ciborium::from_reader::<PairResponse, _>(data);
    if let Ok(PairRequest::Start { spake, name }) = ciborium::from_reader::<PairRequest, _>(data) {
        let mut w = Window::new("123456".into(), std::time::Duration::from_secs(60));
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let _ = w.on_start(&a, &b, &spake, "me", &name);
    }
}

/// RPC messages (CBOR) and the JSON they carry.
pub fn rpc_messages(data: &[u8]) {
    let _ = ciborium::from_reader::<RpcResponse, _>(data);
    if let Ok(req) = ciborium::from_reader::<RpcRequest, _>(data) {
        let _ = serde_json::from_str::<serde_json::Value>(&req.args);
    }
}

/// Membership messages (CBOR), and every removal in them checked as a member would.
pub fn members_messages(data: &[u8]) {
    let _ = ciborium::from_reader::<MembersResponse, _>(data);
    if let Ok(MembersRequest::Remove(v)) = ciborium::from_reader::<MembersRequest, _>(data) {
        for r in v {
            let _ = r.verify();
        }
    }
}

/// File-protocol headers.
pub fn file_header(data: &[u8]) {
    let _ = crate::files::decode_request(data);
}

/// `trust.json` and `config.toml` contents.
pub fn stored_files(data: &[u8]) {
    let _ = serde_json::from_slice::<Trust>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(Path::new("fuzz.toml"), text);
    }
}

/// Message batches and answers from a peer (gossip on an inbox topic), and every envelope
/// in them opened as a receiver would.
pub fn message_frames(data: &[u8]) {
    use crate::msg::WireItem;
    use crate::msg::deliver::Frame;
    if let Ok(Frame::Batch { items, .. }) = crate::msg::deliver::decode(data) {
        let peer = libp2p::PeerId::random();
        for it in items {
            if let WireItem::Msg(s) = it {
                let _ = s.open(&peer, 64 * 1024);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(env) = serde_json::from_str::<crate::msg::Envelope>(text)
    {
        let _ = env.check(64 * 1024);
    }
}

/// An exec pipe's frames (`/loopsy/exec/1`) as either end reads them, and the JSON in them.
pub fn exec_frames(data: &[u8]) {
    use crate::exec::wire::{self, Exit, Refused, Signal, Start, Started};
    let mut rest = data;
    for _ in 0..16 {
        match futures::executor::block_on(wire::read_frame(&mut rest)) {
            Ok(Some(f)) => {
                let _ = wire::parse::<Start>(&f);
                let _ = wire::parse::<Started>(&f);
                let _ = wire::parse::<Refused>(&f);
                let _ = wire::parse::<Exit>(&f);
                if let Some(&b) = f.data.first() {
                    let _ = Signal::from_u8(b);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// A context sync session's frames as a peer sends them (`/loopsy/ctx-sync/1`), and the
/// automerge sync messages in them received by a document, as the store does; and the bytes
/// as a whole document (`ctx import`).
/// automerge's own decoders run as the store runs them, inside [`guard::no_panic`]: a panic
/// there is refused with an error, as in the daemon (a fuzz target lets it unwind; see
/// `fuzz/fuzz_targets/context_sync.rs`). Any other panic is a finding.
pub fn context_sync(data: &[u8]) {
    use crate::context::ContextError;
    use crate::context::guard;
    use automerge::sync::SyncDoc;
    let mut doc = automerge::AutoCommit::new();
    let mut state = automerge::sync::State::new();
    let mut rest = data;
    for _ in 0..8 {
        match futures::executor::block_on(crate::context::sync::recv(&mut rest)) {
            Ok(Some(m)) => {
                let _ = guard::no_panic("a sync message", || {
                    let m = automerge::sync::Message::decode(&m)
                        .map_err(|e| ContextError::Invalid(e.to_string()))?;
                    m.changes.iter().try_for_each(guard::check_chunks)?;
                    doc.sync()
                        .receive_sync_message(&mut state, m)
                        .map_err(|e| ContextError::Invalid(e.to_string()))?;
                    let _ = doc.sync().generate_sync_message(&mut state);
                    Ok(())
                });
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
    if data.len() <= 64 * 1024 {
        let _ = guard::no_panic("a document", || {
            guard::check_chunks(data)?;
            automerge::AutoCommit::load(data).map_err(|e| ContextError::Invalid(e.to_string()))
        });
    }
}

/// The message and task journals' records and snapshots (CBOR), and task ids.
pub fn stored_journals(data: &[u8]) {
    let _ = ciborium::from_reader::<crate::msg::state::Op, _>(data);
    if let Ok(mut st) = ciborium::from_reader::<crate::msg::state::State, _>(data) {
        st.reindex();
        let _ = st.expired(u64::MAX);
        let _ = st.gc(u64::MAX);
    }
    let _ = ciborium::from_reader::<crate::task::Task, _>(data);
    let _ = ciborium::from_reader::<Vec<crate::task::Task>, _>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::task::owner_of(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut push = |v: &dyn erased::Ser| out.push(v.cbor());
        push(&PairRequest::Start {
            spake: vec![7; 33],
            name: "kai".into(),
        });
        push(&PairRequest::Finish {
            confirm: vec![1; 32],
        });
        push(&RpcRequest {
            tool: "loopsy_execute".into(),
            args: r#"{"command":"true"}"#.into(),
        });
        push(&RpcResponse::Denied);
        let member = libp2p::identity::Keypair::generate_ed25519();
        if let Some(r) = crate::wire::Removal::sign(&member, &libp2p::PeerId::random(), 9) {
            push(&MembersRequest::Remove(vec![r]));
        }
        push(&MembersRequest::Introduce {
            intros: vec![crate::wire::Introduction {
                peer_id: libp2p::PeerId::random().to_string(),
                name: "kai".into(),
                addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
                caps: crate::trust::Capability::ALL.to_vec(),
            }],
            complete: true,
            parts: Some(crate::wire::Parts {
                round: 7,
                index: 0,
                count: 2,
            }),
        });
        out.push(br#"{"op":"push","path":"a","size":1,"id":"ab","overwrite":false}"#.to_vec());
        out.push(br#"{"version":1,"peers":{}}"#.to_vec());
        out.push(b"[mesh]\nlisten_port = 1\n".to_vec());
        let key = libp2p::identity::Keypair::generate_ed25519();
        let env = crate::msg::Envelope {
            id: crate::msg::envelope::new_id(1_700_000_000_000),
            from: key.public().to_peer_id().to_string(),
            to: "*".into(),
            ts: 1_700_000_000_000,
            kind: crate::msg::MsgType::Chat,
            body: "hi".into(),
            ttl_s: 60,
            reply_to: None,
            thread: Some("t".into()),
        };
        if let Ok(signed) = crate::msg::Signed::sign(&env, &key) {
            out.push(crate::msg::deliver::encode_batch(
                7,
                &[
                    crate::msg::WireItem::Msg(signed),
                    crate::msg::WireItem::Read(env.id.clone(), 5),
                ],
            ));
        }
        use erased::Ser;
        out.push(crate::msg::deliver::encode(
            &crate::msg::deliver::Frame::Answer {
                n: 7,
                outcomes: vec![
                    crate::msg::Outcome::Ok,
                    crate::msg::Outcome::Later("x".into()),
                ],
            },
        ));
        out.push(crate::msg::state::Op::Delivered(vec![("a".into(), "b".into())], 1).cbor());
        out.push(context_sync_seed());
        out.push(
            br#"t1700000000000-0a1b2c3d@12D3KooWLBFcLBhie1LML5rDhrXaDAP5NwLUu5mcdRjSLFoGcuEf"#
                .to_vec(),
        );
        out
    }

    /// A sync session's first frame from a document with one key.
    fn context_sync_seed() -> Vec<u8> {
        use automerge::sync::SyncDoc;
        use automerge::transaction::Transactable;
        let mut doc = automerge::AutoCommit::new();
        let _ = doc.put(automerge::ROOT, "k", "v");
        let mut st = automerge::sync::State::new();
        let mut out = vec![1u8];
        if let Some(m) = doc.sync().generate_sync_message(&mut st) {
            let m = m.encode();
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(&m);
        }
        out.push(0);
        out
    }

    mod erased {
        pub trait Ser {
            fn cbor(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Ser for T {
            fn cbor(&self) -> Vec<u8> {
                let mut b = Vec::new();
                let _ = ciborium::into_writer(self, &mut b);
                b
            }
        }
    }

    #[test]
    fn decoders_survive_random_and_mutated_input() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = seeds();
        for i in 0..20_000u64 {
            let mut data = if i % 2 == 0 {
                seeds[(next() % seeds.len() as u64) as usize].clone()
            } else {
                (0..next() % 96).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !data.is_empty() {
                    let at = (next() % data.len() as u64) as usize;
                    data[at] = next() as u8;
                }
            }
            pair_messages(&data);
            rpc_messages(&data);
            members_messages(&data);
            file_header(&data);
            stored_files(&data);
            message_frames(&data);
            stored_journals(&data);
            context_sync(&data);
            exec_frames(&data);
        }
    }
}
