//! Publish and subscribe through the cluster.
//!
//! A subscription lives on one node connection: the node pushes a `Delivery` for every
//! message published to the topic anywhere in the cluster. When that connection closes,
//! the client's maintenance task subscribes again through another node (messages published
//! in between are missed: pub-sub is at-most-once). Each subscription buffers a bounded
//! number of deliveries; when the subscriber falls behind, new ones are dropped and counted
//! ([`crate::ClientStats::dropped_deliveries`]).

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cortex_protocol::{
    Envelope, MessageName, Publish, RequestMeta, Subscribe, TopicId, Unsubscribe,
};
use cortex_runtime::{Codec, RemoteMessage, decode_with, encode_with};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::calls::message_name;
use crate::client::{Client, Inner};
use crate::error::ClientError;

/// The lane a topic's traffic uses, so one topic's messages stay in order.
fn topic_lane(topic: &TopicId) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(topic)
}

/// A published message by name and encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawMessage {
    /// The topic.
    pub topic: TopicId,
    /// The message type's name.
    pub message: MessageName,
    /// The message, encoded with the wire codec (bincode).
    pub payload: Bytes,
}

/// The messages of one topic, by name and bytes. Ends when the client shuts down.
/// Dropping it unsubscribes.
#[derive(Debug)]
pub struct RawSubscription {
    id: u64,
    topic: TopicId,
    rx: mpsc::Receiver<Publish>,
    client: Weak<Inner>,
}

impl RawSubscription {
    /// The topic.
    pub fn topic(&self) -> &TopicId {
        &self.topic
    }
}

impl Stream for RawSubscription {
    type Item = RawMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RawMessage>> {
        self.rx.poll_recv(cx).map(|p| {
            p.map(|p| RawMessage {
                topic: p.topic,
                message: p.message,
                payload: p.payload,
            })
        })
    }
}

impl Drop for RawSubscription {
    fn drop(&mut self) {
        let Some(inner) = self.client.upgrade() else {
            return;
        };
        if let Some(conn) = inner.shared.subs.remove(self.id) {
            // Best effort: a full lane or a closed connection drops the node-side
            // subscription anyway (the node forgets it when the connection closes).
            let _ = conn.try_send(
                Envelope::Unsubscribe(Unsubscribe {
                    subscription: self.id,
                }),
                topic_lane(&self.topic),
            );
        }
    }
}

/// The messages of one topic, decoded as `M`. A message of another type on the topic
/// yields [`ClientError::Decode`] and the stream goes on. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription<M> {
    raw: RawSubscription,
    _m: PhantomData<fn() -> M>,
}

impl<M> Subscription<M> {
    /// The topic.
    pub fn topic(&self) -> &TopicId {
        self.raw.topic()
    }
}

impl<M: RemoteMessage> Stream for Subscription<M> {
    type Item = Result<M, ClientError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.raw).poll_next(cx).map(|m| {
            m.map(|m| {
                if m.message.as_str() != M::NAME {
                    return Err(ClientError::Decode {
                        detail: format!(
                            "topic {} carried {}, this subscription expects {}",
                            m.topic,
                            m.message,
                            M::NAME
                        ),
                    });
                }
                decode_with(&m.payload, Codec::Bincode).map_err(ClientError::from)
            })
        })
    }
}

impl Client {
    /// Publishes `msg` to every subscriber of `topic` in the cluster (at most once each).
    ///
    /// # Errors
    /// [`ClientError::Encode`], or [`ClientError::Unreachable`] / [`ClientError::Timeout`]
    /// if no node took it before the default deadline.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled publish was not sent.
    pub async fn publish<M: RemoteMessage>(
        &self,
        topic: &TopicId,
        msg: &M,
    ) -> Result<(), ClientError> {
        let payload = encode_with(msg, Codec::Bincode)?;
        self.publish_raw(topic, &message_name(M::NAME)?, payload.into())
            .await
    }

