//! `cortex-bench`: Cortex's actor core (`cortex-runtime`) measured beside kameo 0.22,
//! ractor 0.16 and actix 0.13 in one run, each row on a fresh runtime, printed as a
//! Markdown table with Cortex/peer ratios.
//!
//! Run with `cd bench && cargo run --release` (`-- --scale 0.1` for a quick smoke
//! run, `-- --only tell1|tellmany|ask|spawn|memory` for one section, `-- --runtimes
//! cortex,actix` for some runtimes).
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

/// Command-line choices.
struct Args {
    scale: f64,
    /// Run only this section.
    only: Option<String>,
    /// Run only these runtimes (indices into Cortex, kameo, ractor, actix).
    runtimes: [bool; 4],
    /// Calls of [`Args::each`] so far, to rotate which runtime goes first.
    calls: std::cell::Cell<usize>,
}

const NAMES: [&str; 4] = ["cortex", "kameo", "ractor", "actix"];

impl Args {
    fn parse() -> Self {
        let value = |flag: &str| std::env::args().skip_while(|a| a != flag).nth(1);
        let scale = value("--scale").map_or(1.0, |s| {
            s.parse::<f64>()
                .expect("--scale takes a number such as 0.1")
        });
        let runtimes = value("--runtimes").map_or([true; 4], |list| {
            let names: Vec<&str> = list.split(',').collect();
            for n in &names {
                assert!(NAMES.contains(n), "--runtimes takes a list of {NAMES:?}");
            }
            NAMES.map(|n| names.contains(&n))
        });
        Self {
            scale,
            only: value("--only"),
            runtimes,
            calls: std::cell::Cell::new(0),
        }
    }

    fn section(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == name)
    }

    /// Runs the chosen runtimes' closures; `None` for the others. Each call starts one
    /// runtime further along (Cortex first, then kameo first, ...): a runtime runs on the
    /// heap and caches its predecessor left behind, and a fixed order always gave Cortex
    /// actix's leftovers (a sharded Cortex row measured 1.45 M/s right after actix, 4.2 M/s
    /// alone).
    fn each<T>(&self, fs: [&mut dyn FnMut() -> Option<T>; 4]) -> [Option<T>; 4] {
        let first = self.calls.get();
        self.calls.set(first + 1);
        let mut out: [Option<T>; 4] = std::array::from_fn(|_| None);
        for j in 0..4 {
            let i = (first + j) % 4;
            if self.runtimes[i] {
                out[i] = fs[i]();
            }
        }
        out
    }
}

