//! Local pub-sub: slow-subscriber policies, actor subscribers, counters.

use std::time::Duration;

use cortex_protocol::TopicId;
use cortex_runtime::{PubSub, SlowPolicy, SubscribeOptions, System};
use futures::StreamExt;

use super::common::*;

fn topic(s: &str) -> TopicId {
    TopicId::new(s).unwrap()
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest() {
    let ps = PubSub::<u32>::new();
    let t = topic("t");
    let opts = SubscribeOptions::default()
        .buffer(3)
        .policy(SlowPolicy::DropOldest);
    let mut slow = ps.subscribe(&t, opts);
    let mut fast = ps.subscribe(&t, SubscribeOptions::default().buffer(100));
    for i in 0..10 {
        assert_eq!(ps.publish(&t, i), 2);
    }
    let got: Vec<u32> = std::iter::from_fn(|| slow.try_next()).collect();
    assert_eq!(got, vec![7, 8, 9]);
    assert_eq!(slow.dropped(), 7);
    assert_eq!(fast.next().await, Some(0));
    assert_eq!(fast.dropped(), 0);
    let s = ps.stats();
    assert_eq!(
        (s.published, s.delivered, s.dropped, s.disconnects),
        (10, 20, 7, 0)
    );
    assert_eq!((s.topics, s.subscribers), (1, 2));
}

#[tokio::test]
async fn disconnect_ends_the_slow_subscription_only() {
    let ps = PubSub::<u32>::new();
    let t = topic("t");
    let opts = SubscribeOptions::default()
        .buffer(2)
        .policy(SlowPolicy::Disconnect);
    let mut slow = ps.subscribe(&t, opts);
    let mut ok = ps.subscribe(&t, SubscribeOptions::default().buffer(8));
    for i in 0..3 {
        ps.publish(&t, i);
    }
    // The slow one yields what it had, then ends.
    assert_eq!(slow.next().await, Some(0));
    assert_eq!(slow.next().await, Some(1));
    assert_eq!(slow.next().await, None);
    assert!(slow.is_disconnected());
    assert_eq!(ps.subscribers(&t), 1);
    assert_eq!(ps.stats().disconnects, 1);
    for i in 0..3 {
        assert_eq!(ok.next().await, Some(i));
    }
    ps.publish(&t, 3);
    assert_eq!(ok.next().await, Some(3));
    assert!(!ok.is_disconnected());
}

#[tokio::test]
async fn dropping_or_unsubscribing_removes_subscribers() {
    let ps = PubSub::<u32>::new();
    let t = topic("t");
    let a = ps.subscribe(&t, SubscribeOptions::default());
    let mut b = ps.subscribe(&t, SubscribeOptions::default());
    drop(a);
    assert_eq!(ps.subscribers(&t), 1);
    assert!(ps.unsubscribe(b.id()));
    assert!(!ps.unsubscribe(b.id()));
    assert_eq!(b.next().await, None);
    assert_eq!(ps.publish(&t, 1), 0);
    assert_eq!(ps.stats().topics, 0);
}

#[tokio::test]
async fn actor_subscribers_receive_until_they_stop() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("sub", &log));
    let ps = PubSub::<Add>::new();
    let t = topic("adds");
    let id = ps.subscribe_actor(&t, c.clone(), SubscribeOptions::default().buffer(16));
    for i in 1..=4 {
        ps.publish(&t, Add(i));
    }
    let mut total = 0;
    for _ in 0..1000 {
        total = c.ask(Get, Duration::from_secs(1)).await.unwrap();
        if total == 10 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(total, 10);
    c.stop();
    c.wait_stopped(Duration::from_secs(1)).await.unwrap();
    // The forwarder notices at the next delivery and removes itself.
    ps.publish(&t, Add(1));
    assert!(settle(|| ps.subscribers(&t) == 0).await);
    assert!(!ps.unsubscribe(id));
}
