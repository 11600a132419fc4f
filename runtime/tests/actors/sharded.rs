//! Sharded mode (`SystemConfig::shards`): placement, sends across shards, supervision,
//! timers, virtual actors, graceful shutdown and the ownership of the shard threads.
//!
//! The shards run on their own threads and clocks, so these tests use real time: waits are
//! asks (which complete when the actor got there) or conditions polled under a generous
//! deadline, never fixed sleeps used as synchronisation.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cortex_protocol::ActorId;
use cortex_runtime::{
    Actor, ActorRef, Context, Handler, Kind, Message, SpawnOptions, System, SystemConfig,
};
use tokio::sync::Notify;

use super::common::*;

const T: Duration = Duration::from_secs(10);

fn sharded(n: usize) -> System {
    System::new(SystemConfig::default().shards(n))
}

/// Polls `cond` every millisecond until it holds or `T` passed.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + T;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cond()
}

/// Reports where it runs, spawns children, and talks to other actors.
struct Probe {
    log: Log,
    depth: u32,
}

impl Probe {
    fn new(log: &Log) -> Self {
        Self {
            log: log.clone(),
            depth: 0,
        }
    }
}

impl Actor for Probe {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        // Depth 1: the root of a tree built at start, with two children (depth 2).
        if self.depth == 1 {
            for _ in 0..2 {
                ctx.spawn(Probe {
                    log: self.log.clone(),
                    depth: self.depth + 1,
                });
            }
        }
    }
    async fn stopping(&mut self, ctx: &mut Context<Self>) {
        let (d, s, n) = (self.depth, ctx.shard().unwrap(), ctx.children());
        self.log.push(format!("stopping {d} s{s} children={n}"));
    }
    async fn stopped(&mut self, ctx: &mut Context<Self>) {
        let (d, s, n) = (self.depth, ctx.shard().unwrap(), ctx.children());
        self.log.push(format!("stopped {d} s{s} children={n}"));
    }
}

struct Here;
impl Message for Here {
    type Reply = Option<usize>;
}
impl Handler<Here> for Probe {
    async fn handle(&mut self, _: Here, ctx: &mut Context<Self>) -> Option<usize> {
        ctx.shard()
    }
}

struct SpawnProbe;
impl Message for SpawnProbe {
    type Reply = ActorRef<Probe>;
}
impl Handler<SpawnProbe> for Probe {
    async fn handle(&mut self, _: SpawnProbe, ctx: &mut Context<Self>) -> ActorRef<Probe> {
        ctx.spawn(Probe::new(&self.log))
    }
}

