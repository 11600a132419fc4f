//! Lanes, asks, connection lifecycle and robustness between real endpoints on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use cortex_transport::{TransportError, lane_key};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn tells_keep_order_per_lane() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let key = lane_key(&target());
    for seq in 0..10_000u64 {
        conn.send(tell(seq), key).await.unwrap();
    }
    eventually("10k tells arrive", LONG, || bh.tells.lock().len() == 10_000).await;
    let got = bh.tells.lock().clone();
    assert!(
        got.iter().copied().eq(0..10_000u64),
        "tells arrived out of order"
    );
    let s = conn.stats();
    assert_eq!(s.envelopes_sent, 10_000);
    assert!(s.frames_sent < 10_000, "no batching happened: {s:?}");
}

#[tokio::test]
async fn close_delivers_what_was_queued() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    for seq in 0..5_000u64 {
        conn.send(tell(seq), seq).await.unwrap();
    }
    a.close().await;
    eventually("all queued tells arrive", LONG, || {
        bh.tells.lock().len() == 5_000
    })
    .await;
    let err = conn.send(tell(0), 0).await.unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { .. }),
        "{err}"
    );
}

type HeldAsk = tokio::task::JoinHandle<Result<cortex_protocol::ReplyResult, TransportError>>;

/// Two endpoints whose connection's lane 0 is stalled (see [`stall_lane_0`]): `lanes` lanes
/// each, b with one reply slot, a with a lane queue of 4 batches.
struct Stalled {
    _a: cortex_transport::Endpoint,
    _b: cortex_transport::Endpoint,
    bh: std::sync::Arc<TestHandler>,
    conn: cortex_transport::Connection,
    held: Vec<HeldAsk>,
    /// Tells queued on lane 0 before `try_send` refused.
    sent: u64,
}

async fn stalled(lanes: usize) -> Stalled {
    let pki = Pki::new("c");
    let mut cfg = node_cfg(&pki, "b", "c");
    cfg.lanes = lanes;
    cfg.batch.reply_queue = 1;
    let (b, bh) = start(cfg);
    let mut cfg = node_cfg(&pki, "a", "c");
    cfg.lanes = lanes;
    cfg.batch.queue = 4;
    let (a, _) = start(cfg);
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let (held, sent) = stall_lane_0(&conn, &bh).await;
    Stalled {
        _a: a,
        _b: b,
        bh,
        conn,
        held,
        sent,
    }
}

/// Releases lane 0: b then holds `tells` tells in all and the second held ask, and both held
/// asks end answered with an error (dropped responders answer `ActorStopped`).
async fn release_lane_0(bh: &TestHandler, held: Vec<HeldAsk>, tells: u64, what: &str) {
    bh.held.lock().clear();
    eventually(what, LONG, || bh.tells.lock().len() as u64 == tells).await;
    eventually("b holds the second ask", LONG, || bh.held.lock().len() == 1).await;
    bh.held.lock().clear();
    for h in held {
        assert!(matches!(
            h.await.unwrap(),
            Ok(cortex_protocol::ReplyResult::Err(_))
        ));
    }
}

/// Stalls b's reader of lane 0 (b has one reply slot: the first held ask takes it, the
/// second blocks the reader), then fills QUIC flow control and lane 0's buffer until
/// `try_send` refuses. Returns the held asks and how many tells were queued.
async fn stall_lane_0(
    conn: &cortex_transport::Connection,
    bh: &TestHandler,
) -> (Vec<HeldAsk>, u64) {
    let held: Vec<HeldAsk> = (0..2)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.ask_on(ask("test.Hold", b"x"), 0, LONG).await })
        })
        .collect();
    eventually("b holds the first ask", LONG, || bh.held.lock().len() == 1).await;
    let mut sent = 0u64;
    loop {
        match conn.try_send(tell_sized(1000), 0) {
            Ok(()) => sent += 1,
            Err(cortex_transport::TrySendError::Full(_)) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 1_000_000, "never backpressured");
        tokio::task::yield_now().await;
    }
    (held, sent)
}

#[tokio::test]
async fn a_stalled_peer_backpressures_the_sender() {
    let s = stalled(1).await;
    assert!(s.bh.tells.lock().is_empty(), "b's lane is stalled");
    // A borrowed envelope is refused the same way and queues nothing: the count of tells
    // that arrive below stays exact.
    let extra = tell_sized(1000);
    assert_eq!(
        s.conn.try_queue(&extra, 0),
        Err(cortex_transport::TryQueueError::Full)
    );
    // Releasing the held ask lets everything through, in order.
    release_lane_0(&s.bh, s.held, s.sent, "queued tells arrive").await;
}

