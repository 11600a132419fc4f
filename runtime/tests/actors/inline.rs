//! Inline asks: an ask to an idle actor runs its handler on the asking task, and nothing
//! about the actor's guarantees changes (one message at a time, mailbox order, supervision,
//! deadlines, stop, shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cortex_runtime::{
    ActorError, Context, Handler, Message, SpawnOptions, SupervisorStrategy, System, SystemConfig,
};
use tokio::sync::Notify;
use tokio::task::Id;

use super::common::*;

/// Replies with the id of the task the handler runs on, before and after one yield (a
/// handler that is pending at its first poll when `hop`).
struct Where {
    hop: bool,
}
impl Message for Where {
    type Reply = (Option<Id>, Option<Id>);
}
impl Handler<Where> for Counter {
    async fn handle(&mut self, m: Where, _ctx: &mut Context<Self>) -> (Option<Id>, Option<Id>) {
        let before = tokio::task::try_id();
        if m.hop {
            tokio::task::yield_now().await;
        }
        (before, tokio::task::try_id())
    }
}

/// Adds `n` once `gate` opens.
struct SlowAdd {
    n: u64,
    gate: Arc<Notify>,
}
impl Message for SlowAdd {
    type Reply = u64;
}
impl Handler<SlowAdd> for Counter {
    async fn handle(&mut self, m: SlowAdd, _ctx: &mut Context<Self>) -> u64 {
        m.gate.notified().await;
        self.n += m.n;
        self.n
    }
}

const T: Duration = Duration::from_secs(5);

