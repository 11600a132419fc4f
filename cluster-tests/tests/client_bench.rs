//! Benchmark (ignored by default): client asks against a local 3-node cluster beside the
//! same asks sent member to member, at 1, 8, 32 and 128 asks in flight, measured in the
//! same run.
//!
//! Like for like: the three nodes are release `remote_bench` hosts (real processes, `sink`
//! kind). The member is a fourth node started inside this test process (the `cortex_node`
//! library, as an embedder runs one); the client is a `cortex_client::Client` in the same
//! process. Both ask through the same driver (`client_bench_parts::measure`): the same ids
//! in the same order, `bench.Echo` with a 64-byte payload, `CORTEX_BENCH_WARM` warm-up asks
//! (default 1,000) then `CORTEX_BENCH_ASKS` measured (default 20,000), from spawned closed
//! loops on this 2-worker runtime, summarised by the same code (µs truncated; asks/s = asks
//! over the wall time of the measured asks). Two id sets, chosen from the settled 4-member
//! ring: 1,000 `sink/b{i}` owned by `n1` (one owner), and 1,000 `sink/c{i}` owned by any of
//! the three processes (never by the in-process member, whose asks would stay local).
//! Member and client alternate within each (set, level) cell, the first side swapping every
//! round, over `CORTEX_BENCH_ROUNDS` rounds (default 3). CPU per ask: all threads of this
//! process (it holds both askers; the idle one is measured once and printed) and of the
//! owner processes, from `/proc/PID/task/*/schedstat`, over the measured asks.
//!
//! ```sh
//! cargo build --release -p cortex-node --example remote_bench
//! CORTEX_BIN_DIR=target/release cargo test --release -p cortex-cluster-tests \
//!     --test client_bench -- --ignored --nocapture
//! ```
#![allow(clippy::print_stdout)]

mod client_bench_parts;
mod client_common;

use std::sync::Arc;
use std::time::Duration;

use client_bench_parts::{
    Asker, PAYLOAD, Run, cpu_ns, load_average, measure, median, start_member, wait_ring,
};
use client_common::{Cluster, bin_dir};
use cortex_protocol::ActorId;

const LEVELS: [usize; 4] = [1, 8, 32, 128];
const ACTORS: usize = 1_000;