/// One writer task serves every lane of a connection: a lane stuck on flow control must not
/// hold back the others.
#[tokio::test]
async fn a_blocked_lane_does_not_hold_the_others() {
    // The endpoints are bound too: dropping them would close the connection.
    let Stalled {
        _a,
        _b,
        bh,
        conn,
        held,
        sent,
    } = stalled(2).await;
    // Lane 1 still carries tells and asks both ways.
    for seq in 0..100u64 {
        conn.send(tell(seq), 1).await.unwrap();
    }
    let r = conn
        .ask_on(ask("test.Echo", b"lane 1"), 1, LONG)
        .await
        .unwrap();
    assert!(
        matches!(r, cortex_protocol::ReplyResult::Ok { .. }),
        "{r:?}"
    );
    eventually("lane 1's tells arrive", LONG, || {
        bh.tells.lock().len() == 100
    })
    .await;
    assert!(
        bh.tells.lock().iter().copied().eq(0..100u64),
        "only lane 1's tells, in order"
    );
    // Releasing lane 0 lets its tells through.
    release_lane_0(&bh, held, 100 + sent, "lane 0's tells arrive").await;
}

/// Replies travel on a lane of their own: an asker whose lane 0 is stalled (its reader is
/// waiting for a reply slot behind a held ask, and flow control is full) still gets the
/// answers to the asks it sends on lane 0. Without the reply lane they would come back on
/// the peer's lane 0, which that reader is not reading.
#[tokio::test]
async fn replies_pass_a_stalled_lane_on_the_reply_lane() {
    let s = stalled(1).await;
    let back = s._b.cached_connection("a").expect("b has a's connection");
    assert_ne!(back.features() & cortex_protocol::FEATURE_REPLY_LANE, 0);
    for i in 0..20u32 {
        let payload = i.to_le_bytes();
        let r = back.ask_on(ask("test.Echo", &payload), 0, LONG).await;
        assert_echo(r.unwrap(), &payload);
    }
    assert!(s.bh.tells.lock().is_empty(), "b's lane 0 is still stalled");
    release_lane_0(&s.bh, s.held, s.sent, "queued tells arrive").await;
}

/// A peer that does not announce the reply lane gets its replies on the lanes, as before,
/// both ways.
#[tokio::test]
async fn replies_use_the_lanes_with_a_peer_without_the_reply_lane() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let mut cfg = node_cfg(&pki, "a", "c");
    cfg.features = cortex_protocol::FEATURE_BATCH;
    let (a, _) = start(cfg);
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let back = b.cached_connection("a").expect("b has a's connection");
    for c in [&conn, &back] {
        // Negotiated away on both sides: neither writes a reply lane the other never reads.
        assert_eq!(c.features() & cortex_protocol::FEATURE_REPLY_LANE, 0);
        for i in 0..50u32 {
            let payload = i.to_le_bytes();
            let mut req = ask("test.Echo", &payload);
            // Spread over lanes, so that replies come back on several.
            req.target = cortex_protocol::Target::Virtual(format!("test/{i}").parse().unwrap());
            assert_echo(c.ask(req, LONG).await.unwrap(), &payload);
        }
    }
}

#[tokio::test]
async fn concurrent_asks_correlate() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let asks = (0..2_000u32).map(|i| {
        let conn = conn.clone();
        async move {
            let payload = i.to_le_bytes();
            let mut req = ask("test.Echo", &payload);
            // Spread over lanes so replies interleave.
            req.target = cortex_protocol::Target::Virtual(format!("test/{i}").parse().unwrap());
            assert_echo(conn.ask(req, LONG).await.unwrap(), &payload);
        }
    });
    futures::future::join_all(asks).await;
    assert_eq!(bh.asks_seen.load(Ordering::SeqCst), 2_000);
    assert_eq!(conn.stats().pending_asks, 0);
}

/// Answers sent with `Responder::send_later` are polled by the lane's reader, which must
/// keep polling them while it waits for a reply slot (only sent replies free slots).
#[tokio::test]
async fn answers_sent_later_flow_with_few_reply_slots() {
    let pki = Pki::new("c");
    let mut cfg = node_cfg(&pki, "b", "c");
    cfg.lanes = 1;
    cfg.batch.reply_queue = 2;
    let (b, _) = start(cfg);
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let asks: Vec<_> = (0..200u32)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let r = conn
                    .ask(ask("test.Later", &i.to_le_bytes()), LONG)
                    .await
                    .unwrap();
                match r {
                    cortex_protocol::ReplyResult::Ok { payload, .. } => {
                        assert_eq!(&payload[..], &i.to_le_bytes())
                    }
                    other => panic!("unexpected reply {other:?}"),
                }
            })
        })
        .collect();
    for a in asks {
        a.await.unwrap();
    }
    eventually("no pending asks", LONG, || conn.stats().pending_asks == 0).await;
}

