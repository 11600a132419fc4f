//! Local publish-subscribe by [`TopicId`], with a bounded buffer per subscriber and a
//! policy for subscribers that fall behind.
//!
//! Publishing never waits: a full subscriber buffer either loses its oldest message
//! ([`SlowPolicy::DropOldest`]) or the subscription ends ([`SlowPolicy::Disconnect`]).
//! Every loss is counted in [`PubSubStats`].

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use cortex_protocol::TopicId;
use futures::{Stream, StreamExt};
use parking_lot::{Mutex, RwLock};

use crate::actor::{Handler, Message};
use crate::actor_ref::ActorRef;
use crate::supervision::TaskGuard;

/// What happens when a subscriber's buffer is full at publish time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowPolicy {
    /// Drop the oldest buffered message to make room (counted in `dropped`).
    #[default]
    DropOldest,
    /// End the subscription: the stream yields what it buffered, then ends (counted in
    /// `disconnects`).
    Disconnect,
}

/// Options of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Messages buffered for this subscriber (at least 1).
    pub buffer: usize,
    /// What to do when the buffer is full.
    pub policy: SlowPolicy,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            buffer: 256,
            policy: SlowPolicy::DropOldest,
        }
    }
}

impl SubscribeOptions {
    /// Sets the buffer size (at least 1).
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = n.max(1);
        self
    }
    /// Sets the slow-subscriber policy.
    pub fn policy(mut self, p: SlowPolicy) -> Self {
        self.policy = p;
        self
    }
}

/// Identifies a subscription for [`PubSub::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub u64);

/// Counters of a [`PubSub`], for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PubSubStats {
    /// `publish` calls.
    pub published: u64,
    /// Messages placed in subscriber buffers.
    pub delivered: u64,
    /// Messages dropped by [`SlowPolicy::DropOldest`].
    pub dropped: u64,
    /// Subscriptions ended by [`SlowPolicy::Disconnect`].
    pub disconnects: u64,
    /// Topics with at least one subscriber.
    pub topics: usize,
    /// Subscriptions.
    pub subscribers: usize,
}

struct Buf<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    /// No more messages will arrive (disconnected or unsubscribed).
    closed: bool,
    disconnected: bool,
}

struct Sub<T> {
    id: u64,
    cap: usize,
    policy: SlowPolicy,
    buf: Mutex<Buf<T>>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    disconnects: AtomicU64,
}

struct Inner<T> {
    topics: RwLock<HashMap<TopicId, Vec<Arc<Sub<T>>>>>,
    forwarders: Mutex<HashMap<u64, TaskGuard>>,
    next_id: AtomicU64,
    counters: Counters,
}

/// Local topics carrying messages of type `T`. Cheap to clone (a handle).
///
/// # Examples
/// ```
/// use cortex_protocol::TopicId;
/// use cortex_runtime::{PubSub, SlowPolicy, SubscribeOptions};
/// use futures::StreamExt;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let ps = PubSub::<String>::new();
/// let prices = TopicId::new("prices.eur").unwrap();
/// let mut sub = ps.subscribe(&prices, SubscribeOptions::default().buffer(2).policy(SlowPolicy::DropOldest));
/// for p in ["1", "2", "3"] {
///     ps.publish(&prices, p.to_string());
/// }
/// assert_eq!(sub.next().await.as_deref(), Some("2")); // "1" was dropped
/// assert_eq!(ps.stats().dropped, 1);
/// # });
/// ```
pub struct PubSub<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for PubSub<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> std::fmt::Debug for PubSub<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("topics", &self.inner.topics.read().len())
            .finish()
    }
}

