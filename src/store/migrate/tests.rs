//! A file as flagpost 0.1 wrote it opens, migrated, with every row readable.

use redb::Database;
use serde_json::json;

use super::*;
use crate::changes::EnvironmentRecord;
use crate::store::deliveries::{
    AttemptResult, attempts_for_event, list_dead_letters, list_pending,
};
use crate::store::events::events_page;
use crate::store::queries::{live_feature, read_document};
use crate::store::schema::META;
use crate::store::{Store, StoreOptions};
use crate::wire::FlagValue;

/// Writes what flagpost 0.1 wrote for one feature with an identity override and two events.
fn write_schema_1(path: &std::path::Path) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        for (key, value) in [
            ("schema_version", 1),
            ("instance_id", 0xabc),
            ("next_sequence", 3),
            ("next_feature_id", 2),
            ("next_state_id", 3),
            ("next_identity_id", 2),
        ] {
            meta.insert(key, value).unwrap();
        }
        let feature = json!({"id": 1, "project": 1, "name": "dark_mode", "type": "STANDARD",
            "description": null, "initial_value": "v1", "default_enabled": false,
            "created_date": "2026-01-02T03:04:05.000000Z", "owner": "api"});
        let mut features = txn.open_table(FEATURES_1).unwrap();
        features.insert(1, feature.to_string().as_str()).unwrap();
        let mut states = txn.open_table(STATES_1).unwrap();
        let default = json!({"id": 1, "enabled": true, "value": 7});
        states
            .insert((1, 1, ""), default.to_string().as_str())
            .unwrap();
        let identity = json!({"id": 2, "enabled": false, "value": null, "identity_id": 1});
        states
            .insert((1, 1, "identity:user-42"), identity.to_string().as_str())
            .unwrap();
        let mut events = txn.open_table(EVENTS_1).unwrap();
        let mut bodies = txn.open_table(EVENT_BODIES_1).unwrap();
        for (sequence, event_type) in [(1u64, "FLAG_UPDATED"), (2, "AUDIT_LOG_CREATED")] {
            let record = json!({"id": format!("evt_{sequence}"), "sequence": sequence,
                "event_type": event_type, "environment": 1, "committed_at_ms": 1000,
                "changed_by": "tests"});
            events
                .insert(sequence, record.to_string().as_str())
                .unwrap();
            bodies
                .insert(sequence, format!("body {sequence}").as_bytes())
                .unwrap();
        }
        write_schema_1_deliveries(&txn);
    }
    txn.commit().unwrap();
}

/// Event 1 pending for "sink" after two attempts; event 2 dead-lettered for "gone".
fn write_schema_1_deliveries(txn: &redb::WriteTransaction) {
    let mut outbox = txn.open_table(deliveries::OUTBOX_1).unwrap();
    outbox.insert(("sink", 1), (2, 5000)).unwrap();
    let attempt = json!({"endpoint": "sink", "sequence": 1, "attempt": 2, "at_ms": 4000,
        "latency_ms": 1.5, "status": 503, "error": "HTTP 503", "result": "will_retry",
        "next_attempt_at_ms": 5000});
    let mut attempts = txn.open_table(deliveries::ATTEMPTS_1).unwrap();
    attempts
        .insert((1, "sink", 2), attempt.to_string().as_str())
        .unwrap();
    let letter = json!({"endpoint": "gone", "sequence": 2, "event_id": "evt_2",
        "reason": "endpoint removed", "attempts": 0, "last_status": null, "last_error": null,
        "dead_lettered_at_ms": 6000});
    let mut letters = txn.open_table(deliveries::DEAD_LETTERS_1).unwrap();
    letters
        .insert(("gone", 2), letter.to_string().as_str())
        .unwrap();
}

#[tokio::test]
async fn a_schema_1_file_is_migrated_at_open_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    write_schema_1(&path);
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let (feature, document, page) = store
        .read(|txn| {
            let environment = EnvironmentRecord {
                id: 1,
                name: "Development".into(),
                project: 1,
                project_name: "Default".into(),
            };
            Ok((
                live_feature(txn, 1)?,
                read_document(txn, &environment)?,
                events_page(txn, 0, 10)?,
            ))
        })
        .await
        .unwrap();
    let feature = feature.unwrap();
    assert_eq!(feature.name, "dark_mode");
    assert_eq!(feature.initial_value, Some(FlagValue::String("v1".into())));
    let features = &document.features;
    assert_eq!(features[0].value, Some(FlagValue::Integer(7)));
    assert_eq!(features[0].identity_overrides[0].identifier, "user-42");
    assert_eq!(document.last_sequence, 2);
    let (record, body) = &page.events[1];
    assert_eq!(record.id, "evt_0000000000000abc_000000000002");
    assert_eq!(record.event_type, "AUDIT_LOG_CREATED");
    assert_eq!(
        (record.committed_at_ms, record.changed_by.as_str()),
        (1000, "tests")
    );
    assert_eq!(body, b"body 2");
    let (pending, attempts, letters) = store
        .read(|txn| {
            Ok((
                list_pending(txn, "sink", 0, 10)?,
                attempts_for_event(txn, 1)?,
                list_dead_letters(txn, None, None, 10)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        (pending[0].attempts, pending[0].next_attempt_at_ms),
        (2, 5000)
    );
    assert_eq!(attempts[0].status, Some(503));
    assert_eq!(attempts[0].result, AttemptResult::WillRetry);
    assert_eq!(letters[0].reason, "endpoint removed");
    store.shutdown().await;
    drop(store);
    // Opened again, it is a schema-2 file like any other.
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    store.shutdown().await;
}

#[test]
fn a_file_of_an_unknown_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 9)
            .unwrap();
        txn.commit().unwrap();
    }
    let refused = Store::open(&path, StoreOptions::default()).err().unwrap();
    let message = refused.to_string();
    assert!(message.contains("schema version 9"), "{message}");
    assert!(message.contains("move the file aside"), "{message}");
}