#[tokio::test]
async fn ask_times_out_and_cleans_up() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let err = conn
        .ask(ask("test.Hold", b"x"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::AskTimeout { .. }), "{err}");
    assert_eq!(conn.stats().pending_asks, 0);
    // The connection is still fine.
    echo(&conn, b"after timeout").await;
}

/// Asks whose deadline passes before their answer time out, and the answers that arrive
/// afterwards (the peer handles every ask) are dropped by the reader without harm: no
/// pending entry is left and the connection goes on working.
#[tokio::test]
async fn late_replies_to_timed_out_asks_are_dropped() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    for i in 0..20u32 {
        let err = conn
            .ask(ask("test.Echo", &i.to_le_bytes()), Duration::from_micros(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::AskTimeout { .. }),
            "ask {i}: {err}"
        );
    }
    // The asks did reach the peer, which answered every one of them, late.
    eventually("the peer saw every ask", LONG, || {
        bh.asks_seen.load(Ordering::SeqCst) == 20
    })
    .await;
    assert_eq!(conn.stats().pending_asks, 0);
    echo(&conn, b"after late replies").await;
}

#[tokio::test]
async fn dropped_responder_answers_actor_stopped() {
    struct Dropper;
    impl cortex_transport::Handler for Dropper {
        fn on_envelope(&self, _: &cortex_transport::Connection, _: cortex_protocol::Envelope) {}
        fn on_ask(
            &self,
            _: &cortex_transport::Connection,
            _: cortex_protocol::Ask,
            reply: cortex_transport::Responder,
        ) {
            drop(reply);
        }
    }
    let pki = Pki::new("c");
    let b =
        cortex_transport::Endpoint::bind(node_cfg(&pki, "b", "c"), std::sync::Arc::new(Dropper))
            .unwrap();
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    match conn.ask(ask("test.Echo", b"x"), LONG).await.unwrap() {
        cortex_protocol::ReplyResult::Err(e) => {
            assert_eq!(e.code, cortex_protocol::ErrorCode::ActorStopped)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pending_asks_fail_fast_when_peer_closes() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, ah) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let waiting: Vec<_> = (0..10)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.ask(ask("test.Hold", b"x"), Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    eventually("b holds 10 asks", LONG, || bh.held.lock().len() == 10).await;
    let started = tokio::time::Instant::now();
    b.close().await;
    for w in waiting {
        let err = w.await.unwrap().unwrap_err();
        assert!(
            matches!(err, TransportError::ConnectionLost { .. }),
            "{err}"
        );
    }
    // Far below the 60 s ask timeout: they failed because the connection died.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(conn.is_closed());
    let err = conn.ask(ask("test.Echo", b"x"), LONG).await.unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { .. }),
        "{err}"
    );
    eventually("a saw the disconnect", LONG, || {
        ah.disconnects.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn simultaneous_dial_leaves_one_connection() {
    let pki = Pki::new("c");
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let (ab, ba) = tokio::join!(a.connect(addr(&b), "b"), b.connect(addr(&a), "a"));
    let (ab, ba) = (ab.unwrap(), ba.unwrap());
    eventually("one connection on each side", LONG, || {
        a.connections().len() == 1 && b.connections().len() == 1
    })
    .await;
    // "a" < "b": the connection a dialed wins on both sides.
    let a_side = a.cached_connection("b").unwrap();
    let b_side = b.cached_connection("a").unwrap();
    assert!(a_side.dialed_by_us());
    assert!(!b_side.dialed_by_us());
    assert_eq!(a.connections()[0].id(), a_side.id());
    // Handles to the losing connection keep working through the winner.
    echo(&ab, b"via a").await;
    echo(&ba, b"via b").await;
}

#[tokio::test]
async fn newer_incarnation_replaces_the_old_connection() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let (a1, _) = start(node_cfg(&pki, "a", "c"));
    let old = a1.connect(addr(&b), "b").await.unwrap();
    eventually("b knows a", LONG, || b.cached_connection("a").is_some()).await;
    let first = b.cached_connection("a").unwrap().id();
    // The clone-free path agrees, and keeps agreeing once this thread has cached it.
    assert_eq!(b.with_cached_connection("a", |c| c.id()), Some(first));
    assert_eq!(b.with_cached_connection("a", |c| c.id()), Some(first));
    assert_eq!(b.with_cached_connection("nobody", |c| c.id()), None);
    let mut cfg = node_cfg(&pki, "a", "c");
    cfg.identity =
        cortex_protocol::PeerIdentity::Node(cortex_protocol::NodeId::new("a", 2).unwrap());
    let (a2, _) = start(cfg);
    let new = a2.connect(addr(&b), "b").await.unwrap();
    echo(&new, b"new").await;
    eventually("b keeps only the new incarnation", LONG, || {
        b.cached_connection("a")
            .and_then(|c| c.peer_node().map(|n| n.incarnation()))
            == Some(2)
            && b.connections().len() == 1
    })
    .await;
    eventually("old connection closed", LONG, || old.is_closed()).await;
    // A thread that cached the old connection is handed the new one.
    let now = b.cached_connection("a").unwrap().id();
    assert_ne!(now, first);
    assert_eq!(b.with_cached_connection("a", |c| c.id()), Some(now));
    // Asking b for the old incarnation is refused.
    let err = b.connection_to(&node_id("a"), addr(&a1)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::UnexpectedPeer { .. }),
        "{err}"
    );
}

/// xorshift: deterministic noise without depending on an RNG crate's API.
fn noise(state: &mut u64, buf: &mut [u8]) {
    for b in buf {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *b = *state as u8;
    }
}

#[tokio::test]
async fn garbage_datagrams_do_not_hurt() {
    let pki = Pki::new("c");
    let (b, _) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    let target = addr(&b);
    tokio::task::spawn_blocking(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 1400];
        for i in 0..10_000usize {
            let len = 1 + (i * 7919) % buf.len();
            noise(&mut state, &mut buf[..len]);
            // Loopback may drop under load; the point is that nothing breaks.
            let _ = sock.send_to(&buf[..len], target);
        }
    })
    .await
    .unwrap();
    echo(&conn, b"still fine").await;
    let (c, _) = start(node_cfg(&pki, "c", "c"));
    echo(&c.connect(addr(&b), "b").await.unwrap(), b"new peer fine").await;
}

