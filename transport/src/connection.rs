//! One established connection to a peer: lanes, asks with reply correlation, counters.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cortex_protocol::{
    Ask, Envelope, Forward, ForwardBody, NodeId, PeerIdentity, ReplyResult, RequestId, Target,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{TransportError, TryQueueError, TrySendError};
use crate::handshake::code;
use crate::outbox::{Outbox, PushError};

/// The lane key for a target: tells and asks to one actor share a lane, so they stay in
/// order; distinct actors spread over lanes.
///
/// ```
/// use cortex_transport::lane_key;
/// use cortex_protocol::Target;
/// let a = Target::Virtual("order/1".parse().unwrap());
/// assert_eq!(lane_key(&a), lane_key(&a.clone()));
/// ```
pub fn lane_key(target: &Target) -> u64 {
    // A fixed seed: stable within a build, which is all a sender needs (only it picks the
    // lane). foldhash, not SipHash: this runs for every message sent (1.3% of a sending
    // node's samples with SipHash).
    foldhash::fast::FixedState::default().hash_one(target)
}

/// Traffic counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Frames written (a batch counts once).
    pub frames_sent: u64,
    /// Envelopes written.
    pub envelopes_sent: u64,
    /// Bytes written to lanes.
    pub bytes_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Envelopes read.
    pub envelopes_received: u64,
    /// Bytes read from lanes.
    pub bytes_received: u64,
    /// Asks waiting for replies now.
    pub pending_asks: usize,
    /// QUIC packets sent on this connection and declared lost (quinn's path statistics).
    pub lost_packets: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_sent: AtomicU64,
    pub(crate) envelopes_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) envelopes_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
}

type ReplySlot = oneshot::Sender<Result<ReplyResult, TransportError>>;

#[derive(Default)]
struct Pending {
    map: HashMap<u64, ReplySlot>,
    /// Set once the connection is gone: new asks fail at once.
    dead: Option<String>,
}

pub(crate) struct ConnInner {
    pub(crate) quinn: quinn::Connection,
    pub(crate) peer: PeerIdentity,
    pub(crate) peer_label: String,
    pub(crate) dialed_by_us: bool,
    pub(crate) version: u8,
    pub(crate) features: u64,
    /// One per lane, then the reply lane's when there is one (`reply_lane`).
    pub(crate) outboxes: Vec<Outbox>,
    /// Lanes per direction (the reply lane not counted).
    pub(crate) lanes: usize,
    /// Replies go on a stream of their own (both sides announced `FEATURE_REPLY_LANE`).
    pub(crate) reply_lane: bool,
    /// The connection's writer task, woken by every outbox.
    pub(crate) writer: Arc<futures::task::AtomicWaker>,
    /// Per lane, slots for replies to inbound asks (bounds a peer's outstanding asks).
    pub(crate) reply_slots: Vec<Arc<Semaphore>>,
    pending: Mutex<Pending>,
    next_request: AtomicU64,
    max_pending: usize,
    pub(crate) counters: Counters,
    pub(crate) superseded: OnceLock<Connection>,
    pub(crate) superseded_notify: Notify,
    pub(crate) closed: CancellationToken,
    /// Set with `closed`: a lock-free check for the per-message paths.
    closed_flag: AtomicBool,
    close_reason: OnceLock<String>,
    /// Inbound asks whose [`crate::Responder`] has not answered yet.
    pub(crate) outstanding: AtomicUsize,
    pub(crate) seq: u64,
}

/// An established, handshaken connection to one peer. Cheap to clone; all clones share
/// the connection.
///
/// Sending encodes into bounded per-lane buffers that the connection's writer task drains
/// and batches; QUIC flow control makes a slow peer fill the buffer and `send` wait.
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<ConnInner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("peer", &self.inner.peer)
            .field("remote", &self.remote_addr())
            .finish()
    }
}

fn describe_peer(peer: &PeerIdentity, addr: SocketAddr) -> String {
    match peer {
        PeerIdentity::Node(n) => format!("node {n} at {addr}"),
        PeerIdentity::Client { name } => format!("client '{name}' at {addr}"),
    }
}

