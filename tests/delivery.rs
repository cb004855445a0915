//! Delivery against a real HTTP sink on 127.0.0.1: signing, rotation, redirects, timeouts, and
//! (with the store) lanes, retries and dead letters.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::sink::{Answer, Sink};
use flagpost::delivery::{DeliveryClient, SignedDelivery};
use flagpost::signing::{Secret, verify_flagsmith, verify_standard};
use serde_json::Value;

fn conformance(file: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance"
    ))
    .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The seed body and the secrets its reference signatures were made with.
fn seed_vector() -> (Vec<u8>, Secret, Secret) {
    let doc: Value = serde_json::from_slice(&conformance("signatures.json")).unwrap();
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["body_file"] == "flag_updated_seed.json")
        .unwrap();
    let flagsmith = Secret::new(v["flagsmith"]["secret"].as_str().unwrap()).unwrap();
    let standard = Secret::new(v["standard"]["secret"].as_str().unwrap()).unwrap();
    (conformance("flag_updated_seed.json"), flagsmith, standard)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn client() -> DeliveryClient {
    DeliveryClient::new(Duration::from_secs(10)).unwrap()
}

#[tokio::test]
async fn a_delivery_carries_the_exact_body_and_signatures_that_verify() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let (body, flagsmith_secret, standard_secret) = seed_vector();
    let url = sink.url("/hook").parse().unwrap();
    let secrets = [flagsmith_secret.clone(), standard_secret.clone()];
    let outcome = client()
        .attempt(SignedDelivery {
            url: &url,
            secrets: &secrets,
            event_id: "evt_000001",
            sequence: 42,
            body: Bytes::from(body.clone()),
        })
        .await;
    assert!(outcome.delivered(), "{outcome:?}");
    assert_eq!(outcome.status, Some(200));

    let received = sink.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.body, body, "the body is sent byte for byte");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("user-agent"),
        Some(concat!("flagpost/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(r.header("x-flagpost-sequence"), Some("42"));
    assert_eq!(r.header("webhook-id"), Some("evt_000001"));
    verify_flagsmith(
        std::slice::from_ref(&flagsmith_secret),
        &r.body,
        r.header("x-flagsmith-signature").unwrap(),
    )
    .unwrap();
    for secret in secrets {
        verify_standard(
            &[secret],
            r.header("webhook-id").unwrap(),
            r.header("webhook-timestamp").unwrap(),
            r.header("webhook-signature").unwrap(),
            &r.body,
            now_unix(),
            300,
        )
        .unwrap();
    }
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_afterwards_only_the_new_one() {
    let sink = Sink::start(Vec::new(), Answer::Status(204)).await;
    let url = sink.url("/").parse().unwrap();
    let old = Secret::new("old-secret-value").unwrap();
    let new = Secret::new("whsec_bmV3LXNlY3JldC1rZXktYnl0ZXM=").unwrap();
    let body = Bytes::from(conformance("flag_created_flagsmith.json"));
    let client = client();
    for secrets in [vec![new.clone(), old.clone()], vec![new.clone()]] {
        let outcome = client
            .attempt(SignedDelivery {
                url: &url,
                secrets: &secrets,
                event_id: "evt_rotation",
                sequence: 1,
                body: body.clone(),
            })
            .await;
        assert!(outcome.delivered(), "{outcome:?}");
    }
    let received = sink.received();
    let verify = |r: &common::sink::Received, secret: &Secret| {
        verify_standard(
            std::slice::from_ref(secret),
            r.header("webhook-id").unwrap(),
            r.header("webhook-timestamp").unwrap(),
            r.header("webhook-signature").unwrap(),
            &r.body,
            now_unix(),
            300,
        )
    };
    let during = &received[0];
    assert_eq!(
        during
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    verify(during, &old).unwrap();
    verify(during, &new).unwrap();
    // X-Flagsmith-Signature has room for one: the newest.
    let flagsmith = during.header("x-flagsmith-signature").unwrap();
    verify_flagsmith(std::slice::from_ref(&new), &during.body, flagsmith).unwrap();
    verify_flagsmith(std::slice::from_ref(&old), &during.body, flagsmith).unwrap_err();

    let after = &received[1];
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    verify(after, &new).unwrap();
    verify(after, &old).unwrap_err();
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_is_not_followed() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    sink.set_answer(Answer::WithHeaders(
        307,
        vec![("location", sink.url("/elsewhere"))],
    ));
    let url = sink.url("/hook").parse().unwrap();
    let outcome = client()
        .attempt(SignedDelivery {
            url: &url,
            secrets: &[],
            event_id: "evt_redirect",
            sequence: 1,
            body: Bytes::from_static(b"{}"),
        })
        .await;
    assert!(!outcome.delivered());
    assert_eq!(outcome.status, Some(307));
    let paths: Vec<String> = sink.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"]);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_a_timed_out_attempt() {
    let sink = Sink::start(Vec::new(), Answer::Hang).await;
    let url = sink.url("/").parse().unwrap();
    let outcome = DeliveryClient::new(Duration::from_millis(300))
        .unwrap()
        .attempt(SignedDelivery {
            url: &url,
            secrets: &[],
            event_id: "evt_hang",
            sequence: 1,
            body: Bytes::from_static(b"{}"),
        })
        .await;
    assert!(!outcome.delivered());
    assert_eq!(outcome.status, None);
    assert!(
        outcome.error.as_deref().unwrap().contains("timed out"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_and_a_retry_after_are_reported() {
    let closed = Sink::closed_port().await;
    let url = format!("http://{closed}/").parse().unwrap();
    let client = client();
    let refused = client
        .attempt(SignedDelivery {
            url: &url,
            secrets: &[],
            event_id: "evt_refused",
            sequence: 1,
            body: Bytes::from_static(b"{}"),
        })
        .await;
    assert!(!refused.delivered());
    assert!(
        refused.error.as_deref().unwrap().contains("onnect"),
        "{refused:?}"
    );

    let sink = Sink::start(
        vec![Answer::WithHeaders(429, vec![("retry-after", "7".into())])],
        Answer::Status(200),
    )
    .await;
    let url = sink.url("/").parse().unwrap();
    let limited = client
        .attempt(SignedDelivery {
            url: &url,
            secrets: &[],
            event_id: "evt_limited",
            sequence: 1,
            body: Bytes::from_static(b"{}"),
        })
        .await;
    assert_eq!(limited.status, Some(429));
    assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));
    assert!(!limited.delivered());
}
