use super::*;
use crate::changes::{Counter, FlagStore};

/// A refused job leaves nothing behind, even when it wrote before refusing and shared its
/// batch (and the batch's cached tables and counters) with jobs that commit.
#[tokio::test]
async fn a_refused_job_leaves_nothing_and_its_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    let write = |key: &'static str, refuse: bool| {
        let store = store.clone();
        async move {
            store
                .write(move |tables| {
                    let id = tables.next_id(Counter::Identity)?;
                    tables.put_identity_id(1, key, id)?;
                    if refuse {
                        return Err(WriteError::Invalid("refused".into()));
                    }
                    Ok(id)
                })
                .await
        }
    };
    let (a, b, c) = tokio::join!(write("a", false), write("b", true), write("c", false));
    assert_eq!(b, Err(WriteError::Invalid("refused".into())));
    let ids = [a.unwrap(), c.unwrap()];
    assert_eq!(ids, [1, 2], "no id was spent on the refused job");
    let (present, next) = store
        .read(|txn| {
            let identities = txn.open_table(schema::IDENTITIES)?;
            let present: Vec<&str> = ["a", "b", "c"]
                .into_iter()
                .filter(|k| identities.get((1, *k)).ok().flatten().is_some())
                .collect();
            Ok((
                present,
                meta_value(&txn.open_table(schema::META)?, "next_identity_id")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(present, ["a", "c"]);
    assert_eq!(next, 3, "the counters reached META with the commit");
    store.shutdown().await;
}

#[tokio::test]
async fn a_stopped_writer_is_reported_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    assert!(store.is_writing());
    store.shutdown().await;
    assert!(!store.is_writing());
    let refused = store.write(|_| Ok(())).await;
    assert!(matches!(refused, Err(WriteError::Storage(_))));
}

#[tokio::test]
async fn every_durable_commit_is_timed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    store
        .write(|tables| Ok(tables.next_id(Counter::Feature)?))
        .await
        .unwrap();
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("commit", "commit latency", store.commit_latency());
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("commit_count 1"), "{text}");
    store.shutdown().await;
}
