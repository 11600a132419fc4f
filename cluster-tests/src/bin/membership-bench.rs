//! Membership bench over real node processes on 127.0.0.1:
//!
//! 1. time to full convergence for 3, 5, 10 and 20 nodes: node 0 (the seed) starts first,
//!    then all others at once; measured from the last process spawn until every node lists
//!    all N as alive with the same incarnations (polled over HTTP every 20 ms);
//! 2. crash detection with default settings: `kill -9` of one node of 5, until all four
//!    others list it `down`; repeated on the same cluster after restarting the node;
//! 3. gossip bytes per node per second at rest: every node advertises a counting UDP relay
//!    as its gossip address ([`cortex_cluster_tests::GossipMeter`]), so all gossip passes
//!    through the relays; after convergence and a settle period, the bytes the relays
//!    forward over a window, divided by nodes and seconds.
//!
//! ```sh
//! cargo build --release -p cortex-node --bin cortex-node
//! cargo run --release -p cortex-cluster-tests --bin membership-bench -- [--runs 3] [--rest-secs 10]
//! ```
//! The node binary is looked up next to this one (`target/release`) unless `CORTEX_BIN_DIR`
//! says otherwise. Prints a Markdown table. With `BENCH_VERBOSE=1`, a convergence run still
//! unfinished after 1 s prints which node misses whom.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI reporting to its user

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cortex_cluster_tests::{
    ClusterOptions, GossipMeter, HarnessError, MemberState, MeterReading, TestCluster, poll_until,
};

const CONVERGE: Duration = Duration::from_secs(60);

struct Args {
    runs: usize,
    crash_runs: usize,
    rest: Duration,
    sizes: Vec<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        runs: 3,
        crash_runs: 5,
        rest: Duration::from_secs(10),
        sizes: vec![3, 5, 10, 20],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--runs" => a.runs = num(value()?)?.max(1),
            "--crash-runs" => a.crash_runs = num(value()?)?.max(1),
            "--rest-secs" => a.rest = Duration::from_secs(num(value()?)?.max(1) as u64),
            "--sizes" => {
                a.sizes = value()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--sizes: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: membership-bench [--runs N] [--crash-runs N] [--rest-secs S] [--sizes 3,5,10,20]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(a)
}

fn options() -> ClusterOptions {
    let bin_dir = match std::env::var_os("CORTEX_BIN_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from)),
    };
    ClusterOptions {
        bin_dir,
        log_level: "warn".into(),
        ..ClusterOptions::default()
    }
}

/// Seed first, then `n - 1` nodes at once; time from the last spawn to full agreement.
fn convergence(n: usize) -> Result<Duration, HarnessError> {
    let mut cluster = TestCluster::new(options())?;
    cluster.add(cluster.spec("n0"))?;
    let specs = (1..n).map(|i| cluster.spec(&format!("n{i}"))).collect();
    let (_, last_spawn) = cluster.add_all(specs)?;
    let all: Vec<usize> = (0..n).collect();
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut reported = false;
    poll_until(CONVERGE, "all nodes to agree", || {
        let views = cluster.views(&all).map_err(|e| e.to_string())?;
        let r = cortex_cluster_tests::views_agree(&views, &names);
        if let Err(e) = &r
            && std::env::var_os("BENCH_VERBOSE").is_some()
            && !reported
            && last_spawn.elapsed() > Duration::from_secs(1)
        {
            reported = true;
            eprintln!("after 1 s with {n} nodes: {e}");
        }
        r
    })?;
    Ok(last_spawn.elapsed())
}

/// Kill -9 n4 of 5, time until n0..n3 all list it down; restart and repeat.
fn crash_detection(runs: usize) -> Result<Vec<Duration>, HarnessError> {
    let mut cluster = TestCluster::start(5, options())?;
    let mut out = Vec::new();
    for _ in 0..runs {
        cluster.wait_converged(CONVERGE)?;
        let victim = cluster.node(4).own_member()?;
        let killed = Instant::now();
        cluster.node_mut(4).kill9()?;
        poll_until(CONVERGE, "n4 down everywhere", || {
            let views = cluster.views(&[0, 1, 2, 3]).map_err(|e| e.to_string())?;
            for (observer, view) in &views {
                let s = view
                    .iter()
                    .find(|m| m.name == "n4" && m.incarnation == victim.incarnation)
                    .map(|m| m.state);
                if s != Some(MemberState::Down) {
                    return Err(format!("{observer} sees n4 as {s:?}"));
                }
            }
            Ok(())
        })?;
        out.push(killed.elapsed());
        cluster.node_mut(4).restart(CONVERGE)?;
    }
    Ok(out)
}

/// Gossip bytes received per node per second at rest, for `n` nodes.
fn gossip_at_rest(n: usize, rest: Duration) -> Result<(f64, f64), HarnessError> {
    let mut cluster = TestCluster::new(options())?;
    let mut meters = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 0..n {
        let ports = cortex_cluster_tests::free_ports()?;
        let target = SocketAddr::from(([127, 0, 0, 1], ports.gossip));
        let meter = GossipMeter::start("127.0.0.1:0".parse().expect("a literal address"), target)?;
        let mut spec = cluster.spec(&format!("n{i}"));
        spec.ports = Some(ports);
        spec.gossip_advertise = Some(meter.relay_addr());
        spec.seeds = seed.iter().map(ToString::to_string).collect();
        seed.get_or_insert(meter.relay_addr());
        meters.push(meter);
        cluster.add(spec)?;
    }
    cluster.wait_converged(CONVERGE)?;
    // Let join-time dissemination finish before measuring the steady state.
    let settle = Duration::from_secs(5);
    std::thread::sleep(settle);
    cluster.wait_converged(CONVERGE)?;
    let sum = |m: &[GossipMeter]| {
        m.iter().fold(MeterReading::default(), |acc, x| {
            let r = x.reading();
            MeterReading {
                datagrams: acc.datagrams + r.datagrams,
                bytes: acc.bytes + r.bytes,
            }
        })
    };
    let start = sum(&meters);
    let t0 = Instant::now();
    std::thread::sleep(rest);
    let d = sum(&meters).since(&start);
    let secs = t0.elapsed().as_secs_f64();
    cluster.wait_converged(CONVERGE)?;
    let per = |x: u64| x as f64 / n as f64 / secs;
    Ok((per(d.bytes), per(d.datagrams)))
}

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.0} ms (min {:.0}, max {:.0}, {} runs)",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membership-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), HarnessError> {
    println!("| measurement | result |\n|---|---|");
    for &n in &args.sizes {
        let mut times = Vec::new();
        for _ in 0..args.runs {
            times.push(convergence(n)?);
        }
        println!(
            "| convergence, {n} nodes (last start → all list all alive) | {} |",
            stats(&mut times)
        );
    }
    let mut crash = crash_detection(args.crash_runs)?;
    println!(
        "| crash detection, kill -9 1 of 5, defaults (→ all 4 others say down) | {} |",
        stats(&mut crash)
    );
    for n in [5, 20] {
        let (bytes, datagrams) = gossip_at_rest(n, args.rest)?;
        println!(
            "| gossip at rest, {n} nodes, per node | {bytes:.0} B/s received ({datagrams:.1} datagrams/s; UDP payload, +28 B/datagram on the wire) over {} s |",
            args.rest.as_secs()
        );
    }
    Ok(())
}