fn check_sendable(env: &Envelope) -> Result<(), TransportError> {
    match env {
        Envelope::Hello(_) => Err(TransportError::NotSendable("Hello")),
        Envelope::Welcome(_) => Err(TransportError::NotSendable("Welcome")),
        Envelope::Error(_) => Err(TransportError::NotSendable("Error")),
        _ => Ok(()),
    }
}

pub(crate) struct NewConn {
    pub(crate) quinn: quinn::Connection,
    pub(crate) peer: PeerIdentity,
    pub(crate) dialed_by_us: bool,
    pub(crate) version: u8,
    pub(crate) features: u64,
    pub(crate) max_pending: usize,
    pub(crate) seq: u64,
}

/// Lane sizing for a new connection.
pub(crate) struct LaneSpec {
    pub(crate) lanes: usize,
    pub(crate) queue: usize,
    pub(crate) reply_queue: usize,
    pub(crate) batch_limit: usize,
    pub(crate) max_frame: usize,
}

impl ConnInner {
    /// Where the answer to an ask received on `lane` is written: the reply lane when the
    /// connection has one, else the lane of the same number.
    ///
    /// The reply lane exists so that replies never wait behind requests: the peer reads it
    /// with a reader that only completes its pending asks, so a lane of theirs held up by a
    /// slow delivery holds up no answer. It also puts a burst's replies on one stream, which
    /// the asker reads with one task wake instead of one per lane they came in on (measured:
    /// CPU per ask round trip at 10k asks/s, both processes, median of six pairs 49 -> 37.5
    /// us; BENCHMARKS.md, "replies on a reply lane").
    pub(crate) fn reply_outbox(&self, lane: usize) -> &Outbox {
        let i = if self.reply_lane { self.lanes } else { lane };
        &self.outboxes[i]
    }
}

