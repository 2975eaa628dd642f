use super::*;

fn open(dir: &Path, key: &Keypair) -> MsgHandle {
    MsgHandle::open(dir, MsgConfig::default(), key.clone()).unwrap()
}

fn to(peer: PeerId, body: &str) -> Outgoing {
    Outgoing {
        to: vec![peer],
        all: false,
        kind: MsgType::Chat,
        body: body.into(),
        ttl_s: 3600,
        reply_to: None,
        thread: None,
    }
}

/// Move everything pending from `a` to `b` once, as the delivery loop would.
async fn deliver(a: &MsgHandle, a_id: PeerId, b: &MsgHandle, b_id: PeerId) -> usize {
    let batch = a.pending_for(b_id, 256).await.unwrap();
    let n = batch.len();
    let mut envs = Vec::new();
    let mut reads = Vec::new();
    for (item, _) in &batch {
        match item {
            WireItem::Msg(s) => envs.push(s.open(&a_id, 65536)),
            WireItem::Read(id, at) => reads.push((id.clone(), *at)),
        }
    }
    let mut outs = b.receipts(a_id, reads).await.unwrap();
    outs.extend(b.receive(a_id, envs).await.unwrap());
    // Receipts come first in a batch, as pending_for orders them.
    let results = batch
        .into_iter()
        .zip(outs)
        .map(|((i, id), o)| (i, id, o))
        .collect();
    a.results(b_id, results).await.unwrap();
    n
}

#[tokio::test]
async fn delivered_once_acked_and_read_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (ia, ib) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let a = open(&da, &ka);
    let b = open(&db, &kb);
    let env = a.send(to(ib, "hello")).await.unwrap();
    assert_eq!(deliver(&a, ia, &b, ib).await, 1);
    // The ack was lost and the sender retries after both restart: still one in the inbox.
    let msg = a.pending_for(ib, 10).await.unwrap();
    assert!(msg.is_empty(), "delivered: nothing pending");
    drop((a, b));
    let a = open(&da, &ka);
    let b = open(&db, &kb);
    assert_eq!(
        a.status(Some(env.id.clone()), None).await.unwrap()[0].status,
        Status::Delivered
    );
    let resend = Signed::sign(&env, &ka).unwrap();
    let out = b.receive(ia, vec![resend.open(&ia, 65536)]).await.unwrap();
    assert_eq!(out, vec![Outcome::Ok]);
    let inbox = b
        .inbox(InboxQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(inbox.len(), 1);

    // Read: a receipt flows back and survives a reopen of the sender.
    b.ack(&env.id, None).await.unwrap();
    assert_eq!(deliver(&b, ib, &a, ia).await, 1);
    drop(a);
    let a = open(&da, &ka);
    let st = a.status(Some(env.id.clone()), None).await.unwrap();
    assert_eq!(st[0].status, Status::Read);
    assert!(
        b.pending_for(ia, 10).await.unwrap().is_empty(),
        "receipt sent once"
    );
}

#[tokio::test]
async fn a_torn_journal_tail_keeps_every_earlier_message() {
    let dir = tempfile::tempdir().unwrap();
    let ka = Keypair::generate_ed25519();
    let ib = Keypair::generate_ed25519().public().to_peer_id();
    let a = open(dir.path(), &ka);
    for i in 0..20 {
        a.send(to(ib, &format!("m{i}"))).await.unwrap();
    }
    drop(a);
    // A crash in the middle of the 21st append.
    let log = dir.path().join("doc.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&log, bytes).unwrap();
    let a = open(dir.path(), &ka);
    assert_eq!(a.counts().await.unwrap().0, 20);
    let pending = a.pending_for(ib, 256).await.unwrap();
    assert_eq!(pending.len(), 20);
}

#[tokio::test]
async fn a_full_outbox_and_an_oversize_body_are_refused_before_anything_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let ka = Keypair::generate_ed25519();
    let ib = Keypair::generate_ed25519().public().to_peer_id();
    let cfg = MsgConfig {
        outbox_max: 2,
        ..Default::default()
    };
    let a = MsgHandle::open(dir.path(), cfg, ka).unwrap();
    let mut short = to(ib, "short-lived");
    short.ttl_s = 1;
    a.send(short).await.unwrap();
    a.send(to(ib, "2")).await.unwrap();
    assert!(matches!(
        a.send(to(ib, "3")).await,
        Err(MsgError::OutboxFull(2))
    ));
    // Oversize bodies are refused before anything is queued.
    assert!(matches!(
        a.send(to(ib, &"x".repeat(70_000))).await,
        Err(MsgError::Invalid(_))
    ));
    assert_eq!(a.counts().await.unwrap().0, 2);
}

#[tokio::test]
async fn one_peer_cannot_fill_the_inbox_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kc, kb) = (
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
    );
    let (ia, ic, ib) = (
        ka.public().to_peer_id(),
        kc.public().to_peer_id(),
        kb.public().to_peer_id(),
    );
    let b = MsgHandle::open(
        &dir.path().join("b"),
        MsgConfig {
            inbox_max: 10,
            inbox_max_per_peer: 3,
            ..Default::default()
        },
        kb,
    )
    .unwrap();
    let a = open(&dir.path().join("a"), &ka);
    let c = open(&dir.path().join("c"), &kc);
    for i in 0..5 {
        a.send(to(ib, &format!("flood {i}"))).await.unwrap();
    }
    c.send(to(ib, "from c")).await.unwrap();
    deliver(&a, ia, &b, ib).await;
    deliver(&c, ic, &b, ib).await;
    // Three of a's five are kept (the other two wait in a's outbox for room); c's arrives.
    assert_eq!(b.counts().await.unwrap().1, 4);
    assert_eq!(a.pending_for(ib, 256).await.unwrap().len(), 2);
    assert_eq!(b.dropped().get("sender_over_share"), Some(&2));
}
