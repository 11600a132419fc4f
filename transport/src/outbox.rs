//! The outbound side of one lane: a bounded buffer that senders encode into directly and
//! the connection's writer task takes whole.
//!
//! Senders push under a short lock, encoding on their own thread; small envelopes go into an
//! open [`BatchWriter`] batch that is finished when it reaches the size limit or when the
//! writer comes to take the buffer (whichever is first), so batching adds no latency: a lone
//! envelope is written as soon as the writer is free. The buffer is bounded by a semaphore of
//! "units" (one per envelope, one per KiB for larger ones) that the writer returns when it
//! takes the bytes, which is how QUIC flow control reaches `send`. Every lane of a connection
//! wakes the same writer (one [`AtomicWaker`]).

use std::sync::Arc;

use cortex_protocol::{BatchWriter, Envelope, ForwardBody, ReplyResult, encode_with_limit};
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Envelopes whose encoding may be large go in a frame of their own, so that a batch of
/// small entries can never grow past the frame limit.
const SMALL: usize = 1024;

fn payload_len(env: &Envelope) -> Option<usize> {
    Some(match env {
        Envelope::Tell(t) => t.payload.len(),
        Envelope::Ask(a) => a.payload.len(),
        Envelope::Reply(r) => match &r.result {
            ReplyResult::Ok { payload, .. } => payload.len(),
            ReplyResult::Err(e) => e.detail.len(),
        },
        Envelope::Forward(f) => match &f.body {
            ForwardBody::Tell(t) => t.payload.len(),
            ForwardBody::Ask(a) => a.payload.len(),
        },
        Envelope::Publish(p) => p.payload.len(),
        Envelope::Delivery(d) => d.publish.payload.len(),
        Envelope::Ping(_)
        | Envelope::Pong(_)
        | Envelope::Subscribe(_)
        | Envelope::Unsubscribe(_) => 0,
        // Topology envelopes and anything new: size unknown, treat as large.
        _ => return None,
    })
}

/// Why a push failed.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The lane is closed (the connection is gone).
    Closed,
    /// The envelope cannot be encoded (for example it exceeds max_frame).
    Encode(String),
}

#[derive(Default)]
struct State {
    batch: BatchWriter,
    /// Finished frames waiting for the writer.
    out: Vec<u8>,
    frames: u64,
    envelopes: u64,
    /// Units to return to `space` once the writer takes the buffer.
    units: u32,
    /// Reply slots to release once the writer takes the buffer.
    reply_slots: Vec<OwnedSemaphorePermit>,
    closed: bool,
    /// Graceful shutdown: no new pushes; the writer drains what is queued, then stops.
    finishing: bool,
}

/// What the writer took from the outbox.
pub(crate) struct Taken {
    pub(crate) frames: u64,
    pub(crate) envelopes: u64,
    pub(crate) reply_slots: Vec<OwnedSemaphorePermit>,
}

/// What [`Outbox::try_take`] found.
pub(crate) enum Take {
    /// Bytes were swapped into the caller's buffer.
    Took(Taken),
    /// Nothing queued now.
    Empty,
    /// Closed: nothing more will be written.
    Closed,
    /// Graceful shutdown and everything queued was taken: finish the stream.
    Finished,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The connection's writer task.
    writer: Arc<AtomicWaker>,
    space: Semaphore,
    capacity: u32,
    batching: bool,
    batch_limit: usize,
    max_frame: usize,
}

impl Outbox {
    pub(crate) fn new(
        capacity: usize,
        batching: bool,
        batch_limit: usize,
        max_frame: usize,
        writer: Arc<AtomicWaker>,
    ) -> Self {
        let capacity = u32::try_from(capacity.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            state: Mutex::new(State::default()),
            writer,
            space: Semaphore::new(capacity as usize),
            capacity,
            batching,
            batch_limit,
            max_frame,
        }
    }

