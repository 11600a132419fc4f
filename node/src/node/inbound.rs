//! The transport's view of the node: inbound envelopes and asks from peers and clients.
//!
//! Delivery happens on the lane's reader, in arrival order, with no task per message: a tell
//! for an actor that is live here (or may be activated here) goes straight into its mailbox
//! when there is room; when routing must wait (a full mailbox, a forward, an unsettled ring)
//! the reader awaits it, so one sender's messages to one actor keep their order and a slow
//! actor pushes back through QUIC flow control instead of piling up tasks. An ask is started
//! inline the same way (handed to its actor or the next hop, in order with the tells before
//! it); only the wait for its answer moves to a task.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cortex_protocol::{
    ActorId, Ask, Envelope, ErrorCode, ForwardBody, NodeId, PeerIdentity, Target, Tell,
};
use cortex_runtime::Codec;
use cortex_transport::{Connection, Delivery, Handler, Responder};

use super::inner::{NodeInner, err};

/// Deadline of a tell that carries none (as the router's).
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

pub(crate) struct Inbound(pub(crate) Weak<NodeInner>);

/// Where a request entered the cluster: the peer node, or this node for a client.
fn origin(inner: &NodeInner, conn: &Connection) -> NodeId {
    conn.peer_node()
        .cloned()
        .unwrap_or_else(|| inner.id.clone())
}

impl Handler for Inbound {
    fn on_connection(&self, conn: &Connection) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        if matches!(conn.peer(), PeerIdentity::Client { .. }) {
            inner.clients.add(conn.clone());
            super::watch::send_topology(&inner, conn);
        }
    }

    fn on_disconnect(&self, conn: &Connection) {
        if let Some(inner) = self.0.upgrade() {
            inner.clients.remove(conn);
        }
    }

    // The transport calls the ordered `deliver_*` methods; these unordered forms finish
    // what is left in a task, for callers that have no lane to hold.
    fn on_envelope(&self, conn: &Connection, env: Envelope) {
        if let Some(d) = self.deliver_envelope(conn, env)
            && let Some(inner) = self.0.upgrade()
        {
            inner.spawn(d);
        }
    }

    fn on_ask(&self, conn: &Connection, ask: Ask, reply: Responder) {
        if let Some(d) = self.deliver_ask(conn, ask, reply)
            && let Some(inner) = self.0.upgrade()
        {
            inner.spawn(d);
        }
    }

    fn deliver_envelope(&self, conn: &Connection, env: Envelope) -> Option<Delivery> {
        let inner = self.0.upgrade()?;
        match env {
            Envelope::Tell(tell) => {
                let routed = routed_epoch(conn, tell.epoch);
                deliver_tell(&inner, tell, 0, routed, || origin(&inner, conn))
            }
            Envelope::Forward(fwd) => match fwd.body {
                ForwardBody::Tell(tell) => {
                    let routed = routed_epoch(conn, tell.epoch);
                    deliver_tell(&inner, tell, fwd.hops, routed, || fwd.origin)
                }
                // Forwarded asks arrive through `deliver_forward_ask`; one here has no reply
                // path.
                ForwardBody::Ask(ask) => {
                    tracing::debug!(request = %ask.request, "forwarded ask without a reply path dropped");
                    None
                }
            },
            Envelope::Publish(p) => {
                if matches!(conn.peer(), PeerIdentity::Client { .. }) {
                    // A client's publish fans out from here to the whole cluster.
                    let inner2 = inner.clone();
                    inner.spawn(async move {
                        inner2.publish(&p.topic, p.message, p.payload).await;
                    });
                } else {
                    inner.deliver_local(&p);
                }
                None
            }
            Envelope::Subscribe(s) => {
                inner.clients.subscribe(&inner, conn, s);
                None
            }
            Envelope::Unsubscribe(u) => {
                inner.clients.unsubscribe(conn, u.subscription);
                None
            }
            Envelope::Ping(_) | Envelope::Pong(_) => None,
            other => {
                tracing::debug!(peer = ?conn.peer(), kind = other.kind(), "unexpected envelope ignored");
                None
            }
        }
    }

    fn deliver_ask(&self, conn: &Connection, mut ask: Ask, reply: Responder) -> Option<Delivery> {
        let Some(inner) = self.0.upgrade() else {
            reply.send(err(ErrorCode::Unreachable, "node is shutting down"));
            return None;
        };
        ask.epoch = routed_epoch(conn, ask.epoch);
        start_ask(&inner, ask, 0, origin(&inner, conn), reply);
        None
    }

    fn deliver_forward_ask(
        &self,
        conn: &Connection,
        hops: u8,
        origin: NodeId,
        mut ask: Ask,
        reply: Responder,
    ) -> Option<Delivery> {
        let Some(inner) = self.0.upgrade() else {
            reply.send(err(ErrorCode::Unreachable, "node is shutting down"));
            return None;
        };
        ask.epoch = routed_epoch(conn, ask.epoch);
        start_ask(&inner, ask, hops, origin, reply);
        None
    }
}

