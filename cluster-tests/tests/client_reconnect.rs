//! The client survives losing every node: while the cluster is down calls fail with a typed
//! error by their deadline, and once a node is back (a new incarnation on the same address)
//! the client reconnects by itself and calls succeed again.

mod client_common;
#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::time::Duration;

use client_common::{Cluster, eventually};
use cortex_client::{AskOptions, ClientError};
use cortex_protocol::ActorId;
use messages::Incr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_whole_cluster_restarts() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_converged(1, Duration::from_secs(60)).await;
    let client = cluster
        .builder(0)
        .idle_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let id: ActorId = "counter/r".parse().unwrap();
    assert_eq!(client.ask(&id, Incr).await.unwrap(), 1);
    let before = client.topology().unwrap().owners()[0].clone();

    cluster.nodes[0].kill();
    let short = AskOptions::new(Duration::from_millis(1500));
    match client.ask_with(&id, Incr, short).await {
        Err(ClientError::Unreachable { .. } | ClientError::Timeout { .. }) => {}
        other => panic!("expected a typed unreachable or timeout, got {other:?}"),
    }

    cluster.restart(0);
    cluster.wait_converged(1, Duration::from_secs(60)).await;
    let v = eventually(
        "an answer from the restarted node",
        Duration::from_secs(30),
        || {
            let c = client.clone();
            let id = id.clone();
            async move { c.ask_with(&id, Incr, short).await.ok() }
        },
    )
    .await;
    assert_eq!(v, 1, "a fresh activation on the new incarnation");
    let after = client
        .wait_for_topology(Duration::from_secs(10), |v| {
            v.owners()
                .first()
                .is_some_and(|n| n.incarnation() > before.incarnation())
        })
        .await
        .unwrap();
    assert_eq!(after.owners()[0].name(), before.name());
    client.shutdown().await;
}
