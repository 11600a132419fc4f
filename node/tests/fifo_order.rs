//! FIFO per (sender, actor) across nodes: one node tells a remote actor many times, then
//! asks it; the ask sees every tell, and the tells arrived in send order. The actor's
//! mailbox is tiny and its handler yields, so most tells find it full and take the
//! receiver's waiting path, where order used to be lost. And a client's idempotent ask stays
//! ahead of the tells it sent after it (its run used to be spawned, so they could overtake).

mod common;

use std::sync::Arc;
use std::task::{Context as TaskContext, Waker};
use std::time::Duration;

use cortex_node::Node;
use cortex_protocol::{
    ActorId, Ask, Envelope, MessageName, PeerIdentity, ReplyResult, RequestId, RequestMeta, Target,
    Tell, decode_payload, encode_payload,
};
use cortex_runtime::{Actor, Context, Handler, Kind};
use cortex_transport::{
    Connection, Endpoint, EndpointConfig, Handler as TransportHandler, Responder, TlsMaterial,
    lane_key,
};
use serde::{Deserialize, Serialize};

/// Appends its number to the recorder's log.
#[derive(Debug, Serialize, Deserialize)]
struct Note(u64);
cortex_runtime::message!(Note => (), "fifo.Note");

/// Returns the recorder's log.
#[derive(Debug, Serialize, Deserialize)]
struct Seen;
cortex_runtime::message!(Seen => Vec<u64>, "fifo.Seen");

#[derive(Default)]
struct Recorder(Vec<u64>);
impl Actor for Recorder {}
impl Handler<Note> for Recorder {
    async fn handle(&mut self, n: Note, _: &mut Context<Self>) {
        self.0.push(n.0);
        // Slower than the lane: the mailbox fills and deliveries must wait.
        tokio::task::yield_now().await;
    }
}
impl Handler<Seen> for Recorder {
    async fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> Vec<u64> {
        self.0.clone()
    }
}

async fn two_nodes(dir: &std::path::Path) -> Vec<Node> {
    common::two_nodes(dir, || {
        Kind::new("recorder", |_| Recorder::default())
            .handles::<Note>()
            .handles::<Seen>()
            .mailbox(4)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_from_one_sender_arrive_in_order_and_before_a_later_ask() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let nodes = two_nodes(dir.path()).await;
    let (sender, owner) = (&nodes[0], &nodes[1]);
    // Three recorders owned by the other node, told in an interleaved stream.
    let ids: Vec<ActorId> = (0..1_000)
        .map(|i| ActorId::new("recorder", format!("r{i}")).unwrap())
        .filter(|id| owner.ring().owner(id) == Some(owner.id()))
        .take(3)
        .collect();
    assert_eq!(ids.len(), 3, "the other node owns some recorders");
    const N: u64 = 3_000;
    let t = Duration::from_secs(20);
    for seq in 0..N {
        let id = &ids[(seq % 3) as usize];
        sender.tell::<Recorder, _>(id, Note(seq), t).await.unwrap();
    }
    for (k, id) in ids.iter().enumerate() {
        let seen = sender.ask::<Recorder, _>(id, Seen, t).await.unwrap();
        let want: Vec<u64> = (0..N).filter(|s| s % 3 == k as u64).collect();
        assert_eq!(seen.len(), want.len(), "the ask sees every earlier tell");
        assert_eq!(seen, want, "tells arrive in send order");
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

/// A client endpoint's handler: a client serves nothing.
struct ServesNothing;
impl TransportHandler for ServesNothing {
    fn on_envelope(&self, _: &Connection, _: Envelope) {}
    fn on_ask(&self, _: &Connection, _: Ask, reply: Responder) {
        reply.send(ReplyResult::Err(cortex_protocol::RemoteError {
            code: cortex_protocol::ErrorCode::Rejected,
            detail: "a test client".into(),
        }));
    }
}

fn meta() -> RequestMeta {
    RequestMeta {
        budget_us: 20_000_000,
        trace: Default::default(),
    }
}

/// A client's `Seen` ask, as it goes on the wire.
fn seen_ask(target: &Target, idempotency_key: Option<[u8; 16]>) -> Ask {
    Ask {
        request: RequestId(0),
        target: target.clone(),
        message: MessageName::new("fifo.Seen").unwrap(),
        payload: encode_payload(&Seen).unwrap().into(),
        meta: meta(),
        epoch: 0,
        idempotency_key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_ask_stays_ahead_of_the_tells_sent_after_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let nodes = two_nodes(dir.path()).await;
    let owner = &nodes[1];
    let id = (0..1_000)
        .map(|i| ActorId::new("recorder", format!("i{i}")).unwrap())
        .find(|id| owner.ring().owner(id) == Some(owner.id()))
        .unwrap();
    // A client of the owner, on the one lane the target maps to.
    let tls = TlsMaterial::load(
        &dir.path().join("ca.crt"),
        &dir.path().join("client.crt"),
        &dir.path().join("client.key"),
    )
    .unwrap();
    let cfg = EndpointConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tls,
        PeerIdentity::Client {
            name: "client".into(),
        },
        "test",
    );
    let ep = Endpoint::bind(cfg, Arc::new(ServesNothing)).unwrap();
    let conn = ep
        .connect(owner.quic_addr().unwrap(), owner.id().name())
        .await
        .unwrap();
    let target = Target::Virtual(id.clone());
    let ask = seen_ask(&target, Some([7; 16]));
    // Its first poll queues the ask on the lane; then the tells follow it there.
    let mut asked = Box::pin(conn.ask(ask, Duration::from_secs(20)));
    assert!(
        asked
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
            .is_pending()
    );
    const N: u64 = 200;
    for seq in 0..N {
        let tell = Tell {
            target: target.clone(),
            message: MessageName::new("fifo.Note").unwrap(),
            payload: encode_payload(&Note(seq)).unwrap().into(),
            meta: meta(),
            epoch: 0,
        };
        conn.send(Envelope::Tell(tell), lane_key(&target))
            .await
            .unwrap();
    }
    let ReplyResult::Ok { payload, .. } = asked.await.unwrap() else {
        panic!("the idempotent ask failed");
    };
    let seen: Vec<u64> = decode_payload(&payload).unwrap();
    assert!(
        seen.is_empty(),
        "tells sent after the ask overtook it: {seen:?}"
    );
    // And a plain ask after them, on the same lane, sees them all, in order.
    let after = seen_ask(&target, None);
    let ReplyResult::Ok { payload, .. } = conn.ask(after, Duration::from_secs(20)).await.unwrap()
    else {
        panic!("the later ask failed");
    };
    let all: Vec<u64> = decode_payload(&payload).unwrap();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    ep.close().await;
    for n in &nodes {
        n.shutdown().await;
    }
}
