//! Cortex's rows: `cortex_runtime` on tokio, plus the virtual-actor memory rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_protocol::ActorId;
use cortex_runtime::{
    Actor, ActorRef, Context, Handler, Kind, Message, SpawnOptions, System, SystemConfig,
    VirtualConfig,
};

use crate::alloc::{Snapshot, set_counting};
use crate::common::{
    AskStats, Count, DEADLINE, Flavor, Get, Group, MAILBOX, PerActor, Ping, STARTED, on_tokio,
    started, time_asks, wait_started,
};

impl Message for Ping {
    type Reply = ();
}
impl Message for Get {
    type Reply = u64;
}

struct Counter(Count);
impl Actor for Counter {}
impl Handler<Ping> for Counter {
    async fn handle(&mut self, p: Ping, _: &mut Context<Self>) {
        self.0.ping(p);
    }
}
impl Handler<Get> for Counter {
    async fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.0.seen
    }
}

/// The idle actor of the spawn and memory rows.
struct Idle;
impl Actor for Idle {
    async fn started(&mut self, _: &mut Context<Self>) {
        started();
    }
}
impl Handler<Ping> for Idle {
    async fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

fn counter(system: &System, quota: u64, group: &Arc<Group>) -> ActorRef<Counter> {
    system.spawn_with(
        Counter(Count::new(quota, Arc::clone(group))),
        SpawnOptions::default().mailbox(MAILBOX),
    )
}

/// One sender task tells `n` pings to one actor; time until the actor has handled all.
pub(crate) fn tell_one(flavor: Flavor, n: u64) -> Duration {
    on_tokio(flavor, async move {
        let system = System::new(SystemConfig::default());
        let group = Group::new(1);
        let r = counter(&system, n, &group);
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                r.tell(Ping(i))
                    .await
                    .expect("the counter runs until shutdown");
            }
        });
        group.wait().await;
        let took = start.elapsed();
        sender.await.expect("sender task ends");
        took
    })
}

/// `actors` actors on 2 workers; 2 sender tasks each tell their half round-robin until
/// every actor has handled `per_actor` pings.
pub(crate) fn tell_many(actors: usize, per_actor: u64) -> Duration {
    on_tokio(Flavor::Two, async move {
        let system = System::new(SystemConfig::default());
        let group = Group::new(actors);
        let refs: Vec<_> = (0..actors)
            .map(|_| counter(&system, per_actor, &group))
            .collect();
        let start = Instant::now();
        let senders: Vec<_> = refs
            .chunks(actors.div_ceil(2))
            .map(|chunk| tokio::spawn(tell_round_robin(chunk.to_vec(), per_actor)))
            .collect();
        group.wait().await;
        let took = start.elapsed();
        for s in senders {
            s.await.expect("sender task ends");
        }
        took
    })
}

/// One sender of the 1,000-actor rows: `per_actor` rounds over `refs`.
async fn tell_round_robin(refs: Vec<ActorRef<Counter>>, per_actor: u64) {
    for i in 0..per_actor {
        for r in &refs {
            r.tell(Ping(i)).await.expect("counters run until shutdown");
        }
    }
}

