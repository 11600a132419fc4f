//! kameo's rows: `kameo` 0.22 on tokio, bounded mailboxes of [`MAILBOX`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kameo::actor::{ActorRef, Spawn};
use kameo::message::{Context, Message};

use crate::alloc::{Snapshot, set_counting};
use crate::common::{
    AskStats, Count, Flavor, Get, Group, MAILBOX, PerActor, Ping, STARTED, on_tokio, started,
    time_asks, wait_started,
};
use crate::cortex::warm_tokio;

struct Counter(Count);
impl kameo::Actor for Counter {
    type Args = Self;
    type Error = Infallible;
    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(args)
    }
}
impl Message<Ping> for Counter {
    type Reply = ();
    async fn handle(&mut self, p: Ping, _: &mut Context<Self, ()>) {
        self.0.ping(p);
    }
}
impl Message<Get> for Counter {
    type Reply = u64;
    async fn handle(&mut self, _: Get, _: &mut Context<Self, u64>) -> u64 {
        self.0.seen
    }
}

struct Idle;
impl kameo::Actor for Idle {
    type Args = Self;
    type Error = Infallible;
    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        started();
        Ok(args)
    }
}

fn counter(quota: u64, group: &Arc<Group>) -> ActorRef<Counter> {
    Counter::spawn_with_mailbox(
        Counter(Count::new(quota, Arc::clone(group))),
        kameo::mailbox::bounded(MAILBOX),
    )
}

pub(crate) fn tell_one(flavor: Flavor, n: u64) -> Duration {
    on_tokio(flavor, async move {
        let group = Group::new(1);
        let r = counter(n, &group);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                r.tell(Ping(i)).await.expect("the counter runs");
            }
        });
        group.wait().await;
        let took = start.elapsed();
        sender.await.expect("sender task ends");
        took
    })
}

pub(crate) fn tell_many(actors: usize, per_actor: u64) -> Duration {
    on_tokio(Flavor::Two, async move {
        let group = Group::new(actors);
        let refs: Vec<_> = (0..actors).map(|_| counter(per_actor, &group)).collect();
        let start = Instant::now();
        let senders: Vec<_> = refs
            .chunks(actors.div_ceil(2))
            .map(|chunk| {
                let chunk = chunk.to_vec();
                tokio::spawn(async move {
                    for i in 0..per_actor {
                        for r in &chunk {
                            r.tell(Ping(i)).await.expect("counters run");
                        }
                    }
                })
            })
            .collect();
        group.wait().await;
        let took = start.elapsed();
        for s in senders {
            s.await.expect("sender task ends");
        }
        took
    })
}

pub(crate) fn ask(flavor: Flavor, warm: usize, n: usize) -> AskStats {
    on_tokio(flavor, async move {
        let r = counter(u64::MAX, &Group::new(1));
        tokio::spawn(async move {
            time_asks!(warm, n, async {
                r.ask(Get).await.expect("the counter answers")
            })
        })
        .await
        .expect("asker task ends")
    })
}

pub(crate) fn spawn(n: usize) -> Duration {
    on_tokio(Flavor::One, async move {
        let mut refs = Vec::with_capacity(n);
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        for _ in 0..n {
            refs.push(Idle::spawn(Idle));
        }
        wait_started(base, n).await;
        start.elapsed()
    })
}

pub(crate) fn idle_memory(n: usize) -> PerActor {
    on_tokio(Flavor::One, async move {
        warm_tokio(n).await;
        let mut refs = Vec::with_capacity(n);
        set_counting(true);
        let before = Snapshot::now();
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..n {
            refs.push(Idle::spawn(Idle));
        }
        wait_started(base, n).await;
        let after = Snapshot::now();
        set_counting(false);
        PerActor::between(&before, &after, n)
    })
}

pub(crate) fn allocs_per_message(n: u64) -> (f64, f64) {
    on_tokio(Flavor::One, async move {
        let group = Group::new(1);
        let r = counter(n, &group);
        r.ask(Get).await.expect("the counter answers");
        set_counting(true);
        let a = Snapshot::now();
        for i in 0..n {
            r.tell(Ping(i)).await.expect("the counter runs");
        }
        group.wait().await;
        let b = Snapshot::now();
        for _ in 0..n {
            r.ask(Get).await.expect("the counter answers");
        }
        let c = Snapshot::now();
        set_counting(false);
        (
            b.calls_since(&a) as f64 / n as f64,
            c.calls_since(&b) as f64 / n as f64,
        )
    })
}