fn main() {
    let args = Args::parse();
    let scale = args.scale;
    let z = Sizes::scaled(scale);
    let mut table = Table::default();

    // 1. Tell throughput, one actor (actix only on its own one-thread arbiter).
    for flavor in [Flavor::One, Flavor::Two] {
        if !args.section("tell1") {
            break;
        }
        let n = z.tells;
        let mut runs: Vec<Four> = Vec::new();
        for rep in 0..REPS {
            eprintln!("tell, 1 actor, {} (rep {})", flavor.label(), rep + 1);
            runs.push(args.each([
                &mut || Some(rate(n, cortex::tell_one(flavor, n))),
                &mut || Some(rate(n, kameo_rt::tell_one(flavor, n))),
                &mut || Some(rate(n, ractor_rt::tell_one(flavor, n))),
                &mut || (flavor == Flavor::One).then(|| rate(n, actix_rt::tell_one(n))),
            ]));
        }
        table.push(Row::new(
            format!("tell, 1 actor, {} (msgs/s)", flavor.label()),
            Better::Higher,
            medians(&runs),
            report::rate,
        ));
    }

    // 2. Tell throughput, 1,000 actors on 2 threads (actix: 2 arbiters). Twice for Cortex:
    // on tokio's 2 work-stealing workers like kameo and ractor, and sharded (2 shard
    // threads, each with its sender and its half of the actors) like actix; the second row
    // sets that against actix's figure of the same pass.
    if args.section("tellmany") {
        let (actors, per) = (z.many_actors, z.per_actor);
        let total = actors as u64 * per;
        let mut runs: Vec<Four> = Vec::new();
        let mut sharded: Vec<Four> = Vec::new();
        for rep in 0..REPS {
            eprintln!("tell, {actors} actors, 2 threads (rep {})", rep + 1);
            let mut cortex_sharded = None;
            let run = args.each([
                &mut || {
                    cortex_sharded = Some(rate(total, cortex::tell_many_sharded(actors, per)));
                    Some(rate(total, cortex::tell_many(actors, per)))
                },
                &mut || Some(rate(total, kameo_rt::tell_many(actors, per))),
                &mut || Some(rate(total, ractor_rt::tell_many(actors, per))),
                &mut || Some(rate(total, actix_rt::tell_many(actors, per))),
            ]);
            sharded.push([cortex_sharded, None, None, run[3]]);
            runs.push(run);
        }
        table.push(Row::new(
            format!("tell, {actors} actors, 2 workers, 2 senders (msgs/s)"),
            Better::Higher,
            medians(&runs),
            report::rate,
        ));
        table.push(Row::new(
            format!("tell, {actors} actors, 2 shards (actix: arbiters), a sender each (msgs/s)"),
            Better::Higher,
            medians(&sharded),
            report::rate,
        ));
    }

    // 3. Ask round trips. The 2-worker rows' p99 follows the host's cost of waking an idle
    // core (see `idle_wake_cost`), which can change during a run: measured around them.
    let mut wake_cost = Vec::new();
    for flavor in [Flavor::One, Flavor::Two] {
        if !args.section("ask") {
            break;
        }
        if flavor == Flavor::Two {
            wake_cost.push(common::idle_wake_cost());
        }
        let (warm, n) = (z.ask_warm, z.asks);
        let mut runs: Vec<[Option<AskStats>; 4]> = Vec::new();
        // One thread: Cortex also on a one-shard system (its own runtime), beside actix.
        let mut sharded: Vec<[Option<AskStats>; 4]> = Vec::new();
        // Cortex with inline asks off (every ask through the mailbox: an ask to a busy
        // actor), beside the same peers' runs.
        let mut queued: Vec<[Option<AskStats>; 4]> = Vec::new();
        for rep in 0..REPS {
            eprintln!("ask, {} (rep {})", flavor.label(), rep + 1);
            let mut cortex_sharded = None;
            let mut cortex_queued = None;
            let run = args.each([
                &mut || {
                    if flavor == Flavor::One {
                        cortex_sharded = Some(cortex::ask_sharded(warm, n));
                    }
                    cortex_queued = Some(cortex::ask(flavor, warm, n, false));
                    Some(cortex::ask(flavor, warm, n, true))
                },
                &mut || Some(kameo_rt::ask(flavor, warm, n)),
                &mut || Some(ractor_rt::ask(flavor, warm, n)),
                &mut || (flavor == Flavor::One).then(|| actix_rt::ask(warm, n)),
            ]);
            sharded.push([cortex_sharded, None, None, run[3]]);
            queued.push([cortex_queued, run[1], run[2], run[3]]);
            runs.push(run);
        }
        if flavor == Flavor::Two {
            wake_cost.push(common::idle_wake_cost());
        }
        let label = flavor.label();
        ask_rows(&mut table, &runs, label);
        if flavor == Flavor::One {
            ask_rows(&mut table, &sharded, "1 shard (actix: 1 arbiter)");
        }
        ask_rows(&mut table, &queued, &format!("{label}, Cortex inline asks off"));
    }

    // 4. Spawn rate.
    if args.section("spawn") {
        let n = z.spawns;
        let mut runs: Vec<Four> = Vec::new();
        for rep in 0..REPS {
            eprintln!("spawn {n} (rep {})", rep + 1);
            runs.push(args.each([
                &mut || Some(rate(n as u64, cortex::spawn(n))),
                &mut || Some(rate(n as u64, kameo_rt::spawn(n))),
                &mut || Some(rate(n as u64, ractor_rt::spawn(n))),
                &mut || Some(rate(n as u64, actix_rt::spawn(n))),
            ]));
        }
        table.push(Row::new(
            "spawn + start, 1 thread (actors/s)".into(),
            Better::Higher,
            medians(&runs),
            report::rate,
        ));
    }

    // 5. Memory per idle actor and allocations per message (counted, not timed: one pass).
    let mut virtuals = None;
    if args.section("memory") {
        let n = z.idle;
        eprintln!("memory, {n} idle actors");
        let mem: [Option<PerActor>; 4] = args.each([
            &mut || Some(cortex::idle_memory(n)),
            &mut || Some(kameo_rt::idle_memory(n)),
            &mut || Some(ractor_rt::idle_memory(n)),
            &mut || Some(actix_rt::idle_memory(n)),
        ]);
        table.push(Row::new(
            "heap per idle actor (bytes)".into(),
            Better::Lower,
            mem.map(|m| m.map(|m| m.bytes)),
            report::bytes,
        ));
        table.push(Row::new(
            "heap blocks held per idle actor".into(),
            Better::Lower,
            mem.map(|m| m.map(|m| m.blocks)),
            report::plain,
        ));

        eprintln!("allocations per message");
        let m = z.alloc_msgs;
        let per_msg = args.each([
            &mut || Some(cortex::allocs_per_message(m)),
            &mut || Some(kameo_rt::allocs_per_message(m)),
            &mut || Some(ractor_rt::allocs_per_message(m)),
            &mut || Some(actix_rt::allocs_per_message(m)),
        ]);
        table.push(Row::new(
            "allocation calls per tell".into(),
            Better::Lower,
            per_msg.map(|m| m.map(|m| m.0)),
            report::plain,
        ));
        table.push(Row::new(
            "allocation calls per ask".into(),
            Better::Lower,
            per_msg.map(|m| m.map(|m| m.1)),
            report::plain,
        ));
        if args.runtimes[0] {
            eprintln!("virtual actors, {n}");
            virtuals = Some((cortex::idle_child_memory(n), cortex::virtual_memory(n)));
        }
    }

    println!(
        "scale {scale}: {} tells to 1 actor; {} actors x {} tells; {} asks after {} warm-up; \
         {} spawns; {} idle actors; median of {REPS} passes per timed row\n",
        z.tells, z.many_actors, z.per_actor, z.asks, z.ask_warm, z.spawns, z.idle
    );
    println!("{}", table.render());
    if let [before, after] = wake_cost[..] {
        println!(
            "Waking a thread parked for 200 us cost the waker {:.2} us before the 2-worker ask \
             rows, {:.2} us after (median of 200): the price of each wake of tokio's idle \
             worker, which sets those rows' p99 (BENCHMARKS.md, Runtime)\n",
            before.as_secs_f64() * 1e6,
            after.as_secs_f64() * 1e6,
        );
    }
    if let Some((child, v)) = virtuals {
        println!(
            "Cortex only ({} actors or ids each): an idle child actor (spawned by one \
             supervisor) holds {:.0} B in {:.1} blocks; a live virtual activation holds {:.0} B \
             in {:.1} blocks; after passivating all, round 1 keeps {:.1} B ({:.2} blocks) per \
             id, round 2 (fresh ids after the first burst) keeps {:.1} B ({:.2} blocks) per id",
            z.idle,
            child.bytes,
            child.blocks,
            v.live.bytes,
            v.live.blocks,
            v.passivated_first.bytes,
            v.passivated_first.blocks,
            v.passivated_second.bytes,
            v.passivated_second.blocks,
        );
    }
}

/// The p50, p99, slow-share and asks/s rows of one ask section.
fn ask_rows(table: &mut Table, runs: &[[Option<AskStats>; 4]], label: &str) {
    let pick = |f: fn(&AskStats) -> f64| -> Vec<Four> {
        runs.iter().map(|r| r.map(|s| s.as_ref().map(f))).collect()
    };
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
        format!("asks over 5 µs, {label}"),
        Better::Lower,
        medians(&pick(|s| s.over_5us)),
        report::percent,
    ));
    table.push(Row::new(
        format!("asks/s, sequential, {label}"),
        Better::Higher,
        medians(&pick(|s| s.per_sec)),
        report::rate,
    ));
}

fn medians(runs: &[Four]) -> Four {
    std::array::from_fn(|i| {
        let vals: Vec<f64> = runs.iter().filter_map(|r| r[i]).collect();
        (!vals.is_empty()).then(|| median(vals, |v| *v))
    })
}
