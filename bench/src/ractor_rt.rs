//! ractor's rows: `ractor` 0.16 on tokio. Its mailboxes are unbounded, so `cast` never
//! waits: a sender runs ahead of the actor instead of being held back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, rpc::CallResult};

use crate::alloc::{Snapshot, set_counting};
use crate::common::{
    AskStats, Count, Flavor, Group, PerActor, Ping, STARTED, on_tokio, started, time_asks,
    wait_started,
};
use crate::cortex::warm_tokio;

enum Msg {
    Ping(Ping),
    Get(RpcReplyPort<u64>),
}

struct Counter;
impl Actor for Counter {
    type Msg = Msg;
    type State = Count;
    type Arguments = Count;
    async fn pre_start(&self, _: ActorRef<Msg>, args: Count) -> Result<Count, ActorProcessingErr> {
        Ok(args)
    }
    async fn handle(
        &self,
        _: ActorRef<Msg>,
        msg: Msg,
        state: &mut Count,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Ping(p) => state.ping(p),
            Msg::Get(reply) => {
                let _ = reply.send(state.seen);
            }
        }
        Ok(())
    }
}

struct Idle;
impl Actor for Idle {
    type Msg = Ping;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Ping>, _: ()) -> Result<(), ActorProcessingErr> {
        started();
        Ok(())
    }
}

async fn counter(quota: u64, group: &Arc<Group>) -> ActorRef<Msg> {
    let (r, _join) = Actor::spawn(None, Counter, Count::new(quota, Arc::clone(group)))
        .await
        .expect("an unnamed actor spawns");
    r
}

async fn get(r: &ActorRef<Msg>) -> u64 {
    match r.call(Msg::Get, None).await.expect("the counter is alive") {
        CallResult::Success(v) => v,
        _ => unreachable!("a call without timeout only ends in success or a send error"),
    }
}

pub(crate) fn tell_one(flavor: Flavor, n: u64) -> Duration {
    on_tokio(flavor, async move {
        let group = Group::new(1);
        let r = counter(n, &group).await;
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                r.cast(Msg::Ping(Ping(i))).expect("the counter runs");
            }
            r
        });
        group.wait().await;
        let took = start.elapsed();
        sender.await.expect("sender task ends").stop(None);
        took
    })
}

pub(crate) fn tell_many(actors: usize, per_actor: u64) -> Duration {
    on_tokio(Flavor::Two, async move {
        let group = Group::new(actors);
        let mut refs = Vec::with_capacity(actors);
        for _ in 0..actors {
            refs.push(counter(per_actor, &group).await);
        }
        let start = Instant::now();
        let senders: Vec<_> = refs
            .chunks(actors.div_ceil(2))
            .map(|chunk| {
                let chunk = chunk.to_vec();
                tokio::spawn(async move {
                    for i in 0..per_actor {
                        for r in &chunk {
                            r.cast(Msg::Ping(Ping(i))).expect("counters run");
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
        for r in refs {
            r.stop(None);
        }
        took
    })
}

pub(crate) fn ask(flavor: Flavor, warm: usize, n: usize) -> AskStats {
    on_tokio(flavor, async move {
        let r = counter(u64::MAX, &Group::new(1)).await;
        tokio::spawn(async move {
            let stats = time_asks!(warm, n, get(&r));
            r.stop(None);
            stats
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
            let (r, _join) = Actor::spawn(None, Idle, ()).await.expect("spawns");
            refs.push(r);
        }
        wait_started(base, n).await;
        let took = start.elapsed();
        for r in refs {
            r.stop(None);
        }
        took
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
            let (r, _join) = Actor::spawn(None, Idle, ()).await.expect("spawns");
            refs.push(r);
        }
        wait_started(base, n).await;
        let after = Snapshot::now();
        set_counting(false);
        for r in refs {
            r.stop(None);
        }
        PerActor::between(&before, &after, n)
    })
}

pub(crate) fn allocs_per_message(n: u64) -> (f64, f64) {
    on_tokio(Flavor::One, async move {
        let group = Group::new(1);
        let r = counter(n, &group).await;
        get(&r).await;
        set_counting(true);
        let a = Snapshot::now();
        for i in 0..n {
            r.cast(Msg::Ping(Ping(i))).expect("the counter runs");
        }
        group.wait().await;
        let b = Snapshot::now();
        for _ in 0..n {
            get(&r).await;
        }
        let c = Snapshot::now();
        set_counting(false);
        r.stop(None);
        (
            b.calls_since(&a) as f64 / n as f64,
            c.calls_since(&b) as f64 / n as f64,
        )
    })
}