struct SpawnCounter(&'static str);
impl Message for SpawnCounter {
    type Reply = ActorRef<Counter>;
}
impl Handler<SpawnCounter> for Probe {
    async fn handle(&mut self, m: SpawnCounter, ctx: &mut Context<Self>) -> ActorRef<Counter> {
        ctx.spawn(Counter::new(m.0, &self.log))
    }
}

/// Tells `Add(n)` to `to` from this actor's shard, then asks for the total.
struct AddVia(ActorRef<Counter>, u64);
impl Message for AddVia {
    type Reply = u64;
}
impl Handler<AddVia> for Probe {
    async fn handle(&mut self, m: AddVia, _: &mut Context<Self>) -> u64 {
        m.0.tell(Add(m.1)).await.unwrap();
        m.0.ask(Get, T).await.unwrap()
    }
}

#[tokio::test]
async fn spawn_tell_and_ask_across_shards() {
    let system = sharded(2);
    assert_eq!(system.shards(), 2);
    assert_eq!(
        system.current_shard(),
        None,
        "the test's thread is no shard"
    );
    let log = Log::default();

    // Explicit placement, and the modulo.
    for k in 0..4 {
        let p = system.spawn_with(Probe::new(&log), SpawnOptions::default().shard(k));
        assert_eq!(p.ask(Here, T).await, Ok(Some(k % 2)));
    }
    // From a thread that is no shard: round-robin, so both shards get actors.
    let mut seen = [0; 2];
    for _ in 0..4 {
        let p = system.spawn(Probe::new(&log));
        seen[p.ask(Here, T).await.unwrap().unwrap()] += 1;
    }
    assert_eq!(seen, [2, 2]);

    // A child stays on its parent's shard.
    let parent = system.spawn_with(Probe::new(&log), SpawnOptions::default().shard(1));
    let child = parent.ask(SpawnProbe, T).await.unwrap();
    assert_eq!(child.ask(Here, T).await, Ok(Some(1)));

    // A top-level actor spawned by a task running on a shard stays on that shard.
    let sys = system.clone();
    let l = log.clone();
    let on_shard = system
        .shard_handle(1)
        .unwrap()
        .spawn(async move {
            let p = sys.spawn(Probe::new(&l));
            (sys.current_shard(), p.ask(Here, T).await)
        })
        .await
        .unwrap();
    assert_eq!(on_shard, (Some(1), Ok(Some(1))));
    assert!(system.shard_handle(2).is_none());

    // Tell and ask from shard 0 to shard 1, and from the test's thread to both.
    let counter = system.spawn_with(Counter::new("c", &log), SpawnOptions::default().shard(1));
    let relay = system.spawn_with(Probe::new(&log), SpawnOptions::default().shard(0));
    for i in 1..=100 {
        assert_eq!(relay.ask(AddVia(counter.clone(), 1), T).await, Ok(i));
    }
    counter.tell(Add(10)).await.unwrap();
    assert_eq!(counter.ask(Get, T).await, Ok(110));

    let report = system.shutdown(T).await;
    assert_eq!((report.aborted, report.threads_left), (0, 0));
}

#[tokio::test]
async fn a_shard_of_another_system_is_not_ours() {
    let (a, b) = (sharded(2), sharded(2));
    let log = Log::default();
    let b2 = b.clone();
    let on_a = a
        .shard_handle(1)
        .unwrap()
        .spawn(async move {
            // Round-robin in `b` from a thread that is a shard of `a` only.
            let firsts: Vec<ActorRef<Probe>> = (0..2).map(|_| b2.spawn(Probe::new(&log))).collect();
            let mut at = Vec::new();
            for p in &firsts {
                at.push(p.ask(Here, T).await.unwrap());
            }
            (b2.current_shard(), at)
        })
        .await
        .unwrap();
    assert_eq!(on_a.0, None);
    let mut at = on_a.1;
    at.sort();
    assert_eq!(at, [Some(0), Some(1)]);
    for s in [a, b] {
        assert_eq!(s.shutdown(T).await.threads_left, 0);
    }
}

#[tokio::test]
async fn supervised_restarts_on_shards() {
    let system = sharded(2);
    let log = Log::default();
    // A top-level actor, restarted by the system's root supervisor. Asks queued behind
    // the panic are answered once it runs again: no polling needed.
    let top = system.spawn_with(Counter::new("top", &log), SpawnOptions::default().shard(1));
    top.tell(Add(3)).await.unwrap();
    top.tell(Boom).await.unwrap();
    assert_eq!(top.ask(Add(1), T).await, Ok(4), "same instance, restarted");
    assert_eq!(log.count("top:restarted"), 1);

    // A child, restarted by its actor parent on the same shard.
    let parent = system.spawn_with(Probe::new(&log), SpawnOptions::default().shard(0));
    let child = parent.ask(SpawnCounter("child"), T).await.unwrap();
    child.tell(Boom).await.unwrap();
    assert_eq!(child.ask(Add(2), T).await, Ok(2));
    assert_eq!(log.count("child:restarted"), 1);

    let report = system.shutdown(T).await;
    assert_eq!((report.stopped, report.aborted), (2, 0));
    assert_eq!(report.threads_left, 0);
}

/// Sends itself `Add(5)` through a timer when it starts.
struct Delayed(Counter);
impl Actor for Delayed {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.send_after(Add(5), Duration::from_millis(5));
    }
}
impl Handler<Add> for Delayed {
    async fn handle(&mut self, m: Add, _: &mut Context<Self>) -> u64 {
        self.0.n += m.0;
        self.0.n
    }
}
impl Handler<Get> for Delayed {
    async fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.0.n
    }
}

