//! The transport's view of the node: inbound envelopes and asks from peers and clients.
//!
//! Callbacks must not block, so each request becomes a task. Tasks are bounded by QUIC
//! flow control and the transport's pending-ask limit.

use std::sync::{Arc, Weak};

use cortex_protocol::{Ask, Envelope, ErrorCode, ForwardBody, NodeId, PeerIdentity};
use cortex_transport::{Connection, Handler, Responder};

use super::inner::{NodeInner, err};

pub(crate) struct Inbound(pub(crate) Weak<NodeInner>);

impl Inbound {
    fn origin(&self, inner: &NodeInner, conn: &Connection) -> NodeId {
        conn.peer_node()
            .cloned()
            .unwrap_or_else(|| inner.id.clone())
    }
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

    fn on_envelope(&self, conn: &Connection, env: Envelope) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        match env {
            Envelope::Tell(tell) => {
                let origin = self.origin(&inner, conn);
                spawn_tell(&inner, tell, 0, origin);
            }
            Envelope::Forward(fwd) => match fwd.body {
                ForwardBody::Tell(tell) => spawn_tell(&inner, tell, fwd.hops, fwd.origin),
                // Forwarded asks arrive through `on_forward_ask`; one here has no reply path.
                ForwardBody::Ask(ask) => {
                    tracing::debug!(request = %ask.request, "forwarded ask without a reply path dropped");
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
            }
            Envelope::Subscribe(s) => inner.clients.subscribe(&inner, conn, s),
            Envelope::Unsubscribe(u) => inner.clients.unsubscribe(conn, u.subscription),
            Envelope::Ping(_) | Envelope::Pong(_) => {}
            other => {
                tracing::debug!(peer = ?conn.peer(), kind = other.kind(), "unexpected envelope ignored");
            }
        }
    }

    fn on_ask(&self, conn: &Connection, ask: Ask, reply: Responder) {
        let Some(inner) = self.0.upgrade() else {
            reply.send(err(ErrorCode::Unreachable, "node is shutting down"));
            return;
        };
        let origin = self.origin(&inner, conn);
        spawn_ask(&inner, ask, 0, origin, reply);
    }

    fn on_forward_ask(
        &self,
        _conn: &Connection,
        hops: u8,
        origin: NodeId,
        ask: Ask,
        reply: Responder,
    ) {
        let Some(inner) = self.0.upgrade() else {
            reply.send(err(ErrorCode::Unreachable, "node is shutting down"));
            return;
        };
        spawn_ask(&inner, ask, hops, origin, reply);
    }
}

fn spawn_ask(inner: &Arc<NodeInner>, ask: Ask, hops: u8, origin: NodeId, reply: Responder) {
    let i = inner.clone();
    inner.spawn(async move {
        let r = i.route_ask(ask, hops, origin, true).await;
        reply.send(r);
    });
}

fn spawn_tell(inner: &Arc<NodeInner>, tell: cortex_protocol::Tell, hops: u8, origin: NodeId) {
    let i = inner.clone();
    inner.spawn(async move {
        let kind = match &tell.target {
            cortex_protocol::Target::Virtual(id) => id.kind().to_owned(),
            _ => "system".to_owned(),
        };
        if let Err(e) = i.route_tell(tell, hops, origin, true).await {
            i.metrics.message_dropped(&kind, true);
            tracing::debug!(error = ?e, "tell dropped");
        }
    });
}
