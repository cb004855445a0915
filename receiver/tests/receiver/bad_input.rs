//! Every refusal: its status, its JSON reason, its metric, and an unchanged cache.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_status_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(
        dir.path(),
        &config_toml(dir.path(), "max_body_bytes = 2000", ""),
    )
    .await;
    // Something in the cache to compare against.
    let good = flag_event(5, 1, &Key::Default, false, true, json!("kept"));
    let signed = Signed::new(&good, "evt-good", Some(1));
    assert_eq!(
        receiver.post("/webhook", &signed.as_refs(), &good).await.0,
        200
    );
    let before = receiver.env_flags(5).await;
    assert_eq!(before[0]["value"], "kept");

    let change = flag_event(5, 1, &Key::Default, false, false, json!("changed"));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let secret = flagpost::signing::Secret::new(TEST_SECRET).unwrap();
    let wrong_secret = flagpost::signing::Secret::new("not-a-configured-secret").unwrap();
    let stale = (now - 1000).to_string();
    let now_text = now.to_string();
    let stale_signature = secret.standard_signature("evt-stale", &stale, &change);
    let wrong_signature = wrong_secret.standard_signature("evt-wrong", &now_text, &change);
    let wrong_flagsmith = wrong_secret.flagsmith_signature(&change);
    let malformed = b"{\"event_type\": \"FLAG_UPDATED\", \"data\": ".to_vec();
    let mistyped = String::from_utf8(change.clone())
        .unwrap()
        .replace("\"enabled\":false", "\"enabled\":\"no\"")
        .into_bytes();
    assert_ne!(mistyped, change);
    let oversized = {
        let mut body = change.clone();
        body.extend(std::iter::repeat_n(b' ', 3000));
        body
    };

    struct Case {
        name: &'static str,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
        status: u16,
        reason: &'static str,
    }
    let json_type = ("content-type".to_owned(), "application/json".to_owned());
    let signed_for = |body: &[u8], id: &str| Signed::new(body, id, Some(2)).headers;
    let cases = vec![
        Case {
            name: "no signature",
            body: change.clone(),
            headers: vec![json_type.clone()],
            status: 401,
            reason: "missing_signature",
        },
        Case {
            name: "signature by an unknown secret",
            body: change.clone(),
            headers: vec![
                json_type.clone(),
                ("webhook-id".into(), "evt-wrong".into()),
                ("webhook-timestamp".into(), now_text.clone()),
                ("webhook-signature".into(), wrong_signature),
            ],
            status: 401,
            reason: "bad_signature",
        },
        Case {
            name: "X-Flagsmith-Signature by an unknown secret",
            body: change.clone(),
            headers: vec![
                json_type.clone(),
                ("x-flagsmith-signature".into(), wrong_flagsmith),
            ],
            status: 401,
            reason: "bad_signature",
        },
        Case {
            name: "stale timestamp",
            body: change.clone(),
            headers: vec![
                json_type.clone(),
                ("webhook-id".into(), "evt-stale".into()),
                ("webhook-timestamp".into(), stale),
                ("webhook-signature".into(), stale_signature),
            ],
            status: 401,
            reason: "stale_timestamp",
        },
        Case {
            name: "malformed JSON",
            headers: signed_for(&malformed, "evt-malformed"),
            body: malformed,
            status: 400,
            reason: "malformed",
        },
        Case {
            name: "wrongly typed JSON",
            headers: signed_for(&mistyped, "evt-mistyped"),
            body: mistyped,
            status: 400,
            reason: "malformed",
        },
        Case {
            name: "body over the limit",
            headers: signed_for(&oversized, "evt-big"),
            body: oversized,
            status: 413,
            reason: "too_large",
        },
        Case {
            name: "text/plain",
            headers: signed_for(&change, "evt-text")
                .into_iter()
                .map(|(n, v)| {
                    if n == "content-type" {
                        (n, "text/plain".into())
                    } else {
                        (n, v)
                    }
                })
                .collect(),
            body: change.clone(),
            status: 415,
            reason: "unsupported_media_type",
        },
        Case {
            name: "no content type",
            headers: signed_for(&change, "evt-none")
                .into_iter()
                .filter(|(n, _)| n != "content-type")
                .collect(),
            body: change.clone(),
            status: 415,
            reason: "unsupported_media_type",
        },
        Case {
            name: "sequence that is not a number",
            headers: signed_for(&change, "evt-seq")
                .into_iter()
                .map(|(n, v)| {
                    if n == "x-flagpost-sequence" {
                        (n, "soon".into())
                    } else {
                        (n, v)
                    }
                })
                .collect(),
            body: change.clone(),
            status: 400,
            reason: "malformed",
        },
    ];
    for case in cases {
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (status, answer) = receiver.post("/webhook", &headers, &case.body).await;
        assert_eq!(status, case.status, "{}: {answer}", case.name);
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: a JSON reason: {answer}",
            case.name
        );
        assert_eq!(
            receiver.env_flags(5).await,
            before,
            "{}: the cache is unchanged",
            case.name
        );
        let (_, metrics) = receiver.get("/metrics", &[]).await;
        let metrics = metrics.as_str().unwrap().to_owned();
        assert!(
            series_value(
                &metrics,
                &format!(
                    "flagpost_receiver_webhooks_refused_total{{reason=\"{}\"}}",
                    case.reason
                )
            ) >= 1.0,
            "{}: counted as {}:\n{metrics}",
            case.name,
            case.reason
        );
        assert!(!metrics.contains(TEST_SECRET) && !answer.to_string().contains(TEST_SECRET));
    }

    // The same change, properly signed, still applies: the refusals left nothing behind.
    let signed = Signed::new(&change, "evt-final", Some(2));
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), &change).await;
    assert_eq!((status, answer["status"].clone()), (200, json!("applied")));
    assert_eq!(receiver.env_flags(5).await[0]["value"], "changed");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_requests_apply_only_when_allowed() {
    let body = flag_event(6, 1, &Key::Default, false, true, json!("open"));
    let headers = [("content-type", "application/json")];
    for (allow, expected) in [(false, 401), (true, 200)] {
        let dir = tempfile::tempdir().unwrap();
        let intake = format!("allow_unsigned = {allow}");
        let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), &intake, "")).await;
        let (status, answer) = receiver.post("/webhook", &headers, &body).await;
        assert_eq!(status, expected, "allow_unsigned = {allow}: {answer}");
        receiver.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_types_are_acknowledged_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let body = br#"{"event_type": "SOMETHING_NEW", "data": {"environment": 9}}"#;
    let signed = Signed::new(body, "evt-unknown", None);
    let (status, answer) = receiver.post("/webhook", &signed.as_refs(), body).await;
    assert_eq!(
        (status, answer["status"].clone()),
        (200, json!("not_applied"))
    );
    assert_eq!(receiver.env_flags(9).await, serde_json::Value::Null);
    receiver.stop().await;
}

