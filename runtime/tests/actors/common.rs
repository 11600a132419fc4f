//! Shared test actors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cortex_runtime::{Actor, Context, Handler, Message};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// A log of lifecycle events, shared between actors and the test.
#[derive(Clone, Default)]
pub(crate) struct Log(pub(crate) Arc<Mutex<Vec<String>>>);
impl Log {
    pub(crate) fn push(&self, s: impl Into<String>) {
        self.0.lock().push(s.into());
    }
    pub(crate) fn entries(&self) -> Vec<String> {
        self.0.lock().clone()
    }
    pub(crate) fn count(&self, s: &str) -> usize {
        self.0.lock().iter().filter(|e| *e == s).count()
    }
}

/// Counts drops of the state it is part of.
#[derive(Clone, Default)]
pub(crate) struct DropCounter(pub(crate) Arc<AtomicUsize>);
impl DropCounter {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
pub(crate) struct DropGuard(pub(crate) DropCounter);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A counter actor that can be blocked, made to panic and observed.
pub(crate) struct Counter {
    pub(crate) n: u64,
    pub(crate) log: Log,
    pub(crate) name: &'static str,
    pub(crate) _guard: Option<DropGuard>,
}

impl Counter {
    pub(crate) fn new(name: &'static str, log: &Log) -> Self {
        Self {
            n: 0,
            log: log.clone(),
            name,
            _guard: None,
        }
    }
}

impl Actor for Counter {
    async fn started(&mut self, _ctx: &mut Context<Self>) {
        self.log.push(format!("{}:started", self.name));
    }
    async fn stopping(&mut self, _ctx: &mut Context<Self>) {
        self.log.push(format!("{}:stopping", self.name));
    }
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.push(format!("{}:stopped n={}", self.name, self.n));
    }
    async fn restarted(&mut self, _ctx: &mut Context<Self>) {
        self.log.push(format!("{}:restarted", self.name));
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Add(pub(crate) u64);
cortex_runtime::message!(Add => u64, "test.Add");

impl Handler<Add> for Counter {
    async fn handle(&mut self, msg: Add, _ctx: &mut Context<Self>) -> u64 {
        self.n += msg.0;
        self.n
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Get;
cortex_runtime::message!(Get => u64, "test.Get");

impl Handler<Get> for Counter {
    async fn handle(&mut self, _: Get, _ctx: &mut Context<Self>) -> u64 {
        self.n
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Boom;
cortex_runtime::message!(Boom => (), "test.Boom");

impl Handler<Boom> for Counter {
    async fn handle(&mut self, _: Boom, _ctx: &mut Context<Self>) {
        panic!("boom in {}", self.name);
    }
}

/// Panics in the handler's synchronous part, before it returns its future.
#[derive(Debug, Clone)]
pub(crate) struct BoomEarly;
impl Message for BoomEarly {
    type Reply = ();
}
impl Handler<BoomEarly> for Counter {
    fn handle(
        &mut self,
        _: BoomEarly,
        _ctx: &mut Context<Self>,
    ) -> impl std::future::Future<Output = ()> + Send {
        if self.n < u64::MAX {
            panic!("early boom in {}", self.name);
        }
        async {}
    }
}

/// Blocks the handler until the notify is signalled.
#[derive(Clone)]
pub(crate) struct Block(pub(crate) Arc<Notify>);
impl Message for Block {
    type Reply = ();
}
impl Handler<Block> for Counter {
    async fn handle(&mut self, b: Block, _ctx: &mut Context<Self>) {
        b.0.notified().await;
    }
}

/// Stops the actor from inside.
pub(crate) struct StopMe;
impl Message for StopMe {
    type Reply = ();
}
impl Handler<StopMe> for Counter {
    async fn handle(&mut self, _: StopMe, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Yields until `cond` holds, for at most `rounds` scheduler turns (no wall clock).
pub(crate) async fn settle(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if cond() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    cond()
}