/// The arrangement actix gets with its arbiters: a sharded system (2 shard threads, each
/// a tokio `current_thread` runtime), each shard with half the actors and its own sender
/// task, so no tell crosses a thread. Each shard spawns its own actors (as actix's
/// `start_in_arbiter` builds them on their arbiter), so their memory comes from that
/// thread. The measuring task waits on a third, idle thread, as actix's system thread does.
pub(crate) fn tell_many_sharded(actors: usize, per_actor: u64) -> Duration {
    on_tokio(Flavor::One, async move {
        let system = System::new(SystemConfig::default().shards(2));
        let group = Group::new(actors);
        let mut halves: Vec<Vec<ActorRef<Counter>>> = Vec::new();
        for k in 0..2 {
            let size = actors / 2 + if k == 0 { actors % 2 } else { 0 };
            let (sys, group) = (system.clone(), Arc::clone(&group));
            let shard = system.shard_handle(k).expect("the system has 2 shards");
            let half = shard.spawn(async move {
                (0..size)
                    .map(|_| {
                        let c = Counter(Count::new(per_actor, Arc::clone(&group)));
                        // Spawned from shard k's thread: placed on shard k.
                        sys.spawn_with(c, SpawnOptions::default().mailbox(MAILBOX))
                    })
                    .collect()
            });
            halves.push(half.await.expect("the spawning task ends"));
        }
        let start = Instant::now();
        let senders: Vec<_> = halves
            .into_iter()
            .enumerate()
            .map(|(k, half)| {
                let shard = system.shard_handle(k).expect("the system has 2 shards");
                shard.spawn(tell_round_robin(half, per_actor))
            })
            .collect();
        group.wait().await;
        let took = start.elapsed();
        for s in senders {
            s.await.expect("sender task ends");
        }
        system.shutdown(DEADLINE).await;
        took
    })
}

/// Sequential asks from one task. With `inline` false the actor is spawned with inline asks
/// off, so every ask goes through its mailbox and task (the path of an ask to a busy actor).
pub(crate) fn ask(flavor: Flavor, warm: usize, n: usize, inline: bool) -> AskStats {
    on_tokio(flavor, async move {
        let system = System::new(SystemConfig::default());
        let r = system.spawn_with(
            Counter(Count::new(u64::MAX, Group::new(1))),
            SpawnOptions::default().mailbox(MAILBOX).inline_asks(inline),
        );
        let timeout = Duration::from_secs(5);
        tokio::spawn(async move {
            time_asks!(warm, n, async {
                r.ask(Get, timeout).await.expect("the counter answers")
            })
        })
        .await
        .expect("asker task ends")
    })
}

/// Sequential asks on a one-shard system, from a task on the shard to an actor spawned
/// there: one thread, as in actix's row, on the runtime the system builds for its shard.
pub(crate) fn ask_sharded(warm: usize, n: usize) -> AskStats {
    on_tokio(Flavor::One, async move {
        let system = System::new(SystemConfig::default().shards(1));
        let sys = system.clone();
        let shard = system.shard_handle(0).expect("the system has a shard");
        let stats = shard
            .spawn(async move {
                let r = counter(&sys, u64::MAX, &Group::new(1));
                let timeout = Duration::from_secs(5);
                time_asks!(warm, n, async {
                    r.ask(Get, timeout).await.expect("the counter answers")
                })
            })
            .await
            .expect("asker task ends");
        system.shutdown(DEADLINE).await;
        stats
    })
}

/// Spawns `n` idle actors on one thread; time until all have started.
pub(crate) fn spawn(n: usize) -> Duration {
    on_tokio(Flavor::One, async move {
        let system = System::new(SystemConfig::default());
        let mut refs = Vec::with_capacity(n);
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        for _ in 0..n {
            refs.push(system.spawn(Idle));
        }
        wait_started(base, n).await;
        start.elapsed()
    })
}

/// Grows tokio's run queue to `n` tasks once, so that the memory rows do not charge the
/// first runtime measured for it.
pub(crate) async fn warm_tokio(n: usize) {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(async {})).collect();
    for t in tasks {
        t.await.expect("empty task ends");
    }
}

/// Heap held per idle actor: `n` spawned and started (refs kept in a preallocated Vec).
pub(crate) fn idle_memory(n: usize) -> PerActor {
    on_tokio(Flavor::One, async move {
        warm_tokio(n).await;
        let system = System::new(SystemConfig::default());
        let mut refs = Vec::with_capacity(n);
        set_counting(true);
        let before = Snapshot::now();
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..n {
            refs.push(system.spawn(Idle));
        }
        wait_started(base, n).await;
        let after = Snapshot::now();
        set_counting(false);
        drop(refs);
        system.shutdown(DEADLINE).await;
        PerActor::between(&before, &after, n)
    })
}

