//! kill -9 of the real binary during a stream of changes: everything acknowledged survives, with
//! its events and outbox rows, and no event exists without its state or state without its events.

use std::collections::BTreeMap;

use flagpost::changes::{EnvironmentRecord, StateKey};
use flagpost::store::deliveries::{list_pending, outbox_endpoints};
use flagpost::store::events::events_page;
use flagpost::store::queries::read_document;
use flagpost::store::{EventRecord, Store, StoreOptions};
use hyper::{Method, StatusCode};
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
            for (record, body) in events_page(txn, 0, usize::MAX)?.events {
                events.push((record, serde_json::from_slice::<Value>(&body).unwrap()));
            }
            // Every state of the one environment, as its document shows them.
            let environment = EnvironmentRecord {
                id: 1,
                name: "Development".into(),
                project: 1,
                project_name: "Default".into(),
            };
            let mut states = BTreeMap::new();
            for feature in read_document(txn, &environment)?.features {
                let id = feature.feature.id;
                states.insert((id, StateKey::Default), (feature.enabled, feature.value));
                for o in feature.identity_overrides {
                    states.insert((id, StateKey::Identity(o.identifier)), (o.enabled, o.value));
                }
                for o in feature.segment_overrides {
                    states.insert((id, StateKey::Segment(o.segment.id)), (o.enabled, o.value));
                }
            }
            let mut outbox = std::collections::BTreeSet::new();
            for endpoint in outbox_endpoints(txn)? {
                for row in list_pending(txn, &endpoint, 0, usize::MAX)? {
                    outbox.insert(row.sequence);
                }
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