impl Connection {
    pub(crate) fn new(n: NewConn, spec: &LaneSpec) -> Self {
        let batching = n.features & cortex_protocol::FEATURE_BATCH != 0;
        let writer = Arc::new(futures::task::AtomicWaker::new());
        let reply_lane = n.features & cortex_protocol::FEATURE_REPLY_LANE != 0;
        let outboxes = (0..spec.lanes + usize::from(reply_lane))
            .map(|_| {
                Outbox::new(
                    spec.queue,
                    batching,
                    spec.batch_limit,
                    spec.max_frame,
                    writer.clone(),
                )
            })
            .collect();
        let reply_slots = (0..spec.lanes)
            .map(|_| Arc::new(Semaphore::new(spec.reply_queue)))
            .collect();
        let peer_label = describe_peer(&n.peer, n.quinn.remote_address());
        let inner = ConnInner {
            quinn: n.quinn,
            peer: n.peer,
            peer_label,
            dialed_by_us: n.dialed_by_us,
            version: n.version,
            features: n.features,
            outboxes,
            lanes: spec.lanes,
            reply_lane,
            writer,
            reply_slots,
            pending: Mutex::new(Pending::default()),
            next_request: AtomicU64::new(1),
            max_pending: n.max_pending,
            counters: Counters::default(),
            superseded: OnceLock::new(),
            superseded_notify: Notify::new(),
            closed: CancellationToken::new(),
            closed_flag: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            outstanding: AtomicUsize::new(0),
            seq: n.seq,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Who is on the other end (checked during the handshake).
    pub fn peer(&self) -> &PeerIdentity {
        &self.inner.peer
    }

    /// The peer's node id, when the peer is a node.
    pub fn peer_node(&self) -> Option<&NodeId> {
        match &self.inner.peer {
            PeerIdentity::Node(n) => Some(n),
            _ => None,
        }
    }

    /// The peer's UDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.quinn.remote_address()
    }

    /// A number identifying this connection within the process.
    pub fn id(&self) -> u64 {
        self.inner.quinn.stable_id() as u64
    }

    /// The protocol version agreed in the handshake.
    pub fn version(&self) -> u8 {
        self.inner.version
    }

    /// Feature bits both sides support.
    pub fn features(&self) -> u64 {
        self.inner.features
    }

    /// True when this side dialed the connection.
    pub fn dialed_by_us(&self) -> bool {
        self.inner.dialed_by_us
    }

    /// Lanes per direction.
    pub fn lanes(&self) -> usize {
        self.inner.lanes
    }

    /// Smoothed round-trip time as QUIC measures it.
    pub fn rtt(&self) -> Duration {
        self.inner.quinn.rtt()
    }

    /// Traffic counters.
    pub fn stats(&self) -> ConnectionStats {
        let c = &self.inner.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStats {
            frames_sent: r(&c.frames_sent),
            envelopes_sent: r(&c.envelopes_sent),
            bytes_sent: r(&c.bytes_sent),
            frames_received: r(&c.frames_received),
            envelopes_received: r(&c.envelopes_received),
            bytes_received: r(&c.bytes_received),
            pending_asks: self.inner.pending.lock().map.len(),
            lost_packets: self.inner.quinn.stats().path.lost_packets,
        }
    }

    /// The connection that replaced this one (simultaneous-dial tie-break or a newer
    /// incarnation of the peer). Sends and asks on this handle go there transparently.
    pub fn superseded_by(&self) -> Option<Connection> {
        self.inner.superseded.get().cloned()
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed_flag.load(Ordering::Acquire) || self.inner.quinn.close_reason().is_some()
    }

    /// [`Connection::is_closed`] without asking quinn: true once this connection's driver
    /// saw it close.
    pub(crate) fn marked_closed(&self) -> bool {
        self.inner.closed_flag.load(Ordering::Acquire)
    }

    /// Closes the connection now; queued envelopes may be lost, pending asks fail.
    pub fn close(&self, reason: &str) {
        self.close_with(code::NORMAL, reason.as_bytes());
    }

    /// Closes with a QUIC close code and marks the connection closed at once, not when its
    /// driver gets to it: `Endpoint::cached_connection` must not hand out a connection this
    /// side closed (the node closes those of departed members and dials their new process).
    pub(crate) fn close_with(&self, code: quinn::VarInt, reason: &[u8]) {
        self.inner.quinn.close(code, reason);
        self.inner.closed_flag.store(true, Ordering::Release);
    }

    /// Waits until the connection is closed and returns why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> String {
        self.inner.closed.cancelled().await;
        self.inner
            .close_reason
            .get()
            .cloned()
            .unwrap_or_else(|| "closed".into())
    }

    fn lane(&self, lane_key: u64) -> usize {
        // lanes >= 1 is validated at bind; the cast is lossless because lanes <= 64.
        (lane_key % self.inner.lanes as u64) as usize
    }

    fn lost(&self) -> TransportError {
        TransportError::ConnectionLost {
            peer: self.inner.peer_label.clone(),
            reason: self
                .inner
                .close_reason
                .get()
                .cloned()
                .or_else(|| self.inner.quinn.close_reason().map(|e| e.to_string()))
                .unwrap_or_else(|| "closed".into()),
        }
    }

    /// Queues `env` on lane `lane_key % lanes`, waiting while the lane's queue is full.
    ///
    /// Tells are at-most-once: `Ok` means queued, not delivered.
    ///
    /// # Errors
    /// [`TransportError::ConnectionLost`] once the connection is gone;
    /// [`TransportError::NotSendable`] for handshake envelopes.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, the envelope was not queued.
    pub async fn send(&self, env: Envelope, lane_key: u64) -> Result<(), TransportError> {
        if let Some(w) = self.inner.superseded.get() {
            return Box::pin(w.send(env, lane_key)).await;
        }
        check_sendable(&env)?;
        let outbox = &self.inner.outboxes[self.lane(lane_key)];
        let units = outbox.units(&env);
        outbox.reserve(units).await.map_err(|_| self.lost())?;
        self.push_reserved(outbox, &env, units)
    }

    fn push_reserved(
        &self,
        outbox: &Outbox,
        env: &Envelope,
        units: u32,
    ) -> Result<(), TransportError> {
        outbox.push(env, units, None).map_err(|e| {
            outbox.unreserve(units);
            match e {
                PushError::Closed => self.lost(),
                PushError::Encode(reason) => TransportError::Encode {
                    peer: self.inner.peer_label.clone(),
                    reason,
                },
            }
        })
    }

