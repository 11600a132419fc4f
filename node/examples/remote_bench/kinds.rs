//! The actor kinds a bench node hosts: the bank example's kinds plus `sink`, whose actors
//! count tells in a process-wide counter and echo asks.

use std::sync::atomic::{AtomicU64, Ordering};

use cortex_node::NodeBuilder;
use cortex_runtime::{Actor, Context, Handler, Kind};
use serde::{Deserialize, Serialize};

/// Tells received by every `sink` actor of this process.
static TELLS_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// A tell carrying a payload (64 bytes in the benchmarks).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Blob(pub(crate) Vec<u8>);
cortex_runtime::message!(Blob => (), "bench.Blob");

/// An ask answered with its own payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Echo(pub(crate) Vec<u8>);
cortex_runtime::message!(Echo => Vec<u8>, "bench.Echo");

/// Asks for the number of tells every `sink` actor of the hosting process has received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Received;
cortex_runtime::message!(Received => u64, "bench.Received");

/// The `sink` actor.
pub(crate) struct Sink;
impl Actor for Sink {}
impl Handler<Blob> for Sink {
    async fn handle(&mut self, _: Blob, _: &mut Context<Self>) {
        TELLS_RECEIVED.fetch_add(1, Ordering::Relaxed);
    }
}
impl Handler<Echo> for Sink {
    async fn handle(&mut self, e: Echo, _: &mut Context<Self>) -> Vec<u8> {
        e.0
    }
}
impl Handler<Received> for Sink {
    async fn handle(&mut self, _: Received, _: &mut Context<Self>) -> u64 {
        TELLS_RECEIVED.load(Ordering::Relaxed)
    }
}

/// Registers the bank kinds and `sink`.
pub(crate) fn kinds(builder: NodeBuilder) -> NodeBuilder {
    crate::actors::kinds(builder).kind(
        Kind::new("sink", |_| Sink)
            .handles::<Blob>()
            .handles::<Echo>()
            .handles::<Received>(),
    )
}