/// One id set and the processes that own it.
struct IdSet {
    label: &'static str,
    ids: Arc<Vec<ActorId>>,
    owner_pids: Vec<u32>,
}

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in release with --ignored --nocapture (see BENCHMARKS.md)"]
async fn client_asks_beside_member_asks() {
    let rounds = env("CORTEX_BENCH_ROUNDS", 3).max(1) as usize;
    let warm = env("CORTEX_BENCH_WARM", 1_000) as usize;
    let asks = env("CORTEX_BENCH_ASKS", 20_000).max(1) as usize;
    let bin = bin_dir().join("examples/remote_bench");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p cortex-node --example remote_bench",
        bin.display()
    );
    let load_before = load_average();
    let cluster = Cluster::start_with(&bin, 3, &["--log-level", "warn"]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let member = start_member(&cluster, &bin, "n3").await;
    cluster.wait_converged(4, Duration::from_secs(60)).await;
    wait_ring(&member, 4).await;
    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(30), |v| v.owners().len() == 4)
        .await
        .unwrap();

    // Ids from the member's settled ring; the client must see the same owners.
    let view = member.ring();
    let owned = |prefix: &str, keep: &dyn Fn(&str) -> bool| -> Arc<Vec<ActorId>> {
        let ids: Vec<ActorId> = (0u64..)
            .map(|i| ActorId::new("sink", format!("{prefix}{i}")).unwrap())
            .filter(|id| view.owner(id).is_some_and(|o| keep(o.name())))
            .take(ACTORS)
            .collect();
        for id in &ids {
            assert_eq!(
                client.owner_of(id).as_ref(),
                view.owner(id),
                "client and member disagree on the owner of {id}"
            );
        }
        Arc::new(ids)
    };
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid().unwrap()).collect();
    let sets = [
        IdSet {
            label: "one owner (n1)",
            ids: owned("b", &|o| o == "n1"),
            owner_pids: vec![pids[1]],
        },
        IdSet {
            label: "three owners (n0, n1, n2)",
            ids: owned("c", &|o| o != "n3"),
            owner_pids: pids.clone(),
        },
    ];
    let member = Asker::Member(member);
    let client = Asker::Client(client);
    // Activate every actor and open every connection, from both sides.
    for set in &sets {
        for asker in [&member, &client] {
            measure(asker, &set.ids, 32, ACTORS, 1, &[]).await;
        }
    }
    // What the bench process spends with neither side asking (both askers live in it).
    let me = std::process::id();
    let idle0 = cpu_ns(me);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_us_per_s = (cpu_ns(me) - idle0) as f64 / 1e3;

    // runs[set][level] = (client runs, member runs), one of each per round.
    let mut runs = vec![vec![(Vec::<Run>::new(), Vec::<Run>::new()); LEVELS.len()]; sets.len()];
    for round in 0..rounds {
        for (s, set) in sets.iter().enumerate() {
            for (l, &c) in LEVELS.iter().enumerate() {
                let order = if (round + l) % 2 == 0 {
                    [&member, &client]
                } else {
                    [&client, &member]
                };
                for asker in order {
                    let run = measure(asker, &set.ids, c, warm, asks, &set.owner_pids).await;
                    assert_eq!(run.stats.count, asks);
                    println!(
                        "round {} | {} | {c} in flight | {}: {:.0} asks/s p50 {} p99 {} µs, CPU {:.1} µs/ask (owners {:.1})",
                        round + 1,
                        set.label,
                        asker.name(),
                        run.rate,
                        run.stats.p50,
                        run.stats.p99,
                        run.cpu_us,
                        run.owner_cpu_us
                    );
                    let cell = &mut runs[s][l];
                    match asker {
                        Asker::Client(_) => cell.0.push(run),
                        Asker::Member(_) => cell.1.push(run),
                    }
                }
            }
        }
    }
    assert_eq!(
        cluster.forwarded().await,
        0.0,
        "every ask, client's or member's, took one hop to its owner"
    );
    let load_after = load_average();
    if let Asker::Client(c) = &client {
        c.shutdown().await;
    }
    if let Asker::Member(m) = &member {
        m.shutdown().await;
    }

    println!(
        "\n{rounds} rounds, {warm} warm-up + {asks} measured asks per side and cell, {PAYLOAD}-byte payload"
    );
    println!("load average before {load_before}, after {load_after}");
    println!(
        "bench process idle (both askers connected, none asking): {idle_us_per_s:.0} µs CPU per s"
    );
    for (s, set) in sets.iter().enumerate() {
        println!(
            "\n{} (median of rounds; ratio = median of per-round client / member):\n",
            set.label
        );
        println!(
            "| in flight | client asks/s | member asks/s | client / member (range) | p50 µs client / member | p99 µs client / member | CPU µs/ask client / member | owner CPU µs/ask client / member |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (l, c) in LEVELS.iter().enumerate() {
            let (cr, mr) = &runs[s][l];
            let med = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
            let ratios: Vec<f64> = cr.iter().zip(mr).map(|(a, b)| a.rate / b.rate).collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "| {c} | {:.0} | {:.0} | **{:.2}** ({lo:.2} – {hi:.2}) | {:.0} / {:.0} | {:.0} / {:.0} | {:.1} / {:.1} | {:.1} / {:.1} |",
                med(cr, |r| r.rate),
                med(mr, |r| r.rate),
                median(ratios.clone()),
                med(cr, |r| r.stats.p50 as f64),
                med(mr, |r| r.stats.p50 as f64),
                med(cr, |r| r.stats.p99 as f64),
                med(mr, |r| r.stats.p99 as f64),
                med(cr, |r| r.cpu_us),
                med(mr, |r| r.cpu_us),
                med(cr, |r| r.owner_cpu_us),
                med(mr, |r| r.owner_cpu_us),
            );
        }
    }
    // Raw per-round ratios, for pooling several runs.
    for (s, set) in sets.iter().enumerate() {
        for (l, c) in LEVELS.iter().enumerate() {
            let (cr, mr) = &runs[s][l];
            let ratios: Vec<String> = cr
                .iter()
                .zip(mr)
                .map(|(a, b)| format!("{:.3}", a.rate / b.rate))
                .collect();
            println!("RATIOS {} | {c} | {}", set.label, ratios.join(" "));
        }
    }
}
