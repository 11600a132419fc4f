//! `cortex-bench`: Cortex's actor core (`cortex-runtime`) measured beside kameo 0.22,
//! ractor 0.16 and actix 0.13 in one run, each row on a fresh runtime, printed as a
//! Markdown table with Cortex/peer ratios.
//!
//! Run with `cd bench && cargo run --release` (`-- --scale 0.1` for a quick smoke run).
//! Its own workspace, so the project's `cargo test --workspace` never builds the peers.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI: the table is its output

mod actix_rt;
mod alloc;
mod common;
mod cortex;
mod kameo_rt;
mod ractor_rt;
mod report;

use std::time::Duration;

use common::{AskStats, Flavor, PerActor};
use report::{Better, Row, Table};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// Timed rows run this many times (runtimes interleaved); the median is reported.
const REPS: usize = 3;

struct Sizes {
    tells: u64,
    many_actors: usize,
    per_actor: u64,
    ask_warm: usize,
    asks: usize,
    spawns: usize,
    idle: usize,
    alloc_msgs: u64,
}

impl Sizes {
    fn scaled(scale: f64) -> Self {
        let s = |n: f64| ((n * scale) as usize).max(10);
        Self {
            tells: s(2_000_000.0) as u64,
            many_actors: 1_000,
            per_actor: s(2_000.0) as u64,
            ask_warm: s(2_000.0),
            asks: s(200_000.0),
            spawns: s(50_000.0),
            idle: 10_000,
            alloc_msgs: s(100_000.0) as u64,
        }
    }
}

fn median<T: Copy, K: PartialOrd>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> T {
    v.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .expect("no NaN in bench figures")
    });
    v[v.len() / 2]
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// One figure per runtime, in the order Cortex, kameo, ractor, actix.
type Four = [Option<f64>; 4];

