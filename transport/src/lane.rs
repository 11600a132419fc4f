//! Lane tasks: a writer per outbound lane that batches what its queues hold, and a reader
//! per inbound lane that decodes frames and dispatches envelopes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use cortex_protocol::{
    BatchWriter, Envelope, ForwardBody, Frame, FrameDecoder, Pong, ReplyResult, encode_with_limit,
};
use quinn::{RecvStream, SendStream};
use tokio::task::JoinSet;

use crate::connection::{Connection, LaneQueues};
use crate::error::TransportError;
use crate::handler::{Handler, Responder};
use crate::handshake::code;

/// Envelopes whose encoding may be large go in a frame of their own, so that a batch of
/// small entries can never grow past the frame limit.
fn maybe_large(env: &Envelope) -> bool {
    const SMALL: usize = 1024;
    match env {
        Envelope::Tell(t) => t.payload.len() > SMALL,
        Envelope::Ask(a) => a.payload.len() > SMALL,
        Envelope::Reply(r) => match &r.result {
            ReplyResult::Ok { payload, .. } => payload.len() > SMALL,
            ReplyResult::Err(e) => e.detail.len() > SMALL,
        },
        Envelope::Forward(f) => match &f.body {
            ForwardBody::Tell(t) => t.payload.len() > SMALL,
            ForwardBody::Ask(a) => a.payload.len() > SMALL,
        },
        Envelope::Publish(p) => p.payload.len() > SMALL,
        Envelope::Delivery(d) => d.publish.payload.len() > SMALL,
        Envelope::Ping(_)
        | Envelope::Pong(_)
        | Envelope::Subscribe(_)
        | Envelope::Unsubscribe(_) => false,
        _ => true,
    }
}

pub(crate) struct Writer {
    pub(crate) stream: SendStream,
    pub(crate) queues: LaneQueues,
    pub(crate) conn: Connection,
    pub(crate) batch_limit: usize,
    pub(crate) max_frame: usize,
}

struct Encoder<'a> {
    conn: &'a Connection,
    batch: BatchWriter,
    batching: bool,
    batch_limit: usize,
    max_frame: usize,
    out: Vec<u8>,
    frames: u64,
    envelopes: u64,
}

impl Encoder<'_> {
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        match self.batch.finish_with_limit(&mut self.out, self.max_frame) {
            Ok(()) => {
                self.frames += 1;
                self.envelopes += n;
            }
            // Entries are small by construction (see maybe_large), so this means a bug.
            Err(e) => {
                tracing::error!(peer = %self.conn.inner.peer_label, "dropped a batch of {n}: {e}")
            }
        }
    }

    fn push(&mut self, env: Envelope) {
        if self.batching && !maybe_large(&env) {
            if let Err(e) = self.batch.push(&env) {
                self.fail(env, e.to_string());
            } else if self.batch.encoded_len() >= self.batch_limit {
                self.flush_batch();
            }
            return;
        }
        self.flush_batch();
        match encode_with_limit(&env, &mut self.out, self.max_frame) {
            Ok(()) => {
                self.frames += 1;
                self.envelopes += 1;
            }
            Err(e) => self.fail(env, e.to_string()),
        }
    }

    /// An envelope that cannot be encoded: fail its ask, or log the lost tell.
    fn fail(&self, env: Envelope, reason: String) {
        let request = match &env {
            Envelope::Ask(a) => Some(a.request),
            Envelope::Forward(f) => match &f.body {
                ForwardBody::Ask(a) => Some(a.request),
                ForwardBody::Tell(_) => None,
            },
            _ => None,
        };
        let peer = self.conn.inner.peer_label.clone();
        match request {
            Some(id) => {
                self.conn
                    .complete(id.0, Err(TransportError::Encode { peer, reason }));
            }
            None => tracing::warn!(%peer, "dropped an envelope that cannot be sent: {reason}"),
        }
    }
}

impl Writer {
    /// Runs until the queues close or the stream fails (the connection is going away).
    pub(crate) async fn run(self) {
        let Writer {
            mut stream,
            mut queues,
            conn,
            batch_limit,
            max_frame,
        } = self;
        let mut enc = Encoder {
            conn: &conn,
            batch: BatchWriter::new(),
            batching: conn.features() & cortex_protocol::FEATURE_BATCH != 0,
            batch_limit,
            max_frame,
            out: Vec::with_capacity(batch_limit + 4096),
            frames: 0,
            envelopes: 0,
        };
        loop {
            // Replies first: they unblock a peer's waiting ask.
            let first = tokio::select! {
                biased;
                Some(r) = queues.replies.recv() => r,
                Some(d) = queues.data.recv() => d,
                else => break,
            };
            enc.push(first);
            // Natural batching: take whatever is queued right now, up to the size limit;
            // never wait for more.
            while enc.out.len() < batch_limit {
                let next = match queues.replies.try_recv() {
                    Ok(r) => r,
                    Err(_) => match queues.data.try_recv() {
                        Ok(d) => d,
                        Err(_) => break,
                    },
                };
                enc.push(next);
            }
            enc.flush_batch();
            if enc.out.is_empty() {
                continue;
            }
            if stream.write_all(&enc.out).await.is_err() {
                break;
            }
            let c = &conn.inner.counters;
            c.bytes_sent
                .fetch_add(enc.out.len() as u64, Ordering::Relaxed);
            c.frames_sent.fetch_add(enc.frames, Ordering::Relaxed);
            c.envelopes_sent.fetch_add(enc.envelopes, Ordering::Relaxed);
            enc.out.clear();
            enc.frames = 0;
            enc.envelopes = 0;
        }
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
        // Lane numbers are below MAX_LANES, checked just above.
        let lane = index as usize;
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
            let responder = Responder::new(slot, ask.request, conn.inner.clone());
            handler.on_ask(conn, ask, responder);
        }
        Envelope::Forward(f) => match f.body {
            ForwardBody::Ask(ask) => {
                let Some(slot) = reserve_reply(conn, lane).await else {
                    return Ok(());
                };
                let responder = Responder::new(slot, ask.request, conn.inner.clone());
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
            let tx = &conn.inner.reply_tx[lane % conn.lanes()];
            // A pong is best effort: a full reply queue means the peer will ping again.
            let _ = tx.try_send(Envelope::Pong(Pong { nonce: p.nonce }));
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

/// Waits for room in the lane's reply queue; this is what bounds a peer's outstanding asks.
async fn reserve_reply(
    conn: &Connection,
    lane: usize,
) -> Option<tokio::sync::mpsc::OwnedPermit<Envelope>> {
    let tx = conn.inner.reply_tx[lane % conn.lanes()].clone();
    tx.reserve_owned().await.ok()
}
