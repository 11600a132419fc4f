//! Benchmark (ignored by default): client ask throughput and latency against a 3-node local
//! cluster at several concurrency levels, beside member-to-member asks measured in the same
//! run by a node-hosted driver (node/examples/remote_bench.rs, `--workload=pair`).
//!
//! Both sides ask `sink` actors with `bench.Echo` and a 64-byte payload, every ask one hop
//! to a remote owner: the client computes owners itself; the member asks ids its peer owns.
//!
//! ```sh
//! cargo build --release -p cortex-node --example remote_bench
//! CORTEX_BIN_DIR=target/release cargo test --release -p cortex-cluster-tests \
//!     --test client_bench -- --ignored --nocapture
//! ```
//! `CORTEX_BENCH_SECS` sets the seconds per concurrency level (default 3).
#![allow(clippy::print_stdout)]

mod client_common;

use std::sync::Arc;
use std::time::Duration;

use client_common::{Cluster, bin_dir};
use cortex_protocol::ActorId;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The bench host's echo ask (same name and shape as node/examples/remote_bench/kinds.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo(Vec<u8>);
cortex_runtime::message!(Echo => Vec<u8>, "bench.Echo");

const LEVELS: [usize; 4] = [1, 8, 32, 128];
const ACTORS: usize = 1_000;

struct Stats {
    rate: f64,
    p50: u64,
    p99: u64,
    mean: f64,
    count: usize,
}

fn stats(mut lat: Vec<u64>, secs: f64) -> Stats {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Stats {
        rate: lat.len() as f64 / secs,
        p50: at(0.5),
        p99: at(0.99),
        mean: lat.iter().sum::<u64>() as f64 / lat.len() as f64,
        count: lat.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in release with --ignored --nocapture (see BENCHMARKS.md)"]
async fn client_asks_beside_member_asks() {
    let secs: u64 = std::env::var("CORTEX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bin = bin_dir().join("examples/remote_bench");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --release -p cortex-node --example remote_bench",
        bin.display()
    );
    let mut cluster = Cluster::start_with(&bin, 3, &["--log-level", "warn"]);
    cluster.wait_converged(3, Duration::from_secs(60)).await;
    let client = cluster.client(0).await;
    client
        .wait_for_topology(Duration::from_secs(10), |v| v.owners().len() == 3)
        .await
        .unwrap();
    let ids: Arc<Vec<ActorId>> = Arc::new(
        (0..ACTORS)
            .map(|i| ActorId::new("sink", format!("c{i}")).unwrap())
            .collect(),
    );
    let payload = vec![7u8; 64];
    for id in ids.iter() {
        client.ask(id, Echo(payload.clone())).await.unwrap();
    }

    // Like the member driver: ids owned by one node only, one outstanding ask.
    let on_n1: Arc<Vec<ActorId>> = Arc::new(
        ids.iter()
            .filter(|id| client.owner_of(id).is_some_and(|o| o.name() == "n1"))
            .cloned()
            .collect(),
    );
    let single = {
        let stop = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut lat = Vec::new();
        let mut j = 0;
        while Instant::now() < stop {
            let t = Instant::now();
            client
                .ask(&on_n1[j % on_n1.len()], Echo(payload.clone()))
                .await
                .unwrap();
            lat.push(t.elapsed().as_micros() as u64);
            j += 1;
        }
        stats(lat, started.elapsed().as_secs_f64())
    };

    let mut client_rows = Vec::new();
    for c in LEVELS {
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
        client_rows.push((c, stats(lat, started.elapsed().as_secs_f64())));
    }
    assert_eq!(
        cluster.forwarded().await,
        0.0,
        "every client ask took one hop"
    );
    client.shutdown().await;

    // Member to member: a fourth node asks ids its peer n1 owns, closed loop.
    let n = cluster.add_node(&[
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
    let log = cluster.log_path(n);
    let deadline = Instant::now() + Duration::from_secs(300);
    let member: serde_json::Value = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| l.strip_prefix("BENCH "))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "ask_closed");
        if let Some(v) = found {
            break v;
        }
        assert!(Instant::now() < deadline, "no ask_closed result:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let m = &member["latency"];
    let m_mean = m["mean_us"].as_f64().unwrap();
    let m_rate = 1e6 / m_mean;

    println!(
        "\n| concurrency | client asks/s | client p50 µs | client p99 µs | member asks/s | member p50 µs | member p99 µs | client/member throughput |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (c, s) in &client_rows {
        let (mr, mp50, mp99, ratio) = if *c == 1 {
            (
                format!("{m_rate:.0}"),
                m["p50_us"].to_string(),
                m["p99_us"].to_string(),
                format!("{:.2}", s.rate / m_rate),
            )
        } else {
            ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".into())
        };
        println!(
            "| {c} | {:.0} | {} | {} | {mr} | {mp50} | {mp99} | {ratio} |",
            s.rate, s.p50, s.p99
        );
        assert!(s.count > 0 && s.mean > 0.0);
    }
    println!(
        "| 1, ids on n1 only | {:.0} | {} | {} | {m_rate:.0} | {} | {} | {:.2} |",
        single.rate,
        single.p50,
        single.p99,
        m["p50_us"],
        m["p99_us"],
        single.rate / m_rate
    );
    println!("\nmember closed loop: {member}");
}
