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
