//! Restarts within limits, escalation past them, one-for-one and all-for-one.

use std::time::Duration;

use cortex_runtime::{
    Actor, ActorRef, Context, Handler, Message, SpawnOptions, SupervisorStrategy, System,
    SystemConfig,
};

use super::common::*;

fn system_with_root(max: u32) -> System {
    System::new(
        SystemConfig::default().root_strategy(SupervisorStrategy::one_for_one(
            max,
            Duration::from_secs(60),
        )),
    )
}

#[tokio::test(start_paused = true)]
async fn panicking_handler_restarts_within_limits_then_stops() {
    let system = system_with_root(2);
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    for round in 1..=2 {
        c.tell(Boom).await.unwrap();
        c.tell(Add(1)).await.unwrap();
        assert_eq!(c.ask(Get, Duration::from_secs(1)).await, Ok(round));
        assert_eq!(log.count("c:restarted"), round as usize);
    }
    // Third failure within the window: past the limit, the root stops it.
    c.tell(Boom).await.unwrap();
    c.wait_stopped(Duration::from_secs(5)).await.unwrap();
    assert_eq!(log.count("c:restarted"), 2);
    assert_eq!(log.count("c:stopped n=2"), 1);
    assert!(settle(|| system.top_level() == 0).await);
}

#[tokio::test(start_paused = true)]
async fn restart_window_slides() {
    let system = system_with_root(1);
    let log = Log::default();
    let c = system.spawn(Counter::new("c", &log));
    for _ in 0..3 {
        c.tell(Boom).await.unwrap();
        assert_eq!(c.ask(Get, Duration::from_secs(1)).await, Ok(0));
        // Older failures leave the window.
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    assert_eq!(log.count("c:restarted"), 3);
    assert!(c.is_alive());
}

#[tokio::test]
async fn factory_restart_builds_fresh_state() {
    let system = System::new(Default::default());
    let log = Log::default();
    let l2 = log.clone();
    let c = system.spawn_factory(move || Counter::new("f", &l2), SpawnOptions::default());
    c.tell(Add(5)).await.unwrap();
    let _ = c.ask(Boom, Duration::from_secs(5)).await;
    assert_eq!(c.ask(Get, Duration::from_secs(5)).await, Ok(0));
    system.shutdown(Duration::from_secs(5)).await;
}

/// A supervisor that spawns two counters in `started` (and again after a restart).
struct Parent {
    strategy: SupervisorStrategy,
    log: Log,
    kids: Vec<ActorRef<Counter>>,
}

impl Actor for Parent {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        self.log.push("parent:started");
        self.kids = vec![
            ctx.spawn(Counter::new("a", &self.log)),
            ctx.spawn(Counter::new("b", &self.log)),
        ];
    }
    async fn restarted(&mut self, ctx: &mut Context<Self>) {
        self.log.push("parent:restarted");
        self.started(ctx).await;
    }
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.push("parent:stopped");
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        self.strategy
    }
}

struct Kids;
impl Message for Kids {
    type Reply = (ActorRef<Counter>, ActorRef<Counter>, usize);
}
impl Handler<Kids> for Parent {
    async fn handle(
        &mut self,
        _: Kids,
        ctx: &mut Context<Self>,
    ) -> (ActorRef<Counter>, ActorRef<Counter>, usize) {
        (self.kids[0].clone(), self.kids[1].clone(), ctx.children())
    }
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child() {
    let system = System::new(Default::default());
    let log = Log::default();
    let p = system.spawn(Parent {
        strategy: SupervisorStrategy::one_for_one(3, Duration::from_secs(10)),
        log: log.clone(),
        kids: vec![],
    });
    let (a, b, n) = p.ask(Kids, Duration::from_secs(1)).await.unwrap();
    assert_eq!(n, 2);
    b.tell(Add(4)).await.unwrap();
    a.tell(Boom).await.unwrap();
    assert_eq!(a.ask(Get, Duration::from_secs(1)).await, Ok(0));
    assert_eq!(b.ask(Get, Duration::from_secs(1)).await, Ok(4));
    assert_eq!(log.count("a:restarted"), 1);
    assert_eq!(log.count("b:restarted"), 0);
}

#[tokio::test(start_paused = true)]
async fn all_for_one_restarts_every_child() {
    let system = System::new(Default::default());
    let log = Log::default();
    let p = system.spawn(Parent {
        strategy: SupervisorStrategy::all_for_one(3, Duration::from_secs(10)),
        log: log.clone(),
        kids: vec![],
    });
    let (a, b, _) = p.ask(Kids, Duration::from_secs(1)).await.unwrap();
    a.tell(Boom).await.unwrap();
    assert_eq!(a.ask(Get, Duration::from_secs(1)).await, Ok(0));
    assert_eq!(b.ask(Get, Duration::from_secs(1)).await, Ok(0));
    assert!(settle(|| log.count("b:restarted") == 1).await);
    assert_eq!(log.count("a:restarted"), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_past_the_limit_escalate_to_the_parent() {
    let system = system_with_root(5);
    let log = Log::default();
    let p = system.spawn(Parent {
        strategy: SupervisorStrategy::one_for_one(1, Duration::from_secs(10)),
        log: log.clone(),
        kids: vec![],
    });
    let (a, b, _) = p.ask(Kids, Duration::from_secs(1)).await.unwrap();
    a.tell(Boom).await.unwrap();
    assert_eq!(a.ask(Get, Duration::from_secs(1)).await, Ok(0));
    // Second failure within the window: the parent gives up on `a` and fails itself; the
    // root restarts the parent, which stops its old children and spawns new ones.
    a.tell(Boom).await.unwrap();
    a.wait_stopped(Duration::from_secs(5)).await.unwrap();
    b.wait_stopped(Duration::from_secs(5)).await.unwrap();
    assert!(settle(|| log.count("parent:restarted") == 1).await);
    let (a2, b2, n) = p.ask(Kids, Duration::from_secs(1)).await.unwrap();
    assert_eq!(n, 2);
    assert!(a2 != a && b2 != b);
    assert_eq!(a2.ask(Add(1), Duration::from_secs(1)).await, Ok(1));
    assert!(p.is_alive());
}
