//! One server: changes through flagpost reach two receivers through JetStream, while flagpost and
//! one receiver are killed with SIGKILL mid-stream. Every acknowledged change reaches every
//! receiver, none is applied twice, and no receiver ever shows an older value than it showed.

use crate::common::events_after;
use crate::fleet::{BackwardsWatch, ChangeStream, Flagpost, Receiver, assert_acknowledged_kept};
use crate::support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_flagpost_and_a_receiver_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::single(dir.path());
    nats.wait_ready().await;
    let servers = vec![nats.url()];
    let mut flagpost = Flagpost::start(dir.path(), &servers, 1).await;
    let feature = flagpost.create_feature().await;
    let mut killed = Receiver::start(dir.path(), "killed", &servers).await;
    let steady = Receiver::start(dir.path(), "steady", &servers).await;
    let watch = BackwardsWatch::start(vec![killed.addr, steady.addr]);

    let changes = ChangeStream::start(flagpost.url(""), feature, 4);
    changes.wait_for_count(100).await;
    flagpost.process.kill9();
    killed.kill9();
    flagpost.restart().await;
    changes.wait_for_count(200).await;
    killed.restart().await;
    changes.wait_for_count(300).await;
    flagpost.process.kill9();
    flagpost.restart().await;
    changes.wait_for_count(400).await;
    let acknowledged = changes.stop().await;

    let held = flagpost.overrides().await;
    assert_acknowledged_kept(&acknowledged, &held);
    killed.wait_for(&held).await;
    steady.wait_for(&held).await;
    assert!(watch.stop().await > 0, "the watch never saw a receiver");

    // The receiver that ran throughout took each committed event once: JetStream dropped the
    // copies flagpost published again after its restarts (same Nats-Msg-Id), and nothing was
    // redelivered to it. The one killed took its redeliveries as duplicates, never applied.
    // The endpoint takes flag events; each change also makes an audit-log event, not sent to it.
    let events = events_after(&flagpost.url(""), 0)
        .await
        .iter()
        .filter(|(_, body)| body["event_type"] != "AUDIT_LOG_CREATED")
        .count() as u64;
    let taken = steady.messages("applied").await
        + steady.messages("superseded").await
        + steady.messages("not_applied").await;
    assert_eq!(
        taken, events,
        "each event taken once by the steady receiver"
    );
    assert_eq!(steady.messages("duplicate").await, 0);
    for receiver in [&killed, &steady] {
        assert_eq!(receiver.messages("refused").await, 0);
    }
}
