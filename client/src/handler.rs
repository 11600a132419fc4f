//! What the transport calls for traffic nodes push to the client: topology snapshots and
//! subscription deliveries. Callbacks run on connection reader tasks, so nothing here
//! blocks: deliveries go into bounded per-subscription buffers and are dropped (and
//! counted) when a subscriber falls behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cortex_protocol::{Ask, Envelope, ErrorCode, Publish, RemoteError, ReplyResult, TopicId};
use cortex_transport::{Connection, Handler, Responder};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::topology::Topology;

/// State shared between the client and its connection handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) subs: Subs,
    /// Wakes the maintenance task (a connection closed).
    pub(crate) wake: Notify,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            topology: Topology::new(),
            subs: Subs::default(),
            wake: Notify::new(),
        }
    }
}

#[derive(Debug)]
struct SubEntry {
    topic: TopicId,
    tx: mpsc::Sender<Publish>,
    /// The connection the node-side subscription lives on; `None` while being moved.
    conn: Option<Connection>,
}

/// Live subscriptions by number.
#[derive(Debug, Default)]
pub(crate) struct Subs {
    next: AtomicU64,
    map: Mutex<HashMap<u64, SubEntry>>,
    dropped: AtomicU64,
}

impl Subs {
    pub(crate) fn add(&self, topic: TopicId, tx: mpsc::Sender<Publish>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.lock().insert(
            id,
            SubEntry {
                topic,
                tx,
                conn: None,
            },
        );
        id
    }

    /// Records where subscription `id` now lives; false if it was dropped meanwhile.
    pub(crate) fn bind(&self, id: u64, conn: Connection) -> bool {
        match self.map.lock().get_mut(&id) {
            Some(e) => {
                e.conn = Some(conn);
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&self, id: u64) -> Option<Connection> {
        self.map.lock().remove(&id).and_then(|e| e.conn)
    }

    /// Subscriptions whose connection is gone: (number, topic).
    pub(crate) fn orphans(&self) -> Vec<(u64, TopicId)> {
        self.map
            .lock()
            .iter()
            .filter(|(_, e)| e.conn.as_ref().is_none_or(Connection::is_closed))
            .map(|(id, e)| (*id, e.topic.clone()))
            .collect()
    }

    fn deliver(&self, id: u64, publish: Publish) {
        let mut map = self.map.lock();
        let Some(e) = map.get(&id) else { return };
        match e.tx.try_send(publish) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(subscription = id, "subscriber behind: delivery dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                map.remove(&id);
            }
        }
    }

    /// Deliveries dropped because a subscriber's buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The transport handler of a client endpoint.
pub(crate) struct ClientHandler(pub(crate) Arc<Shared>);

impl Handler for ClientHandler {
    fn on_envelope(&self, conn: &Connection, env: Envelope) {
        match env {
            Envelope::TopologySnapshot(s) => {
                self.0.topology.apply(s, conn.peer_node().cloned());
            }
            Envelope::Delivery(d) => self.0.subs.deliver(d.subscription, d.publish),
            Envelope::Ping(_) | Envelope::Pong(_) => {}
            other => {
                tracing::debug!(peer = ?conn.peer(), kind = other.kind(), "unexpected envelope ignored");
            }
        }
    }

    fn on_ask(&self, _conn: &Connection, _ask: Ask, reply: Responder) {
        reply.send(ReplyResult::Err(RemoteError {
            code: ErrorCode::UnknownKind,
            detail: "a client hosts no actors".into(),
        }));
    }

    fn on_disconnect(&self, conn: &Connection) {
        tracing::debug!(peer = ?conn.peer(), "connection closed");
        self.0.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_protocol::{MessageName, RequestMeta};

    fn publish(n: u8) -> Publish {
        Publish {
            topic: TopicId::new("t").unwrap(),
            message: MessageName::new("m").unwrap(),
            payload: vec![n].into(),
            meta: RequestMeta::default(),
            publish_id: u64::from(n),
        }
    }

    #[test]
    fn a_slow_subscriber_loses_new_deliveries_not_the_reader() {
        let subs = Subs::default();
        let (tx, mut rx) = mpsc::channel(2);
        let id = subs.add(TopicId::new("t").unwrap(), tx);
        for n in 0..5 {
            subs.deliver(id, publish(n));
        }
        assert_eq!(
            subs.dropped(),
            3,
            "the buffer holds 2; the rest are dropped and counted"
        );
        assert_eq!(rx.try_recv().unwrap().payload[0], 0);
        assert_eq!(rx.try_recv().unwrap().payload[0], 1);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unplaced_subscriptions_are_orphans_and_closed_ones_go_away() {
        let subs = Subs::default();
        let (tx, rx) = mpsc::channel(2);
        let id = subs.add(TopicId::new("t").unwrap(), tx);
        assert_eq!(subs.orphans(), vec![(id, TopicId::new("t").unwrap())]);
        drop(rx);
        subs.deliver(id, publish(1));
        assert!(
            subs.orphans().is_empty(),
            "a closed receiver removes the entry"
        );
        assert!(subs.remove(id).is_none());
        subs.deliver(99, publish(1));
    }
}
