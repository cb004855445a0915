//! The delivery tables through a real store: attempt numbers carried in outbox rows.

use super::*;
use crate::store::rows::event_type_code;
use crate::store::{Store, StoreOptions};
use crate::wire::EventType;

fn attempt(attempt: u32, result: AttemptResult) -> AttemptRecord {
    AttemptRecord {
        endpoint: "a".into(),
        sequence: 1,
        attempt,
        at_ms: 1_000,
        latency_ms: 1.5,
        status: Some(500),
        error: None,
        result,
        next_attempt_at_ms: None,
    }
}

async fn write(
    store: &Store,
    work: impl Fn(&WriteTransaction) -> Result<(), StoreError> + Send + 'static,
) {
    store.write_txn(move |txn| Ok(work(txn)?)).await.unwrap();
}

/// Records `outcomes` as the recorder does: through the batch's logged tables.
async fn record(store: &Store, outcomes: Vec<DeliveryOutcome>) {
    store
        .write(move |tables| Ok(record_outcomes(tables, &outcomes)?))
        .await
        .unwrap();
}

async fn page(store: &Store) -> Vec<OutboxDelivery> {
    store
        .read(|txn| outbox_page(txn, "a", 0, 10))
        .await
        .unwrap()
        .rows
}

/// A replayed delivery numbers its attempts on from the last one recorded, without any lookup
/// when an outcome is written: the count travels in the outbox row.
#[tokio::test]
async fn a_replayed_delivery_numbers_its_attempts_on_from_the_last_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    write(&store, |txn| {
        let (code, name) = event_type_code(&EventType::FlagUpdated);
        let row: EventRow = (code, name, Some(1), 1_000, "tests", b"{}");
        txn.open_table(EVENTS)?.insert(1, row)?;
        txn.open_table(OUTBOX)?.insert(("a", 1), (0, 0, 0))?;
        Ok(())
    })
    .await;
    let mut will_retry = attempt(1, AttemptResult::WillRetry);
    will_retry.next_attempt_at_ms = Some(5);
    let letter = DeadLetter {
        endpoint: "a".into(),
        sequence: 1,
        event_id: "evt_1".into(),
        reason: "retry schedule spent after 2 attempts".into(),
        attempts: 2,
        last_status: Some(500),
        last_error: None,
        dead_lettered_at_ms: 1_000,
    };
    let retry = DeliveryOutcome::WillRetry {
        attempt: will_retry,
        attempts: 1,
        next_attempt_at_ms: 5,
    };
    let dead = DeliveryOutcome::DeadLettered {
        attempt: attempt(2, AttemptResult::DeadLettered),
        letter,
    };
    record(&store, vec![retry, dead]).await;
    assert!(page(&store).await.is_empty());
    write(&store, |txn| {
        replay_dead_letters(txn, &ReplayFilter::default(), &|_| true, 7).map(|_| ())
    })
    .await;
    let rows = page(&store).await;
    assert_eq!(
        (
            rows[0].attempts,
            rows[0].earlier_attempts,
            rows[0].next_attempt_at_ms
        ),
        (0, 2, 7)
    );
    let delivered = attempt(3, AttemptResult::Delivered);
    record(&store, vec![DeliveryOutcome::Delivered(delivered)]).await;
    let recorded = store.read(|txn| attempts_for_event(txn, 1)).await.unwrap();
    let numbers: Vec<(u32, AttemptResult)> =
        recorded.iter().map(|a| (a.attempt, a.result)).collect();
    assert_eq!(
        numbers,
        [
            (1, AttemptResult::WillRetry),
            (2, AttemptResult::DeadLettered),
            (3, AttemptResult::Delivered)
        ]
    );
    assert_eq!(recorded[0].next_attempt_at_ms, Some(5));
    assert!(page(&store).await.is_empty());
    store.shutdown().await;
}
