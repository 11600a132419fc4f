//! Benchmark (ignored by default): client asks against a local cluster beside the same asks
//! sent member to member, measured in the same run, plus client throughput at several
//! concurrency levels.
//!
//! Like for like: the member is a fourth node running the `pair` driver of
//! node/examples/remote_bench.rs (`--workload=pair --bench-peer=n1`), which asks the first
//! 1,000 `sink/b{i}` ids that `n1` owns with `bench.Echo` and a 64-byte payload, one ask
//! outstanding, 1,000 warm-up asks then 20,000 measured. The client asks exactly those ids
//! (computed from its own view of the same ring), the same way (same message, payload,
//! warm-up and count, one outstanding, from a spawned task on a 2-worker runtime as the
//! member's driver is), and both latency sets are summarised by the same code (µs,
//! truncated; rate = 1e6 / mean). Member and client alternate, `CORTEX_BENCH_ROUNDS` rounds
//! (default 3; the member node is restarted for each of its runs), so both see the same
//! machine load. CPU per ask (all threads of the asking process, and of the owner `n1`, from
//! `/proc/PID/task/*/schedstat`) is measured over the same 21,000 asks on both sides. Each
//! round also runs the client loop straight in the test body, i.e. on the thread that
//! `block_on`s the runtime rather than on a worker (what `#[tokio::main]` code does), to
//! show what that costs.
//!
//! ```sh
//! cargo build --release -p cortex-node --example remote_bench
//! CORTEX_BIN_DIR=target/release cargo test --release -p cortex-cluster-tests \
//!     --test client_bench -- --ignored --nocapture
//! ```
//! `CORTEX_BENCH_SECS` sets the seconds per concurrency level (default 3).
#![allow(clippy::print_stdout)]

mod client_common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use client_common::{Cluster, bin_dir};
use cortex_client::Client;
use cortex_protocol::ActorId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The bench host's echo ask (same name and shape as node/examples/remote_bench/kinds.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo(Vec<u8>);
cortex_runtime::message!(Echo => Vec<u8>, "bench.Echo");

const LEVELS: [usize; 4] = [1, 8, 32, 128];
const ACTORS: usize = 1_000;
/// As the member driver: warm-up asks, then measured ones.
const WARM: usize = 1_000;
const ROUND_TRIPS: usize = 20_000;

#[derive(Debug, Clone, Copy)]
struct Stats {
    count: usize,
    p50: u64,
    p99: u64,
    mean: f64,
}

impl Stats {
    /// What node/examples/remote_bench/stats.rs `summary` computes.
    fn of(mut lat: Vec<u64>) -> Stats {
        assert!(!lat.is_empty(), "no samples");
        lat.sort_unstable();
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        Stats {
            count: lat.len(),
            p50: at(0.5),
            p99: at(0.99),
            mean: lat.iter().sum::<u64>() as f64 / lat.len() as f64,
        }
    }

    fn from_member(v: &serde_json::Value) -> Stats {
        let l = &v["latency"];
        Stats {
            count: l["count"].as_u64().unwrap() as usize,
            p50: l["p50_us"].as_u64().unwrap(),
            p99: l["p99_us"].as_u64().unwrap(),
            mean: l["mean_us"].as_f64().unwrap(),
        }
    }

    /// Closed loop, one outstanding: asks per second.
    fn rate(&self) -> f64 {
        1e6 / self.mean
    }
}

