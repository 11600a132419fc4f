//! actix's rows: `actix` 0.13, whose actors live on single-threaded arbiters. Its `do_send`
//! ignores the mailbox capacity (like ractor's `cast`, a sender runs ahead); asks are
//! `send(..).await`. Rows run inside a fresh `actix::System` each.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Handler};

use crate::alloc::{Snapshot, set_counting};
use crate::common::{
    AskStats, Count, Get, Group, PerActor, Ping, STARTED, started, time_asks, wait_started,
};

impl actix::Message for Ping {
    type Result = ();
}
impl actix::Message for Get {
    type Result = u64;
}

struct Counter(Count);
impl Actor for Counter {
    type Context = actix::Context<Self>;
}
impl Handler<Ping> for Counter {
    type Result = ();
    fn handle(&mut self, p: Ping, _: &mut Self::Context) {
        self.0.ping(p);
    }
}
impl Handler<Get> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Self::Context) -> u64 {
        self.0.seen
    }
}

struct Idle;
impl Actor for Idle {
    type Context = actix::Context<Self>;
    fn started(&mut self, _: &mut Self::Context) {
        started();
    }
}

fn on_actix<F: Future>(f: F) -> F::Output {
    actix::System::new().block_on(f)
}

/// One thread: a sender task and the actor share the system's arbiter.
pub(crate) fn tell_one(n: u64) -> Duration {
    on_actix(async move {
        let group = Group::new(1);
        let addr = Counter(Count::new(n, Arc::clone(&group))).start();
        let start = Instant::now();
        actix::spawn(async move {
            for i in 0..n {
                addr.do_send(Ping(i));
            }
        });
        group.wait().await;
        start.elapsed()
    })
}

/// Two arbiters (threads), each with half the actors and its own sender task.
pub(crate) fn tell_many(actors: usize, per_actor: u64) -> Duration {
    on_actix(async move {
        let group = Group::new(actors);
        let arbiters = [Arbiter::new(), Arbiter::new()];
        let halves: Vec<Vec<Addr<Counter>>> = arbiters
            .iter()
            .enumerate()
            .map(|(k, arb)| {
                let size = actors / 2 + if k == 0 { actors % 2 } else { 0 };
                (0..size)
                    .map(|_| {
                        let g = Arc::clone(&group);
                        Counter::start_in_arbiter(&arb.handle(), move |_| {
                            Counter(Count::new(per_actor, g))
                        })
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        for (arb, half) in arbiters.iter().zip(halves) {
            arb.spawn(async move {
                for i in 0..per_actor {
                    for a in &half {
                        a.do_send(Ping(i));
                    }
                }
            });
        }
        group.wait().await;
        let took = start.elapsed();
        for arb in arbiters {
            arb.stop();
            arb.join().expect("arbiter thread ends");
        }
        took
    })
}

pub(crate) fn ask(warm: usize, n: usize) -> AskStats {
    on_actix(async move {
        let addr = Counter(Count::new(u64::MAX, Group::new(1))).start();
        time_asks!(warm, n, async {
            addr.send(Get).await.expect("the counter answers")
        })
    })
}

pub(crate) fn spawn(n: usize) -> Duration {
    on_actix(async move {
        let mut refs = Vec::with_capacity(n);
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        for _ in 0..n {
            refs.push(Idle.start());
        }
        wait_started(base, n).await;
        start.elapsed()
    })
}

pub(crate) fn idle_memory(n: usize) -> PerActor {
    on_actix(async move {
        warm_tokio_local(n).await;
        let mut refs = Vec::with_capacity(n);
        set_counting(true);
        let before = Snapshot::now();
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..n {
            refs.push(Idle.start());
        }
        wait_started(base, n).await;
        let after = Snapshot::now();
        set_counting(false);
        PerActor::between(&before, &after, n)
    })
}

/// actix's arbiter runs a `LocalSet`: grow its queue with local tasks.
async fn warm_tokio_local(n: usize) {
    let tasks: Vec<_> = (0..n).map(|_| actix::spawn(async {})).collect();
    for t in tasks {
        t.await.expect("empty task ends");
    }
}

pub(crate) fn allocs_per_message(n: u64) -> (f64, f64) {
    on_actix(async move {
        let group = Group::new(1);
        let addr = Counter(Count::new(n, Arc::clone(&group))).start();
        addr.send(Get).await.expect("the counter answers");
        set_counting(true);
        let a = Snapshot::now();
        for i in 0..n {
            addr.do_send(Ping(i));
        }
        group.wait().await;
        let b = Snapshot::now();
        for _ in 0..n {
            addr.send(Get).await.expect("the counter answers");
        }
        let c = Snapshot::now();
        set_counting(false);
        (
            b.calls_since(&a) as f64 / n as f64,
            c.calls_since(&b) as f64 / n as f64,
        )
    })
}
