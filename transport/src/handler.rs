//! Inbound dispatch: the [`Handler`] the endpoint calls, and the [`Responder`] that answers
//! an ask.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cortex_protocol::{
    Ask, Envelope, ErrorCode, NodeId, RemoteError, Reply, ReplyResult, RequestId,
};
use tokio::sync::OwnedSemaphorePermit;

use crate::connection::{ConnInner, Connection};
use crate::later::{Inbox, ReplyFuture};
use crate::outbox::PushError;

/// Work an inbound envelope still needs after its handler returned.
///
/// The lane's reader awaits it before it dispatches the lane's next envelope, so deliveries
/// stay in arrival order per lane, and a delivery that must wait (a full mailbox, an
/// activation, a forward) holds the lane back, and through QUIC flow control its sender,
/// instead of queueing without bound. The future must bound its own wait (a deadline); the
/// reader only keeps answering replies and pings meanwhile.
pub type Delivery = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the transport calls for inbound traffic.
///
/// **Callbacks run on the connection's reader tasks and must not block**: hand work to a
/// mailbox or a task and return. A callback that blocks stalls its lane (and, through QUIC
/// flow control, the sender). Envelopes arrive in order per lane.
///
/// The reader calls the `deliver_*` methods; by default they call the matching `on_*`
/// callback and return `None`. Override them to finish what can be finished inline and
/// return a [`Delivery`] for the rest: the reader awaits it in order, with no task per
/// message.
///
/// ```
/// use cortex_transport::{Connection, Handler, Responder};
/// use cortex_protocol::{Ask, Envelope, ReplyResult};
/// struct Echo;
/// impl Handler for Echo {
///     fn on_envelope(&self, _conn: &Connection, _env: Envelope) {}
///     fn on_ask(&self, _conn: &Connection, ask: Ask, reply: Responder) {
///         reply.send(ReplyResult::Ok { message: ask.message, payload: ask.payload });
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// A connection finished its handshake and is now the one used for its peer. A
    /// connection that loses a simultaneous-dial race is never announced.
    fn on_connection(&self, conn: &Connection) {
        let _ = conn;
    }
    /// A tell, publish, subscription, topology or forwarded-tell envelope arrived.
    fn on_envelope(&self, conn: &Connection, env: Envelope);
    /// An ask arrived; answer through `reply` (dropping it answers `ActorStopped`).
    fn on_ask(&self, conn: &Connection, ask: Ask, reply: Responder);
    /// A forwarded ask arrived (`hops` taken so far, first accepted by `origin`). The
    /// default treats it as a plain ask.
    fn on_forward_ask(
        &self,
        conn: &Connection,
        hops: u8,
        origin: NodeId,
        ask: Ask,
        reply: Responder,
    ) {
        let _ = (hops, origin);
        self.on_ask(conn, ask, reply);
    }
    /// Ordered delivery of what [`Handler::on_envelope`] receives: `Some` work is awaited
    /// by the lane's reader before the lane's next envelope.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cortex_transport::{Connection, Delivery, Handler, Responder};
    /// use cortex_protocol::{Ask, Envelope};
    /// use tokio::sync::mpsc;
    /// /// Tells go to a bounded queue: at once when it has room, else the lane waits for it.
    /// struct Queue(mpsc::Sender<Envelope>);
    /// impl Handler for Queue {
    ///     fn on_envelope(&self, _conn: &Connection, env: Envelope) {
    ///         let _ = self.0.try_send(env);
    ///     }
    ///     fn on_ask(&self, _conn: &Connection, _ask: Ask, _reply: Responder) {}
    ///     fn deliver_envelope(&self, _conn: &Connection, env: Envelope) -> Option<Delivery> {
    ///         match self.0.try_send(env) {
    ///             Err(mpsc::error::TrySendError::Full(env)) => {
    ///                 let tx = self.0.clone();
    ///                 Some(Box::pin(async move {
    ///                     let _ = tx.send_timeout(env, std::time::Duration::from_secs(5)).await;
    ///                 }))
    ///             }
    ///             _ => None,
    ///         }
    ///     }
    /// }
    /// ```
    fn deliver_envelope(&self, conn: &Connection, env: Envelope) -> Option<Delivery> {
        self.on_envelope(conn, env);
        None
    }
    /// Ordered start of an ask: `Some` work is awaited by the lane's reader before the
    /// lane's next envelope, so return it only for the part that must happen in order
    /// (handing the ask to its actor) and answer `reply` later from a task of your own.
    fn deliver_ask(&self, conn: &Connection, ask: Ask, reply: Responder) -> Option<Delivery> {
        self.on_ask(conn, ask, reply);
        None
    }
    /// Ordered start of a forwarded ask; see [`Handler::deliver_ask`].
    fn deliver_forward_ask(
        &self,
        conn: &Connection,
        hops: u8,
        origin: NodeId,
        ask: Ask,
        reply: Responder,
    ) -> Option<Delivery> {
        self.on_forward_ask(conn, hops, origin, ask, reply);
        None
    }
    /// An announced connection closed. Not called for a connection that was superseded
    /// (its replacement was announced instead).
    fn on_disconnect(&self, conn: &Connection) {
        let _ = conn;
    }
}

