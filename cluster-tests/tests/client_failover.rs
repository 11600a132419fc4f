//! Killing (SIGKILL) the node the client first connected to does not fail a caller whose
//! deadline allows failover: asks carrying an idempotency key ride through the crash, plain
//! asks route around the dead node once the client notices, and a subscription placed on
//! the dead node moves to a live one.

mod client_common;
#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::time::Duration;

use client_common::Cluster;
use cortex_client::AskOptions;
use cortex_protocol::{ActorId, TopicId};
use futures::StreamExt;
use messages::{Deposit, Get, Incr};

const IDS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_node_crash_is_invisible_to_patient_callers() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let client = cluster
        .builder(0)
        .idle_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();
    let ids: Vec<ActorId> = (0..IDS)
        .map(|i| ActorId::new("counter", format!("f{i}")).unwrap())
        .collect();
    let on_seed: Vec<&ActorId> = ids
        .iter()
        .filter(|id| client.owner_of(id).unwrap().name() == "n0")
        .collect();
    assert!(!on_seed.is_empty(), "some ids live on the seed node");
    for id in &ids {
        assert_eq!(client.ask(id, Incr).await.unwrap(), 1);
    }
    // Only the seed connection exists when subscribing, so the subscription lives there.
    let topic: TopicId = "after-crash".parse().unwrap();
    let mut sub = client.subscribe::<Deposit>(&topic).await.unwrap();

    cluster.nodes[0].kill();

    // Keyed asks with a generous deadline, concurrently, straight through the crash.
    let patient = AskOptions::new(Duration::from_secs(60)).retries(8);
    let results = futures::stream::iter(ids.iter())
        .map(|id| {
            let c = client.clone();
            async move { (id, c.ask_with(id, Incr, patient).await) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for (id, r) in results {
        let v = r.unwrap_or_else(|e| panic!("{id}: {e}\n{}", cluster.logs()));
        if on_seed.contains(&id) {
            assert!(
                v >= 1,
                "{id}: the seed's state died with it: a fresh activation"
            );
        } else {
            assert_eq!(v, 2, "{id} on a live node kept its state");
        }
    }

    // The client's view drops the dead node; plain asks then go straight to new owners.
    client
        .wait_for_topology(Duration::from_secs(60), |v| {
            v.owners().len() == 2 && v.owners().iter().all(|n| n.name() != "n0")
        })
        .await
        .unwrap();
    for id in &on_seed {
        let owner = client.owner_of(id).unwrap();
        assert_ne!(owner.name(), "n0");
        client.ask(id, Get).await.unwrap();
    }

    // The subscription moved to a live node.
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            // Publishing may fail while the client learns the crash: keep trying.
            let _ = client.publish(&topic, &Deposit(9)).await;
            tokio::select! {
                m = sub.next() => return m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("a delivery within 30 s of the crash")
    .expect("the subscription is still open");
    assert_eq!(got.unwrap().0, 9);
    drop(sub);
    client.shutdown().await;
}