#[tokio::test]
async fn timers_and_virtual_actors_on_shards() {
    let system = sharded(2);
    let log = Log::default();
    let d = system.spawn(Delayed(Counter::new("d", &log)));
    let deadline = tokio::time::Instant::now() + T;
    while d.ask(Get, T).await != Ok(5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timer never fired"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let l = log.clone();
    system
        .virtuals()
        .register(Kind::new("counter", move |_| Counter::new("v", &l)))
        .unwrap();
    let reg = system.virtuals();
    for i in 0..4 {
        let id: ActorId = format!("counter/{i}").parse().unwrap();
        let v = reg.get::<Counter>(id.clone());
        assert_eq!(v.ask(Add(i), T).await, Ok(i));
        assert_eq!(v.ask(Add(1), T).await, Ok(i + 1));
        assert_eq!(reg.passivate(&id).await, Ok(true));
    }
    assert_eq!(log.count("v:stopping"), 4);

    let report = system.shutdown(T).await;
    assert_eq!((report.aborted, report.threads_left), (0, 0));
}

/// Counts the threads that have exited after touching it (a thread-local's destructor runs
/// as its thread ends, before a join of that thread returns).
struct ExitProbe(Arc<AtomicUsize>);
impl Drop for ExitProbe {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
thread_local! {
    static EXIT_PROBE: RefCell<Option<ExitProbe>> = const { RefCell::new(None) };
}

/// Arms the exit probe on every shard thread of `system`.
async fn arm_exit_probes(system: &System) -> Arc<AtomicUsize> {
    let exited = Arc::new(AtomicUsize::new(0));
    for k in 0..system.shards() {
        let e = Arc::clone(&exited);
        system
            .shard_handle(k)
            .unwrap()
            .spawn(async move {
                EXIT_PROBE.with(|p| *p.borrow_mut() = Some(ExitProbe(e)));
            })
            .await
            .unwrap();
    }
    exited
}

#[tokio::test]
async fn shutdown_drains_stops_children_first_and_joins_every_shard() {
    let system = sharded(2);
    let exited = arm_exit_probes(&system).await;
    let log = Log::default();
    // One tree per shard (a root and its 2 children).
    let mut roots = Vec::new();
    for k in 0..2 {
        let root = Probe {
            log: log.clone(),
            depth: 1,
        };
        roots.push(system.spawn_with(root, SpawnOptions::default().shard(k)));
    }
    // Both trees exist once the roots answer (a root spawns its children in `started`,
    // which runs before it handles anything).
    for r in &roots {
        r.ask(Here, T).await.unwrap();
    }
    // And a counter with queued work behind a blocked handler, to be drained.
    let c = system.spawn_with(Counter::new("d", &log), SpawnOptions::default().shard(1));
    let gate = Arc::new(Notify::new());
    c.tell(Block(gate.clone())).await.unwrap();
    for _ in 0..50 {
        c.tell(Add(1)).await.unwrap();
    }
    let shutdown = {
        let system = system.clone();
        tokio::spawn(async move { system.shutdown(T).await })
    };
    assert!(eventually(|| !c.is_alive()).await);
    assert!(c.try_tell(Add(100)).is_err(), "refused once shutdown began");
    gate.notify_one();
    let report = shutdown.await.unwrap();
    assert_eq!((report.stopped, report.aborted), (3, 0));
    assert_eq!(report.threads_left, 0);
    assert_eq!(log.count("d:stopped n=50"), 1, "{:?}", log.entries());
    // Each tree stopped bottom-up: the root ran `stopping` while its children lived, and
    // `stopped` after both children had stopped.
    let entries = log.entries();
    let at = |p: &str| -> Vec<usize> {
        let idx = entries.iter().enumerate();
        idx.filter(|(_, e)| e.starts_with(p))
            .map(|(i, _)| i)
            .collect()
    };
    for s in 0..2 {
        let roots_at = at(&format!("stopped 1 s{s}"));
        let leaves_at = at(&format!("stopped 2 s{s}"));
        assert_eq!((roots_at.len(), leaves_at.len()), (1, 2), "{entries:?}");
        assert!(leaves_at.iter().all(|l| *l < roots_at[0]), "{entries:?}");
        assert!(entries[roots_at[0]].ends_with("children=0"));
        let stopping = at(&format!("stopping 1 s{s}"));
        assert!(entries[stopping[0]].ends_with("children=2"), "{entries:?}");
    }
    // Every shard thread has ended (its thread-locals dropped) before shutdown returned.
    assert_eq!(exited.load(Ordering::SeqCst), 2);
    // Afterwards: a spawn gives a stopped ref, a task on a shard's runtime is dropped.
    let late = system.spawn(Counter::new("late", &log));
    assert_eq!(
        late.ask(Get, T).await,
        Err(cortex_runtime::ActorError::Stopped)
    );
    let task = system.shard_handle(0).unwrap().spawn(async { 1 });
    assert!(task.await.unwrap_err().is_cancelled());
}

/// Never returns from its handler; says when it got there.
struct Stuck(Arc<AtomicUsize>, #[allow(dead_code)] DropGuard);
impl Actor for Stuck {}
struct Hang;
impl Message for Hang {
    type Reply = ();
}
impl Handler<Hang> for Stuck {
    async fn handle(&mut self, _: Hang, _: &mut Context<Self>) {
        self.0.store(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
}

#[tokio::test]
async fn shutdown_aborts_a_stuck_actor_and_still_joins_its_shard() {
    let system = sharded(1);
    let exited = arm_exit_probes(&system).await;
    let drops = DropCounter::default();
    let entered = Arc::new(AtomicUsize::new(0));
    let c = system.spawn(Stuck(Arc::clone(&entered), DropGuard(drops.clone())));
    c.tell(Hang).await.unwrap();
    // Inside the handler, so that the drain request waits behind it (queued, it would be
    // dropped by the drain's own deadline instead).
    assert!(eventually(|| entered.load(Ordering::SeqCst) == 1).await);
    let report = system.shutdown(Duration::from_millis(200)).await;
    assert_eq!((report.stopped, report.aborted), (0, 1));
    assert_eq!(report.threads_left, 0);
    assert_eq!(drops.get(), 1, "the aborted actor's state was dropped");
    assert_eq!(exited.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_last_handle_outside_a_runtime_joins_the_shards() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = Log::default();
    let (system, exited) = rt.block_on(async {
        let system = sharded(2);
        let exited = arm_exit_probes(&system).await;
        let c = system.spawn(Counter::new("x", &log));
        assert_eq!(c.ask(Add(1), T).await, Ok(1));
        (system, exited)
    });
    drop(system);
    assert_eq!(
        exited.load(Ordering::SeqCst),
        2,
        "joined before drop returned"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_inside_a_runtime_stops_the_shards() {
    let system = sharded(2);
    let exited = arm_exit_probes(&system).await;
    drop(system);
    // Joined by a blocking task of this runtime: poll for it.
    assert!(eventually(|| exited.load(Ordering::SeqCst) == 2).await);
}
