//! The shared conformance vectors and the real Flagsmith captures, over HTTP.

use serde_json::{Value, json};

use crate::common::*;

/// What the cache must hold after each vector, applied in `signatures.json` order.
async fn check_after(receiver: &Receiver, body_file: &str) {
    let flags = receiver.env_flags(23).await;
    match body_file {
        "flag_updated_seed.json" => {
            assert_eq!(flags[0]["id"], 2411);
            assert_eq!(
                (flags[0]["enabled"].clone(), flags[0]["value"].clone()),
                (json!(true), Value::Null)
            );
        }
        "flag_created_flagsmith.json" => {
            assert_eq!(
                (flags[0]["enabled"].clone(), flags[0]["value"].clone()),
                (json!(true), json!("green"))
            );
        }
        "identity_override_flagsmith.json" => {
            let resolved = receiver.identity_flags(23, "user-42").await;
            assert_eq!(resolved[0]["source"], "identity");
            assert_eq!(
                (resolved[0]["enabled"].clone(), resolved[0]["value"].clone()),
                (json!(false), json!(42))
            );
        }
        "segment_override_flagsmith.json" => {
            let segment = &flags[0]["segment_overrides"][0];
            assert_eq!(segment["segment_id"], 9);
            assert_eq!(segment["priority"], 1);
            assert_eq!(
                (segment["enabled"].clone(), segment["value"].clone()),
                (json!(true), json!(true))
            );
        }
        "flag_deleted_flagsmith.json" | "audit_log_created.json" => {
            assert_eq!(flags, json!([]), "the deleted feature is gone");
        }
        other => panic!("no expectation for {other}"),
    }
}

fn altered(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    let middle = body.len() / 2;
    body[middle] ^= 0x01;
    body
}

