//! The smallest actor: a counter told and asked from main.
//!
//! Run with `cargo run -p cortex-runtime --example counter`.
#![allow(clippy::print_stdout)] // an example is a tiny CLI: it reports on stdout

use std::time::Duration;

use cortex_runtime::{Actor, Context, Handler, Message, System};

struct Counter {
    total: u64,
}

impl Actor for Counter {
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        println!("counter stopped at {}", self.total);
    }
}

struct Add(u64);
impl Message for Add {
    type Reply = ();
}
impl Handler<Add> for Counter {
    async fn handle(&mut self, msg: Add, _ctx: &mut Context<Self>) {
        self.total += msg.0;
    }
}

struct Total;
impl Message for Total {
    type Reply = u64;
}
impl Handler<Total> for Counter {
    async fn handle(&mut self, _: Total, _ctx: &mut Context<Self>) -> u64 {
        self.total
    }
}

#[tokio::main]
async fn main() {
    let system = System::new(Default::default());
    let counter = system.spawn(Counter { total: 0 });
    for i in 1..=1000 {
        // Waits for mailbox room: backpressure instead of an unbounded queue.
        if counter.tell(Add(i)).await.is_err() {
            println!("the counter stopped early");
            return;
        }
    }
    match counter.ask(Total, Duration::from_secs(1)).await {
        Ok(total) => println!("total = {total}"),
        Err(e) => println!("ask failed: {e} (code {:?})", e.code()),
    }
    let report = system.shutdown(Duration::from_secs(5)).await;
    println!("shutdown: {report:?}");
}