/// From a task of its own (a test's body is not a task), asks `Where` until the actor has
/// parked and lent its state (the first asks may find it still starting); returns that
/// task's id and the last reply.
async fn where_idle(
    c: &cortex_runtime::ActorRef<Counter>,
    hop: bool,
) -> (Id, (Option<Id>, Option<Id>)) {
    let c = c.clone();
    tokio::spawn(async move {
        let me = tokio::task::id();
        let mut last = (None, None);
        for _ in 0..100 {
            last = c.ask(Where { hop }, T).await.unwrap();
            if last.0 == Some(me) {
                break;
            }
            tokio::task::yield_now().await;
        }
        (me, last)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn an_ask_to_an_idle_actor_runs_on_the_asking_task() {
    let system = System::new(SystemConfig::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    let (me, (before, after)) = where_idle(&c, false).await;
    assert_eq!(before, Some(me), "the handler ran on the asking task");
    assert_eq!(after, Some(me));

    // Switched off: every handler runs on the actor's own task.
    let q = system.spawn_with(
        Counter::new("q", &log),
        SpawnOptions::default().inline_asks(false),
    );
    let (me, (before, _)) = where_idle(&q, false).await;
    assert!(
        before.is_some() && before != Some(me),
        "ran on the actor's task"
    );
}

#[tokio::test]
async fn a_handler_pending_at_its_first_poll_is_finished_by_the_actors_task() {
    let system = System::new(SystemConfig::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    let (me, (before, after)) = where_idle(&c, true).await;
    assert_eq!(before, Some(me), "started inline");
    assert!(
        after.is_some() && after != Some(me),
        "finished on the actor's task"
    );
    // Still one actor, answering.
    assert_eq!(c.ask(Add(2), T).await, Ok(2));
}

#[tokio::test]
async fn an_inline_ask_never_overtakes_queued_messages() {
    let system = System::new(SystemConfig::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    where_idle(&c, false).await;
    // Busy in a handler that waits: the tells queue behind it, and so must the ask.
    let gate = Arc::new(Notify::new());
    let slow = {
        let (c, gate) = (c.clone(), gate.clone());
        tokio::spawn(async move { c.ask(SlowAdd { n: 100, gate }, T).await })
    };
    assert!(settle(|| c.queued() == 0).await);
    tokio::task::yield_now().await;
    for _ in 0..10 {
        c.tell(Add(1)).await.unwrap();
    }
    let get = {
        let c = c.clone();
        tokio::spawn(async move { c.ask(Get, T).await })
    };
    assert!(
        settle(|| c.queued() == 11).await,
        "the ask queued behind the tells"
    );
    gate.notify_one();
    assert_eq!(slow.await.unwrap(), Ok(100));
    assert_eq!(get.await.unwrap(), Ok(110));
    // Idle again: the next ask runs inline and sees everything before it.
    let (me, (before, _)) = where_idle(&c, false).await;
    assert_eq!(before, Some(me));
    assert_eq!(c.ask(Add(1), T).await, Ok(111));
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_an_inline_handler_is_supervised_like_any_other() {
    let system = System::new(
        SystemConfig::default()
            .root_strategy(SupervisorStrategy::one_for_one(5, Duration::from_secs(60))),
    );
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    where_idle(&c, false).await;
    assert_eq!(c.ask(Add(3), T).await, Ok(3));
    let err = c.ask(Boom, T).await.unwrap_err();
    assert!(matches!(err, ActorError::Failed { ref reason } if reason.contains("boom in c")));
    // Answered after the restart, which the supervisor saw as a failure.
    assert_eq!(c.ask(Add(1), T).await, Ok(4));
    assert_eq!(log.count("c:restarted"), 1);
    // A panic before the handler's future exists, too.
    where_idle(&c, false).await;
    assert!(matches!(
        c.ask(BoomEarly, T).await,
        Err(ActorError::Failed { .. })
    ));
    assert_eq!(c.ask(Get, T).await, Ok(4));
    assert_eq!(log.count("c:restarted"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_asks_deadline_never_cuts_a_handler_short() {
    let system = System::new(SystemConfig::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    where_idle(&c, false).await;
    let gate = Arc::new(Notify::new());
    let r = c
        .ask(
            SlowAdd {
                n: 5,
                gate: gate.clone(),
            },
            Duration::from_millis(50),
        )
        .await;
    assert_eq!(r, Err(ActorError::Timeout));
    // The handler goes on on the actor's task and finishes once the gate opens.
    gate.notify_one();
    assert_eq!(c.ask(Get, T).await, Ok(5));
}

#[tokio::test]
async fn an_inline_handler_can_stop_its_actor() {
    let system = System::new(SystemConfig::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    where_idle(&c, false).await;
    assert_eq!(c.ask(StopMe, T).await, Ok(()));
    c.wait_stopped(T).await.unwrap();
    assert_eq!(log.count("c:stopped n=0"), 1);
    assert_eq!(c.ask(Get, T).await, Err(ActorError::Stopped));
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_an_actor_whose_resumed_handler_never_finishes() {
    let system = System::new(SystemConfig::default());
    let log = Log::default();
    let drops = DropCounter::default();
    let mut counter = Counter::new("c", &log);
    counter._guard = Some(DropGuard(drops.clone()));
    let c = system.spawn(counter);
    where_idle(&c, false).await;
    let never = Arc::new(Notify::new());
    let stuck = {
        let c = c.clone();
        let gate = never.clone();
        tokio::spawn(async move {
            c.ask(SlowAdd { n: 1, gate }, Duration::from_secs(3600))
                .await
        })
    };
    assert!(settle(|| c.queued() == 0).await);
    system.shutdown(Duration::from_secs(1)).await;
    assert!(settle(|| drops.get() == 1).await, "the state was dropped");
    assert!(matches!(
        stuck.await.unwrap(),
        Err(ActorError::Stopped | ActorError::Timeout)
    ));
}

/// Counts handlers that ran while another handler of the same actor was running.
struct Exclusive {
    inside: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
    n: u64,
}
impl cortex_runtime::Actor for Exclusive {}
struct Bump {
    hop: bool,
}
impl Message for Bump {
    type Reply = u64;
}
impl Handler<Bump> for Exclusive {
    async fn handle(&mut self, m: Bump, _ctx: &mut Context<Self>) -> u64 {
        if self.inside.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        if m.hop {
            tokio::task::yield_now().await;
        }
        self.n += 1;
        self.inside.store(false, Ordering::SeqCst);
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inline_and_queued_messages_run_one_at_a_time() {
    let system = System::new(SystemConfig::default());
    let overlaps = Arc::new(AtomicUsize::new(0));
    let e = system.spawn(Exclusive {
        inside: Arc::default(),
        overlaps: overlaps.clone(),
        n: 0,
    });
    const PER: u64 = 2_000;
    let mut tasks = Vec::new();
    for k in 0..6u64 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER {
                let hop = (i + k) % 7 == 0;
                if k < 4 {
                    e.ask(Bump { hop }, T).await.unwrap();
                } else {
                    e.tell(Bump { hop }).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The tells may still be queued; an ask goes behind them.
    let n = e.ask(Bump { hop: false }, T).await.unwrap();
    assert_eq!(n, 6 * PER + 1);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
}

#[test]
fn an_ask_from_another_runtime_is_queued() {
    let home = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let log = Log::default();
    let (system, c) = home.block_on(async {
        let system = System::new(SystemConfig::default());
        let c = system.spawn(Counter::new("c", &log));
        // Started, parked, lent from its own runtime.
        where_idle(&c, false).await;
        (system, c)
    });
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (me, (before, _)) = other.block_on(async {
        let c2 = c.clone();
        tokio::spawn(async move {
            let me = tokio::task::id();
            (me, c2.ask(Where { hop: false }, T).await.unwrap())
        })
        .await
        .unwrap()
    });
    assert!(
        before.is_some() && before != Some(me),
        "ran on the actor's runtime"
    );
    home.block_on(system.shutdown(T));
}

/// One actor of a chain: asks the next one and counts the links after it.
struct Link {
    next: Option<cortex_runtime::ActorRef<Link>>,
}
impl cortex_runtime::Actor for Link {}
struct Relay;
impl Message for Relay {
    type Reply = u32;
}
impl Handler<Relay> for Link {
    async fn handle(&mut self, _: Relay, _ctx: &mut Context<Self>) -> u32 {
        match &self.next {
            Some(next) => next.ask(Relay, T).await.map_or(0, |n| n + 1),
            None => 0,
        }
    }
}

#[tokio::test]
async fn a_long_chain_of_asks_does_not_nest_without_bound() {
    // Each idle link would run the next one's handler inside its own poll: 3,000 deep
    // overflows a test thread's 2 MiB stack. Past a bounded depth an ask is queued instead.
    // (Unconstrained by tokio's coop budget, which would otherwise end the nesting after
    // 128 asks in one poll.)
    const LINKS: u32 = 3_000;
    let system = System::new(SystemConfig::default());
    let mut head = system.spawn(Link { next: None });
    for _ in 1..LINKS {
        head = system.spawn(Link { next: Some(head) });
    }
    for _ in 0..2 {
        // The second pass finds every link parked and lent.
        let h = head.clone();
        let n = tokio::spawn(tokio::task::unconstrained(
            async move { h.ask(Relay, T).await },
        ))
        .await
        .unwrap();
        assert_eq!(n, Ok(LINKS - 1));
    }
    system.shutdown(T).await;
}