    /// Publishes by message name with an encoded payload.
    ///
    /// # Errors
    /// As [`Client::publish`].
    ///
    /// # Cancel safety
    /// As [`Client::publish`].
    pub async fn publish_raw(
        &self,
        topic: &TopicId,
        message: &MessageName,
        payload: Bytes,
    ) -> Result<(), ClientError> {
        let inner = &self.inner;
        let timeout = inner.cfg.default_timeout;
        let deadline = Instant::now() + timeout;
        let mut avoid = crate::client::Avoid::new();
        let mut last = None;
        for attempt in 0..inner.cfg.max_attempts {
            if Instant::now() >= deadline {
                break;
            }
            let route = match inner.route(None, &avoid, deadline).await {
                Ok(r) => r,
                Err(e) if e.is_safe_to_retry() => {
                    avoid.clear();
                    last = Some(e);
                    inner.backoff(attempt, deadline).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let env = Envelope::Publish(Publish {
                topic: topic.clone(),
                message: message.clone(),
                payload: payload.clone(),
                meta: RequestMeta::default(),
                publish_id: inner
                    .publish_seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            });
            let mut route = route;
            match tokio::time::timeout_at(deadline, route.conn.send(env, topic_lane(topic))).await {
                Ok(Ok(())) => {
                    route.success();
                    return Ok(());
                }
                Ok(Err(e)) => {
                    avoid.push(route.node.name().to_owned());
                    route.failure();
                    last = Some(ClientError::from_dial(&e));
                }
                Err(_) => break,
            }
        }
        Err(last.unwrap_or(ClientError::Timeout {
            after: timeout,
            detail: "publishing".into(),
        }))
    }

    /// Subscribes to `topic`, decoding each message as `M`.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] if no node takes the subscription before the default
    /// deadline.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled subscribe leaves nothing behind.
    ///
    /// ```no_run
    /// # async fn demo(client: cortex_client::Client) -> Result<(), cortex_client::ClientError> {
    /// use futures::StreamExt;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Price(u64);
    /// # cortex_runtime::message!(Price => (), "market.Price");
    /// let topic = "prices".parse().unwrap();
    /// let mut prices = client.subscribe::<Price>(&topic).await?;
    /// while let Some(price) = prices.next().await {
    ///     let Price(p) = price?;
    ///     # let _ = p;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe<M: RemoteMessage>(
        &self,
        topic: &TopicId,
    ) -> Result<Subscription<M>, ClientError> {
        Ok(Subscription {
            raw: self.subscribe_raw(topic).await?,
            _m: PhantomData,
        })
    }

    /// Subscribes to `topic`, yielding messages by name and bytes.
    ///
    /// # Errors
    /// As [`Client::subscribe`].
    ///
    /// # Cancel safety
    /// As [`Client::subscribe`].
    pub async fn subscribe_raw(&self, topic: &TopicId) -> Result<RawSubscription, ClientError> {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(inner.cfg.subscription_buffer);
        let id = inner.shared.subs.add(topic.clone(), tx);
        // Built first so that an error (or cancellation) below removes the entry.
        let sub = RawSubscription {
            id,
            topic: topic.clone(),
            rx,
            client: Arc::downgrade(inner),
        };
        let deadline = Instant::now() + inner.cfg.default_timeout;
        inner.place_subscription(id, topic, deadline).await?;
        Ok(sub)
    }
}

impl Inner {
    /// Registers subscription `id` on some node and records the connection it lives on.
    pub(crate) async fn place_subscription(
        &self,
        id: u64,
        topic: &TopicId,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let mut route = self.route(None, &[], deadline).await?;
        let env = Envelope::Subscribe(Subscribe {
            subscription: id,
            topic: topic.clone(),
        });
        let conn = route.conn.clone();
        match tokio::time::timeout_at(deadline, conn.send(env, topic_lane(topic))).await {
            Ok(Ok(())) => {
                route.success();
                if !self.shared.subs.bind(id, conn.clone()) {
                    // Dropped while we subscribed: undo on the node.
                    let _ = conn.try_send(
                        Envelope::Unsubscribe(Unsubscribe { subscription: id }),
                        topic_lane(topic),
                    );
                }
                Ok(())
            }
            Ok(Err(e)) => {
                route.failure();
                Err(ClientError::from_dial(&e))
            }
            Err(_) => Err(ClientError::Timeout {
                after: Duration::ZERO,
                detail: format!("subscribing to {topic}"),
            }),
        }
    }
}