/// CPU time of every thread of `pid` so far, in ns (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The `BENCH {json}` lines of a node log with this event name.
fn events(log: &Path, event: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH "))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// Polls `log` every 2 ms until its `k`-th `event` line (1-based) is there.
async fn nth_event(log: &Path, event: &str, k: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(v) = events(log, event).into_iter().nth(k - 1) {
            return v;
        }
        if let Some(e) = events(log, "error").into_iter().next() {
            panic!("member driver failed: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "no {event} #{k} in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One closed-loop measurement: latencies and CPU ns per ask of the asker and the owner.
struct Run {
    stats: Stats,
    cpu_us: f64,
    owner_cpu_us: f64,
}

/// The member's `k`-th run: CPU sampled at the end of its tell phase (its closed loop
/// starts right after) and at the end of its closed loop.
async fn member_run(log: &Path, k: usize, member_pid: u32, owner_pid: u32) -> Run {
    nth_event(log, "tell", k).await;
    let (m0, o0) = (cpu_ns(member_pid), cpu_ns(owner_pid));
    let closed = nth_event(log, "ask_closed", k).await;
    let (m1, o1) = (cpu_ns(member_pid), cpu_ns(owner_pid));
    assert_eq!(closed["errors"], 0, "member asks failed: {closed}");
    nth_event(log, "done", k).await;
    let asks = (WARM + ROUND_TRIPS) as f64;
    Run {
        stats: Stats::from_member(&closed),
        cpu_us: (m1 - m0) as f64 / asks / 1e3,
        owner_cpu_us: (o1 - o0) as f64 / asks / 1e3,
    }
}

/// The client's closed loop over `ids`, shaped like the member's (see the module docs):
/// from a spawned task, as the member's driver runs.
async fn client_run(client: &Client, ids: &Arc<Vec<ActorId>>, owner_pid: u32) -> Run {
    let (client, ids) = (client.clone(), ids.clone());
    tokio::spawn(async move { closed_loop(&client, &ids, owner_pid).await })
        .await
        .unwrap()
}

/// The closed loop itself. Called straight from the test body it runs on the thread that
/// `block_on`s the runtime, not on a worker: every reply then wakes another thread.
async fn closed_loop(client: &Client, ids: &[ActorId], owner_pid: u32) -> Run {
    let me = std::process::id();
    let payload = vec![7u8; 64];
    let (c0, o0) = (cpu_ns(me), cpu_ns(owner_pid));
    let mut lat = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARM + ROUND_TRIPS {
        let id = &ids[i % ids.len()];
        let t = Instant::now();
        let r = client.ask(id, Echo(payload.clone())).await;
        if let Err(e) = r {
            panic!("client ask {i} failed: {e}");
        }
        if i >= WARM {
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    let (c1, o1) = (cpu_ns(me), cpu_ns(owner_pid));
    let asks = (WARM + ROUND_TRIPS) as f64;
    Run {
        stats: Stats::of(lat),
        cpu_us: (c1 - c0) as f64 / asks / 1e3,
        owner_cpu_us: (o1 - o0) as f64 / asks / 1e3,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in release with --ignored --nocapture (see BENCHMARKS.md)"]
async fn client_asks_beside_member_asks() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let secs = env("CORTEX_BENCH_SECS", 3);
    let rounds = env("CORTEX_BENCH_ROUNDS", 3).max(1) as usize;
    let bin = bin_dir().join("examples/remote_bench");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p cortex-node --example remote_bench",
        bin.display()
    );
    let load_before = load_average();
    let mut cluster = Cluster::start_with(&bin, 3, &["--log-level", "warn"]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    // The member: a fourth node asking ids its peer n1 owns, as soon as it sees 4 members.
    let member = cluster.add_node(&[
        "--log-level",
        "warn",
        "--workload=pair",
        "--bench-peer=n1",
        "--bench-nodes=4",
        "--bench-tells=20000",
        "--bench-round-trips=20000",
        "--bench-rate=2000",
        "--bench-secs=1",
    ]);
    let member_log = cluster.log_path(member);
    let owner_pid = cluster.nodes[1].pid().unwrap();
    let mut member_runs = Vec::new();
    let first = member_run(
        &member_log,
        1,
        cluster.nodes[member].pid().unwrap(),
        owner_pid,
    )
    .await;
    member_runs.push(first);

    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(30), |v| v.owners().len() == 4)
        .await
        .unwrap();
    // The member's ids: the first ACTORS `sink/b{i}` that n1 owns.
    let on_n1: Arc<Vec<ActorId>> = Arc::new(
        (0u64..)
            .map(|i| ActorId::new("sink", format!("b{i}")).unwrap())
            .filter(|id| client.owner_of(id).is_some_and(|o| o.name() == "n1"))
            .take(ACTORS)
            .collect(),
    );

    let mut client_runs = Vec::new();
    let mut inline_runs = Vec::new();
    for r in 0..rounds {
        client_runs.push(client_run(&client, &on_n1, owner_pid).await);
        inline_runs.push(closed_loop(&client, &on_n1, owner_pid).await);
        if r + 1 < rounds {
            cluster.restart(member);
            let pid = cluster.nodes[member].pid().unwrap();
            member_runs.push(member_run(&member_log, r + 2, pid, owner_pid).await);
            client
                .wait_for_topology(Duration::from_secs(30), |v| v.owners().len() == 4)
                .await
                .unwrap();
        }
    }

    // Concurrency levels: `sink/c{i}` spread over all four owners.
    let ids: Arc<Vec<ActorId>> = Arc::new(
        (0..ACTORS)
            .map(|i| ActorId::new("sink", format!("c{i}")).unwrap())
            .collect(),
    );
    let payload = vec![7u8; 64];
    for id in ids.iter() {
        client.ask(id, Echo(payload.clone())).await.unwrap();
    }
    let mut level_rows = Vec::new();
    for c in LEVELS {
        let me = std::process::id();
        let c0 = cpu_ns(me);
        let stop = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..c {
            let (client, ids, payload) = (client.clone(), ids.clone(), payload.clone());
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let mut j = w;
                while Instant::now() < stop {
                    let t = Instant::now();
                    client
                        .ask(&ids[j % ids.len()], Echo(payload.clone()))
                        .await
                        .unwrap();
                    lat.push(t.elapsed().as_micros() as u64);
                    j += c;
                }
                lat
            });
        }
        let mut lat = Vec::new();
        while let Some(r) = tasks.join_next().await {
            lat.extend(r.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_us = (cpu_ns(me) - c0) as f64 / lat.len() as f64 / 1e3;
        let n = lat.len();
        level_rows.push((c, n as f64 / elapsed, Stats::of(lat), cpu_us));
    }
    assert_eq!(
        cluster.forwarded().await,
        0.0,
        "every client ask took one hop"
    );
    client.shutdown().await;

    println!(
        "\nload average before {load_before}, after {}",
        load_average()
    );
    println!(
        "\n| round | client asks/s | p50 µs | p99 µs | client CPU µs/ask | owner CPU µs/ask | member asks/s | p50 µs | p99 µs | member CPU µs/ask | owner CPU µs/ask | client / member |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for (r, (c, m)) in client_runs.iter().zip(&member_runs).enumerate() {
        assert!(c.stats.count == ROUND_TRIPS && m.stats.count == ROUND_TRIPS);
        let ratio = c.stats.rate() / m.stats.rate();
        ratios.push(ratio);
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {:.1} | {:.1} | {:.2} |",
            r + 1,
            c.stats.rate(),
            c.stats.p50,
            c.stats.p99,
            c.cpu_us,
            c.owner_cpu_us,
            m.stats.rate(),
            m.stats.p50,
            m.stats.p99,
            m.cpu_us,
            m.owner_cpu_us,
            ratio
        );
    }
    println!("\nmedian client / member: {:.2}", median(ratios));
    println!(
        "\nthe same client loop run in the test body (the runtime's block_on thread, not a worker):"
    );
    println!("\n| round | asks/s | p50 µs | p99 µs | client CPU µs/ask | / spawned client |");
    println!("|---|---|---|---|---|---|");
    for (r, (i, c)) in inline_runs.iter().zip(&client_runs).enumerate() {
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.2} |",
            r + 1,
            i.stats.rate(),
            i.stats.p50,
            i.stats.p99,
            i.cpu_us,
            i.stats.rate() / c.stats.rate()
        );
    }
    println!("\n| in flight (4 owners) | client asks/s | p50 µs | p99 µs | client CPU µs/ask |");
    println!("|---|---|---|---|---|");
    for (c, rate, s, cpu) in &level_rows {
        println!("| {c} | {rate:.0} | {} | {} | {cpu:.1} |", s.p50, s.p99);
    }
}
