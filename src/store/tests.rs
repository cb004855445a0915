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

/// An event reads back whole for the admin API and without its author for delivery, from one row.
#[tokio::test]
async fn an_event_reads_back_for_the_admin_api_and_for_delivery() {
    use crate::changes::{Author, Outbox};
    use crate::config::Config;
    use crate::wire::EventType;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    let config = Config::parse("").unwrap();
    let sequence = store
        .write(move |tables| {
            let author = Author::system("tests");
            let now = time::OffsetDateTime::from_unix_timestamp(2).unwrap();
            let mut outbox = Outbox::new(&config, &author, now);
            let other = EventType::Other("ENVIRONMENT_CREATED".into());
            outbox.push(tables, other, Some(7), b"{\"body\":1}")?;
            Ok(outbox.into_written()[0].sequence)
        })
        .await
        .unwrap();
    let (whole, delivery, missing) = store
        .read(move |txn| {
            let meta = txn.open_table(schema::META)?;
            let events = txn.open_table(schema::EVENTS)?;
            let instance = events::instance_id(&meta)?;
            Ok((
                events::read_event(&events, instance, sequence)?,
                events::delivery_event(&events, sequence)?,
                events::delivery_event(&events, sequence + 1)?,
            ))
        })
        .await
        .unwrap();
    let (record, body) = whole.unwrap();
    assert_eq!(record.event_type, "ENVIRONMENT_CREATED");
    assert_eq!(record.environment, Some(7));
    assert_eq!(
        (record.committed_at_ms, record.changed_by.as_str()),
        (2000, "tests")
    );
    assert!(record.id.ends_with("_000000000001"), "{}", record.id);
    assert_eq!(body, b"{\"body\":1}");
    let delivery = delivery.unwrap();
    assert_eq!(delivery.event_type.as_str(), "ENVIRONMENT_CREATED");
    assert_eq!((delivery.sequence, delivery.committed_at_ms), (1, 2000));
    assert_eq!(delivery.body, body);
    assert!(missing.is_none());
    store.shutdown().await;
}

