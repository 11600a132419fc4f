//! Ordered delivery: a `Delivery` a handler returns holds its lane, in order, while replies
//! on that lane keep flowing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use cortex_protocol::{Ask, Envelope};
use cortex_transport::{Connection, Delivery, Handler, Responder, lane_key};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

const LONG: Duration = Duration::from_secs(20);

/// Records tells in delivery order (and asks, as [`ASKED`]); the tell with sequence `gated`
/// waits for `gate` before it is recorded, as a tell for a full mailbox would.
struct Gated {
    tells: Arc<Mutex<Vec<u64>>>,
    gate: Arc<Semaphore>,
    blocked: Arc<Notify>,
    gated: u64,
}

/// What [`Gated`] records for an ask.
const ASKED: u64 = u64::MAX;

impl Default for Gated {
    fn default() -> Self {
        Self::at(0)
    }
}

impl Gated {
    fn at(gated: u64) -> Self {
        Self {
            tells: Default::default(),
            gate: Arc::new(Semaphore::new(0)),
            blocked: Default::default(),
            gated,
        }
    }
}

fn seq_of(env: &Envelope) -> Option<u64> {
    match env {
        Envelope::Tell(t) => Some(u64::from_le_bytes(t.payload[..8].try_into().unwrap())),
        _ => None,
    }
}

impl Handler for Gated {
    fn on_envelope(&self, _conn: &Connection, _env: Envelope) {
        unreachable!("the reader calls deliver_envelope")
    }
    fn on_ask(&self, _conn: &Connection, ask: Ask, reply: Responder) {
        self.tells.lock().push(ASKED);
        reply.send(cortex_protocol::ReplyResult::Ok {
            message: ask.message,
            payload: ask.payload,
        });
    }
    fn deliver_envelope(&self, _conn: &Connection, env: Envelope) -> Option<Delivery> {
        let seq = seq_of(&env)?;
        if seq != self.gated {
            self.tells.lock().push(seq);
            return None;
        }
        let (tells, gate, blocked) = (self.tells.clone(), self.gate.clone(), self.blocked.clone());
        Some(Box::pin(async move {
            blocked.notify_one();
            let _permit = gate.acquire().await.unwrap();
            tells.lock().push(seq);
        }))
    }
}

/// Starts b with handler `h` and a, and queues tells 0 to 999 from a to b on one lane, at
/// once, so that the lane's writer batches them into a few frames.
async fn send_tells_to(h: Gated) -> Sent {
    let pki = Pki::new("c");
    let bh = Arc::new(h);
    let b = cortex_transport::Endpoint::bind(node_cfg(&pki, "b", "c"), bh.clone()).unwrap();
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let key = lane_key(&target());
    for seq in 0..1_000u64 {
        conn.send(tell(seq), key).await.unwrap();
    }
    Sent {
        bh,
        _a: a,
        b,
        conn,
        key,
    }
}

struct Sent {
    bh: Arc<Gated>,
    _a: cortex_transport::Endpoint,
    b: cortex_transport::Endpoint,
    conn: Connection,
    key: u64,
}

#[tokio::test]
async fn a_pending_delivery_holds_its_lane_in_order_and_replies_still_arrive() {
    // Bound whole: an endpoint dropped here would close the connection.
    let sent = send_tells_to(Gated::default()).await;
    let (bh, b, key) = (&sent.bh, &sent.b, sent.key);
    tokio::time::timeout(LONG, bh.blocked.notified())
        .await
        .expect("tell 0 reaches b");
    // b's lane reader now waits on tell 0; b's ask to a on the same lane gets its reply
    // through that reader all the same.
    let back = b.cached_connection("a").expect("b knows a's connection");
    let r = back
        .ask_on(ask("test.Echo", b"hi"), key, LONG)
        .await
        .expect("the reply passes a waiting lane");
    assert!(matches!(r, cortex_protocol::ReplyResult::Ok { .. }));
    assert!(
        bh.tells.lock().is_empty(),
        "nothing overtakes the pending delivery: {:?}",
        &bh.tells.lock()[..]
    );
    bh.gate.add_permits(1);
    eventually("every tell is delivered", LONG, || {
        bh.tells.lock().len() == 1_000
    })
    .await;
    assert!(
        bh.tells.lock().iter().copied().eq(0..1_000u64),
        "delivered in send order"
    );
}

/// The reader dispatches a frame's envelopes as they decode while nothing waits; a delivery
/// that must wait in the middle of a frame holds the rest of that frame, and later frames,
/// tells and asks alike, in order behind it.
#[tokio::test]
async fn a_delivery_that_waits_mid_frame_holds_the_rest_in_order() {
    let sent = send_tells_to(Gated::at(500)).await;
    let (bh, conn, key) = (&sent.bh, &sent.conn, sent.key);
    let asking = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.ask_on(ask("test.Echo", b"hi"), key, LONG).await })
    };
    tokio::time::timeout(LONG, bh.blocked.notified())
        .await
        .expect("tell 500 reaches b");
    {
        let seen = bh.tells.lock();
        assert!(
            seen.iter().copied().eq(0..500u64),
            "exactly the tells before the waiting one are delivered: {} of them, ending {:?}",
            seen.len(),
            seen.last()
        );
    }
    bh.gate.add_permits(1);
    let r = asking
        .await
        .unwrap()
        .expect("the ask is answered once the lane moves");
    assert!(matches!(r, cortex_protocol::ReplyResult::Ok { .. }));
    let seen = bh.tells.lock();
    assert!(
        seen.iter().copied().eq((0..1_000u64).chain([ASKED])),
        "tells in send order, then the ask sent after them"
    );
}
