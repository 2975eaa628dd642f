//! Tests of the context store: persistence, expiry, conflicts, sync input, foreign keys.

use super::*;

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
    let mut d = Doc {
        doc: foreign,
        log,
        sync: Default::default(),
        changed: tokio::sync::watch::channel(0u64).0,
        dirty: false,
        last_write: 0,
    };
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
    let w = || tokio::sync::watch::channel(0u64).0;
    let (da, db) = (
        Doc {
            doc: a,
            log: log_a,
            sync: Default::default(),
            changed: w(),
            dirty: false,
            last_write: 0,
        },
        Doc {
            doc: b,
            log: log_b,
            sync: Default::default(),
            changed: w(),
            dirty: false,
            last_write: 0,
        },
    );
    let (ea, eb) = (da.entry("k", 0).unwrap(), db.entry("k", 0).unwrap());
    assert_eq!(ea.value, eb.value);
    assert_eq!(ea.conflicts.len(), 1);
    assert_ne!(ea.conflicts[0], ea.value);
}
