//! A file written in schema 1 (JSON rows, text request ids) or 2 opens with everything it held,
//! and a file of a later schema is refused.

use redb::{Database, ReadableDatabase, TableDefinition};

use super::*;
use crate::storage::Storage;

const ENVIRONMENTS_V1: TableDefinition<u64, &str> = TableDefinition::new("environments");

/// A schema-1 file as the receiver wrote it: one environment, a feature with a default, an
/// identity override and a segment override, and two remembered request ids.
fn write_schema_1(path: &Path) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut envs = txn.open_table(ENVIRONMENTS_V1).unwrap();
        envs.insert(1, r#"{"name":"prod","document_seq":null,"loaded_at":null,"refreshed_at":5,"revision":3,"updated_at_micros":7}"#).unwrap();
        let mut features = txn.open_table(FEATURES_V1).unwrap();
        features.insert((1, 7), r#"{"name":"banner","feature_type":"STANDARD","description":null,"initial_value":"x","default_enabled":false,"created_date":null,"order":{"seq":4}}"#).unwrap();
        let mut states = txn.open_table(STATES_V1).unwrap();
        let default = br#"{"order":{"seq":3},"state":{"enabled":true,"value":"on"}}"#;
        states.insert((1, 7, ""), default.as_slice()).unwrap();
        let identity = br#"{"order":{"seq":4},"state":{"enabled":false,"value":12,"identity_id":9},"arrived_micros":99}"#;
        states
            .insert((1, 7, "i:alice"), identity.as_slice())
            .unwrap();
        let segment = br#"{"order":{"ts_micros":8},"state":{"enabled":true,"value":null,"priority":1,"name":"beta"}}"#;
        states.insert((1, 7, "s:42"), segment.as_slice()).unwrap();
        let mut seen = txn.open_table(SEEN_V1).unwrap();
        let mut seen_by_time = txn.open_table(SEEN_BY_TIME_V1).unwrap();
        for (id, at) in [
            ("id:evt_000000000000000a_000000000004", 100),
            ("id:msg_1", 200),
        ] {
            seen.insert(id, at).unwrap();
            seen_by_time.insert((at, id), ()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_schema_1_file_is_migrated_with_everything_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    write_schema_1(&path);

    let (mut storage, cache) = Storage::open(&path, 1 << 20).unwrap();
    let env = cache.env(1).unwrap();
    assert_eq!((env.name.as_deref(), env.revision), (Some("prod"), 3));
    let entry = &env.features[&7];
    assert_eq!(entry.meta.name, "banner");
    assert_eq!(entry.meta.order.seq, Some(4));
    let default = entry.default_state().unwrap();
    assert_eq!(
        default.value,
        Some(flagpost::wire::FlagValue::String("on".into()))
    );
    let alice = entry.identities.get("alice").unwrap();
    assert_eq!(alice.arrived_micros, 99);
    assert_eq!(alice.state.as_ref().unwrap().identity_id, Some(9));
    let segment = entry.segments[&42].state.as_ref().unwrap();
    assert_eq!(
        (segment.priority, segment.name.as_deref()),
        (Some(1), Some("beta"))
    );

    // The ids remembered as text are still duplicates, by whichever form they now take.
    let (taken, _) = storage
        .write(|batch| {
            Ok([
                batch.remember(
                    RequestId::webhook_id("evt_000000000000000a_000000000004"),
                    300,
                )?,
                batch.remember(RequestId::webhook_id("msg_1"), 300)?,
                batch.remember(RequestId::webhook_id("msg_2"), 300)?,
            ])
        })
        .unwrap();
    assert_eq!(taken, [false, false, true]);
    // ... and forgotten by when they were first taken.
    let (forgotten, _) = storage.write(|batch| batch.forget_before(250)).unwrap();
    assert_eq!(forgotten, 2);
    drop(storage);

    // Opened again: the current schema as it stands, nothing migrated twice.
    let (_, again) = Storage::open(&path, 1 << 20).unwrap();
    let entry = &again.env(1).unwrap().features[&7];
    assert!(entry.identities.get("alice").is_some());
}

#[test]
fn a_file_of_a_later_schema_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    drop(Storage::open(&path, 1 << 20).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let error = Storage::open(&path, 1 << 20).err().unwrap().to_string();
    assert!(error.contains("schema version 99"), "{error}");
    assert!(error.contains("delete the file"), "{error}");
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(META).unwrap().get("schema_version").unwrap();
    assert_eq!(version.unwrap().value(), 99);
}

#[test]
fn a_schema_2_file_opens_in_schema_3_with_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    drop(Storage::open(&path, 1 << 20).unwrap());
    // The file as schema 2 left it: an upstream document, no table of carried overrides, no id.
    let recorded = format!(
        "{}/../../shared/conformance/flagsmith-v2.265.0-live/steps/030.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let step: serde_json::Value =
        serde_json::from_slice(&std::fs::read(recorded).unwrap()).unwrap();
    let document = serde_json::to_vec(&step["environment_documents"]["live"]).unwrap();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("schema_version", 2).unwrap();
        assert!(meta.remove("file_id").unwrap().is_some());
        drop(meta);
        txn.open_table(crate::storage::documents::UPSTREAM_DOCUMENTS)
            .unwrap()
            .insert(44, (5, 6, document.as_slice()))
            .unwrap();
        assert!(
            txn.delete_table(crate::storage::documents::CARRIED_OVERRIDES)
                .unwrap()
        );
        txn.commit().unwrap();
    }

    let (storage, cache) = Storage::open(&path, 1 << 20).unwrap();
    let held = cache.env(44).unwrap().upstream.as_ref().unwrap();
    assert_eq!((held.fetch_began_micros, held.fetched_at), (5, 6));
    assert!(held.carried_overrides.is_none());
    assert!(held.parsed.identities.contains_key("u-anna"));
    // The file got its id in the migration, and keeps it.
    let file_id = storage.file_id();
    drop(storage);
    let (storage, _) = Storage::open(&path, 1 << 20).unwrap();
    assert_eq!(storage.file_id(), file_id);
    drop(storage);
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(META).unwrap().get("schema_version").unwrap();
    assert_eq!(version.unwrap().value(), SCHEMA_VERSION);
}

/// A file as schema 3 left it after a crash: its rows as redb tuples, and a redo log whose ops
/// hold tuples too (of the tables' numbers then) and which the file has not taken in.
fn write_schema_3_with_its_log(path: &Path) {
    use flagpost::store::redo::{self, LoggedTable, Redo, RedoOps};
    use tuples::{FEATURES_AS_TUPLES, STATES_AS_TUPLES};

    drop(Storage::open(path, 1 << 20).unwrap());
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 3)
            .unwrap();
        assert!(txn.delete_table(FEATURES).unwrap() && txn.delete_table(STATES).unwrap());
        let mut features = txn.open_table(FEATURES_AS_TUPLES).unwrap();
        let meta = (
            "banner",
            Some("STANDARD"),
            None,
            (5, 0, "x"),
            Some(false),
            None,
            Some(4),
            None,
        );
        features.insert((1, 7), meta).unwrap();
        let mut states = txn.open_table(STATES_AS_TUPLES).unwrap();
        let on = (true, (5, 0, "on"), Some(70), None, None, None);
        states
            .insert((1, 7, ""), (Some(3), None, 0, Some(on)))
            .unwrap();
        let alice = (false, (3, 12, ""), None, Some(9), None, None);
        states
            .insert((1, 7, "i:alice"), (Some(4), None, 99, Some(alice)))
            .unwrap();
        let beta = (true, (0, 0, ""), None, None, Some(1), Some("beta"));
        states
            .insert((1, 7, "s:42"), (None, Some(8), 0, Some(beta)))
            .unwrap();
    }
    txn.commit().unwrap();

    // One batch after the file's last durable commit, held by the log alone.
    let mut log = Redo::open(path, false, redo::CHECKPOINT_EVERY).unwrap();
    let txn = db.begin_write().unwrap();
    let ops = RedoOps::shared();
    {
        let mut features = LoggedTable::open(&txn, FEATURES_AS_TUPLES, 2, ops.clone()).unwrap();
        let meta = (
            "hero",
            None,
            Some("d"),
            (2, 0, ""),
            None,
            None,
            Some(6),
            None,
        );
        features.insert((1, 7), meta).unwrap();
        let mut states = LoggedTable::open(&txn, STATES_AS_TUPLES, 4, ops.clone()).unwrap();
        let bob = (true, (4, 2.5f64.to_bits(), ""), None, Some(10), None, None);
        states
            .insert((1, 7, "i:bob"), (Some(6), None, 5, Some(bob)))
            .unwrap();
        let gamma = (false, (5, 0, "g"), Some(71), None, Some(2), Some("gamma"));
        states
            .insert((1, 7, "s:43"), (Some(6), None, 0, Some(gamma)))
            .unwrap();
        states.remove((1, 7, "s:42")).unwrap();
    }
    let held = log.log_and_hold(txn, &ops.borrow()).unwrap();
    drop(held);
}

