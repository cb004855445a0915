//! kill -9 of the real binary during a stream of changes: everything acknowledged survives, with
//! its events and outbox rows, and no event exists without its state or state without its events.

use std::collections::BTreeMap;

use flagpost::store::tables::{EVENT_BODIES, EVENTS, OUTBOX, STATES};
use flagpost::store::{EventRecord, StateKey, StateRecord, Store, StoreOptions};
use hyper::{Method, StatusCode};
use redb::ReadableTable;
use serde_json::{Value, json};

use crate::common::{Process, call, config_toml, free_addr, stream_changes_and_kill};

const CLIENTS: usize = 16;
const ACKS_PER_ROUND: usize = 150;

/// What a client was told: this override was committed, with these events.
#[derive(Debug, Clone)]
struct Ack {
    identifier: String,
    value: u64,
    sequences: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_stream_of_changes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config_path = dir.path().join("flagpost.toml");
    std::fs::write(&config_path, config_toml(dir.path(), addr, "")).unwrap();

    let process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let (status, body) = call(
        Method::POST,
        &process.url("/api/v1/features"),
        Some(json!({"project": 1, "name": "stream"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let feature = body["feature"]["id"].as_u64().unwrap();

    let acks: Vec<Ack> =
        stream_changes_and_kill(process, &config_path, feature, CLIENTS, 3, ACKS_PER_ROUND)
            .await
            .into_iter()
            .map(|a| Ack {
                sequences: a.answer["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["sequence"].as_u64().unwrap())
                    .collect(),
                identifier: a.identifier,
                value: a.value,
            })
            .collect();

    // Restarted once more: every acknowledged override is there.
    let mut process = Process::start(&config_path, addr);
    process.wait_ready().await;
    let (_, doc) = call(
        Method::GET,
        &process.url("/api/v1/environments/1/document"),
        None,
    )
    .await;
    let overrides: BTreeMap<String, Value> = doc["features"][0]["identity_overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["identifier"].as_str().unwrap().to_owned(),
                o["value"].clone(),
            )
        })
        .collect();
    assert!(acks.len() >= 3 * ACKS_PER_ROUND);
    for ack in &acks {
        assert_eq!(
            overrides.get(&ack.identifier),
            Some(&json!(ack.value)),
            "lost {ack:?}"
        );
    }
    process.terminate();

    // The file itself: events, bodies and outbox rows of every acknowledged change, and events
    // and states that tell the same story.
    let store = Store::open(&dir.path().join("flagpost.redb"), StoreOptions::default()).unwrap();
    let (events, states, outbox) = store
        .read(|txn| {
            let mut events = Vec::new();
            let bodies = txn.open_table(EVENT_BODIES)?;
            for entry in txn.open_table(EVENTS)?.iter()? {
                let (seq, record) = entry?;
                let record: EventRecord = serde_json::from_str(record.value())?;
                let body: Value =
                    serde_json::from_slice(bodies.get(seq.value())?.unwrap().value())?;
                events.push((record, body));
            }
            let mut states = BTreeMap::new();
            for entry in txn.open_table(STATES)?.iter()? {
                let (key, value) = entry?;
                let (_, feature, state_key) = key.value();
                let state: StateRecord = serde_json::from_str(value.value())?;
                states.insert(
                    (feature, StateKey::decode(state_key).unwrap()),
                    (state.enabled, state.value),
                );
            }
            let mut outbox = std::collections::BTreeSet::new();
            for entry in txn.open_table(OUTBOX)?.iter()? {
                let (key, _) = entry?;
                outbox.insert(key.value().1);
            }
            Ok((events, states, outbox))
        })
        .await
        .unwrap();
    store.shutdown().await;

    let by_sequence: BTreeMap<u64, &(EventRecord, Value)> =
        events.iter().map(|e| (e.0.sequence, e)).collect();
    for ack in &acks {
        for sequence in &ack.sequences {
            let (record, _) = by_sequence
                .get(sequence)
                .unwrap_or_else(|| panic!("event {sequence} of {ack:?} is missing"));
            if record.event_type != "AUDIT_LOG_CREATED" {
                assert!(
                    outbox.contains(sequence),
                    "no outbox row for event {sequence}"
                );
            }
        }
    }
    // Replaying the flag events gives exactly the stored states.
    let mut replayed = BTreeMap::new();
    for (record, body) in &events {
        let state = match record.event_type.as_str() {
            "FLAG_UPDATED" => &body["data"]["new_state"],
            "FLAG_DELETED" => &body["data"]["previous_state"],
            _ => continue,
        };
        let key = if let Some(identifier) = state["identity_identifier"].as_str() {
            StateKey::Identity(identifier.to_owned())
        } else if let Some(segment) = state["feature_segment"]["segment"]["id"].as_u64() {
            StateKey::Segment(segment)
        } else {
            StateKey::Default
        };
        let key = (state["feature"]["id"].as_u64().unwrap(), key);
        if record.event_type == "FLAG_DELETED" {
            replayed.remove(&key);
        } else {
            let value = serde_json::from_value(state["feature_state_value"].clone()).unwrap();
            replayed.insert(key, (state["enabled"].as_bool().unwrap(), value));
        }
    }
    assert_eq!(replayed, states, "events and states disagree");
}
