//! Single attempts of `DeliveryClient` against a sink: body and signatures, rotation, redirects,
//! timeouts, refused connections and `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use flagpost::delivery::{AttemptOutcome, DeliveryClient, SignedDelivery};
use flagpost::signing::{Secret, verify_flagsmith};

use crate::support::sink::{Answer, Sink};
use crate::{client, conformance, seed_vector, signature_count, verify};

/// One unsigned attempt with an empty JSON body.
async fn attempt_unsigned(client: &DeliveryClient, url: &str, event_id: &str) -> AttemptOutcome {
    let url = url.parse().unwrap();
    client
        .attempt(SignedDelivery {
            url: &url,
            secrets: &[],
            event_id,
            sequence: 1,
            body: Bytes::from_static(b"{}"),
        })
        .await
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
    for secret in &secrets {
        verify(r, secret).unwrap();
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
    let during = &received[0];
    assert_eq!(signature_count(during), 2);
    verify(during, &old).unwrap();
    verify(during, &new).unwrap();
    // X-Flagsmith-Signature has room for one: the newest.
    let flagsmith = during.header("x-flagsmith-signature").unwrap();
    verify_flagsmith(std::slice::from_ref(&new), &during.body, flagsmith).unwrap();
    verify_flagsmith(std::slice::from_ref(&old), &during.body, flagsmith).unwrap_err();

    let after = &received[1];
    assert_eq!(signature_count(after), 1);
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
    let outcome = attempt_unsigned(&client(), &sink.url("/hook"), "evt_redirect").await;
    assert!(!outcome.delivered());
    assert_eq!(outcome.status, Some(307));
    let paths: Vec<String> = sink.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"]);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_is_a_timed_out_attempt() {
    let sink = Sink::start(Vec::new(), Answer::Hang).await;
    let outcome = attempt_unsigned(
        &DeliveryClient::new(Duration::from_millis(300)).unwrap(),
        &sink.url("/"),
        "evt_hang",
    )
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
    let client = client();
    let refused = attempt_unsigned(&client, &format!("http://{closed}/"), "evt_refused").await;
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
    let limited = attempt_unsigned(&client, &sink.url("/"), "evt_limited").await;
    assert_eq!(limited.status, Some(429));
    assert_eq!(limited.retry_after, Some(Duration::from_secs(7)));
    assert!(!limited.delivered());
}
