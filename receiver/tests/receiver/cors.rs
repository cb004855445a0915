//! Issue 11, item 4: browsers. A page on an origin `[cors] allowed_origins` lists reads flags
//! (preflight answered with the headers the clients send, `ETag` exposed); a page elsewhere is
//! refused; requests without `Origin` (servers) pass as before; no origin is allowed by default.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::common::*;

const ALLOWED: &str = "http://app.test:3000";
const ELSEWHERE: &str = "https://elsewhere.test";
const KEY: &str = "browser-env-key";

/// One request; answers status, headers and the body as JSON (or as a JSON string).
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HeaderMap, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .expect("answered in time")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// A receiver holding environment 3 (key [`KEY`]) with one flag set by web hook.
async fn receiver(dir: &std::path::Path, cors: &str) -> Receiver {
    let rest = format!("[[environments]]\nid = 3\nkeys = [\"{KEY}\"]\n{cors}");
    let receiver = Receiver::start(dir, &config_toml(dir, "", &rest)).await;
    let body = flag_event(3, 1, &Key::Default, false, true, json!("blue"));
    let signed = Signed::new(&body, "evt-1", Some(1));
    assert_eq!(
        receiver.post("/webhook", &signed.as_refs(), &body).await.0,
        200
    );
    receiver
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_reads_flags_and_any_other_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cors = format!("[cors]\nallowed_origins = [\"{ALLOWED}\"]\n");
    let receiver = receiver(dir.path(), &cors).await;
    let bulk = receiver.url("/ofrep/v1/evaluate/flags");
    let flags = receiver.url("/api/v1/flags/");

    // The preflight of an OFREP web provider's request, and of the Flagsmith JS client's.
    for (route, asked) in [
        (
            &bulk,
            "content-type, x-api-key, if-none-match, authorization",
        ),
        (&flags, "x-environment-key, flagsmith-sdk-user-agent"),
    ] {
        let preflight = [
            ("origin", ALLOWED),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", asked),
        ];
        let (status, headers, _) = send("OPTIONS", route, &preflight, "").await;
        assert_eq!(status, 204, "{route}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(ALLOWED)
        );
        let allowed = header(&headers, "access-control-allow-headers")
            .unwrap()
            .to_lowercase();
        for asked in asked.split(", ") {
            assert!(allowed.contains(asked), "{asked} not in {allowed}");
        }
        let methods = header(&headers, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
    }

    // The request itself: answered, readable by the page, its ETag exposed.
    let ofrep = [
        ("origin", ALLOWED),
        ("x-api-key", KEY),
        ("content-type", "application/json"),
    ];
    let (status, headers, answer) = send("POST", &bulk, &ofrep, "{}").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["flags"][0]["value"], "blue", "{answer}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    assert!(
        header(&headers, "access-control-expose-headers")
            .unwrap()
            .contains("ETag")
    );
    assert!(header(&headers, "vary").unwrap().contains("Origin"));
    let sdk = [("origin", ALLOWED), ("x-environment-key", KEY)];
    let (status, headers, answer) = send("GET", &flags, &sdk, "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["feature_state_value"], "blue", "{answer}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    // Flagsmith's JS client reads the flags' updated_at to skip realtime events it has seen.
    assert!(
        header(&headers, "access-control-expose-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-flagsmith-document-updated-at")
    );
    // Errors carry the headers too, so that the page can read why.
    let (status, headers, _) = send("GET", &flags, &[("origin", ALLOWED)], "").await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ALLOWED)
    );

    // Any other origin: refused before any handler, preflight included.
    let preflight = [
        ("origin", ELSEWHERE),
        ("access-control-request-method", "POST"),
    ];
    let (status, headers, answer) = send("OPTIONS", &bulk, &preflight, "").await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    let elsewhere = [("origin", ELSEWHERE), ("x-environment-key", KEY)];
    let (status, headers, answer) = send("GET", &flags, &elsewhere, "").await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("cors.allowed_origins"),
        "{answer}"
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    let (_, _, metrics) = send("GET", &receiver.url("/metrics"), &[], "").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("flagpost_receiver_cors_refused_total 2"),
        "{metrics}"
    );

    // A server sends no Origin: answered as before, without CORS headers.
    let (status, headers, _) = send("GET", &flags, &[("x-environment-key", KEY)], "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_origin_is_allowed_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = receiver(dir.path(), "").await;
    let flags = receiver.url("/api/v1/flags/");
    let (status, _, answer) = send(
        "GET",
        &flags,
        &[("origin", ALLOWED), ("x-environment-key", KEY)],
        "",
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let preflight = [
        ("origin", ALLOWED),
        ("access-control-request-method", "GET"),
    ];
    let (status, _, _) = send("OPTIONS", &flags, &preflight, "").await;
    assert_eq!(status, 403);
    // The receiver's own origin (a page it serves) is not another origin.
    let own = format!("http://{}", receiver.addr);
    let (status, _, answer) = send(
        "GET",
        &flags,
        &[("origin", &own), ("x-environment-key", KEY)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    receiver.stop().await;
}
