//! Tests of the context store: persistence, expiry, conflicts, sync input, foreign keys.

use super::*;

/// A document with no authorship rules (every entry shown).
fn bare(doc: AutoCommit, log: ChangeLog) -> Doc {
    Doc {
        doc,
        log,
        sync: Default::default(),
        changed: tokio::sync::watch::channel(0u64).0,
        dirty: false,
        last_write: 0,
        authors: Default::default(),
        max_value_bytes: 256 * 1024,
        refused: Default::default(),
    }
}

/// A replica of machine `who` (its PeerId as actor), with limit `max`.
fn replica(dir: &std::path::Path, who: &libp2p::PeerId, max: usize) -> ContextHandle {
    ContextHandle::open(
        dir,
        ContextConfig {
            max_value_bytes: max,
            actor: Some(who.to_bytes()),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn entries_from_before_authorship_checks_stay_visible() {
    let dir = tempfile::tempdir().unwrap();
    let old = ContextHandle::open(dir.path(), ContextConfig::default()).unwrap();
    old.set("kept", serde_json::json!("yes"), None, "kai")
        .await
        .unwrap();
    drop(old);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let me = libp2p::PeerId::random();
    let c = replica(dir.path(), &me, 1024);
    let e = c.get("kept").await.unwrap().unwrap();
    assert_eq!(
        (e.value, e.written_by.as_str()),
        (serde_json::json!("yes"), "kai")
    );
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        replica(dir.path(), &me, 1024)
            .get("kept")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_replica_shows_only_what_its_authors_may_write_under_its_rules() {
    use crate::context::sync::tests::sync_pair;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, pm) = (
        libp2p::PeerId::random(),
        libp2p::PeerId::random(),
        libp2p::PeerId::random(),
    );
    let a = replica(&dir.path().join("a"), &pa, 1024);
    let b = replica(&dir.path().join("b"), &pb, 1 << 20);
    let m = replica(&dir.path().join("m"), &pm, 1 << 20);
    // beta writes, and claims the write was alpha's; mallory writes too.
    b.set("from-b", serde_json::json!("ok"), None, "alpha")
        .await
        .unwrap();
    b.set("big", serde_json::json!("x".repeat(4000)), None, "beta")
        .await
        .unwrap();
    m.set("from-m", serde_json::json!("sneaky"), None, "beta")
        .await
        .unwrap();
    sync_pair(&m, &b).await; // beta relays mallory's change
    // alpha holds beta as an author (context here), not mallory.
    a.set_authors([(pb.to_bytes(), "beta".to_string())]);
    sync_pair(&b, &a).await;
    let e = a.get("from-b").await.unwrap().unwrap();
    assert_eq!(e.written_by, "beta", "the author, whatever it claims");
    assert_eq!(e.requested_by.as_deref(), Some("alpha"));
    assert!(
        a.get("from-m").await.unwrap().is_none(),
        "no context here: not shown"
    );
    assert!(
        a.get("big").await.unwrap().is_none(),
        "over this replica's limit"
    );
    assert_eq!(a.list("", 10, None).await.unwrap().entries.len(), 1);
    assert_eq!(a.refused(), 2, "mallory's change and the oversize one");
    // Granted later: mallory's entry shows; revoked again: gone.
    a.set_authors([
        (pb.to_bytes(), "beta".to_string()),
        (pm.to_bytes(), "mallory".to_string()),
    ]);
    assert_eq!(
        a.get("from-m").await.unwrap().unwrap().written_by,
        "mallory"
    );
    a.set_authors([(pb.to_bytes(), "beta".to_string())]);
    assert!(a.get("from-m").await.unwrap().is_none());
    // Later writes by beta still arrive (nothing refused blocks them).
    b.set("later", serde_json::json!(2), None, "beta")
        .await
        .unwrap();
    sync_pair(&b, &a).await;
    assert_eq!(a.get("later").await.unwrap().unwrap().value, 2);
}

#[tokio::test]
async fn writes_survive_reopen_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let c = ContextHandle::open(dir.path(), ContextConfig::default()).unwrap();
    c.set("a", serde_json::json!("one"), None, "me")
        .await
        .unwrap();
    c.set("b", serde_json::json!({"n": 2}), None, "me")
        .await
        .unwrap();
    c.set("gone", serde_json::json!(1), Some(1), "me")
        .await
        .unwrap();
    assert!(c.get("gone").await.unwrap().is_some());
    let t0 = std::time::Instant::now();
    while c.get("gone").await.unwrap().is_some() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        c.set("zero", serde_json::json!(1), Some(0), "me")
            .await
            .is_err()
    );
    assert!(c.delete("a").await.unwrap());
    c.set("c", serde_json::json!([3]), None, "me")
        .await
        .unwrap();
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let c = ContextHandle::open(dir.path(), ContextConfig::default()).unwrap();
    assert!(c.get("a").await.unwrap().is_none());
    assert_eq!(c.get("b").await.unwrap().unwrap().value["n"], 2);
    let p = c.list("", 1, None).await.unwrap();
    assert_eq!(p.entries[0].key, "b");
    let p2 = c.list("", 10, p.next_cursor).await.unwrap();
    assert_eq!(
        p2.entries
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
    assert!(c.set("", serde_json::json!(1), None, "me").await.is_err());
    assert!(
        c.set(&"k".repeat(600), serde_json::json!(1), None, "me")
            .await
            .is_err()
    );
    let big = serde_json::json!("x".repeat(300_000));
    assert!(matches!(
        c.set("big", big, None, "me").await,
        Err(ContextError::Invalid(_))
    ));
}

#[tokio::test]
async fn malformed_sync_messages_change_nothing_and_documents_merge() {
    let dir = tempfile::tempdir().unwrap();
    let a = ContextHandle::open(&dir.path().join("a"), ContextConfig::default()).unwrap();
    let b = ContextHandle::open(&dir.path().join("b"), ContextConfig::default()).unwrap();
    a.set("k", serde_json::json!("v"), None, "a").await.unwrap();
    for junk in [vec![], vec![0x42; 100], b"\x00\x01garbage".to_vec()] {
        assert!(matches!(
            b.sync_receive("s", junk).await,
            Err(ContextError::Invalid(_))
        ));
    }
    assert!(b.list("", 10, None).await.unwrap().entries.is_empty());
    assert!(b.import_automerge(b"not a doc".to_vec()).await.is_err());
    // Bytes on which automerge's own decoder panics (found by fuzzing): refused, and the
    // store's thread is still there for the next call.
    let panics = include_bytes!("testdata/automerge-decoder-panic.bin").to_vec();
    assert!(matches!(
        b.import_automerge(panics).await,
        Err(ContextError::Invalid(_))
    ));
    // …and a 150-byte "bundle" on which its decoder allocates without bound (gigabytes):
    // refused before automerge sees it.
    let oom = include_bytes!("testdata/automerge-bundle-oom.bin").to_vec();
    assert!(matches!(
        b.import_automerge(oom).await,
        Err(ContextError::Invalid(_))
    ));
    // Export from a, merge into b: b has a's key and keeps its own.
    b.set("own", serde_json::json!(1), None, "b").await.unwrap();
    b.import_automerge(a.export_automerge().await.unwrap())
        .await
        .unwrap();
    let keys: Vec<String> = b
        .list("", 10, None)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["k", "own"]);
}

#[test]
fn keys_written_by_other_automerge_clients_are_readable_and_never_swept() {
    let dir = tempfile::tempdir().unwrap();
    let mut foreign = AutoCommit::new();
    foreign.put(ROOT, "plain", "hello").unwrap();
    foreign.put(ROOT, "n", 42i64).unwrap();
    let t = foreign
        .put_object(ROOT, "text", automerge::ObjType::Text)
        .unwrap();
    foreign.splice_text(&t, 0, 0, "from js").unwrap();
    let (log, _) = ChangeLog::open(dir.path()).unwrap();
    let mut d = bare(foreign, log);
    d.sweep(u64::MAX).unwrap();
    assert_eq!(d.entry("plain", 0).unwrap().value, "hello");
    assert_eq!(d.entry("n", 0).unwrap().value, 42);
    assert_eq!(d.entry("text", 0).unwrap().value, "from js");
}

#[tokio::test]
async fn writes_in_one_millisecond_get_distinct_times() {
    let dir = tempfile::tempdir().unwrap();
    let c = ContextHandle::open(dir.path(), ContextConfig::default()).unwrap();
    let mut last = 0;
    for i in 0..50 {
        let e = c.set("k", serde_json::json!(i), None, "me").await.unwrap();
        assert!(e.written_at > last);
        last = e.written_at;
    }
}

#[test]
fn concurrent_writes_pick_the_same_winner_and_keep_the_loser_visible() {
    let mut a = AutoCommit::new();
    let mut b = a.fork();
    let s = |v: &str, by: &str| {
        serde_json::to_string(&Stored {
            value: serde_json::json!(v),
            written_by: by.into(),
            written_at: 1,
            expires_at: None,
        })
        .unwrap()
    };
    a.put(ROOT, "k", s("from-a", "a")).unwrap();
    b.put(ROOT, "k", s("from-b", "b")).unwrap();
    a.merge(&mut b).unwrap();
    b.merge(&mut a.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (log_a, _) = ChangeLog::open(&dir.path().join("a")).unwrap();
    let (log_b, _) = ChangeLog::open(&dir.path().join("b")).unwrap();
    let (da, db) = (bare(a, log_a), bare(b, log_b));
    let (ea, eb) = (da.entry("k", 0).unwrap(), db.entry("k", 0).unwrap());
    assert_eq!(ea.value, eb.value);
    assert_eq!(ea.conflicts.len(), 1);
    assert_ne!(ea.conflicts[0], ea.value);
}
