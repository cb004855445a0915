//! The shared conformance vectors (`../shared/conformance/`), read where they lie: every body's
//! signatures as the reference libraries computed them, and every body readable as a web hook.

use std::path::PathBuf;

use flagpost::signing::{
    Secret, VerifyError, standard_signature_header, verify_flagsmith, verify_standard,
};
use flagpost::wire::{EventType, IncomingEvent, parse_incoming};
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

struct Vector {
    body: Vec<u8>,
    body_file: String,
    flagsmith_secret: Secret,
    flagsmith_signature: String,
    standard_secret: Secret,
    webhook_id: String,
    webhook_timestamp: String,
    webhook_signature: String,
}

fn vectors() -> Vec<Vector> {
    let doc = read_json(conformance_dir().join("signatures.json"));
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 6, "expected every body to have a vector");
    vectors
        .iter()
        .map(|v| {
            let body_file = v["body_file"].as_str().unwrap().to_owned();
            let s = |path: &[&str]| {
                let mut node = v;
                for key in path {
                    node = &node[key];
                }
                node.as_str().unwrap().to_owned()
            };
            Vector {
                body: std::fs::read(conformance_dir().join(&body_file)).unwrap(),
                flagsmith_secret: Secret::new(s(&["flagsmith", "secret"])).unwrap(),
                flagsmith_signature: s(&["flagsmith", "x_flagsmith_signature"]),
                standard_secret: Secret::new(s(&["standard", "secret"])).unwrap(),
                webhook_id: s(&["standard", "webhook_id"]),
                webhook_timestamp: s(&["standard", "webhook_timestamp"]),
                webhook_signature: s(&["standard", "webhook_signature"]),
                body_file,
            }
        })
        .collect()
}

#[test]
fn flagpost_signs_every_body_exactly_as_the_reference_libraries() {
    for v in vectors() {
        assert_eq!(
            v.flagsmith_secret.flagsmith_signature(&v.body),
            v.flagsmith_signature,
            "{}",
            v.body_file
        );
        let header = standard_signature_header(
            std::slice::from_ref(&v.standard_secret),
            &v.webhook_id,
            &v.webhook_timestamp,
            &v.body,
        );
        assert_eq!(header, v.webhook_signature, "{}", v.body_file);
    }
}

#[test]
fn every_reference_signature_verifies_and_one_changed_byte_does_not() {
    for v in vectors() {
        let now: i64 = v.webhook_timestamp.parse().unwrap();
        let secrets = [v.flagsmith_secret.clone()];
        verify_flagsmith(&secrets, &v.body, &v.flagsmith_signature).unwrap();
        let standard = [v.standard_secret.clone()];
        verify_standard(
            &standard,
            &v.webhook_id,
            &v.webhook_timestamp,
            &v.webhook_signature,
            &v.body,
            now,
            300,
        )
        .unwrap();

        for at in [0, v.body.len() / 2, v.body.len() - 1] {
            let mut altered = v.body.clone();
            altered[at] ^= 0x01;
            assert_eq!(
                verify_flagsmith(&secrets, &altered, &v.flagsmith_signature),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                verify_standard(
                    &standard,
                    &v.webhook_id,
                    &v.webhook_timestamp,
                    &v.webhook_signature,
                    &altered,
                    now,
                    300
                ),
                Err(VerifyError::Mismatch)
            );
        }
        // The signature covers the id and the timestamp too.
        assert_eq!(
            verify_standard(
                &standard,
                "evt_other",
                &v.webhook_timestamp,
                &v.webhook_signature,
                &v.body,
                now,
                300
            ),
            Err(VerifyError::Mismatch)
        );
    }
}

#[test]
fn every_body_reads_as_a_web_hook() {
    for v in vectors() {
        let event = parse_incoming(&v.body).unwrap_or_else(|e| panic!("{}: {e}", v.body_file));
        match event {
            IncomingEvent::Flag(flag) => {
                assert_eq!(
                    flag.deleted,
                    v.body_file.contains("deleted"),
                    "{}",
                    v.body_file
                );
                assert_eq!(flag.state.environment.id(), 23);
                assert_eq!(flag.state.feature.id, 2411);
            }
            IncomingEvent::NotApplied(kind) => {
                assert_eq!(kind, EventType::AuditLogCreated, "{}", v.body_file)
            }
        }
    }
}

#[test]
fn every_captured_flagsmith_request_verifies_and_reads() {
    let dir = conformance_dir().join("flagsmith-v2.265.0");
    let captures = read_json(dir.join("captures.json"));
    let secret = Secret::new(captures["secret"].as_str().unwrap()).unwrap();
    let requests = captures["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 16);
    for request in requests {
        let body_file = request["body_file"].as_str().unwrap();
        let body = std::fs::read(dir.join(body_file)).unwrap();
        let signature = request["x_flagsmith_signature"].as_str().unwrap();
        verify_flagsmith(std::slice::from_ref(&secret), &body, signature)
            .unwrap_or_else(|e| panic!("{body_file}: {e}"));
        let IncomingEvent::Flag(event) = parse_incoming(&body).unwrap() else {
            panic!("{body_file} is a flag event")
        };
        assert_eq!(
            event.deleted,
            request["event_type"] == "FLAG_DELETED",
            "{body_file}"
        );
    }
}