#[tokio::test]
async fn oversize_frame_closes_only_that_connection() {
    let pki = Pki::new("c");
    let mut cfg = node_cfg(&pki, "b", "c");
    cfg.max_frame = 8 * 1024;
    let (b, _) = start(cfg);
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let (c, _) = start(node_cfg(&pki, "c", "c"));
    let bad = a.connect(addr(&b), "b").await.unwrap();
    let good = c.connect(addr(&b), "b").await.unwrap();
    bad.send(tell_sized(32 * 1024), 0).await.unwrap();
    let reason = tokio::time::timeout(LONG, bad.closed()).await.unwrap();
    assert!(reason.contains("protocol violation"), "{reason}");
    assert!(reason.contains("exceeds the limit"), "{reason}");
    echo(&good, b"unaffected").await;
    // b still accepts new connections, including from the offender.
    echo(&a.connect(addr(&b), "b").await.unwrap(), b"again").await;
    // A sender refuses what its own limit forbids, before anything goes on the wire.
    let mut cfg = node_cfg(&pki, "d", "c");
    cfg.max_frame = 8 * 1024;
    let (d, _) = start(cfg);
    let dc = d.connect(addr(&b), "b").await.unwrap();
    let err = dc.send(tell_sized(32 * 1024), 0).await.unwrap_err();
    assert!(matches!(err, TransportError::Encode { .. }), "{err}");
    echo(&dc, b"connection unharmed").await;
}

#[tokio::test]
async fn a_closed_connection_leaves_its_last_counters() {
    let pki = Pki::new("c");
    let (b, bh) = start(node_cfg(&pki, "b", "c"));
    let (a, _) = start(node_cfg(&pki, "a", "c"));
    let conn = a.connect(addr(&b), "b").await.unwrap();
    for seq in 0..100u64 {
        conn.send(tell(seq), 0).await.unwrap();
    }
    eventually("100 tells arrive", LONG, || bh.tells.lock().len() == 100).await;
    assert!(a.take_closed().is_empty());
    b.close().await;
    eventually("a lists the connection as closed", LONG, || {
        a.connections().is_empty()
    })
    .await;
    let closed = a.take_closed();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].id, conn.id());
    assert_eq!(closed[0].peer.as_ref().map(|p| p.name()), Some("b"));
    assert_eq!(closed[0].stats.envelopes_sent, 100);
    assert!(closed[0].stats.bytes_sent > 0);
    // Taken once.
    assert!(a.take_closed().is_empty());
}
