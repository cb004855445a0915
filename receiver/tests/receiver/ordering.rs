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

async fn default_value(receiver: &Receiver, env: u64) -> Value {
    receiver.env_flags(env).await[0]["value"].clone()
}

/// Issue 8, item 2: the order a receiver believes is the sequence its signed `webhook-id` names.
/// A proxy holding no secret rewrites `x-flagpost-sequence` to 18446744073709551615: refused, and
/// flagpost's next change still applies. A sequence header with an id that names no sequence
/// is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_header_the_signed_id_does_not_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let event = |value: &str| flag_event(5, 1, &Key::Default, false, true, json!(value));
    let one = event("one");
    let signed = Signed::new(&one, "", Some(1));
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &one).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));

    let two = event("two");
    let rewritten: Vec<(String, String)> = Signed::from_database(&two, TEST_DATABASE, 2)
        .headers
        .into_iter()
        .map(|(name, value)| match name.as_str() {
            "x-flagpost-sequence" => (name, u64::MAX.to_string()),
            _ => (name, value),
        })
        .collect();
    let no_sequence_in_id = Signed::with_id(&two, "evt-from-a-proxy", Some(u64::MAX)).headers;
    for (case, headers) in [
        ("rewritten", rewritten),
        ("id without one", no_sequence_in_id),
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (status, answer) = receiver.post("/webhook", &headers, &two).await;
        assert_eq!(status, 400, "{case}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains("x-flagpost-sequence"), "{case}: {answer}");
        assert_eq!(default_value(&receiver, 5).await, "one", "{case}");
    }
    let (_, metrics) = receiver.get("/metrics", &[]).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("flagpost_receiver_webhooks_refused_total{reason=\"unsigned_sequence\"} 2"),
        "{metrics}"
    );

    let three = event("three");
    let signed = Signed::new(&three, "", Some(3));
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &three).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
    assert_eq!(default_value(&receiver, 5).await, "three");
    receiver.stop().await;
}

/// Issue 8, item 3: a captured flagpost request sent again with only its `X-Flagsmith-Signature`
/// (no timestamp, so never stale) is ordered by arrival and applied; with
/// `intake.require_standard_signature` it is refused and the lookup stays on the newer state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_request_resent_with_only_the_flagsmith_signature_is_refused_when_required() {
    let secret = flagpost::signing::Secret::new(TEST_SECRET).unwrap();
    let old = flag_event(5, 1, &Key::Default, false, true, json!("old"));
    let new = flag_event(5, 1, &Key::Default, false, true, json!("new"));
    let flagsmith_signature = secret.flagsmith_signature(&old);
    let replay = [
        ("content-type", "application/json"),
        ("x-flagsmith-signature", flagsmith_signature.as_str()),
    ];
    for (required, expected_status, expected_value) in [(false, 200, "old"), (true, 401, "new")] {
        let dir = tempfile::tempdir().unwrap();
        let intake = format!("require_standard_signature = {required}");
        let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), &intake, "")).await;
        for (seq, body) in [(1, &old), (2, &new)] {
            let signed = Signed::new(body, "", Some(seq));
            let (status, answer) = receiver.post("/webhook", &signed.as_refs(), body).await;
            assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
        }
        let (status, answer) = receiver.post("/webhook", &replay, &old).await;
        assert_eq!(status, expected_status, "required = {required}: {answer}");
        assert_eq!(
            default_value(&receiver, 5).await,
            expected_value,
            "required = {required}"
        );
        if required {
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains("Standard Webhooks"), "{answer}");
            let (_, metrics) = receiver.get("/metrics", &[]).await;
            let reason = "reason=\"standard_signature_required\"} 1";
            assert!(metrics.as_str().unwrap().contains(reason), "{metrics}");
        }
        receiver.stop().await;
    }
}
