//! Retention: attempt records and delivered events are pruned; pending and dead-lettered stay.

use flagpost::changes::{Author, Outbox};
use flagpost::store::deliveries::{AttemptRecord, DeadLetter};
use flagpost::store::{Store, StoreOptions};
use flagpost::wire::EventType;

use crate::dispatcher::{Hook, config};

#[tokio::test]
async fn retention_prunes_delivered_events_and_old_attempts_only() {
    use flagpost::store::deliveries::{
        AttemptResult, DeliveryOutcome, prune_attempts, prune_delivered_events, record_outcomes,
    };
    use flagpost::store::schema::{ATTEMPTS, EVENTS};
    use redb::ReadableTableMetadata;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flagpost.redb");
    let store = tokio::task::spawn_blocking(move || Store::open(&path, StoreOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let attempt = |sequence: u64, result: AttemptResult| AttemptRecord {
        endpoint: "a".into(),
        sequence,
        attempt: 1,
        at_ms: 1_000,
        latency_ms: 1.0,
        status: Some(200),
        error: None,
        result,
        next_attempt_at_ms: None,
    };
    let outcomes = vec![
        DeliveryOutcome::Delivered(attempt(1, AttemptResult::Delivered)),
        DeliveryOutcome::DeadLettered {
            attempt: attempt(2, AttemptResult::DeadLettered),
            letter: DeadLetter {
                endpoint: "a".into(),
                sequence: 2,
                event_id: "evt".into(),
                reason: "retry schedule spent after 1 attempts".into(),
                attempts: 1,
                last_status: Some(500),
                last_error: None,
                dead_lettered_at_ms: 1_000,
            },
        },
    ];
    // 1 delivered, 2 dead-lettered, 3 pending, 4 for no endpoint but after a pending one; all
    // committed at 1,000 ms.
    let config = config(&[Hook::new("a", "http://127.0.0.1:9/".into())]);
    store
        .write(move |tables| {
            let author = Author::system("tests");
            let then = time::OffsetDateTime::from_unix_timestamp(1).unwrap();
            let mut outbox = Outbox::new(&config, &author, then);
            for event_type in [
                EventType::FlagUpdated,
                EventType::FlagUpdated,
                EventType::FlagUpdated,
            ] {
                outbox.push(tables, event_type, Some(1), b"{}")?;
            }
            outbox.push(tables, EventType::AuditLogCreated, None, b"{}")?;
            Ok(())
        })
        .await
        .unwrap();
    store
        .write(move |tables| {
            record_outcomes(tables, &outcomes)?;
            Ok(())
        })
        .await
        .unwrap();
    let count = |table: &'static str| {
        let store = store.clone();
        async move {
            store
                .read(move |txn| {
                    Ok(match table {
                        "events" => txn.open_table(EVENTS)?.len()?,
                        _ => txn.open_table(ATTEMPTS)?.len()?,
                    })
                })
                .await
                .unwrap()
        }
    };
    let prune = |cutoff: u64| {
        let store = store.clone();
        async move {
            store
                .write_txn(move |txn| {
                    let attempts = prune_attempts(txn, cutoff, 0, 100)?.1;
                    let events = prune_delivered_events(txn, cutoff, 0, 100)?.1;
                    Ok((attempts, events))
                })
                .await
                .unwrap()
        }
    };
    // Nothing is past a retention that ends before the records were made.
    assert_eq!(prune(500).await, (0, 0));
    assert_eq!((count("events").await, count("attempts").await), (4, 2));
    // Past it: both attempts go, but of the events only the delivered one.
    assert_eq!(prune(2_000).await, (2, 1));
    assert_eq!((count("events").await, count("attempts").await), (3, 0));
    let remaining: Vec<u64> = store
        .read(|txn| {
            let events = txn.open_table(EVENTS)?;
            let mut sequences = Vec::new();
            for entry in redb::ReadableTable::range::<u64>(&events, ..)? {
                sequences.push(entry?.0.value());
            }
            Ok(sequences)
        })
        .await
        .unwrap();
    assert_eq!(remaining, [2, 3, 4]);
    store.shutdown().await;
}
