//! Graceful shutdown: drain, children before parents, deadline, refusal afterwards.

use std::sync::Arc;
use std::time::Duration;

use cortex_protocol::{ActorId, MessageName};
use cortex_runtime::{
    Actor, ActorError, Codec, Context, Kind, System, SystemConfig, VirtualConfig,
};
use tokio::sync::Notify;

use super::common::*;

struct Tree {
    log: Log,
    depth: u32,
}

impl Actor for Tree {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        if self.depth < 2 {
            for _ in 0..2 {
                ctx.spawn(Tree {
                    log: self.log.clone(),
                    depth: self.depth + 1,
                });
            }
        }
    }
    async fn stopping(&mut self, ctx: &mut Context<Self>) {
        self.log.push(format!(
            "stopping {} children={}",
            self.depth,
            ctx.children()
        ));
    }
    async fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.log.push(format!(
            "stopped {} children={}",
            self.depth,
            ctx.children()
        ));
    }
}

#[tokio::test]
async fn children_stop_before_parents() {
    let system = System::new(Default::default());
    let log = Log::default();
    system.spawn(Tree {
        log: log.clone(),
        depth: 0,
    });
    // Wait for the whole tree (1 + 2 + 4) to have started: ask nothing, just settle.
    let report = {
        tokio::task::yield_now().await;
        system.shutdown(Duration::from_secs(5)).await
    };
    assert_eq!(report.stopped, 1);
    assert_eq!(report.aborted, 0);
    let entries = log.entries();
    let pos = |s: &str| entries.iter().position(|e| e.starts_with(s)).unwrap();
    let stopped_at = |d: u32| -> Vec<usize> {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.starts_with(&format!("stopped {d}")))
            .map(|(i, _)| i)
            .collect()
    };
    let (root, mid, leaves) = (stopped_at(0), stopped_at(1), stopped_at(2));
    assert_eq!(
        (root.len(), mid.len(), leaves.len()),
        (1, 2, 4),
        "{entries:?}"
    );
    assert!(
        leaves.iter().all(|l| mid.iter().all(|m| l < m)) || {
            // Each leaf stops before its own parent; parents are independent of each other.
            mid.iter()
                .all(|m| leaves.iter().filter(|l| *l < m).count() >= 2)
        }
    );
    assert!(mid.iter().all(|m| *m < root[0]));
    assert!(leaves.iter().all(|l| *l < root[0]));
    // The root ran `stopping` while its children were alive, `stopped` after they left.
    assert!(entries[pos("stopping 0")].ends_with("children=2"));
    assert!(entries[root[0]].ends_with("children=0"));
}

#[tokio::test]
async fn shutdown_drains_queued_messages() {
    let system = System::new(Default::default());
    let log = Log::default();
    let c = system.spawn(Counter::new("d", &log));
    let gate = Arc::new(Notify::new());
    c.tell(Block(gate.clone())).await.unwrap();
    for _ in 0..50 {
        c.tell(Add(1)).await.unwrap();
    }
    let shutdown = {
        let system = system.clone();
        tokio::spawn(async move { system.shutdown(Duration::from_secs(5)).await })
    };
    // New messages are refused once shutdown began; queued ones still run.
    assert!(settle(|| !c.is_alive()).await);
    assert!(c.try_tell(Add(100)).is_err());
    gate.notify_one();
    let report = shutdown.await.unwrap();
    assert_eq!(report.stopped, 1);
    assert_eq!(log.count("d:stopped n=50"), 1, "{:?}", log.entries());
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_at_the_deadline() {
    let system = System::new(Default::default());
    let log = Log::default();
    let drops = DropCounter::default();
    let mut stuck = Counter::new("s", &log);
    stuck._guard = Some(DropGuard(drops.clone()));
    let c = system.spawn(stuck);
    c.tell(Block(Arc::new(Notify::new()))).await.unwrap();
    let report = system.shutdown(Duration::from_secs(2)).await;
    assert_eq!((report.stopped, report.aborted), (0, 1));
    assert!(settle(|| drops.get() == 1).await);
}

#[tokio::test]
async fn nothing_starts_after_shutdown() {
    let system = System::new(SystemConfig::default().virtuals(VirtualConfig::default()));
    let log = Log::default();
    let l = log.clone();
    system
        .virtuals()
        .register(Kind::new("counter", move |_| Counter::new("v", &l)).handles::<Add>())
        .unwrap();
    let id: ActorId = "counter/1".parse().unwrap();
    let add = MessageName::new("test.Add").unwrap();
    let t = Duration::from_secs(5);
    system
        .virtuals()
        .send_erased(&id, &add, b"1", Codec::Json, t)
        .await
        .unwrap();
    let report = system.shutdown(t).await;
    assert_eq!(report.stopped, 1);
    assert_eq!(log.count("v:stopped n=1"), 1);
    assert!(!system.is_accepting());
    let err = system
        .virtuals()
        .send_erased(&id, &add, b"1", Codec::Json, t)
        .await
        .unwrap_err();
    assert!(matches!(err, ActorError::Rejected { .. }));
    let late = system.spawn(Counter::new("late", &log));
    assert_eq!(late.ask(Get, t).await, Err(ActorError::Stopped));
    assert_eq!(system.shutdown(t).await, Default::default());
}
