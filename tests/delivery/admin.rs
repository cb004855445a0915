//! The admin API and the `deliveries` CLI against a running dispatcher: bad requests refused with a
//! clear error, listing and replay through the CLI.

use bytes::Bytes;
use serde_json::Value;

use crate::dispatcher::{ADMIN_TOKEN, Harness, Hook, admin_request, fast_settings, serve_admin};
use crate::support::sink::{Answer, Sink};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_bad_requests_with_a_clear_error_and_changes_nothing() {
    let sink = Sink::start(Vec::new(), Answer::Status(200)).await;
    let mut hook = Hook::new("held", sink.url("/"));
    hook.enabled = false;
    let h = Harness::start(&[hook], fast_settings(3)).await;
    h.commit_event("{}").await;
    let admin = serve_admin(&h).await;
    for (method, path, body, status, says) in [
        ("GET", "/attempts", "", 400, "give sequence"),
        (
            "GET",
            "/deliveries/pending?endpoint=held&limit=0",
            "",
            400,
            "limit 0",
        ),
        (
            "GET",
            "/deliveries/pending?after=3",
            "",
            400,
            "after needs an endpoint",
        ),
        (
            "GET",
            "/dead-letters?after=3",
            "",
            400,
            "after needs an endpoint",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"endpoint":"nowhere"}"#,
            404,
            "not configured",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"sequence":1}"#,
            400,
            "sequence needs an endpoint",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"endpoint":"held","sequence":1}"#,
            404,
            "no dead letter",
        ),
        (
            "POST",
            "/dead-letters/replay",
            r#"{"endpont":"held"}"#,
            // As in the change API: an unknown field is a malformed request.
            400,
            "endpont",
        ),
    ] {
        let (got, answer) = admin_request(admin, method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer.contains(says), "{method} {path}: {answer}");
    }
    // Without the token nothing is listed.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let response = client
        .get(
            format!("http://{admin}/deliveries/pending")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The pending row is untouched.
    assert_eq!(h.pending("held").await, 1);
    let (status, listed) =
        admin_request(admin, "GET", "/deliveries/pending?endpoint=held", "").await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["deliveries"][0]["sequence"], 1);
    assert_eq!(listed["deliveries"][0]["attempts"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_replays_through_the_running_sidecar() {
    use flagpost::cli::deliveries::{CliError, DeliveriesArgs, DeliveriesCommand, run};
    let mut hook = Hook::new("held", "http://127.0.0.1:9/".into());
    hook.enabled = false;
    let h = Harness::start(&[hook], fast_settings(3)).await;
    h.commit_event("{}").await;
    let router = axum::Router::new().nest(
        "/api/v1/admin",
        flagpost::api::admin::router(h.dispatcher.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let args = |token: &str, command| DeliveriesArgs {
        url: url.clone(),
        token: token.to_owned(),
        command,
    };

    let listed = run(args(
        ADMIN_TOKEN,
        DeliveriesCommand::Pending {
            endpoint: Some("held".into()),
            after: None,
            limit: None,
        },
    ))
    .await
    .unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["deliveries"][0]["endpoint"], "held");
    assert_eq!(listed["deliveries"][0]["sequence"], 1);

    let nothing_chosen = run(args(
        ADMIN_TOKEN,
        DeliveriesCommand::Replay {
            endpoint: None,
            sequence: None,
            all: false,
        },
    ))
    .await;
    assert!(matches!(nothing_chosen, Err(CliError::ReplayWhat)));

    let refused = run(args(
        "not-a-token",
        DeliveriesCommand::DeadLetters {
            endpoint: None,
            limit: None,
        },
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(refused, CliError::Refused { status: 401, .. }),
        "{refused}"
    );
    h.stop().await;
}
