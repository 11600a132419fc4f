//! Inbound lanes: a reader per lane that decodes frames and dispatches envelopes (the
//! outbound side is `writer.rs`).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use cortex_protocol::{Envelope, EnvelopeSink, ForwardBody, FrameDecoder, Pong};
use quinn::RecvStream;
use tokio::task::JoinSet;

use crate::connection::Connection;
use crate::handler::{Handler, Responder};
use crate::handshake::code;
use crate::later::{Inbox, Replies};

/// Accepts the peer's lanes and runs a reader for each; ends when the connection does.
pub(crate) async fn accept_lanes(conn: Connection, handler: Arc<dyn Handler>, max_frame: usize) {
    let mut readers = JoinSet::new();
    loop {
        let recv = match conn.inner.quinn.accept_uni().await {
            Ok(r) => r,
            Err(_) => break,
        };
        let index = recv.id().index();
        // With a reply lane, stream 0 is the peer's reply lane and its lanes follow.
        let reply_lane = conn.inner.reply_lane;
        let lanes_from = u64::from(reply_lane);
        if index >= crate::config::MAX_LANES as u64 + lanes_from {
            violation(
                &conn,
                &format!(
                    "peer opened lane {index}; at most {} are allowed",
                    crate::config::MAX_LANES
                ),
            );
            break;
        }
        // Below MAX_LANES (checked above); the peer may run more lanes than we do, and the
        // answers to a lane's asks go on our reply lane, or without one on our lane of the
        // same number. The peer's reply lane is read like a lane 0 (it carries replies,
        // which complete at once and never wait).
        let lane = index.saturating_sub(lanes_from) as usize % conn.lanes();
        readers.spawn(read_lane(
            conn.clone(),
            handler.clone(),
            recv,
            lane,
            max_frame,
        ));
    }
    readers.shutdown().await;
}

/// Closes the connection (only this one) for a protocol violation, logging one line.
pub(crate) fn violation(conn: &Connection, reason: &str) {
    tracing::warn!(peer = %conn.inner.peer_label, "closing connection: protocol violation: {reason}");
    let mut r = reason.as_bytes();
    r = &r[..r.len().min(512)];
    conn.close_with(code::PROTOCOL_VIOLATION, r);
}

/// Envelopes a lane's reader may hold decoded while a delivery is pending; past it the
/// reader stops reading and QUIC flow control stops the peer. Replies, pings and pongs are
/// handled at once even then, so an actor waiting for a reply never blocks the lane that
/// carries it.
const HELD_MAX: usize = 1024;

/// Largest chunk taken from the stream at once.
const CHUNK: usize = 64 * 1024;

/// Why a lane's reader stopped early: `Some` for a protocol violation (the connection is
/// closed with that reason), `None` when the stream or connection went away.
type Stop = Option<String>;

struct LaneReader {
    conn: Connection,
    handler: Arc<dyn Handler>,
    recv: RecvStream,
    lane: usize,
    dec: FrameDecoder,
    buf: BytesMut,
    /// Decoded envelopes not dispatched yet, in arrival order, with when they were decoded.
    held: VecDeque<(Envelope, Instant, u64)>,
    /// Times the reader waited while envelopes were held (a delivery, a reply slot): an
    /// envelope decoded at the current count has not waited, so its budget needs no clock
    /// read (one per message otherwise).
    waits: u64,
    /// How many envelopes at the front of `held` were already checked for replies.
    scanned: usize,
    /// The peer finished the stream; what is buffered is still dispatched.
    ended: bool,
    /// Answers in progress of this lane's asks (`Responder::send_later`), polled at every
    /// wait of this task.
    replies: Replies,
    /// Where this lane's responders push to `replies`.
    inbox: Arc<Inbox>,
}

async fn read_lane(
    conn: Connection,
    handler: Arc<dyn Handler>,
    recv: RecvStream,
    lane: usize,
    max_frame: usize,
) {
    let replies = Replies::new();
    let inbox = replies.inbox();
    let mut r = LaneReader {
        conn: conn.clone(),
        handler,
        recv,
        lane,
        dec: FrameDecoder::new(max_frame),
        buf: BytesMut::with_capacity(CHUNK),
        held: VecDeque::new(),
        waits: 0,
        scanned: 0,
        ended: false,
        replies,
        inbox,
    };
    match r.run().await {
        // The peer finished the lane: answers still in progress go out on ours.
        Ok(()) => r.replies.finish().await,
        Err(Some(reason)) => violation(&conn, &reason),
        Err(None) => {}
    }
}

