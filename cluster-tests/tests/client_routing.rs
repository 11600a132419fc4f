//! One-hop routing: once the client's view is current, every tell and ask goes straight to
//! the owner. Checked from the outside: each of 20,000 ids is activated exactly once, on the
//! node the client computed, and no node forwards a single message
//! (`cortex_messages_forwarded_total` stays at zero on every node).

mod client_common;
#[path = "../../node/examples/shared/messages.rs"]
mod messages;

use std::collections::HashMap;
use std::time::Duration;

use client_common::{Cluster, eventually};
use cortex_protocol::ActorId;
use futures::StreamExt;
use messages::{Get, Incr};

const IDS: usize = 10_000;
const IN_FLIGHT: usize = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_and_asks_reach_owners_in_one_hop() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();
    assert_eq!(
        cluster.forwarded().await,
        0.0,
        "nothing forwarded before the test"
    );

    let asked: Vec<ActorId> = (0..IDS)
        .map(|i| ActorId::new("counter", format!("a{i}")).unwrap())
        .collect();
    let told: Vec<ActorId> = (0..IDS)
        .map(|i| ActorId::new("counter", format!("t{i}")).unwrap())
        .collect();

    let asks = futures::stream::iter(asked.iter())
        .map(|id| {
            let c = client.clone();
            async move { c.ask(id, Incr).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for r in asks {
        assert_eq!(r.unwrap(), 1, "each counter was incremented once");
    }
    let tells = futures::stream::iter(told.iter())
        .map(|id| {
            let c = client.clone();
            async move { c.tell(id, Incr).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for r in tells {
        r.unwrap();
    }
    // Every tell arrives. (They are at most once and the node may handle a tell after an
    // ask sent behind it, so poll the stragglers under a deadline.)
    let gets = futures::stream::iter(told.iter())
        .map(|id| {
            let c = client.clone();
            async move { (id, c.ask(id, Get).await.unwrap()) }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    for (id, n) in gets {
        if n != 1 {
            let c = client.clone();
            eventually(
                &format!("the tell to {id}"),
                Duration::from_secs(10),
                || {
                    let c = c.clone();
                    async move { (c.ask(id, Get).await.unwrap() == 1).then_some(()) }
                },
            )
            .await;
        }
    }

    // Where did each id live? The activation logs say.
    let mut host: HashMap<String, String> = HashMap::new();
    for n in &cluster.nodes {
        for rec in n.admin().activations(0).await.unwrap() {
            let before = host.insert(rec.id.clone(), n.name.clone());
            assert!(before.is_none(), "{} activated twice", rec.id);
        }
    }
    assert_eq!(host.len(), 2 * IDS, "every id activated exactly once");
    for id in asked.iter().chain(&told) {
        let owner = client.owner_of(id).unwrap();
        assert_eq!(
            host[&id.to_string()],
            owner.name(),
            "{id} lives on its owner"
        );
    }
    // A sample cross-checked with the nodes' own view.
    for id in asked.iter().step_by(997) {
        let info = cluster.nodes[1].admin().owner(id).await.unwrap();
        assert_eq!(info.owner, Some(client.owner_of(id).unwrap().to_string()));
    }
    assert_eq!(
        cluster.forwarded().await,
        0.0,
        "no node forwarded: every request went straight to its owner"
    );
    client.shutdown().await;
}
