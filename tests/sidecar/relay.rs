//! Relay in: a Flagsmith web hook, verified, stored byte for byte as an event.

use std::path::PathBuf;

use hyper::{Method, StatusCode};

use crate::common::{Sidecar, events_after, last_sequence, send};

const RELAY: &str = r#"
[[relay]]
name = "upstream"
environment = 1
secret = { value = "interop-secret-123" }
"#;

#[tokio::test]
async fn a_signed_flagsmith_web_hook_is_stored_byte_for_byte_and_a_bad_one_not_at_all() {
    let sidecar = Sidecar::start_with(RELAY).await;
    let base = sidecar.url("");
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/flagsmith-v2.265.0");
    let body = std::fs::read(dir.join("003_flag_updated.json")).unwrap();
    let signature = "c6f21471bfa086148c0458e50eb24e6a150ac3f17c1fe9dc8a7abc8542171545";
    let url = sidecar.url("/api/v1/relay/upstream");

    let seq = last_sequence(&base).await;
    let mut altered = body.clone();
    altered[20] ^= 1;
    for (body, signature) in [
        (body.clone(), Some("00".repeat(32))),
        (altered, Some(signature.to_owned())),
        (body.clone(), None),
    ] {
        let headers: Vec<(&str, &str)> = signature
            .as_deref()
            .map(|s| vec![("x-flagsmith-signature", s)])
            .unwrap_or_default();
        let (status, answer) = send(Method::POST, &url, None, Some(body), &headers)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    }
    assert_eq!(
        last_sequence(&base).await,
        seq,
        "a refused relay stored something"
    );

    let (status, answer) = send(
        Method::POST,
        &url,
        None,
        Some(body.clone()),
        &[("x-flagsmith-signature", signature)],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let events = events_after(&base, seq).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0["changed_by"], "relay:upstream");
    assert_eq!(events[0].0["environment"], 1);
    let (_, page) = crate::common::call(
        Method::GET,
        &format!("{base}/api/v1/events?after={seq}"),
        None,
    )
    .await;
    assert_eq!(
        page["events"][0]["body"].as_str().unwrap().as_bytes(),
        body.as_slice()
    );

    let (status, _) = send(
        Method::POST,
        &sidecar.url("/api/v1/relay/nobody"),
        None,
        Some(body),
        &[("x-flagsmith-signature", signature)],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    sidecar.stop().await;
}