impl<T: Clone + Send + 'static> Default for PubSub<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + 'static> PubSub<T> {
    /// An empty pub-sub.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: RwLock::new(HashMap::new()),
                forwarders: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                counters: Counters::default(),
            }),
        }
    }

    /// Subscribes a stream. Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(&self, topic: &TopicId, opts: SubscribeOptions) -> Subscription<T> {
        let sub = Arc::new(Sub {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            cap: opts.buffer.max(1),
            policy: opts.policy,
            buf: Mutex::new(Buf {
                queue: VecDeque::new(),
                waker: None,
                closed: false,
                disconnected: false,
            }),
            dropped: AtomicU64::new(0),
        });
        self.inner
            .topics
            .write()
            .entry(topic.clone())
            .or_default()
            .push(Arc::clone(&sub));
        Subscription {
            sub,
            topic: topic.clone(),
            ps: Arc::downgrade(&self.inner),
        }
    }

    /// Subscribes an actor: each message is told to it (waiting for mailbox room, while
    /// the subscription's own buffer and policy absorb bursts). Ends when the actor stops,
    /// on disconnect, or on [`PubSub::unsubscribe`]. Must be called inside a tokio runtime.
    pub fn subscribe_actor<A>(
        &self,
        topic: &TopicId,
        actor: ActorRef<A>,
        opts: SubscribeOptions,
    ) -> SubscriptionId
    where
        A: Handler<T>,
        T: Message,
    {
        let mut sub = self.subscribe(topic, opts);
        let id = sub.id();
        let weak = Arc::downgrade(&self.inner);
        // Held while spawning so the forwarder cannot remove its entry before it exists.
        let mut forwarders = self.inner.forwarders.lock();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if actor.tell(msg).await.is_err() {
                    break;
                }
            }
            drop(sub);
            if let Some(inner) = weak.upgrade()
                && let Some(t) = inner.forwarders.lock().remove(&id.0)
            {
                t.detach();
            }
        });
        forwarders.insert(id.0, TaskGuard::new(task));
        id
    }

    /// Removes a subscription (a stream subscription then ends after its buffer).
    /// Returns whether it existed.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let found = self.inner.remove(id.0);
        drop(self.inner.forwarders.lock().remove(&id.0));
        found
    }

    /// Publishes `msg` to every subscriber of `topic`; never waits. Returns how many
    /// subscribers received it.
    pub fn publish(&self, topic: &TopicId, msg: T) -> usize {
        let c = &self.inner.counters;
        c.published.fetch_add(1, Ordering::Relaxed);
        let mut gone = Vec::new();
        let mut delivered = 0;
        {
            let topics = self.inner.topics.read();
            let Some(subs) = topics.get(topic) else {
                return 0;
            };
            for sub in subs {
                let waker = {
                    let mut buf = sub.buf.lock();
                    if buf.closed {
                        gone.push(sub.id);
                        continue;
                    }
                    if buf.queue.len() >= sub.cap {
                        match sub.policy {
                            SlowPolicy::Disconnect => {
                                buf.closed = true;
                                buf.disconnected = true;
                                c.disconnects.fetch_add(1, Ordering::Relaxed);
                                gone.push(sub.id);
                                let w = buf.waker.take();
                                drop(buf);
                                if let Some(w) = w {
                                    w.wake();
                                }
                                continue;
                            }
                            _ => {
                                buf.queue.pop_front();
                                sub.dropped.fetch_add(1, Ordering::Relaxed);
                                c.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    buf.queue.push_back(msg.clone());
                    delivered += 1;
                    buf.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
        c.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
        for id in gone {
            self.inner.remove(id);
        }
        delivered
    }

    /// Subscribers of `topic`.
    pub fn subscribers(&self, topic: &TopicId) -> usize {
        self.inner.topics.read().get(topic).map_or(0, Vec::len)
    }

    /// Counters.
    pub fn stats(&self) -> PubSubStats {
        let c = &self.inner.counters;
        let topics = self.inner.topics.read();
        PubSubStats {
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            topics: topics.len(),
            subscribers: topics.values().map(Vec::len).sum(),
        }
    }
}

impl<T> Inner<T> {
    fn remove(&self, id: u64) -> bool {
        let mut topics = self.topics.write();
        let mut found = None;
        topics.retain(|_, subs| {
            if let Some(pos) = subs.iter().position(|s| s.id == id) {
                found = Some(subs.swap_remove(pos));
            }
            !subs.is_empty()
        });
        drop(topics);
        match found {
            Some(sub) => {
                let w = {
                    let mut buf = sub.buf.lock();
                    buf.closed = true;
                    buf.waker.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
                true
            }
            None => false,
        }
    }
}

/// A stream subscription: yields published messages until unsubscribed or disconnected.
/// Dropping it unsubscribes.
pub struct Subscription<T> {
    sub: Arc<Sub<T>>,
    topic: TopicId,
    ps: Weak<Inner<T>>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.sub.id)
            .field("topic", &self.topic)
            .finish()
    }
}

impl<T> Subscription<T> {
    /// This subscription's id.
    pub fn id(&self) -> SubscriptionId {
        SubscriptionId(self.sub.id)
    }
    /// The topic.
    pub fn topic(&self) -> &TopicId {
        &self.topic
    }
    /// Messages this subscriber lost to [`SlowPolicy::DropOldest`].
    pub fn dropped(&self) -> u64 {
        self.sub.dropped.load(Ordering::Relaxed)
    }
    /// True once [`SlowPolicy::Disconnect`] ended this subscription.
    pub fn is_disconnected(&self) -> bool {
        self.sub.buf.lock().disconnected
    }
    /// Takes a buffered message without waiting.
    pub fn try_next(&mut self) -> Option<T> {
        self.sub.buf.lock().queue.pop_front()
    }
}

impl<T> Stream for Subscription<T> {
    type Item = T;
    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<T>> {
        let mut buf = self.sub.buf.lock();
        if let Some(m) = buf.queue.pop_front() {
            return Poll::Ready(Some(m));
        }
        if buf.closed {
            return Poll::Ready(None);
        }
        match &mut buf.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some(ps) = self.ps.upgrade() {
            ps.remove(self.sub.id);
        }
    }
}