    /// Queue budget an envelope takes: one unit, or one per KiB of payload for larger ones,
    /// never more than the whole budget (a huge envelope waits for an empty lane).
    pub(crate) fn units(&self, env: &Envelope) -> u32 {
        let kib = payload_len(env).map_or(64, |l| l / 1024);
        u32::try_from(1 + kib)
            .unwrap_or(u32::MAX)
            .min(self.capacity)
    }

    /// Waits for room for `units`.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is reserved unless it returns `Ok`.
    pub(crate) async fn reserve(&self, units: u32) -> Result<(), PushError> {
        let permit = self
            .space
            .acquire_many(units)
            .await
            .map_err(|_| PushError::Closed)?;
        // The writer gives the units back (add_permits) when it takes the encoded bytes.
        permit.forget();
        Ok(())
    }

    /// Takes room for `units` if there is some now; `Ok(false)` when full.
    pub(crate) fn try_reserve(&self, units: u32) -> Result<bool, PushError> {
        match self.space.try_acquire_many(units) {
            Ok(p) => {
                p.forget();
                Ok(true)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(false),
            Err(tokio::sync::TryAcquireError::Closed) => Err(PushError::Closed),
        }
    }

    /// Gives back room reserved for an envelope that was not pushed.
    pub(crate) fn unreserve(&self, units: u32) {
        self.space.add_permits(units as usize);
    }

    /// Encodes `env` into the buffer, using `units` reserved before (or a reply slot).
    pub(crate) fn push(
        &self,
        env: &Envelope,
        units: u32,
        reply_slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), PushError> {
        let was_idle = {
            let mut st = self.state.lock();
            if st.closed || st.finishing {
                return Err(PushError::Closed);
            }
            // The writer takes everything an outbox holds at once, so only the push that
            // finds it empty needs to wake it: a later one finds its bytes taken with the
            // first's (two atomic operations less per envelope in a stream of tells).
            let was_idle = st.out.is_empty() && st.batch.is_empty();
            let small = payload_len(env).is_some_and(|l| l <= SMALL);
            if self.batching && small {
                st.batch
                    .push(env)
                    .map_err(|e| PushError::Encode(e.to_string()))?;
                if st.batch.encoded_len() >= self.batch_limit {
                    Self::finish_batch(&mut st, self.max_frame);
                }
            } else {
                Self::finish_batch(&mut st, self.max_frame);
                encode_with_limit(env, &mut st.out, self.max_frame)
                    .map_err(|e| PushError::Encode(e.to_string()))?;
                st.frames += 1;
                st.envelopes += 1;
            }
            st.units += units;
            st.reply_slots.extend(reply_slot);
            was_idle
        };
        if was_idle {
            self.writer.wake();
        }
        Ok(())
    }

    fn finish_batch(st: &mut State, max_frame: usize) {
        if st.batch.is_empty() {
            return;
        }
        let n = st.batch.len() as u64;
        let State { batch, out, .. } = st;
        match batch.finish_with_limit(out, max_frame) {
            Ok(()) => {
                st.frames += 1;
                st.envelopes += n;
            }
            // Entries are at most ~2 KiB and batches close at batch_limit <= max_frame / 2,
            // so this cannot happen; log rather than panic if it ever does.
            Err(e) => tracing::error!("dropped a batch of {n} envelopes: {e}"),
        }
    }

    /// True when the writer has something to do here: bytes to take, or a close or
    /// graceful finish to act on.
    pub(crate) fn has_work(&self) -> bool {
        let st = self.state.lock();
        st.closed || st.finishing || !st.out.is_empty() || !st.batch.is_empty()
    }

    /// Swaps whatever is queued into `buf` (which must be empty), without waiting.
    pub(crate) fn try_take(&self, buf: &mut Vec<u8>) -> Take {
        let mut st = self.state.lock();
        if st.closed {
            return Take::Closed;
        }
        if st.out.is_empty() && st.batch.is_empty() {
            return if st.finishing {
                Take::Finished
            } else {
                Take::Empty
            };
        }
        Self::finish_batch(&mut st, self.max_frame);
        std::mem::swap(&mut st.out, buf);
        let taken = Taken {
            frames: std::mem::take(&mut st.frames),
            envelopes: std::mem::take(&mut st.envelopes),
            reply_slots: std::mem::take(&mut st.reply_slots),
        };
        let units = std::mem::take(&mut st.units);
        drop(st);
        self.space.add_permits(units as usize);
        Take::Took(taken)
    }

    /// Starts a graceful shutdown: new pushes fail, the writer drains what is queued and
    /// then finishes its stream.
    pub(crate) fn finish(&self) {
        self.state.lock().finishing = true;
        self.space.close();
        self.writer.wake();
    }

    /// Closes the outbox: waiting and future senders fail, queued bytes are dropped.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.out = Vec::new();
        st.batch = BatchWriter::new();
        st.reply_slots.clear();
        drop(st);
        self.space.close();
        self.writer.wake();
    }

