//! A supervisor with two workers: a worker that panics is restarted (one-for-one) until it
//! fails too often, then the failure escalates and the supervisor itself is restarted by
//! the root, which rebuilds its workers. Shutdown stops workers before the supervisor.
//!
//! Run with `cargo run -p cortex-runtime --example supervised_tree`.
#![allow(clippy::print_stdout)] // an example is a tiny CLI: it reports on stdout

use std::time::Duration;

use cortex_runtime::{
    Actor, ActorError, ActorRef, Context, Handler, Message, SupervisorStrategy, System,
};

struct Worker {
    name: String,
    done: u64,
}

impl Actor for Worker {
    async fn restarted(&mut self, _ctx: &mut Context<Self>) {
        println!(
            "  {} restarted (kept {} finished jobs)",
            self.name, self.done
        );
    }
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        println!("  {} stopped", self.name);
    }
}

struct Job {
    fail: bool,
}
impl Message for Job {
    type Reply = u64;
}
impl Handler<Job> for Worker {
    async fn handle(&mut self, job: Job, _ctx: &mut Context<Self>) -> u64 {
        if job.fail {
            panic!("{} hit a bad job", self.name);
        }
        self.done += 1;
        self.done
    }
}

struct Supervisor {
    workers: Vec<ActorRef<Worker>>,
}

impl Actor for Supervisor {
    async fn started(&mut self, ctx: &mut Context<Self>) {
        println!("supervisor started");
        self.workers = (0..2)
            .map(|i| {
                ctx.spawn(Worker {
                    name: format!("worker-{i}"),
                    done: 0,
                })
            })
            .collect();
    }
    async fn stopped(&mut self, _ctx: &mut Context<Self>) {
        println!("supervisor stopped (after its workers)");
    }
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        // Two restarts per worker per minute; the third failure escalates.
        SupervisorStrategy::one_for_one(2, Duration::from_secs(60))
    }
}

struct Workers;
impl Message for Workers {
    type Reply = Vec<ActorRef<Worker>>;
}
impl Handler<Workers> for Supervisor {
    async fn handle(&mut self, _: Workers, _ctx: &mut Context<Self>) -> Vec<ActorRef<Worker>> {
        self.workers.clone()
    }
}

#[tokio::main]
async fn main() -> Result<(), ActorError> {
    // Panics are caught by the runtime; keep the report to one line each.
    std::panic::set_hook(Box::new(|info| println!("  caught: {info}")));
    let t = Duration::from_secs(1);
    let system = System::new(Default::default());
    let sup = system.spawn(Supervisor { workers: vec![] });
    let workers = sup.ask(Workers, t).await?;
    let w0 = &workers[0];
    println!(
        "worker-0 finished {} job(s)",
        w0.ask(Job { fail: false }, t).await?
    );
    for attempt in 1..=3 {
        let outcome = w0.ask(Job { fail: true }, t).await;
        println!("bad job #{attempt}: {outcome:?}");
    }
    // The third failure escalated: the supervisor was restarted with fresh workers.
    w0.wait_stopped(t).await?;
    let fresh = sup.ask(Workers, t).await?;
    println!(
        "fresh worker-0 finished {} job(s)",
        fresh[0].ask(Job { fail: false }, t).await?
    );
    let report = system.shutdown(Duration::from_secs(5)).await;
    println!("shutdown: {report:?}");
    Ok(())
}
