//! The server unreachable when flagpost starts, then lost mid-stream: the lane backs off and
//! resumes, and nothing is lost.

use hyper::Method;

use crate::common::{call, metric, wait_until};
use crate::fleet::{ChangeStream, Flagpost, Receiver, assert_acknowledged_kept};
use crate::support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_backs_off_while_the_server_is_away_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::single(dir.path());
    nats.kill9();
    let servers = vec![nats.url()];
    // No server yet: flagpost starts anyway, and takes changes into its outbox.
    let flagpost = Flagpost::start(dir.path(), &servers, 1).await;
    let feature = flagpost.create_feature().await;
    let changes = ChangeStream::start(flagpost.url(""), feature, 2);
    changes.wait_for_count(20).await;
    let base = flagpost.url("");
    wait_until("the lane has failed attempts and backs off", || async {
        metric(
            &base,
            "flagpost_delivery_attempts_total{endpoint=\"fleet\",outcome=\"transport_error\"}",
        )
        .await
            >= 2
    })
    .await;
    // The admin API shows the endpoint's kind, what it owes, and why its attempts failed.
    let (_, pending) = call(
        Method::GET,
        &flagpost.url("/api/v1/admin/deliveries/pending"),
        None,
    )
    .await;
    let fleet = pending["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "fleet")
        .unwrap_or_else(|| panic!("{pending}"))
        .clone();
    assert_eq!(fleet["kind"], "jetstream", "{pending}");
    assert!(fleet["pending"].as_u64().unwrap() > 0, "{pending}");
    let (_, attempts) = call(
        Method::GET,
        &flagpost.url("/api/v1/admin/attempts?endpoint=fleet&limit=5"),
        None,
    )
    .await;
    assert!(
        attempts.to_string().contains("cannot connect to NATS"),
        "{attempts}"
    );

    nats.start();
    nats.wait_ready().await;
    let receiver = Receiver::start(dir.path(), "fleet", &servers).await;
    changes.wait_for_count(60).await;
    wait_until("the receiver has taken changes", || async {
        receiver.messages("applied").await > 20
    })
    .await;

    // Lost mid-stream: changes keep being acknowledged by flagpost meanwhile.
    nats.kill9();
    let during = changes.count();
    changes.wait_for_count(during + 40).await;
    nats.start();
    nats.wait_ready().await;
    changes.wait_for_count(during + 80).await;
    let acknowledged = changes.stop().await;

    let held = flagpost.overrides().await;
    assert_acknowledged_kept(&acknowledged, &held);
    receiver.wait_for(&held).await;
    assert_eq!(receiver.messages("refused").await, 0);
}
