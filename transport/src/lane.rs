//! Lane tasks: a writer per outbound lane that batches what its queues hold, and a reader
//! per inbound lane that decodes frames and dispatches envelopes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use cortex_protocol::{Envelope, ForwardBody, Frame, FrameDecoder, Pong};
use quinn::{RecvStream, SendStream};
use tokio::task::JoinSet;

use crate::connection::Connection;
use crate::handler::{Handler, Responder};
use crate::handshake::code;

pub(crate) struct Writer {
    pub(crate) stream: SendStream,
    pub(crate) conn: Connection,
    pub(crate) lane: usize,
}

impl Writer {
    /// Writes whatever the lane's outbox holds, one buffer at a time, until the outbox
    /// closes or the stream fails (the connection is going away).
    pub(crate) async fn run(self) {
        let Writer {
            mut stream,
            conn,
            lane,
        } = self;
        let outbox = &conn.inner.outboxes[lane];
        let mut buf = Vec::new();
        while let Some(taken) = outbox.take(&mut buf).await {
            if stream.write_all(&buf).await.is_err() {
                break;
            }
            let c = &conn.inner.counters;
            c.bytes_sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
            c.frames_sent.fetch_add(taken.frames, Ordering::Relaxed);
            c.envelopes_sent
                .fetch_add(taken.envelopes, Ordering::Relaxed);
            buf.clear();
            // Reply slots free up only now, so queued replies stay bounded.
            drop(taken.reply_slots);
        }
        if !outbox.is_closed() {
            // Graceful shutdown: everything queued is written; tell the peer the lane is
            // done and wait until it has acknowledged every byte (the caller bounds this).
            if stream.finish().is_ok() {
                let _ = stream.stopped().await;
            }
        }
        outbox.close();
    }
}

/// Accepts the peer's lanes and runs a reader for each; ends when the connection does.
pub(crate) async fn accept_lanes(conn: Connection, handler: Arc<dyn Handler>, max_frame: usize) {
    let mut readers = JoinSet::new();
    loop {
        let recv = match conn.inner.quinn.accept_uni().await {
            Ok(r) => r,
            Err(_) => break,
        };
        let index = recv.id().index();
        if index >= crate::config::MAX_LANES as u64 {
            violation(
                &conn,
                &format!(
                    "peer opened lane {index}; at most {} are allowed",
                    crate::config::MAX_LANES
                ),
            );
            break;
        }
        // Below MAX_LANES (checked above); the peer may run more lanes than we do, and
        // replies go back on our lane of the same number.
        let lane = index as usize % conn.lanes();
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
    conn.inner.quinn.close(code::PROTOCOL_VIOLATION, r);
}

async fn read_lane(
    conn: Connection,
    handler: Arc<dyn Handler>,
    mut recv: RecvStream,
    lane: usize,
    max_frame: usize,
) {
    let dec = FrameDecoder::new(max_frame);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match dec.decode(&buf) {
                Ok(Some((frame, used))) => {
                    buf.advance(used);
                    let c = &conn.inner.counters;
                    c.frames_received.fetch_add(1, Ordering::Relaxed);
                    c.bytes_received.fetch_add(used as u64, Ordering::Relaxed);
                    let envs = match frame {
                        Frame::Single(e) => vec![e],
                        Frame::Batch(v) => v,
                    };
                    c.envelopes_received
                        .fetch_add(envs.len() as u64, Ordering::Relaxed);
                    for env in envs {
                        if let Err(reason) = dispatch(&conn, handler.as_ref(), env, lane).await {
                            violation(&conn, &reason);
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    violation(&conn, &e.to_string());
                    return;
                }
            }
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                if !buf.is_empty() {
                    violation(&conn, "lane ended in the middle of a frame");
                }
                return;
            }
            // The connection is closing; its driver reports why.
            Err(_) => return,
        }
    }
}

async fn dispatch(
    conn: &Connection,
    handler: &dyn Handler,
    env: Envelope,
    lane: usize,
) -> Result<(), String> {
    match env {
        Envelope::Ask(ask) => {
            let Some(slot) = reserve_reply(conn, lane).await else {
                return Ok(());
            };
            let responder = Responder::new(slot, ask.request, lane, conn.inner.clone());
            handler.on_ask(conn, ask, responder);
        }
        Envelope::Forward(f) => match f.body {
            ForwardBody::Ask(ask) => {
                let Some(slot) = reserve_reply(conn, lane).await else {
                    return Ok(());
                };
                let responder = Responder::new(slot, ask.request, lane, conn.inner.clone());
                handler.on_forward_ask(conn, f.hops, f.origin, ask, responder);
            }
            body => handler.on_envelope(
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
        }
        Envelope::Pong(_) => {}
        Envelope::Error(e) => {
            tracing::warn!(peer = %conn.inner.peer_label, code = ?e.code, "peer reported: {}", e.detail);
        }
        Envelope::Hello(_) | Envelope::Welcome(_) => {
            return Err("handshake envelope on a lane".into());
        }
        other => handler.on_envelope(conn, other),
    }
    Ok(())
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