impl LaneReader {
    /// Dispatches every envelope in order; a [`crate::Delivery`] is awaited before the next.
    async fn run(&mut self) -> Result<(), Stop> {
        loop {
            if let Some((mut env, at, waits)) = self.held.pop_front() {
                self.scanned = self.scanned.saturating_sub(1);
                if waits != self.waits {
                    spend_budget(&mut env, at.elapsed());
                }
                let mut waited = false;
                let d = {
                    let mut dispatching = pin!(dispatch(
                        &self.conn,
                        self.handler.as_ref(),
                        env,
                        self.lane,
                        &self.inbox,
                    ));
                    self.replies
                        .drive(poll_fn(|cx| {
                            let p = dispatching.as_mut().poll(cx);
                            waited |= p.is_pending();
                            p
                        }))
                        .await?
                };
                if let Some(d) = d {
                    self.wait(d).await?;
                    waited = true;
                }
                if waited {
                    self.waits += 1;
                }
                continue;
            }
            // Nothing is held or pending here, so the frame's envelopes may be dispatched as
            // they decode.
            let mut pending = None;
            let decoded = self.decode_frame(Some(&mut pending))?;
            if let Some(d) = pending {
                // The envelopes held behind it were stamped before this wait: it is charged
                // to their budgets.
                self.wait(d).await?;
                self.waits += 1;
            }
            if decoded {
                continue;
            }
            if self.ended {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Moves one frame's envelopes from the buffer to `held`; false when no whole frame is
    /// buffered.
    ///
    /// With `inline` (only when nothing is held or pending), the frame's envelopes are
    /// dispatched as they decode instead: a 64 KiB frame of tells would otherwise pass
    /// through ~170 KB of queue, written out of the cache and read back, two 280-byte moves
    /// per tell. The first delivery that must wait is left in `inline`, and the envelopes
    /// after it keep their order: the rest of the frame is held, and the caller awaits the
    /// delivery before dispatching them. So is the rest after an ask that finds no free
    /// reply slot (it waits for one from the queue).
    fn decode_frame(&mut self, inline: Option<&mut Option<crate::Delivery>>) -> Result<bool, Stop> {
        let before = self.held.len();
        let held = Held {
            q: &mut self.held,
            now: Instant::now(),
            waits: self.waits,
        };
        let mut stop = None;
        let decoded = match inline {
            Some(pending) => self.dec.decode_into(
                &self.buf,
                &mut Inline {
                    held,
                    conn: &self.conn,
                    handler: self.handler.as_ref(),
                    lane: self.lane,
                    inbox: &self.inbox,
                    pending,
                    stop: &mut stop,
                },
            ),
            None => self.dec.decode_into(&self.buf, &mut { held }),
        };
        if let Some(reason) = stop {
            self.held.truncate(before);
            return Err(reason);
        }
        match decoded {
            Ok(Some((used, n))) => {
                self.buf.advance(used);
                let c = &self.conn.inner.counters;
                c.frames_received.fetch_add(1, Ordering::Relaxed);
                c.bytes_received.fetch_add(used as u64, Ordering::Relaxed);
                c.envelopes_received.fetch_add(n as u64, Ordering::Relaxed);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                // A bad frame closes the connection. The envelopes decoded ahead of its error
                // are not dispatched, except those already dispatched inline, which are then
                // as if they had come in a frame of their own before it.
                self.held.truncate(before);
                Err(Some(e.to_string()))
            }
        }
    }

    fn take_chunk(
        &mut self,
        r: Result<Option<quinn::Chunk>, quinn::ReadError>,
    ) -> Result<(), Stop> {
        match r {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk.bytes);
                Ok(())
            }
            Ok(None) => {
                if !self.buf.is_empty() {
                    return Err(Some("lane ended in the middle of a frame".into()));
                }
                self.ended = true;
                Ok(())
            }
            // The connection is closing; its driver reports why.
            Err(_) => Err(None),
        }
    }

    async fn fill(&mut self) -> Result<(), Stop> {
        let r = self.replies.drive(self.recv.read_chunk(CHUNK, true)).await;
        self.take_chunk(r)
    }

    /// Awaits `d` while still answering replies and pings that arrive on the lane, holding
    /// at most about [`HELD_MAX`] other envelopes for after it.
    async fn wait(&mut self, mut d: crate::Delivery) -> Result<(), Stop> {
        loop {
            // Replies among the envelopes decoded so far complete at once.
            while self.scanned < self.held.len() {
                if is_control(&self.held[self.scanned].0) {
                    if let Some((env, _, _)) = self.held.remove(self.scanned) {
                        // Replies, pings and pongs never produce a delivery (nor wait).
                        let _ = dispatch(
                            &self.conn,
                            self.handler.as_ref(),
                            env,
                            self.lane,
                            &self.inbox,
                        )
                        .await?;
                    }
                } else {
                    self.scanned += 1;
                }
            }
            if self.held.len() >= HELD_MAX || self.ended {
                self.replies.drive(d).await;
                return Ok(());
            }
            if self.decode_frame(None)? {
                continue;
            }
            let recv = &mut self.recv;
            let read = self
                .replies
                .drive(async {
                    tokio::select! {
                        biased;
                        () = &mut d => None,
                        // Cancel safe: a chunk is consumed only when this branch completes.
                        r = recv.read_chunk(CHUNK, true) => Some(r),
                    }
                })
                .await;
            match read {
                None => return Ok(()),
                Some(r) => self.take_chunk(r)?,
            }
        }
    }
}

/// Charges the time a request waited in this lane (behind a pending delivery) to its
/// budget, which the router counts from when it starts: without it, a request held for
/// seconds behind a stuck forward would start with its full budget and could run long after
/// its caller gave up. An exhausted budget stays 1 µs (0 means "no deadline").
fn spend_budget(env: &mut Envelope, waited: std::time::Duration) {
    let meta = match env {
        Envelope::Ask(a) => &mut a.meta,
        Envelope::Tell(t) => &mut t.meta,
        Envelope::Forward(f) => match &mut f.body {
            ForwardBody::Ask(a) => &mut a.meta,
            ForwardBody::Tell(t) => &mut t.meta,
        },
        _ => return,
    };
    if meta.budget_us != 0 {
        let waited = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        meta.budget_us = meta.budget_us.saturating_sub(waited).max(1);
    }
}

/// Envelopes handled at once even while the lane waits for a delivery.
fn is_control(env: &Envelope) -> bool {
    matches!(
        env,
        Envelope::Reply(_) | Envelope::Ping(_) | Envelope::Pong(_)
    )
}

async fn dispatch(
    conn: &Connection,
    handler: &dyn Handler,
    env: Envelope,
    lane: usize,
    inbox: &Arc<Inbox>,
) -> Result<Option<crate::Delivery>, Stop> {
    let slot = if is_ask(&env) {
        match reserve_reply(conn, lane).await {
            Some(slot) => Some(slot),
            None => return Ok(None),
        }
    } else {
        None
    };
    dispatch_now(conn, handler, env, lane, inbox, slot)
}

/// Whether `env` takes a reply slot of the lane before it is dispatched.
fn is_ask(env: &Envelope) -> bool {
    match env {
        Envelope::Ask(_) => true,
        Envelope::Forward(f) => matches!(f.body, ForwardBody::Ask(_)),
        _ => false,
    }
}

/// Dispatches `env` without waiting; `slot` is the reply slot an ask holds (see [`is_ask`]).
fn dispatch_now(
    conn: &Connection,
    handler: &dyn Handler,
    env: Envelope,
    lane: usize,
    inbox: &Arc<Inbox>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Option<crate::Delivery>, Stop> {
    // Invariant: both callers pass a slot exactly for `is_ask` envelopes (`dispatch`
    // reserves one or returns early; `Inline` takes one or holds the ask for `dispatch`), so
    // the `None` arms below never meet an ask.
    debug_assert_eq!(
        is_ask(&env),
        slot.is_some(),
        "a reply slot goes with every ask"
    );
    let responder = |slot: Option<tokio::sync::OwnedSemaphorePermit>, request| {
        slot.map(|slot| Responder::new(slot, request, lane, conn.inner.clone(), inbox.clone()))
    };
    let delivery = match env {
        Envelope::Ask(ask) => match responder(slot, ask.request) {
            Some(r) => handler.deliver_ask(conn, ask, r),
            None => None,
        },
        Envelope::Forward(f) => match f.body {
            ForwardBody::Ask(ask) => match responder(slot, ask.request) {
                Some(r) => handler.deliver_forward_ask(conn, f.hops, f.origin, ask, r),
                None => None,
            },
            body => handler.deliver_envelope(
                conn,
                Envelope::Forward(cortex_protocol::Forward {
                    hops: f.hops,
                    origin: f.origin,
                    body,
                }),
            ),
        },
        Envelope::Reply(r) => {
            if !conn.complete(r.request.0, Ok(r.result)) {
                tracing::debug!(peer = %conn.inner.peer_label, request = r.request.0, "late reply dropped");
            }
            None
        }
        Envelope::Ping(p) => {
            // A pong is best effort: with no reply slot free the peer will ping again.
            if let Ok(slot) = conn.inner.reply_slots[lane].clone().try_acquire_owned() {
                let _ = conn.inner.outboxes[lane].push(
                    &Envelope::Pong(Pong { nonce: p.nonce }),
                    0,
                    Some(slot),
                );
            }
            None
        }
        Envelope::Pong(_) => None,
        Envelope::Error(e) => {
            tracing::warn!(peer = %conn.inner.peer_label, code = ?e.code, "peer reported: {}", e.detail);
            None
        }
        Envelope::Hello(_) | Envelope::Welcome(_) => {
            return Err(Some("handshake envelope on a lane".into()));
        }
        other => handler.deliver_envelope(conn, other),
    };
    Ok(delivery)
}

/// Waits for a reply slot on the lane; this is what bounds a peer's outstanding asks.
async fn reserve_reply(
    conn: &Connection,
    lane: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    conn.inner.reply_slots[lane]
        .clone()
        .acquire_owned()
        .await
        .ok()
}

/// A frame's envelopes go straight into the reader's queue, stamped with when they were
/// decoded and the reader's wait count (one move per envelope, not two through a vector).
struct Held<'a> {
    q: &'a mut VecDeque<(Envelope, Instant, u64)>,
    now: Instant,
    waits: u64,
}

impl EnvelopeSink for Held<'_> {
    fn reserve(&mut self, additional: usize) {
        self.q.reserve(additional);
    }
    fn push(&mut self, env: Envelope) {
        self.q.push_back((env, self.now, self.waits));
    }
}