fn main() {
    let scale = std::env::args()
        .skip_while(|a| a != "--scale")
        .nth(1)
        .map(|s| {
            s.parse::<f64>()
                .expect("--scale takes a number such as 0.1")
        })
        .unwrap_or(1.0);
    let z = Sizes::scaled(scale);
    let mut table = Table::default();

    // 1. Tell throughput, one actor.
    for flavor in [Flavor::One, Flavor::Two] {
        let mut runs: Vec<Four> = Vec::new();
        for rep in 0..REPS {
            eprintln!("tell, 1 actor, {} (rep {})", flavor.label(), rep + 1);
            let actix = (flavor == Flavor::One).then(|| rate(z.tells, actix_rt::tell_one(z.tells)));
            runs.push([
                Some(rate(z.tells, cortex::tell_one(flavor, z.tells))),
                Some(rate(z.tells, kameo_rt::tell_one(flavor, z.tells))),
                Some(rate(z.tells, ractor_rt::tell_one(flavor, z.tells))),
                actix,
            ]);
        }
        table.push(Row::new(
            format!("tell, 1 actor, {} (msgs/s)", flavor.label()),
            Better::Higher,
            medians(&runs),
            report::rate,
        ));
    }

    // 2. Tell throughput, 1,000 actors on 2 workers (actix: 2 arbiters).
    let total = z.many_actors as u64 * z.per_actor;
    let mut runs: Vec<Four> = Vec::new();
    for rep in 0..REPS {
        eprintln!(
            "tell, {} actors, 2 workers (rep {})",
            z.many_actors,
            rep + 1
        );
        runs.push([
            Some(rate(total, cortex::tell_many(z.many_actors, z.per_actor))),
            Some(rate(total, kameo_rt::tell_many(z.many_actors, z.per_actor))),
            Some(rate(
                total,
                ractor_rt::tell_many(z.many_actors, z.per_actor),
            )),
            Some(rate(total, actix_rt::tell_many(z.many_actors, z.per_actor))),
        ]);
    }
    table.push(Row::new(
        format!(
            "tell, {} actors, 2 workers, 2 senders (msgs/s)",
            z.many_actors
        ),
        Better::Higher,
        medians(&runs),
        report::rate,
    ));

    // 3. Ask round trips.
    for flavor in [Flavor::One, Flavor::Two] {
        let mut runs: Vec<[Option<AskStats>; 4]> = Vec::new();
        for rep in 0..REPS {
            eprintln!("ask, {} (rep {})", flavor.label(), rep + 1);
            runs.push([
                Some(cortex::ask(flavor, z.ask_warm, z.asks)),
                Some(kameo_rt::ask(flavor, z.ask_warm, z.asks)),
                Some(ractor_rt::ask(flavor, z.ask_warm, z.asks)),
                (flavor == Flavor::One).then(|| actix_rt::ask(z.ask_warm, z.asks)),
            ]);
        }
        let pick = |f: fn(&AskStats) -> f64| -> Vec<Four> {
            runs.iter().map(|r| r.map(|s| s.as_ref().map(f))).collect()
        };
        let label = flavor.label();
        table.push(Row::new(
            format!("ask p50, {label}"),
            Better::Lower,
            medians(&pick(|s| s.p50.as_secs_f64())),
            report::micros,
        ));
        table.push(Row::new(
            format!("ask p99, {label}"),
            Better::Lower,
            medians(&pick(|s| s.p99.as_secs_f64())),
            report::micros,
        ));
        table.push(Row::new(
            format!("asks/s, sequential, {label}"),
            Better::Higher,
            medians(&pick(|s| s.per_sec)),
            report::rate,
        ));
    }

    // 4. Spawn rate.
    let mut runs: Vec<Four> = Vec::new();
    for rep in 0..REPS {
        eprintln!("spawn {} (rep {})", z.spawns, rep + 1);
        let n = z.spawns as u64;
        runs.push([
            Some(rate(n, cortex::spawn(z.spawns))),
            Some(rate(n, kameo_rt::spawn(z.spawns))),
            Some(rate(n, ractor_rt::spawn(z.spawns))),
            Some(rate(n, actix_rt::spawn(z.spawns))),
        ]);
    }
    table.push(Row::new(
        "spawn + start, 1 thread (actors/s)".into(),
        Better::Higher,
        medians(&runs),
        report::rate,
    ));

    // 5. Memory per idle actor (counted, not timed: one pass).
    eprintln!("memory, {} idle actors", z.idle);
    let mem: [PerActor; 4] = [
        cortex::idle_memory(z.idle),
        kameo_rt::idle_memory(z.idle),
        ractor_rt::idle_memory(z.idle),
        actix_rt::idle_memory(z.idle),
    ];
    table.push(Row::new(
        "heap per idle actor (bytes)".into(),
        Better::Lower,
        mem.map(|m| Some(m.bytes)),
        report::bytes,
    ));
    table.push(Row::new(
        "heap blocks held per idle actor".into(),
        Better::Lower,
        mem.map(|m| Some(m.blocks)),
        report::plain,
    ));

    eprintln!("allocations per message");
    let per_msg = [
        cortex::allocs_per_message(z.alloc_msgs),
        kameo_rt::allocs_per_message(z.alloc_msgs),
        ractor_rt::allocs_per_message(z.alloc_msgs),
        actix_rt::allocs_per_message(z.alloc_msgs),
    ];
    table.push(Row::new(
        "allocation calls per tell".into(),
        Better::Lower,
        per_msg.map(|m| Some(m.0)),
        report::plain,
    ));
    table.push(Row::new(
        "allocation calls per ask".into(),
        Better::Lower,
        per_msg.map(|m| Some(m.1)),
        report::plain,
    ));

    eprintln!("virtual actors, {}", z.idle);
    let v = cortex::virtual_memory(z.idle);

    println!(
        "scale {scale}: {} tells to 1 actor; {} actors x {} tells; {} asks after {} warm-up; \
         {} spawns; {} idle actors; median of {REPS} passes per timed row\n",
        z.tells, z.many_actors, z.per_actor, z.asks, z.ask_warm, z.spawns, z.idle
    );
    println!("{}", table.render());
    println!(
        "Cortex virtual actors ({} ids per round): a live activation holds {:.0} B in {:.1} \
         blocks; after passivating all, round 1 keeps {:.1} B ({:.2} blocks) per id, round 2 \
         (fresh ids, registry tables already grown) keeps {:.1} B ({:.2} blocks) per id",
        z.idle,
        v.live.bytes,
        v.live.blocks,
        v.passivated_first.bytes,
        v.passivated_first.blocks,
        v.passivated_second.bytes,
        v.passivated_second.blocks,
    );
}

fn medians(runs: &[Four]) -> Four {
    std::array::from_fn(|i| {
        let vals: Vec<f64> = runs.iter().filter_map(|r| r[i]).collect();
        (!vals.is_empty()).then(|| median(vals, |v| *v))
    })
}