/// The signature with one character in its middle replaced by another of the same alphabet
/// ('a' and 'b' are both hex and base64).
fn altered_signature(signature: &str) -> String {
    let mut chars: Vec<char> = signature.chars().collect();
    let middle = chars.len() / 2;
    chars[middle] = if chars[middle] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// Posts every vector under one scheme, checking the refusal of an altered copy before each and
/// the cache after each.
async fn replay_vectors(standard: bool) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), ANY_AGE, "")).await;
    let signatures = read_json(format!("{CONFORMANCE}/signatures.json"));
    for vector in signatures["vectors"].as_array().unwrap() {
        let file = vector["body_file"].as_str().unwrap();
        let body = read(format!("{CONFORMANCE}/{file}"));
        let headers: Vec<(&str, &str)> = if standard {
            let s = &vector["standard"];
            vec![
                ("content-type", "application/json"),
                ("webhook-id", s["webhook_id"].as_str().unwrap()),
                (
                    "webhook-timestamp",
                    s["webhook_timestamp"].as_str().unwrap(),
                ),
                (
                    "webhook-signature",
                    s["webhook_signature"].as_str().unwrap(),
                ),
            ]
        } else {
            vec![
                ("content-type", "application/json"),
                (
                    "x-flagsmith-signature",
                    vector["flagsmith"]["x_flagsmith_signature"]
                        .as_str()
                        .unwrap(),
                ),
            ]
        };

        let before = receiver.env_flags(23).await;
        let (status, answer) = receiver.post("/webhook", &headers, &altered(&body)).await;
        assert_eq!(status, 401, "{file} altered by one byte: {answer}");
        let forged: Vec<(&str, String)> = headers
            .iter()
            .map(|(name, value)| match *name {
                "webhook-signature" | "x-flagsmith-signature" => (*name, altered_signature(value)),
                _ => (*name, value.to_string()),
            })
            .collect();
        let forged: Vec<(&str, &str)> = forged.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_ne!(forged, headers);
        let (status, answer) = receiver.post("/webhook", &forged, &body).await;
        assert_eq!(status, 401, "{file} with its signature altered: {answer}");
        assert_eq!(
            receiver.env_flags(23).await,
            before,
            "{file}: a refusal changes nothing"
        );

        let (status, answer) = receiver.post("/webhook", &headers, &body).await;
        assert_eq!(status, 200, "{file}: {answer}");
        let expected = if file == "audit_log_created.json" {
            "not_applied"
        } else {
            "applied"
        };
        assert_eq!(answer["status"], expected, "{file}");
        check_after(&receiver, file).await;
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_verifies_with_x_flagsmith_signature_and_applies() {
    replay_vectors(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_verifies_with_standard_webhooks_and_applies() {
    replay_vectors(true).await;
}

/// A flag as the table of conformance/README.md describes it: (enabled, value).
fn state(flag: &Value) -> (Value, Value) {
    (flag["enabled"].clone(), flag["value"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_flagsmith_requests_in_order_give_the_documented_cache() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), ANY_AGE, "")).await;
    let captures_dir = format!("{CONFORMANCE}/flagsmith-v2.265.0");
    let captures = read_json(format!("{captures_dir}/captures.json"));
    for capture in captures["requests"].as_array().unwrap() {
        let order = capture["order"].as_u64().unwrap();
        if order > 15 {
            // 016 is the "test webhook" button's fixed sample, not part of the sequence.
            break;
        }
        let body = read(format!(
            "{captures_dir}/{}",
            capture["body_file"].as_str().unwrap()
        ));
        let headers = [
            ("content-type", "application/json"),
            (
                "x-flagsmith-signature",
                capture["x_flagsmith_signature"].as_str().unwrap(),
            ),
        ];
        let (status, answer) = receiver.post("/webhook", &headers, &body).await;
        assert_eq!(status, 200, "request {order}: {answer}");

        let flags = receiver.env_flags(1).await;
        match order {
            9 => {
                assert_eq!(flags.as_array().unwrap().len(), 1, "{flags}");
                assert_eq!(flags[0]["name"], "interop_flag");
                assert_eq!(flags[0]["id"], 1);
                assert_eq!(state(&flags[0]), (json!(true), json!("v2")));
                let segment = &flags[0]["segment_overrides"][0];
                assert_eq!(segment["segment_name"], "beta_users");
                assert_eq!(segment["priority"], 0);
                assert_eq!(state(segment), (json!(false), json!("segment-value-2")));
                let user = receiver.identity_flags(1, "user-42").await;
                assert_eq!(user[0]["source"], "identity");
                assert_eq!(state(&user[0]), (json!(false), json!("identity-value-2")));
                let snapshot = receiver
                    .snapshot_when("step 9", |s| {
                        s["environments"][0]["flags"][0]["segment_overrides"][0]["value"]
                            == "segment-value-2"
                    })
                    .await;
                let flag = &snapshot["environments"][0]["flags"][0];
                assert_eq!(state(flag), (json!(true), json!("v2")));
                let identity = &flag["identity_overrides"][0];
                assert_eq!(identity["identifier"], "user-42");
                assert_eq!(state(identity), (json!(false), json!("identity-value-2")));
            }
            12 => {
                assert_eq!(flags.as_array().unwrap().len(), 1, "{flags}");
                assert_eq!(flags[0]["name"], "interop_flag_2");
                assert_eq!(flags[0]["id"], 2);
                assert_eq!(state(&flags[0]), (json!(true), Value::Null));
                let segments = flags[0]["segment_overrides"].as_array().unwrap();
                assert_eq!(segments.len(), 1);
                assert_eq!(segments[0]["segment_name"], "beta_users");
                assert_eq!(state(&segments[0]), (json!(true), json!("seg")));
                let user = receiver.identity_flags(1, "user-42").await;
                assert_eq!(
                    user[0]["source"], "environment",
                    "the override went with feature 1"
                );
            }
            15 => {
                assert_eq!(flags, json!([]), "every feature was deleted");
                receiver
                    .snapshot_when("no flags after step 15", |s| {
                        s["environments"][0]["flags"] == json!([])
                    })
                    .await;
            }
            _ => {}
        }
    }
    receiver.stop().await;
}
