//! A three-node cluster with a three-replica stream: one node is killed with SIGKILL during a
//! stream of changes. Nothing acknowledged is lost, and delivery continues on the survivors.

use crate::fleet::{BackwardsWatch, ChangeStream, Flagpost, Receiver, assert_acknowledged_kept};
use crate::support::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = NatsServer::cluster(dir.path());
    for node in &nodes {
        node.wait_ready().await;
    }
    let servers: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let flagpost = Flagpost::start(dir.path(), &servers, 3).await;
    let feature = flagpost.create_feature().await;
    let receiver = Receiver::start(dir.path(), "fleet", &servers).await;
    let watch = BackwardsWatch::start(vec![receiver.addr]);

    let changes = ChangeStream::start(flagpost.url(""), feature, 4);
    changes.wait_for_count(100).await;
    // Wait until the receiver has taken some, so that the node dies with the stream in use.
    crate::common::wait_until("the receiver has taken changes", || async {
        receiver.messages("applied").await > 10
    })
    .await;
    nodes[0].kill9();
    changes.wait_for_count(300).await;
    let acknowledged = changes.stop().await;

    let held = flagpost.overrides().await;
    assert_acknowledged_kept(&acknowledged, &held);
    receiver.wait_for(&held).await;
    assert!(watch.stop().await > 0, "the watch never saw the receiver");
    assert_eq!(receiver.messages("refused").await, 0);
}
