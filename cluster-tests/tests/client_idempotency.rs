//! A retried ask carrying the same idempotency key runs once on the actor: the owner
//! answers repeats (sequential or concurrent) with the first reply.

mod client_common;
#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::time::Duration;

use client_common::Cluster;
use cortex_client::AskOptions;
use cortex_protocol::ActorId;
use messages::{Get, Incr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_runs_once() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();
    let id: ActorId = "counter/idempotent".parse().unwrap();
    let opts = AskOptions::new(Duration::from_secs(10)).idempotency_key([7; 16]);

    assert_eq!(client.ask_with(&id, Incr, opts).await.unwrap(), 1);
    for _ in 0..5 {
        assert_eq!(
            client.ask_with(&id, Incr, opts).await.unwrap(),
            1,
            "a repeat gets the first reply"
        );
    }
    assert_eq!(client.ask(&id, Get).await.unwrap(), 1, "ran once");

    // Concurrent duplicates of a second key: one run, every caller sees its reply.
    let opts2 = AskOptions::new(Duration::from_secs(10)).idempotency_key([9; 16]);
    let calls = (0..16).map(|_| {
        let c = client.clone();
        let id = id.clone();
        async move { c.ask_with(&id, Incr, opts2).await }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap(), 2);
    }
    assert_eq!(client.ask(&id, Get).await.unwrap(), 2, "ran once more");

    // retries > 0 without a key: a fresh key per call, so distinct calls each run.
    let auto = AskOptions::new(Duration::from_secs(10)).retries(3);
    assert_eq!(client.ask_with(&id, Incr, auto).await.unwrap(), 3);
    assert_eq!(client.ask_with(&id, Incr, auto).await.unwrap(), 4);
    assert_eq!(client.ask(&id, Get).await.unwrap(), 4);
    client.shutdown().await;
}

/// An answered key follows its actor when a join moves the actor: the old owner hands the
/// key to the new one, so the client's retry there replays the first answer instead of
/// running again on the fresh activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_follows_its_actor_through_a_handover() {
    use client_common::eventually;
    use cortex_client::admin::sum_metric;
    use cortex_protocol::{DEFAULT_VNODES, NodeId, Ring};

    let mut cluster = Cluster::start(2, &[]);
    cluster.wait_converged(2, Duration::from_secs(60)).await;
    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 2)
        .await
        .unwrap();
    // An id that n2 will own once it joins (the ring places by name).
    let name = |n: &str| NodeId::new(n, 1).unwrap();
    let three = Ring::new(vec![name("n0"), name("n1"), name("n2")], DEFAULT_VNODES);
    let id = (0..)
        .map(|i| ActorId::new("counter", format!("moves-{i}")).unwrap())
        .find(|id| three.owner(id).is_some_and(|o| o.name() == "n2"))
        .unwrap();
    let opts = AskOptions::new(Duration::from_secs(10)).idempotency_key([5; 16]);
    assert_eq!(client.ask_with(&id, Incr, opts).await.unwrap(), 1);

    let n2 = cluster.add_node(&[]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let admin = cluster.nodes[n2].admin();
    eventually("n2 adopts the key", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            let text = admin.metrics().await.ok()?;
            (sum_metric(&text, "cortex_idempotency_keys_adopted_total") >= 1.0).then_some(())
        }
    })
    .await;
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();

    // The retry reaches n2, whose fresh activation never ran the increment.
    assert_eq!(
        client.ask_with(&id, Incr, opts).await.unwrap(),
        1,
        "the retry replays the first answer"
    );
    assert_eq!(
        client.ask(&id, Get).await.unwrap(),
        0,
        "the increment did not run again on the new owner"
    );
    let text = cluster.nodes[n2].admin().metrics().await.unwrap();
    assert!(
        sum_metric(&text, "cortex_activations_total") >= 1.0,
        "n2 hosts the actor now"
    );
    client.shutdown().await;
}