#[test]
fn a_schema_3_file_and_the_log_it_left_open_in_schema_4_with_everything_they_held() {
    use flagpost::wire::FlagValue;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.redb");
    write_schema_3_with_its_log(&path);

    for reopened in [false, true] {
        let (storage, cache) = Storage::open(&path, 1 << 20).unwrap();
        let entry = &cache.env(1).unwrap().features[&7];
        // The description as the log last wrote it.
        let meta = &entry.meta;
        assert_eq!(meta.name, "hero", "reopened: {reopened}");
        assert_eq!(
            (meta.description.as_deref(), meta.feature_type.as_deref()),
            (Some("d"), None)
        );
        assert_eq!(
            (&meta.initial_value, meta.order.seq),
            (&Some(FlagValue::Bool(true)), Some(6))
        );
        // The file's rows ...
        let default = entry.default.as_ref().unwrap();
        let state = default.state.as_ref().unwrap();
        assert_eq!(
            (default.order.seq, &state.value, state.state_id),
            (Some(3), &Some(FlagValue::String("on".into())), Some(70))
        );
        let alice = entry.identities.get("alice").unwrap();
        let state = alice.state.as_ref().unwrap();
        assert_eq!((alice.arrived_micros, state.identity_id), (99, Some(9)));
        assert_eq!(state.value, Some(FlagValue::Integer(12)));
        // ... and the log's, a removal among them.
        let bob = entry.identities.get("bob").unwrap();
        let state = bob.state.as_ref().unwrap();
        assert_eq!((bob.arrived_micros, state.identity_id), (5, Some(10)));
        assert_eq!(state.value, Some(FlagValue::Float(2.5)));
        assert!(!entry.segments.contains_key(&42));
        let gamma = entry.segments[&43].state.as_ref().unwrap();
        assert_eq!(
            (gamma.priority, gamma.name.as_deref(), gamma.state_id),
            (Some(2), Some("gamma"), Some(71))
        );
        storage.close();
    }
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn.open_table(META).unwrap().get("schema_version").unwrap();
    assert_eq!(version.unwrap().value(), SCHEMA_VERSION);
    assert!(txn.open_table(tuples::FEATURES_AS_TUPLES).is_err());
}