/// A document is rebuilt only on a change count that moved: each commit that changes an
/// environment's states counts for it alone, and one that changes a project's segments for the
/// project (every environment of it); a commit that changes neither moves neither.
#[tokio::test]
async fn change_counts_move_only_for_what_a_commit_changed() {
    use crate::changes::{EnvironmentRecord, SegmentRecord, StateKey, StateRecord};
    use crate::store::queries::change_counts;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    let env = |id: u64, project: u64| EnvironmentRecord {
        id,
        name: format!("e{id}"),
        project,
        project_name: String::new(),
    };
    let counts = |record: EnvironmentRecord| {
        let store = store.clone();
        async move {
            store
                .read(move |txn| change_counts(txn, &record))
                .await
                .unwrap()
        }
    };
    assert_eq!(counts(env(1, 1)).await, (0, 0));
    store
        .write(|tables| {
            let state = StateRecord {
                id: 1,
                enabled: true,
                value: None,
                identity_id: None,
                segment_name: None,
                priority: None,
                multivariate: Vec::new(),
            };
            // Twice in one commit: one count.
            tables.put_state(1, 7, &StateKey::Default, &state)?;
            tables.put_state(1, 7, &StateKey::Identity("u".into()), &state)?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counts(env(1, 1)).await, (1, 0));
    assert_eq!(counts(env(2, 1)).await, (0, 0), "another environment");
    store
        .write(|tables| {
            tables.put_segment(&SegmentRecord {
                id: 3,
                project: 1,
                name: "beta".into(),
                description: None,
                rules: Vec::new(),
                owner: crate::changes::Owner::Api,
            })?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counts(env(1, 1)).await, (1, 1));
    assert_eq!(counts(env(2, 1)).await, (0, 1), "the same project");
    assert_eq!(counts(env(3, 2)).await, (0, 0), "another project");
    store
        .write(|tables| Ok(tables.put_identity_id(1, "u", 9)?))
        .await
        .unwrap();
    assert_eq!(counts(env(1, 1)).await, (1, 1), "nothing a document shows");
    store.shutdown().await;
}

/// Event ids are written by hand on the hot path; they must read exactly as the documented format.
#[test]
fn event_ids_are_the_documented_format() {
    let cases = [
        (0, 0),
        (0, 1),
        (0x8c1f_0000_dead_beef, 42),
        (u64::MAX, u64::MAX),
    ];
    let random = (0..10_000).map(|_| {
        (
            fastrand::u64(..),
            fastrand::u64(..u64::MAX >> fastrand::u32(0..64)),
        )
    });
    for (instance, sequence) in cases.into_iter().chain(random) {
        assert_eq!(
            events::event_id(instance, sequence),
            format!("evt_{instance:016x}_{sequence:012}")
        );
    }
}

/// Within one batch, the features and environment defaults a change reads are kept
/// (`Tables`): every read after a write sees the write, allocations come and go with their
/// state, and what commits is what the last write said.
#[tokio::test]
async fn reads_within_a_batch_see_its_own_writes() {
    use crate::changes::{FeatureRecord, MultivariateValue, Owner, StateKey, StateRecord};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    let state = |id: u64, allocations: usize| StateRecord {
        id,
        enabled: id.is_multiple_of(2),
        value: None,
        identity_id: None,
        segment_name: None,
        priority: None,
        multivariate: (0..allocations as u64)
            .map(|n| MultivariateValue {
                id: n,
                option: n,
                percentage_allocation: 10.0,
            })
            .collect(),
    };
    let feature = FeatureRecord {
        id: 7,
        project: 1,
        name: "f".into(),
        feature_type: "STANDARD".into(),
        description: None,
        initial_value: None,
        default_enabled: false,
        created_date: "2026-01-01T00:00:00.000000Z".into(),
        owner: Owner::Api,
        deleted: false,
    };
    let identity = StateKey::Identity("u".into());
    store
        .write(move |tables| {
            assert_eq!(tables.feature(7)?, None);
            assert_eq!(tables.state(1, 7, &StateKey::Default)?, None);
            tables.put_feature(&feature)?;
            assert_eq!(tables.feature(7)?.as_ref(), Some(&feature));
            let mut renamed = feature.clone();
            renamed.description = Some("changed".into());
            tables.put_feature(&renamed)?;
            assert_eq!(tables.feature(7)?, Some(renamed));
            tables.put_state(1, 7, &StateKey::Default, &state(1, 2))?;
            assert_eq!(tables.state(1, 7, &StateKey::Default)?, Some(state(1, 2)));
            tables.remove_state(1, 7, &StateKey::Default)?;
            assert_eq!(tables.state(1, 7, &StateKey::Default)?, None);
            tables.put_state(1, 7, &StateKey::Default, &state(2, 1))?;
            // A new override without allocations, then with, then without again.
            tables.put_state(1, 7, &identity, &state(3, 0))?;
            tables.put_state(1, 7, &identity, &state(3, 2))?;
            assert_eq!(tables.state(1, 7, &identity)?, Some(state(3, 2)));
            tables.put_state(1, 7, &identity, &state(4, 0))?;
            Ok(())
        })
        .await
        .unwrap();
    let (default, overridden, allocation_rows) = store
        .write(move |tables| {
            let default = tables.state(1, 7, &StateKey::Default)?;
            let overridden = tables.state(1, 7, &StateKey::Identity("u".into()))?;
            let rows = redb::ReadableTableMetadata::len(&**tables.multivariate_values()?)?;
            Ok((default, overridden, rows))
        })
        .await
        .unwrap();
    assert_eq!(default, Some(state(2, 1)), "the last write committed");
    assert_eq!(overridden, Some(state(4, 0)));
    assert_eq!(allocation_rows, 1, "only the default's allocations remain");
    store.shutdown().await;
}

/// Copies the database and its redo log as a crash would leave them on disk: what the writer
/// holds in memory only is gone.
fn crash_copy(from: &Path, to: &Path, with_log: bool) {
    std::fs::copy(from, to).unwrap();
    if with_log {
        std::fs::copy(redo::RedoLog::path_for(from), redo::RedoLog::path_for(to)).unwrap();
    }
}

fn identities_present(path: &Path, keys: &[String]) -> usize {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let identities = txn.open_table(schema::IDENTITIES).unwrap();
    keys.iter()
        .filter(|k| identities.get((1, k.as_str())).unwrap().is_some())
        .count()
}

/// A store whose logged batches stay out of the file for the length of a test.
fn store_without_checkpoints(dir: &tempfile::TempDir) -> (Store, std::path::PathBuf) {
    let path = dir.path().join("t.redb");
    let options = StoreOptions {
        checkpoint_every: std::time::Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    (Store::open(&path, options).unwrap(), path)
}

#[tokio::test]
async fn acknowledged_batches_held_only_by_the_redo_log_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_without_checkpoints(&dir);
    let keys: Vec<String> = (0..40).map(|n| format!("identity-{n}")).collect();
    let writes = keys.iter().cloned().map(|key| {
        let store = store.clone();
        async move {
            store
                .write(move |tables| {
                    let id = tables.next_id(Counter::Identity)?;
                    Ok(tables.put_identity_id(1, &key, id)?)
                })
                .await
        }
    });
    for acknowledged in futures_util::future::join_all(writes).await {
        acknowledged.unwrap();
    }
    let file_only = dir.path().join("file-only.redb");
    crash_copy(&path, &file_only, false);
    assert_eq!(
        identities_present(&file_only, &keys),
        0,
        "the file alone holds none of them: they were made durable by the log"
    );
    let crashed = dir.path().join("crashed.redb");
    crash_copy(&path, &crashed, true);
    let reopened = Store::open(&crashed, StoreOptions::default()).unwrap();
    reopened.shutdown().await;
    drop(reopened);
    assert_eq!(identities_present(&crashed, &keys), keys.len());
    assert!(
        !redo::RedoLog::path_for(&crashed).exists(),
        "a clean stop leaves no log"
    );
    store.shutdown().await;
}

/// A refusal in a transaction that holds earlier batches aborts them with it: the earlier ones
/// are written into the file again from the redo log, durably, before the next batch, and
/// nothing of the refused job's is kept.
#[tokio::test]
async fn a_refusal_after_held_batches_keeps_them_and_nothing_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_without_checkpoints(&dir);
    let write = |key: &'static str, refuse: bool| {
        store.write(move |tables| {
            let id = tables.next_id(Counter::Identity)?;
            tables.put_identity_id(1, key, id)?;
            if refuse {
                return Err(WriteError::Invalid("refused".into()));
            }
            Ok(id)
        })
    };
    assert_eq!(write("a", false).await, Ok(1));
    assert_eq!(write("b", false).await, Ok(2));
    let file_only = dir.path().join("file-only.redb");
    crash_copy(&path, &file_only, false);
    assert_eq!(
        identities_present(&file_only, &keys(&["a", "b"])),
        0,
        "held, not committed"
    );
    let refused = write("c", true).await;
    assert_eq!(refused, Err(WriteError::Invalid("refused".into())));
    assert_eq!(
        write("d", false).await,
        Ok(3),
        "no id was spent on the refused job"
    );
    crash_copy(&path, &file_only, false);
    assert_eq!(
        identities_present(&file_only, &keys(&["a", "b", "d"])),
        2,
        "the batches the refusal aborted are in the file, durably, from the log; the next is held"
    );
    let present = store
        .read(|txn| {
            let identities = txn.open_table(schema::IDENTITIES)?;
            Ok(["a", "b", "c", "d"]
                .into_iter()
                .filter(|k| identities.get((1, *k)).ok().flatten().is_some())
                .collect::<Vec<_>>())
        })
        .await
        .unwrap();
    assert_eq!(present, ["a", "b", "d"]);
    store.shutdown().await;
    drop(store);
    assert_eq!(identities_present(&path, &keys(&["a", "b", "c", "d"])), 3);
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[tokio::test]
async fn a_batch_the_log_does_not_hold_commits_the_file_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_without_checkpoints(&dir);
    store
        .write(|tables| Ok(tables.put_identity_id(1, "logged", 1)?))
        .await
        .unwrap();
    // A job that opens its own tables is not logged: its batch commits the file durably.
    store
        .write_txn(|txn| {
            txn.open_table(schema::IDENTITIES)?
                .insert((1, "direct"), 2)?;
            Ok(())
        })
        .await
        .unwrap();
    let copy = dir.path().join("copy.redb");
    crash_copy(&path, &copy, false);
    let keys = ["logged".to_owned(), "direct".to_owned()];
    assert_eq!(identities_present(&copy, &keys), 2);
    store.shutdown().await;
}