    /// Queues `env` if its lane has room, without waiting.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], giving the envelope back.
    /// Handshake envelopes are refused as `Closed`.
    pub fn try_send(&self, env: Envelope, lane_key: u64) -> Result<(), TrySendError> {
        self.try_queue(&env, lane_key).map_err(|e| match e {
            TryQueueError::Full => TrySendError::Full(Box::new(env)),
            TryQueueError::Closed => TrySendError::Closed(Box::new(env)),
        })
    }

    /// [`Connection::try_send`] of a borrowed envelope: it is encoded into the lane's queue,
    /// so the caller keeps it (to retry with [`Connection::send`], say) and never moves it.
    ///
    /// # Errors
    /// [`TryQueueError::Full`] or [`TryQueueError::Closed`]; nothing was queued.
    pub fn try_queue(&self, env: &Envelope, lane_key: u64) -> Result<(), TryQueueError> {
        if let Some(w) = self.inner.superseded.get() {
            return w.try_queue(env, lane_key);
        }
        if check_sendable(env).is_err() {
            return Err(TryQueueError::Closed);
        }
        let outbox = &self.inner.outboxes[self.lane(lane_key)];
        let units = outbox.units(env);
        match outbox.try_reserve(units) {
            Ok(true) => {}
            Ok(false) => return Err(TryQueueError::Full),
            Err(_) => return Err(TryQueueError::Closed),
        }
        match outbox.push(env, units, None) {
            Ok(()) => Ok(()),
            Err(_) => {
                outbox.unreserve(units);
                Err(TryQueueError::Closed)
            }
        }
    }