/// Answers one inbound ask. Holds a reply slot of the lane the ask came on, so sending
/// never waits.
///
/// Dropping it without [`Responder::send`] replies with [`ErrorCode::ActorStopped`], so no
/// ask is ever silently lost.
pub struct Responder {
    slot: Option<OwnedSemaphorePermit>,
    request: RequestId,
    lane: usize,
    conn: Arc<ConnInner>,
    /// The reader that received the ask: it polls [`Responder::send_later`]'s futures.
    reader: Arc<Inbox>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("request", &self.request)
            .finish()
    }
}

impl Responder {
    pub(crate) fn new(
        slot: OwnedSemaphorePermit,
        request: RequestId,
        lane: usize,
        conn: Arc<ConnInner>,
        reader: Arc<Inbox>,
    ) -> Self {
        conn.outstanding.fetch_add(1, Ordering::Relaxed);
        Self {
            slot: Some(slot),
            request,
            lane,
            conn,
            reader,
        }
    }

    /// The request being answered.
    pub fn request(&self) -> RequestId {
        self.request
    }

    /// Sends the reply on the lane the ask came on.
    pub fn send(mut self, result: ReplyResult) {
        self.deliver(result);
    }

    /// Sends the reply `answer` resolves to, polling it on the task of the lane reader that
    /// received the ask instead of a task of your own: no spawn per ask, and answers that
    /// complete together wake that one task once. `answer` must bound its own wait (a
    /// deadline), as a [`Delivery`] must; it runs concurrently with the lane's later
    /// envelopes, so it is for the part of an ask that need not happen in order (waiting for
    /// the actor's answer), not for handing the ask to its actor.
    ///
    /// If the connection closes first, `answer` is dropped and the ask answered
    /// [`ErrorCode::ActorStopped`] (which goes nowhere, the connection being gone).
    ///
    /// ```
    /// use cortex_transport::{Connection, Handler, Responder};
    /// use cortex_protocol::{Ask, Envelope, ReplyResult};
    /// struct Slow;
    /// impl Handler for Slow {
    ///     fn on_envelope(&self, _conn: &Connection, _env: Envelope) {}
    ///     fn on_ask(&self, _conn: &Connection, ask: Ask, reply: Responder) {
    ///         reply.send_later(async move {
    ///             tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///             ReplyResult::Ok { message: ask.message, payload: ask.payload }
    ///         });
    ///     }
    /// }
    /// ```
    pub fn send_later(self, answer: impl Future<Output = ReplyResult> + Send + 'static) {
        let reader = self.reader.clone();
        let fut: ReplyFuture = Box::pin(async move {
            let result = answer.await;
            self.send(result);
        });
        // Refused only once the reader is gone: dropping the future answers through the
        // responder's drop.
        if let Err(fut) = reader.push(fut) {
            drop(fut);
        }
    }

    fn deliver(&mut self, result: ReplyResult) {
        let Some(slot) = self.slot.take() else { return };
        let outbox = self.conn.reply_outbox(self.lane);
        let reply = |result| {
            Envelope::Reply(Reply {
                request: self.request,
                result,
            })
        };
        if let Err(PushError::Encode(reason)) = outbox.push(&reply(result), 0, Some(slot)) {
            // The asker must hear something: a short error always encodes.
            let err = ReplyResult::Err(RemoteError {
                code: ErrorCode::Rejected,
                detail: format!("the reply could not be sent: {reason}"),
            });
            if let Err(e) = outbox.push(&reply(err), 0, None) {
                tracing::debug!("reply to {} lost: {e:?}", self.request);
            }
        }
        self.conn.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.deliver(ReplyResult::Err(RemoteError {
            code: ErrorCode::ActorStopped,
            detail: "the ask was dropped without a reply".into(),
        }));
    }
}