    /// True when nothing waits to be written.
    pub(crate) fn is_idle(&self) -> bool {
        let st = self.state.lock();
        st.out.is_empty() && st.batch.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_protocol::{Frame, FrameDecoder, MessageName, RequestMeta, Target, Tell};

    fn tell(len: usize) -> Envelope {
        Envelope::Tell(Tell {
            target: Target::Virtual("k/1".parse().unwrap()),
            message: MessageName::new("m").unwrap(),
            payload: vec![1u8; len].into(),
            meta: RequestMeta::default(),
            epoch: 0,
        })
    }

    fn frames(buf: &[u8]) -> Vec<Frame> {
        let dec = FrameDecoder::default();
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((f, used)) = dec.decode(&buf[at..]).unwrap() {
            out.push(f);
            at += used;
        }
        assert_eq!(at, buf.len());
        out
    }

    #[tokio::test]
    async fn small_envelopes_share_a_batch_and_space_is_bounded() {
        let o = Outbox::new(4, true, 64 * 1024, 1 << 20, Default::default());
        for _ in 0..4 {
            assert!(o.try_reserve(1).unwrap());
            o.push(&tell(10), 1, None).unwrap();
        }
        assert!(!o.try_reserve(1).unwrap(), "budget of 4 is used up");
        let mut buf = Vec::new();
        let Take::Took(taken) = o.try_take(&mut buf) else {
            panic!("four envelopes are queued")
        };
        assert_eq!((taken.frames, taken.envelopes), (1, 4));
        assert!(matches!(&frames(&buf)[..], [Frame::Batch(v)] if v.len() == 4));
        assert!(
            o.try_reserve(4).unwrap(),
            "taking the bytes returns the budget"
        );
        assert!(o.is_idle());
    }

    #[tokio::test]
    async fn large_envelopes_travel_alone_and_in_order() {
        let o = Outbox::new(1024, true, 64 * 1024, 1 << 20, Default::default());
        o.push(&tell(10), 1, None).unwrap();
        o.push(&tell(5000), 5, None).unwrap();
        o.push(&tell(10), 1, None).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(o.try_take(&mut buf), Take::Took(_)));
        let f = frames(&buf);
        assert!(
            matches!(&f[..], [Frame::Batch(a), Frame::Single(_), Frame::Batch(b)] if a.len() == 1 && b.len() == 1)
        );
    }

    #[tokio::test]
    async fn oversize_is_refused_and_close_fails_senders() {
        let o = Outbox::new(8, true, 4096, 8192, Default::default());
        assert!(matches!(
            o.push(&tell(20_000), 1, None),
            Err(PushError::Encode(_))
        ));
        assert!(o.is_idle());
        assert_eq!(o.units(&tell(20_000)), 8, "capped at the whole budget");
        o.close();
        assert!(matches!(o.reserve(1).await, Err(PushError::Closed)));
        assert!(matches!(o.push(&tell(1), 0, None), Err(PushError::Closed)));
        let mut buf = Vec::new();
        assert!(matches!(o.try_take(&mut buf), Take::Closed));
    }
}