/// Polls `fut` once without a waker of its own: the caller either drops it or keeps
/// polling it from a task, whose waker then replaces this one.
fn poll_once<F: Future + ?Sized>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Starts an ask in arrival order: its first poll, on the reader, hands it to the actor's
/// mailbox (or the next hop's lane) in the common case; the wait for the answer continues in
/// a task owned by the node.
fn start_ask(inner: &Arc<NodeInner>, ask: Ask, hops: u8, origin: NodeId, reply: Responder) {
    let i = inner.clone();
    let mut run: Delivery = Box::pin(async move {
        let r = i.route_ask(ask, hops, origin, true).await;
        reply.send(r);
    });
    if poll_once(run.as_mut()).is_pending() {
        inner.spawn(run);
    }
}

/// The ring digest a request says it was routed here under, when the peer is a member: a
/// member sends a virtual actor's request only to the owner it computed on that ring. A
/// client may send it to any node (when the owner is unreachable, say), so its digest is
/// not taken as a routing decision (0).
fn routed_epoch(conn: &Connection, epoch: u64) -> u64 {
    match conn.peer() {
        PeerIdentity::Node(_) => epoch,
        _ => 0,
    }
}

/// True when a tell for `id` (forwarded `hops` times, routed here under ring digest
/// `routed`) is delivered here right now, as the router would decide it without waiting.
fn local_now(inner: &NodeInner, id: &ActorId, hops: u8, routed: u64) -> bool {
    matches!(inner.resolve_now(id, hops, routed), Some(Ok(None)))
}

/// Delivers an inbound tell: into the mailbox now when the actor is here and has room
/// (`None`), else the rest of its delivery, which the lane's reader awaits before its next
/// envelope. `origin` is only needed (and its id only copied) when the tell is routed.
fn deliver_tell(
    inner: &Arc<NodeInner>,
    tell: Tell,
    hops: u8,
    routed: u64,
    origin: impl FnOnce() -> NodeId,
) -> Option<Delivery> {
    if let Target::Virtual(id) = &tell.target
        && local_now(inner, id, hops, routed)
    {
        inner.metrics.message_received(id.kind(), true);
        // With room in the mailbox the tell is done here, with no future and no wait.
        match inner.system.virtuals().try_tell_erased(
            id,
            &tell.message,
            &tell.payload,
            Codec::Bincode,
        ) {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => {
                inner.metrics.message_dropped(id.kind(), true);
                tracing::debug!(error = %e, "tell dropped");
                return None;
            }
        }
        // A full mailbox, or an old activation still stopping: the lane's reader waits for
        // this before its next envelope, so the tell keeps its place.
        let budget = match tell.meta.budget_us {
            0 => DEFAULT_BUDGET,
            us => Duration::from_micros(us),
        };
        let i = inner.clone();
        return Some(Box::pin(async move {
            let Target::Virtual(id) = &tell.target else {
                return;
            };
            let sent = tokio::select! {
                _ = i.cancel.cancelled() => return,
                r = i.system.virtuals().tell_erased(
                    id, &tell.message, &tell.payload, Codec::Bincode, budget,
                ) => r,
            };
            if let Err(e) = sent {
                i.metrics.message_dropped(id.kind(), true);
                tracing::debug!(error = %e, "tell dropped");
            }
        }));
    }
    let i = inner.clone();
    let origin = origin();
    Some(Box::pin(async move {
        let kind = match &tell.target {
            Target::Virtual(id) => id.kind().to_owned(),
            _ => "system".to_owned(),
        };
        // The reader runs it, not a node task: stop with the node all the same.
        let routed = tokio::select! {
            _ = i.cancel.cancelled() => return,
            r = i.route_tell(tell, hops, origin, true) => r,
        };
        if let Err(e) = routed {
            i.metrics.message_dropped(&kind, true);
            tracing::debug!(error = ?e, "tell dropped");
        }
    }))
}