/// Delivery outcomes are made durable by the redo log like changes: the file alone still has the
/// delivered row pending, and a replay of the log removes it and records its attempt.
#[tokio::test]
async fn delivery_outcomes_are_held_by_the_redo_log_and_survive_a_crash() {
    use deliveries::{AttemptRecord, AttemptResult, DeliveryOutcome, record_outcomes};
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = store_without_checkpoints(&dir);
    // Written through the transaction itself, so committed to the file durably.
    store
        .write_txn(|txn| {
            txn.open_table(schema::OUTBOX)?
                .insert(("a", 1), (0, 0, 0))?;
            Ok(())
        })
        .await
        .unwrap();
    let delivered = DeliveryOutcome::Delivered(AttemptRecord {
        endpoint: "a".into(),
        sequence: 1,
        attempt: 1,
        at_ms: 1_000,
        latency_ms: 1.5,
        status: Some(200),
        error: None,
        result: AttemptResult::Delivered,
        next_attempt_at_ms: None,
    });
    store
        .write(move |tables| Ok(record_outcomes(tables, std::slice::from_ref(&delivered))?))
        .await
        .unwrap();
    let rows = |path: &Path| {
        use redb::ReadableTableMetadata;
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_read().unwrap();
        let pending = txn.open_table(schema::OUTBOX).unwrap().len().unwrap();
        let attempts = txn.open_table(schema::ATTEMPTS).unwrap().len().unwrap();
        (pending, attempts)
    };
    let file_only = dir.path().join("file-only.redb");
    crash_copy(&path, &file_only, false);
    assert_eq!(rows(&file_only), (1, 0), "the file alone lacks the outcome");
    let crashed = dir.path().join("crashed.redb");
    crash_copy(&path, &crashed, true);
    let reopened = Store::open(&crashed, StoreOptions::default()).unwrap();
    reopened.shutdown().await;
    drop(reopened);
    assert_eq!(rows(&crashed), (0, 1), "the log's replay delivered it");
    store.shutdown().await;
}
