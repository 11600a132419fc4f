//! A tell whose owner's lane stays full gives up at its own deadline with
//! `ActorError::Timeout` instead of waiting for room without end. The owner is a real node
//! whose actor never returns from its handler: its mailbox fills, the owner's lane reader
//! waits on a delivery with a long budget, the tells behind it fill the reader's hold, QUIC
//! flow control and the sender's lane buffer, and then a tell must wait for room.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cortex_node::Node;
use cortex_protocol::ActorId;
use cortex_runtime::{Actor, ActorError, Context, Handler, Kind};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A message whose handler waits for the test's gate.
#[derive(Debug, Serialize, Deserialize)]
struct Stuck(String);
cortex_runtime::message!(Stuck => (), "stall.Stuck");

/// Never returns from a handler until the gate closes.
struct Sink {
    gate: Arc<Semaphore>,
}
impl Actor for Sink {}
impl Handler<Stuck> for Sink {
    async fn handle(&mut self, _: Stuck, _: &mut Context<Self>) {
        // No permit is ever added: this returns only once the test closes the gate.
        let _ = self.gate.acquire().await;
    }
}

/// Budget of the tells that stall the owner's lane: far past every deadline below, so the
/// lane stays full for the whole test unless the gate opens.
const STALL: Duration = Duration::from_secs(120);

/// Bound on any single tell: one that takes this long hung.
const OUTER: Duration = Duration::from_secs(15);

async fn two_nodes(dir: &std::path::Path, gate: &Arc<Semaphore>) -> Vec<Node> {
    common::two_nodes(dir, || {
        let gate = gate.clone();
        Kind::new("sink", move |_| Sink { gate: gate.clone() })
            .handles::<Stuck>()
            .mailbox(1)
    })
    .await
}

/// Tells `id` from `sender` with `timeout`, failing the test if the call outlives `OUTER`.
/// Returns the result and how long the call took.
async fn timed_tell(
    sender: &Node,
    id: &ActorId,
    timeout: Duration,
) -> (Result<(), ActorError>, Duration) {
    let started = Instant::now();
    let r = tokio::time::timeout(
        OUTER,
        sender.tell::<Sink, _>(id, Stuck("x".repeat(1024)), timeout),
    )
    .await
    .unwrap_or_else(|_| panic!("a tell with a {timeout:?} timeout hung for {OUTER:?}"));
    (r, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tell_to_a_full_lane_times_out_at_its_deadline() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let nodes = two_nodes(dir.path(), &gate).await;
    let (sender, owner) = (&nodes[0], &nodes[1]);
    let id = (0..1_000)
        .map(|i| ActorId::new("sink", format!("s{i}")).unwrap())
        .find(|id| owner.ring().owner(id) == Some(owner.id()))
        .expect("the other node owns some sink");

    // One tell in the stuck handler, one in the mailbox, and the owner's lane reader
    // waiting (for `STALL`) to deliver the next one: everything after it is held.
    for _ in 0..10 {
        let (r, _) = timed_tell(sender, &id, STALL).await;
        r.unwrap();
    }

    // Short tells queue behind it until the lane has no room; the first that must wait for
    // room gives up at its own deadline.
    const SHORT: Duration = Duration::from_millis(200);
    let mut queued = 0u64;
    let (err, took) = loop {
        match timed_tell(sender, &id, SHORT).await {
            (Ok(()), _) => queued += 1,
            (Err(e), took) => break (e, took),
        }
        assert!(queued < 1_000_000, "the owner's lane never filled");
    };
    assert!(
        matches!(err, ActorError::Timeout),
        "after {queued} queued tells: {err:?}"
    );
    // Its deadline passed (a timer never fires early); well before the outer bound.
    assert!(took >= SHORT, "gave up after {took:?}, before its deadline");

    // The lane is still full: the next tell's own (shorter) deadline is what ends it too.
    const SHORTER: Duration = Duration::from_millis(50);
    let (r, took) = timed_tell(sender, &id, SHORTER).await;
    assert!(matches!(r, Err(ActorError::Timeout)), "{r:?}");
    assert!(
        took >= SHORTER,
        "gave up after {took:?}, before its deadline"
    );

    // Let the actor go so the nodes stop cleanly.
    gate.close();
    for n in &nodes {
        n.shutdown().await;
    }
}