/// [`Held`], but each envelope is dispatched at once while nothing is held or pending (see
/// `LaneReader::decode_frame`).
struct Inline<'a> {
    held: Held<'a>,
    conn: &'a Connection,
    handler: &'a dyn Handler,
    lane: usize,
    inbox: &'a Arc<Inbox>,
    pending: &'a mut Option<crate::Delivery>,
    /// Why dispatching inline stopped the lane (as `dispatch` reports it); the frame's
    /// decode is then treated as failed.
    stop: &'a mut Option<Stop>,
}

impl EnvelopeSink for Inline<'_> {
    fn reserve(&mut self, _additional: usize) {
        // Most frames are delivered without the queue; it grows if it is needed after all.
    }
    fn push(&mut self, env: Envelope) {
        if self.pending.is_some() || !self.held.q.is_empty() || self.stop.is_some() {
            return self.held.push(env);
        }
        let slot = if is_ask(&env) {
            // No free reply slot: the ask waits for one in order, from the queue.
            match self.conn.inner.reply_slots[self.lane]
                .clone()
                .try_acquire_owned()
            {
                Ok(slot) => Some(slot),
                Err(_) => return self.held.push(env),
            }
        } else {
            None
        };
        match dispatch_now(self.conn, self.handler, env, self.lane, self.inbox, slot) {
            Ok(d) => *self.pending = d,
            Err(reason) => *self.stop = Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use cortex_protocol::{
        Ask, Envelope, Forward, ForwardBody, MessageName, NodeId, RequestId, RequestMeta, Target,
        Tell,
    };

    use super::spend_budget;

    fn meta(budget_us: u64) -> RequestMeta {
        RequestMeta {
            budget_us,
            trace: Default::default(),
        }
    }

    fn ask(budget_us: u64) -> Ask {
        Ask {
            request: RequestId(1),
            target: Target::Virtual("counter/a".parse().unwrap()),
            message: MessageName::new("m").unwrap(),
            payload: Bytes::new(),
            meta: meta(budget_us),
            epoch: 0,
            idempotency_key: None,
        }
    }

    fn budget(env: &Envelope) -> u64 {
        match env {
            Envelope::Ask(a) => a.meta.budget_us,
            Envelope::Tell(t) => t.meta.budget_us,
            Envelope::Forward(f) => match &f.body {
                ForwardBody::Ask(a) => a.meta.budget_us,
                ForwardBody::Tell(t) => t.meta.budget_us,
            },
            _ => unreachable!(),
        }
    }

    #[test]
    fn time_held_in_the_lane_is_charged_to_the_request_budget() {
        let mut env = Envelope::Ask(ask(500_000));
        spend_budget(&mut env, Duration::from_millis(200));
        assert_eq!(budget(&env), 300_000);
        // Exhausted: 1 us left, never 0 ("no deadline").
        spend_budget(&mut env, Duration::from_secs(3));
        assert_eq!(budget(&env), 1);
        let mut fwd = Envelope::Forward(Forward {
            hops: 1,
            origin: NodeId::new("n1", 1).unwrap(),
            body: ForwardBody::Ask(ask(1_000)),
        });
        spend_budget(&mut fwd, Duration::from_millis(5));
        assert_eq!(budget(&fwd), 1);
        // A tell without a deadline keeps none.
        let mut tell = Envelope::Tell(Tell {
            target: Target::Virtual("counter/a".parse().unwrap()),
            message: MessageName::new("m").unwrap(),
            payload: Bytes::new(),
            meta: meta(0),
            epoch: 0,
        });
        spend_budget(&mut tell, Duration::from_secs(1));
        assert_eq!(budget(&tell), 0);
    }
}