    /// Sends `ask` on the lane of its target and waits for the reply until `timeout`.
    /// The request id is assigned here; a zero `budget_us` is set from `timeout`.
    ///
    /// # Errors
    /// [`TransportError::AskTimeout`], [`TransportError::ConnectionLost`] (at once when the
    /// connection dies), [`TransportError::TooManyPendingAsks`], [`TransportError::Encode`].
    ///
    /// # Cancel safety
    /// Cancel safe: the pending entry is removed; a late reply is dropped.
    pub fn ask(
        &self,
        ask: Ask,
        timeout: Duration,
    ) -> impl Future<Output = Result<ReplyResult, TransportError>> + Send + '_ {
        // Not an `async fn`: `ask_on`'s future is the whole of it, without a second copy of
        // the `Ask` around it.
        let key = lane_key(&ask.target);
        self.ask_on(ask, key, timeout)
    }

    /// [`Connection::ask`] on an explicit lane key.
    ///
    /// # Errors
    /// As [`Connection::ask`].
    pub async fn ask_on(
        &self,
        ask: Ask,
        lane_key: u64,
        timeout: Duration,
    ) -> Result<ReplyResult, TransportError> {
        if let Some(w) = self.inner.superseded.get() {
            return Box::pin(w.ask_on(ask, lane_key, timeout)).await;
        }
        self.request(lane_key, timeout, |id, budget| {
            let mut ask = ask;
            ask.request = id;
            if ask.meta.budget_us == 0 {
                ask.meta.budget_us = budget;
            }
            Envelope::Ask(ask)
        })
        .await
    }

    /// Forwards an ask to the next hop as a `Forward` envelope and waits for its reply
    /// (the caller answers its own responder with it).
    ///
    /// # Errors
    /// As [`Connection::ask`].
    pub async fn forward_ask(
        &self,
        hops: u8,
        origin: NodeId,
        ask: Ask,
        timeout: Duration,
    ) -> Result<ReplyResult, TransportError> {
        if let Some(w) = self.inner.superseded.get() {
            return Box::pin(w.forward_ask(hops, origin, ask, timeout)).await;
        }
        let key = lane_key(&ask.target);
        self.request(key, timeout, |id, budget| {
            let mut ask = ask;
            ask.request = id;
            if ask.meta.budget_us == 0 {
                ask.meta.budget_us = budget;
            }
            Envelope::Forward(Forward {
                hops,
                origin,
                body: ForwardBody::Ask(ask),
            })
        })
        .await
    }

    async fn request(
        &self,
        lane_key: u64,
        timeout: Duration,
        build: impl FnOnce(RequestId, u64) -> Envelope,
    ) -> Result<ReplyResult, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (id, rx) = self.register_pending()?;
        let guard = PendingGuard { conn: self, id };
        let budget = u64::try_from(timeout.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let env = build(RequestId(id), budget);
        let outbox = &self.inner.outboxes[self.lane(lane_key)];
        let units = outbox.units(&env);
        let timed_out = || TransportError::AskTimeout {
            peer: self.inner.peer_label.clone(),
            request: id,
            after: timeout,
        };
        match tokio::time::timeout_at(deadline, outbox.reserve(units)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(self.lost()),
            Ok(Ok(())) => {}
        }
        self.push_reserved(outbox, &env, units)?;
        let out = match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(self.lost()),
            // tokio's timers fire on millisecond ticks, so a reply can arrive after a finer
            // deadline and before the timer: it is late all the same, and an ask ends by its
            // deadline whatever the tick (a 1 µs timeout is a timeout, not a race).
            Ok(Ok(_)) if tokio::time::Instant::now() > deadline => Err(timed_out()),
            Ok(Ok(r)) => r,
        };
        drop(guard);
        out
    }

    fn register_pending(
        &self,
    ) -> Result<(u64, oneshot::Receiver<Result<ReplyResult, TransportError>>), TransportError> {
        let mut p = self.inner.pending.lock();
        if let Some(reason) = &p.dead {
            return Err(TransportError::ConnectionLost {
                peer: self.inner.peer_label.clone(),
                reason: reason.clone(),
            });
        }
        if p.map.len() >= self.inner.max_pending {
            return Err(TransportError::TooManyPendingAsks {
                peer: self.inner.peer_label.clone(),
                limit: self.inner.max_pending,
            });
        }
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        p.map.insert(id, tx);
        Ok((id, rx))
    }

    /// Completes a pending ask; unknown ids (late replies after a timeout) are dropped.
    pub(crate) fn complete(&self, id: u64, result: Result<ReplyResult, TransportError>) -> bool {
        let slot = self.inner.pending.lock().map.remove(&id);
        match slot {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.inner.pending.lock().map.len()
    }

    /// Marks the connection dead: every pending ask fails now with `reason`.
    pub(crate) fn mark_closed(&self, reason: String) {
        let _ = self.inner.close_reason.set(reason.clone());
        let drained: Vec<ReplySlot> = {
            let mut p = self.inner.pending.lock();
            p.dead = Some(reason.clone());
            p.map.drain().map(|(_, tx)| tx).collect()
        };
        for tx in drained {
            let _ = tx.send(Err(TransportError::ConnectionLost {
                peer: self.inner.peer_label.clone(),
                reason: reason.clone(),
            }));
        }
        for o in &self.inner.outboxes {
            o.close();
        }
        self.inner.closed_flag.store(true, Ordering::Release);
        self.inner.closed.cancel();
    }

    /// Makes `winner` the connection used in place of this one.
    pub(crate) fn supersede(&self, winner: &Connection) {
        if self.inner.superseded.set(winner.clone()).is_ok() {
            self.inner.superseded_notify.notify_one();
        }
    }

    /// Nothing in flight: no pending asks, no unanswered inbound asks, empty queues.
    pub(crate) fn quiescent(&self) -> bool {
        self.pending_count() == 0
            && self.inner.outstanding.load(Ordering::Relaxed) == 0
            && self.quiescent_queues()
    }

    /// Every outbound buffer is empty (writers have taken everything).
    pub(crate) fn quiescent_queues(&self) -> bool {
        self.inner.outboxes.iter().all(Outbox::is_idle)
    }

    pub(crate) fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

struct PendingGuard<'a> {
    conn: &'a Connection,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.inner.pending.lock().map.remove(&self.id);
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Connection>();
};
