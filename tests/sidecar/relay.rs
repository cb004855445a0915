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

/// A captured request of the real Flagsmith run: its body and `X-Flagsmith-Signature`.
fn captured(file: &str) -> (Vec<u8>, String) {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/flagsmith-v2.265.0");
    let captures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("captures.json")).unwrap()).unwrap();
    let signature = captures["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["body_file"] == file)
        .and_then(|r| r["x_flagsmith_signature"].as_str())
        .unwrap()
        .to_owned();
    (std::fs::read(dir.join(file)).unwrap(), signature)
}

/// Issue 8, item 1: the same body relayed again (a Flagsmith retry after a timeout) is
/// acknowledged with the event it became and not stored twice; a body older than what was
/// relayed for its key is acknowledged as superseded and not relayed; a deletion of the
/// environment default goes on; a body whose timestamp does not parse is refused.
#[tokio::test]
async fn a_body_sent_again_is_stored_once_and_a_late_one_is_not_relayed() {
    let sidecar = Sidecar::start_with(RELAY).await;
    let base = sidecar.url("");
    let url = sidecar.url("/api/v1/relay/upstream");
    let post = |body: Vec<u8>, signature: String| {
        let url = url.clone();
        async move {
            let headers = [("x-flagsmith-signature", signature.as_str())];
            send(Method::POST, &url, None, Some(body), &headers)
                .await
                .unwrap()
        }
    };
    let relay = |file: &'static str| {
        let (body, signature) = captured(file);
        post(body, signature)
    };
    let seq = last_sequence(&base).await;

    // 002 and 003 share one timestamp (a toggle, then a value change): both go on, in order.
    let (status, first) = relay("002_flag_updated.json").await;
    assert_eq!(
        (status, first["status"].as_str()),
        (StatusCode::ACCEPTED, Some("relayed"))
    );
    assert_eq!(first["events"].as_array().unwrap().len(), 1, "{first}");
    let (status, second) = relay("003_flag_updated.json").await;
    assert_eq!(
        (status, second["status"].as_str()),
        (StatusCode::ACCEPTED, Some("relayed"))
    );
    for (file, original) in [
        ("002_flag_updated.json", &first),
        ("003_flag_updated.json", &second),
    ] {
        let (status, again) = relay(file).await;
        assert_eq!(
            (status, again["status"].as_str()),
            (StatusCode::OK, Some("duplicate"))
        );
        assert_eq!(
            again["events"], original["events"],
            "{file}: the event it became"
        );
    }
    // 001, the feature's creation, is older than what was relayed for its key.
    let (status, late) = relay("001_flag_updated.json").await;
    assert_eq!(
        (status, late["status"].as_str(), late["events"].clone()),
        (StatusCode::OK, Some("superseded"), serde_json::json!([]))
    );
    assert_eq!(
        last_sequence(&base).await,
        seq + 2,
        "nothing stored twice, nothing late"
    );
    // 015 deletes feature 3's default stamped with its creation time, 014's timestamp: it goes
    // on (an older stamp would too: `changes::relay`'s tests).
    for file in ["014_flag_updated.json", "015_flag_deleted.json"] {
        let (status, answer) = relay(file).await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (StatusCode::ACCEPTED, Some("relayed")),
            "{file}"
        );
    }

    let (body, _) = captured("003_flag_updated.json");
    let garbled = String::from_utf8(body)
        .unwrap()
        .replace("2026-11-27T05:06:12.021450Z", "not a date");
    let secret = flagpost::signing::Secret::new("interop-secret-123").unwrap();
    let signature = secret.flagsmith_signature(garbled.as_bytes());
    let (status, answer) = post(garbled.into_bytes(), signature).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(last_sequence(&base).await, seq + 4);
    sidecar.stop().await;
}