/// A supervisor that spawns idle children on request.
struct Parent;
impl Actor for Parent {}
struct SpawnChildren(usize);
impl Message for SpawnChildren {
    type Reply = ();
}
impl Handler<SpawnChildren> for Parent {
    async fn handle(&mut self, m: SpawnChildren, ctx: &mut Context<Self>) {
        for _ in 0..m.0 {
            ctx.spawn(Idle);
        }
    }
}

/// Heap held per idle child actor: `n` spawned by one supervisor (`Context::spawn`), which
/// keeps them in its children table instead of the system's top-level table.
pub(crate) fn idle_child_memory(n: usize) -> PerActor {
    on_tokio(Flavor::One, async move {
        warm_tokio(n).await;
        let system = System::new(SystemConfig::default());
        let parent = system.spawn(Parent);
        set_counting(true);
        let before = Snapshot::now();
        let base = STARTED.load(std::sync::atomic::Ordering::Relaxed);
        parent
            .ask(SpawnChildren(n), DEADLINE)
            .await
            .expect("the supervisor answers");
        wait_started(base, n).await;
        let after = Snapshot::now();
        set_counting(false);
        system.shutdown(DEADLINE).await;
        PerActor::between(&before, &after, n)
    })
}

/// Virtual actors: heap per live activation, then what stays after passivating them all,
/// over two rounds of fresh ids (the first from an empty registry, the second after the
/// first burst came and went).
#[derive(Debug, Clone, Copy)]
pub(crate) struct VirtualMemory {
    pub(crate) live: PerActor,
    pub(crate) passivated_first: PerActor,
    pub(crate) passivated_second: PerActor,
}

struct Account;
impl Actor for Account {}
impl Handler<Ping> for Account {
    async fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

pub(crate) fn virtual_memory(n: usize) -> VirtualMemory {
    on_tokio(Flavor::One, async move {
        warm_tokio(n).await;
        let system = System::new(
            SystemConfig::default().virtuals(VirtualConfig::default().max_activations(4 * n)),
        );
        let reg = system.virtuals();
        reg.register(Kind::new("account", |_| Account).idle_timeout(None))
            .expect("a fresh registry takes the kind");
        let ids = |round: usize| -> Vec<ActorId> {
            (0..n)
                .map(|i| ActorId::new("account", format!("r{round}-{i}")).expect("valid id"))
                .collect()
        };
        let (first, second) = (ids(1), ids(2));
        set_counting(true);
        let mut rows = Vec::new();
        for ids in [&first, &second] {
            let before = Snapshot::now();
            for id in ids {
                reg.get::<Account>(id.clone())
                    .tell(Ping(0), DEADLINE)
                    .await
                    .expect("activation succeeds");
            }
            // Let every activation run its first message and park.
            tokio::task::yield_now().await;
            let live = Snapshot::now();
            for id in ids {
                reg.passivate(id)
                    .await
                    .expect("passivation finishes in time");
            }
            let after = Snapshot::now();
            rows.push((
                PerActor::between(&before, &live, n),
                PerActor::between(&before, &after, n),
            ));
        }
        set_counting(false);
        system.shutdown(DEADLINE).await;
        VirtualMemory {
            live: rows[0].0,
            passivated_first: rows[0].1,
            passivated_second: rows[1].1,
        }
    })
}

/// Heap allocation calls per tell and per ask (counted, not timed).
pub(crate) fn allocs_per_message(n: u64) -> (f64, f64) {
    on_tokio(Flavor::One, async move {
        let system = System::new(SystemConfig::default());
        let group = Group::new(1);
        let r = counter(&system, n, &group);
        r.ask(Get, DEADLINE).await.expect("the counter answers");
        set_counting(true);
        let a = Snapshot::now();
        for i in 0..n {
            r.tell(Ping(i)).await.expect("the counter runs");
        }
        group.wait().await;
        let b = Snapshot::now();
        for _ in 0..n {
            r.ask(Get, DEADLINE).await.expect("the counter answers");
        }
        let c = Snapshot::now();
        set_counting(false);
        (
            b.calls_since(&a) as f64 / n as f64,
            c.calls_since(&b) as f64 / n as f64,
        )
    })
}
