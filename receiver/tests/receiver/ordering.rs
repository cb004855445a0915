//! Any permutation of flagpost's events, duplicates included, ends in the same cache as the
//! events in order: at the domain layer under proptest, and once over HTTP.

use flagpost::wire::{IncomingEvent, parse_incoming};
use flagpost_receiver::documents::{Change, FeatureEntry, FlagCache};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::*;

/// One generated event: (feature, key, deleted, enabled, value).
type Spec = (u64, u8, bool, bool, u8);

fn key_of(key: u8) -> Key {
    match key {
        0 => Key::Default,
        1 => Key::Identity("alice".into()),
        2 => Key::Identity("bob".into()),
        3 => Key::Segment(1),
        _ => Key::Segment(2),
    }
}

fn body_of(spec: &Spec) -> Vec<u8> {
    let (feature, key, deleted, enabled, value) = *spec;
    flag_event(
        1,
        feature,
        &key_of(key),
        deleted,
        enabled,
        json!(format!("v{value}")),
    )
}

/// The change flagpost's event number `seq` carries, read the way intake reads it.
fn change_of(spec: &Spec, seq: u64) -> Change {
    match parse_incoming(&body_of(spec)).unwrap() {
        IncomingEvent::Flag(event) => Change::from_event(&event, Some(seq)),
        other => panic!("not a flag event: {other:?}"),
    }
}

/// Per environment: its id, its deleted feature ids, its features.
type Contents = Vec<(u64, Vec<u64>, Vec<(u64, FeatureEntry)>)>;

/// Everything the cache holds, in a canonical order.
fn contents(cache: &FlagCache) -> Contents {
    let mut envs: Vec<_> = cache
        .envs()
        .map(|(id, env)| {
            let mut deleted: Vec<u64> = env.deleted_features.iter().copied().collect();
            deleted.sort();
            let mut features: Vec<_> = env
                .features
                .iter()
                .map(|(id, f)| (*id, FeatureEntry::clone(f)))
                .collect();
            features.sort_by_key(|(id, _)| *id);
            (id, deleted, features)
        })
        .collect();
    envs.sort_by_key(|(id, _, _)| *id);
    envs
}

fn apply_all(changes: &[Change], order: &[usize]) -> FlagCache {
    let mut cache = FlagCache::default();
    let mut dirty = Vec::new();
    for &i in order {
        cache.apply(&changes[i], 0, &mut dirty);
    }
    cache
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1..4u64,
        0..5u8,
        prop::bool::weighted(0.15),
        any::<bool>(),
        0..4u8,
    )
}

/// Events in flagpost order, and the indices of a shuffled delivery with duplicates.
fn delivery() -> impl Strategy<Value = (Vec<Spec>, Vec<usize>)> {
    prop::collection::vec(spec(), 1..40).prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), prop::collection::vec(0..n, 0..n)).prop_flat_map(
            move |(specs, duplicates)| {
                let mut indices: Vec<usize> = (0..n).collect();
                indices.extend(duplicates);
                (Just(specs), Just(indices).prop_shuffle())
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn any_permutation_with_duplicates_ends_in_the_same_cache((specs, delivered) in delivery()) {
        let changes: Vec<Change> = specs.iter().enumerate().map(|(i, s)| change_of(s, i as u64 + 1)).collect();
        let in_order = apply_all(&changes, &(0..changes.len()).collect::<Vec<_>>());
        let permuted = apply_all(&changes, &delivered);
        prop_assert_eq!(contents(&permuted), contents(&in_order));
    }
}

/// A fixed shuffle (no randomness needed: proptest covers the space above).
fn scrambled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).rev().collect();
    for i in 0..n {
        order.swap(i, (i * 7 + 3) % n);
    }
    // Every third event delivered twice.
    order.extend((0..n).step_by(3));
    order
}

async fn observed(receiver: &Receiver) -> Value {
    json!({
        "env": receiver.env_flags(1).await,
        "alice": receiver.identity_flags(1, "alice").await,
        "bob": receiver.identity_flags(1, "bob").await,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_scrambled_delivery_ends_like_the_ordered_one() {
    let specs: Vec<Spec> = (0..36u64)
        .map(|i| {
            (
                1 + (i / 5) % 3,
                (i % 5) as u8,
                [17, 30, 31].contains(&i),
                i % 2 == 0,
                (i % 4) as u8,
            )
        })
        .collect();
    let mut results = Vec::new();
    for order in [(0..specs.len()).collect::<Vec<_>>(), scrambled(specs.len())] {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
        let mut seen = std::collections::HashSet::new();
        for i in order {
            let body = body_of(&specs[i]);
            let signed = Signed::new(&body, &format!("evt-{i}"), Some(i as u64 + 1));
            let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &body).await;
            assert_eq!(status, 200, "{answer}");
            if !seen.insert(i) {
                assert_eq!(answer["status"], "duplicate", "event {i} again");
            }
        }
        results.push(observed(&receiver).await);
        receiver.stop().await;
    }
    assert_ne!(results[0]["env"], Value::Null);
    assert_eq!(results[1], results[0]);
}
