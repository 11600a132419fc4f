//! Cluster-wide pub-sub and the node's client connections.
//!
//! Subscriptions are local to the node that holds them: a publish is delivered to the local
//! subscribers of the node it starts on and sent once to every other live member, which
//! delivers it to its own. So each live subscriber gets each message once, and a dead node's
//! subscriptions vanish with it. Clients subscribe through the node they are connected to.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cortex_protocol::{Delivery, Envelope, MessageName, Publish, RequestMeta, Subscribe, TopicId};
use cortex_runtime::SubscribeOptions;
use cortex_transport::Connection;
use futures::StreamExt;
use parking_lot::Mutex;

use super::inner::NodeInner;

/// A message published on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic: TopicId,
    /// Message-type name.
    pub message: MessageName,
    /// Encoded message (bincode).
    pub payload: Bytes,
}

/// Most subscriptions one client connection may hold.
const MAX_CLIENT_SUBSCRIPTIONS: usize = 1024;

#[derive(Default)]
pub(crate) struct Clients {
    conns: Mutex<HashMap<u64, ClientConn>>,
}

struct ClientConn {
    conn: Connection,
    subs: HashMap<u64, tokio::task::JoinHandle<()>>,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        for (_, t) in self.subs.drain() {
            t.abort();
        }
    }
}

impl Clients {
    pub(crate) fn add(&self, conn: Connection) {
        self.conns.lock().insert(
            conn.id(),
            ClientConn {
                conn,
                subs: HashMap::new(),
            },
        );
    }

    pub(crate) fn remove(&self, conn: &Connection) {
        self.conns.lock().remove(&conn.id());
    }

    pub(crate) fn all(&self) -> Vec<Connection> {
        self.conns.lock().values().map(|c| c.conn.clone()).collect()
    }

    pub(crate) fn subscribe(&self, inner: &Arc<NodeInner>, conn: &Connection, s: Subscribe) {
        let mut g = self.conns.lock();
        let Some(entry) = g.get_mut(&conn.id()) else {
            return;
        };
        if entry.subs.len() >= MAX_CLIENT_SUBSCRIPTIONS {
            tracing::warn!(peer = ?conn.peer(), "client exceeded its subscription limit");
            return;
        }
        let mut stream = inner
            .pubsub
            .subscribe(&s.topic, SubscribeOptions::default());
        let conn2 = conn.clone();
        let sub_id = s.subscription;
        let task = tokio::spawn(async move {
            while let Some(p) = stream.next().await {
                let d = Delivery {
                    subscription: sub_id,
                    publish: Publish {
                        topic: p.topic,
                        message: p.message,
                        payload: p.payload,
                        meta: RequestMeta::default(),
                        publish_id: 0,
                    },
                };
                if conn2.send(Envelope::Delivery(d), sub_id).await.is_err() {
                    return;
                }
            }
        });
        if let Some(old) = entry.subs.insert(sub_id, task) {
            old.abort();
        }
    }

    pub(crate) fn unsubscribe(&self, conn: &Connection, sub: u64) {
        if let Some(entry) = self.conns.lock().get_mut(&conn.id())
            && let Some(t) = entry.subs.remove(&sub)
        {
            t.abort();
        }
    }
}
