//! The connection's writer: one task that takes what every lane's outbox holds and writes
//! it to that lane's stream.
//!
//! One task for all lanes, not one per lane, because of packets: quinn sends when its
//! connection driver runs, and a write wakes the driver right after the writing task. Lanes
//! written by separate tasks (spread over the runtime's workers) each woke the driver, and a
//! burst of asks or replies to distinct actors (hence lanes) left as about one packet per
//! envelope; a packet costs both processes far more CPU (syscalls, crypto, acks) than the
//! envelopes in it. Written in one poll, the burst leaves in one packet.
//!
//! Lanes stay independent: each stream is written with `poll_write`, so a lane blocked by
//! flow control (its reader on the peer is holding back for a slow actor) waits on its own
//! while the others keep being written.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use quinn::SendStream;

use crate::connection::Connection;
use crate::outbox::{Take, Taken};

/// One lane's stream and the buffer being written to it.
struct Lane {
    stream: SendStream,
    buf: Vec<u8>,
    /// How much of `buf` quinn has taken.
    at: usize,
    /// What `buf` holds, accounted once it is all written.
    taken: Option<Taken>,
    state: LaneState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LaneState {
    Open,
    /// Graceful shutdown: everything queued was written; the stream is to be finished.
    Finished,
    /// Closed, or its stream failed: nothing more is written.
    Dead,
}

pub(crate) struct Writer {
    pub(crate) streams: Vec<SendStream>,
    pub(crate) conn: Connection,
}

impl Writer {
    /// Writes whatever the lanes' outboxes hold until every lane is closed or finished (the
    /// connection is going away).
    pub(crate) async fn run(self) {
        let Writer { streams, conn } = self;
        let mut lanes: Vec<Lane> = streams
            .into_iter()
            .map(|stream| Lane {
                stream,
                buf: Vec::new(),
                at: 0,
                taken: None,
                state: LaneState::Open,
            })
            .collect();
        loop {
            let work = poll_fn(|cx| {
                conn.inner.writer.register(cx.waker());
                let mut open = false;
                for (lane, outbox) in lanes.iter().zip(&conn.inner.outboxes) {
                    if lane.state == LaneState::Open {
                        if outbox.has_work() {
                            // Unregistered for the yield below: a push must not wake this
                            // task before the yield's own turn comes (the drain after it
                            // takes every push made until then).
                            drop(conn.inner.writer.take());
                            return Poll::Ready(true);
                        }
                        open = true;
                    }
                }
                if open {
                    Poll::Pending
                } else {
                    Poll::Ready(false)
                }
            })
            .await;
            if !work {
                break;
            }
            // Let the tasks this worker can run now push first (the other asks of a burst,
            // the replies of the actors one packet woke): they leave in the same packet. A
            // lone envelope waits only for one turn of the scheduler.
            tokio::task::yield_now().await;
            poll_fn(|cx| drain(&conn, &mut lanes, cx)).await;
        }
        // Graceful shutdown: tell the peer each finished lane is done and wait until it has
        // acknowledged every byte (the caller bounds this).
        for lane in &mut lanes {
            if lane.state == LaneState::Finished && lane.stream.finish().is_ok() {
                let _ = lane.stream.stopped().await;
            }
        }
        for o in &conn.inner.outboxes {
            o.close();
        }
    }
}

/// Takes each lane's queued bytes (once per call) and writes as much as quinn accepts.
/// Ready once everything taken is written; pending while a lane is blocked, with this task
/// woken when that lane can be written or any outbox gets more.
fn drain(conn: &Connection, lanes: &mut [Lane], cx: &mut Context<'_>) -> Poll<()> {
    conn.inner.writer.register(cx.waker());
    let mut blocked = false;
    for (lane, outbox) in lanes.iter_mut().zip(&conn.inner.outboxes) {
        if lane.state != LaneState::Open {
            continue;
        }
        if lane.at == lane.buf.len() {
            lane.buf.clear();
            lane.at = 0;
            match outbox.try_take(&mut lane.buf) {
                Take::Took(t) => lane.taken = Some(t),
                Take::Empty => continue,
                Take::Closed => {
                    lane.state = LaneState::Dead;
                    continue;
                }
                Take::Finished => {
                    lane.state = LaneState::Finished;
                    continue;
                }
            }
        }
        while lane.at < lane.buf.len() {
            match Pin::new(&mut lane.stream).poll_write(cx, &lane.buf[lane.at..]) {
                Poll::Ready(Ok(n)) => lane.at += n,
                Poll::Ready(Err(_)) => {
                    // The connection is going away (its driver reports why); senders on
                    // this lane fail from now on.
                    lane.state = LaneState::Dead;
                    lane.taken = None;
                    outbox.close();
                    break;
                }
                Poll::Pending => {
                    blocked = true;
                    break;
                }
            }
        }
        if lane.at == lane.buf.len()
            && let Some(taken) = lane.taken.take()
        {
            let c = &conn.inner.counters;
            c.bytes_sent
                .fetch_add(lane.buf.len() as u64, Ordering::Relaxed);
            c.frames_sent.fetch_add(taken.frames, Ordering::Relaxed);
            c.envelopes_sent
                .fetch_add(taken.envelopes, Ordering::Relaxed);
            // Reply slots free up only now, so queued replies stay bounded.
            drop(taken.reply_slots);
        }
    }
    if blocked {
        Poll::Pending
    } else {
        Poll::Ready(())
    }
}
