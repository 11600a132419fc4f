//! A sharded system: two shard threads, each running a producer task beside the counters
//! it feeds, so that no tell crosses a thread.
//!
//! Run with `cargo run -p cortex-runtime --example sharded`.
#![allow(clippy::print_stdout)] // an example is a tiny CLI: it reports on stdout

use std::time::Duration;

use cortex_runtime::{Actor, ActorRef, Context, Handler, Message, System, SystemConfig};

struct Counter {
    total: u64,
}
impl Actor for Counter {}

struct Add(u64);
impl Message for Add {
    type Reply = ();
}
impl Handler<Add> for Counter {
    async fn handle(&mut self, msg: Add, _ctx: &mut Context<Self>) {
        self.total += msg.0;
    }
}

/// Answers the total and the shard the counter runs on.
struct Report;
impl Message for Report {
    type Reply = (u64, Option<usize>);
}
impl Handler<Report> for Counter {
    async fn handle(&mut self, _: Report, ctx: &mut Context<Self>) -> (u64, Option<usize>) {
        (self.total, ctx.shard())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let system = System::try_new(SystemConfig::default().shards(2))?;
    let mut producers = Vec::new();
    for k in 0..system.shards() {
        let sys = system.clone();
        let shard = system.shard_handle(k).ok_or("no such shard")?;
        // A task on shard k: the counters it spawns are placed on shard k too, and its
        // tells wake them without leaving the thread.
        producers.push(shard.spawn(async move {
            let counters: Vec<ActorRef<Counter>> =
                (0..4).map(|_| sys.spawn(Counter { total: 0 })).collect();
            for i in 0..10_000u64 {
                for c in &counters {
                    c.tell(Add(i)).await.expect("counters run until shutdown");
                }
            }
            counters
        }));
    }
    for p in producers {
        for c in p.await? {
            let (total, shard) = c.ask(Report, Duration::from_secs(5)).await?;
            println!("counter {} on shard {shard:?}: {total}", c.id());
        }
    }
    let report = system.shutdown(Duration::from_secs(5)).await;
    println!(
        "stopped {} actors; {} shard threads left running",
        report.stopped, report.threads_left
    );
    Ok(())
}
