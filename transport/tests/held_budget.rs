//! A lane charges the time an envelope was held behind a pending delivery to the envelope's
//! budget, and charges nothing to envelopes that never waited (so the common path reads no
//! clock). The lane reader times envelopes with `std::time::Instant`, which tokio's paused
//! clock does not move, so the held time is real: the test holds the lane for a measured
//! stretch and checks the charge against that measurement (a lower bound and an upper
//! bound, never an exact figure).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cortex_protocol::{Ask, Envelope};
use cortex_transport::{Connection, Delivery, Handler, Responder, lane_key};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

const LONG: Duration = Duration::from_secs(20);

/// Budget every tell is sent with: far longer than the test, so no charge exhausts it.
const FULL_US: u64 = 60_000_000;

/// How long the lane is held at least.
const HOLD: Duration = Duration::from_millis(300);

/// Records each tell's sequence number and the budget it was delivered with. Tell 0's
/// delivery stays pending until `gate` gets a permit, as a tell for a full mailbox would.
struct Budgets {
    seen: Mutex<Vec<(u64, u64)>>,
    gate: Arc<Semaphore>,
    blocked: Arc<Notify>,
}

impl Handler for Budgets {
    fn on_envelope(&self, _conn: &Connection, _env: Envelope) {
        unreachable!("the reader calls deliver_envelope")
    }
    fn on_ask(&self, _conn: &Connection, _ask: Ask, _reply: Responder) {}
    fn deliver_envelope(&self, _conn: &Connection, env: Envelope) -> Option<Delivery> {
        let Envelope::Tell(t) = env else { return None };
        let seq = u64::from_le_bytes(t.payload[..8].try_into().unwrap());
        self.seen.lock().push((seq, t.meta.budget_us));
        if seq != 0 {
            return None;
        }
        let (gate, blocked) = (self.gate.clone(), self.blocked.clone());
        Some(Box::pin(async move {
            blocked.notify_one();
            let _permit = gate.acquire().await.unwrap();
        }))
    }
}

fn budgeted_tell(seq: u64) -> Envelope {
    let mut env = tell(seq);
    let Envelope::Tell(t) = &mut env else {
        unreachable!("common::tell builds a tell")
    };
    t.meta.budget_us = FULL_US;
    env
}

#[tokio::test]
async fn only_envelopes_held_behind_a_wait_are_charged_the_held_time() {
    let pki = Pki::new("c");
    let bh = Arc::new(Budgets {
        seen: Mutex::new(Vec::new()),
        gate: Arc::new(Semaphore::new(0)),
        blocked: Arc::new(Notify::new()),
    });
    let b = cortex_transport::Endpoint::bind(node_cfg(&pki, "b", "c"), bh.clone()).unwrap();
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let key = lane_key(&target());

    // Tell 0 takes the lane's reader into a pending delivery.
    conn.send(budgeted_tell(0), key).await.unwrap();
    tokio::time::timeout(LONG, bh.blocked.notified())
        .await
        .expect("tell 0 reaches b");
    let back = b.cached_connection("a").expect("b knows a's connection");
    let before = back.stats().envelopes_received;

    // Held: decoded by the waiting reader, not dispatched.
    const HELD: u64 = 200;
    let sent_at = Instant::now();
    for seq in 1..=HELD {
        conn.send(budgeted_tell(seq), key).await.unwrap();
    }
    eventually("b decodes the held tells", LONG, || {
        back.stats().envelopes_received >= before + HELD
    })
    .await;
    assert_eq!(
        bh.seen.lock().len(),
        1,
        "nothing overtakes the pending delivery"
    );
    // Every held tell was decoded by now; the lane stays held for at least `held_for`.
    let held_from = Instant::now();
    tokio::time::sleep(HOLD).await;
    let held_for = held_from.elapsed();
    bh.gate.add_permits(1);
    eventually("the held tells are delivered", LONG, || {
        bh.seen.lock().len() as u64 == 1 + HELD
    })
    .await;
    let at_most = sent_at.elapsed();

    // Not held: sent once the lane is free again, so decoded after its wait.
    const FREE: u64 = 200;
    for seq in HELD + 1..=HELD + FREE {
        conn.send(budgeted_tell(seq), key).await.unwrap();
    }
    eventually("the later tells are delivered", LONG, || {
        bh.seen.lock().len() as u64 == 1 + HELD + FREE
    })
    .await;

    let seen = bh.seen.lock().clone();
    assert!(
        seen.iter().map(|s| s.0).eq(0..=HELD + FREE),
        "delivered in send order"
    );
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap();
    let (min_charge, max_charge) = (us(held_for), us(at_most));
    assert!(min_charge >= us(HOLD) && max_charge < FULL_US);
    for &(seq, budget) in &seen {
        let held = (1..=HELD).contains(&seq);
        if held {
            let charged = FULL_US - budget;
            assert!(
                (min_charge..=max_charge).contains(&charged),
                "tell {seq} was held at least {min_charge} us and at most {max_charge} us \
                 but was charged {charged} us"
            );
        } else {
            // Tell 0 was dispatched at once, the later ones after the wait: neither waited.
            assert_eq!(budget, FULL_US, "tell {seq} never waited but was charged");
        }
    }
}