/// Headers no signature covers cannot steer the cache: a Flagsmith-signed body sent again with a
/// fresh `webhook-id` is still a duplicate, and a forged huge sequence does not freeze the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_headers_are_not_believed_from_a_flagsmith_sender() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    let secret = flagpost::signing::Secret::new(TEST_SECRET).unwrap();
    let old = flag_event(5, 1, &Key::Default, false, true, json!("old"));
    let flagsmith_signed = |body: &[u8], id: &str| {
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "x-flagsmith-signature".to_owned(),
                secret.flagsmith_signature(body),
            ),
            ("webhook-id".to_owned(), id.to_owned()),
            ("x-flagpost-sequence".to_owned(), u64::MAX.to_string()),
        ]
    };
    let refs = |h: &[(String, String)]| -> Vec<(String, String)> { h.to_vec() };
    let post = |headers: Vec<(String, String)>, body: Vec<u8>| {
        let receiver = &receiver;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            receiver.post("/webhook", &headers, &body).await
        }
    };
    let (status, answer) = post(refs(&flagsmith_signed(&old, "evt-1")), old.clone()).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("applied")));
    let (status, answer) = post(refs(&flagsmith_signed(&old, "evt-forged")), old.clone()).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );

    // flagpost's next real event, properly signed, still applies.
    let new = flag_event(5, 1, &Key::Default, false, true, json!("new"));
    let signed = Signed::new(&new, "evt-2", Some(2));
    assert_eq!(
        receiver.post("/webhook", &signed.as_refs(), &new).await.0,
        200
    );
    assert_eq!(receiver.env_flags(5).await[0]["value"], "new");
}

/// Issue 8, item 13: every error is `{"error": "..."}`, including those no handler makes: a path
/// parameter axum cannot read, a method a route does not take (405), a path with no route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_json_object_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), &config_toml(dir.path(), "", "")).await;
    for path in ["/v1/environments/abc/flags", "/no/such/path", "/webhook"] {
        let (status, answer) = receiver.get(path, &[]).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            answer["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {status} {answer}"
        );
    }
    let (status, answer) = receiver.post("/healthz", &[], b"").await;
    assert_eq!(status, 405, "{answer}");
    assert!(answer["error"].as_str().is_some(), "{answer}");
    receiver.stop().await;
}
