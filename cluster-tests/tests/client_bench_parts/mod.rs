//! The parts of the client benchmark (client_bench.rs): the `sink` kind as the bench hosts
//! define it, the in-process member node, the two askers behind one interface, and the
//! closed-loop driver and statistics both askers share.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cortex_client::Client;
use cortex_node::{Node, NodeBuilder};
use cortex_protocol::ActorId;
use cortex_runtime::{Actor, Context, Handler, Kind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::client_common::Cluster;

/// The bench hosts' echo ask (same name and shape as node/examples/remote_bench/kinds.rs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Echo(pub(crate) Vec<u8>);
cortex_runtime::message!(Echo => Vec<u8>, "bench.Echo");

/// The bench hosts' `sink` actor, as far as asks go: `Node::ask` names the actor type.
pub(crate) struct Sink;
impl Actor for Sink {}
impl Handler<Echo> for Sink {
    async fn handle(&mut self, e: Echo, _: &mut Context<Self>) -> Vec<u8> {
        e.0
    }
}

/// Payload of every ask, as the `pair` driver of remote_bench sends.
pub(crate) const PAYLOAD: usize = 64;
/// Deadline of one member ask (the `pair` driver's).
const MEMBER_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a member node named `name` inside this process, with the cluster's CA, secret and
/// settle time, seeded by node 0, hosting `sink`. Its certificate is issued with the hosts'
/// own `certs` command (`bin`).
pub(crate) async fn start_member(cluster: &Cluster, bin: &Path, name: &str) -> Node {
    let ca = cluster.ca_dir();
    let out = Command::new(bin)
        .args(["certs", "issue", name, "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "certs issue {name}: {out:?}");
    let data = cluster.dir.path().join(name);
    let seed = cluster.nodes[0].gossip.to_string();
    let args: Vec<std::ffi::OsString> = vec![
        "cortex-node".into(),
        "--node-name".into(),
        name.into(),
        "--quic-bind".into(),
        "127.0.0.1:0".into(),
        "--gossip-bind".into(),
        "127.0.0.1:0".into(),
        "--http-bind".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.into(),
        "--tls-dir".into(),
        ca.into(),
        "--settle-time".into(),
        "500ms".into(),
        "--seed".into(),
        seed.into(),
    ];
    // An empty environment: only these flags (and the TLS directory) configure the node.
    let config = cortex_node::config::load_from(args, &Default::default()).unwrap();
    NodeBuilder::new(config)
        .kind(Kind::new("sink", |_| Sink).handles::<Echo>())
        .start()
        .await
        .unwrap()
}

/// Who asks: the SDK client or the in-process member.
#[derive(Clone)]
pub(crate) enum Asker {
    Client(Client),
    Member(Node),
}

impl Asker {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Asker::Client(_) => "client",
            Asker::Member(_) => "member",
        }
    }

    /// One `bench.Echo` ask; a failure fails the benchmark.
    async fn ask(&self, id: &ActorId, payload: Vec<u8>) {
        let reply = match self {
            Asker::Client(c) => c
                .ask(id, Echo(payload))
                .await
                .unwrap_or_else(|e| panic!("client ask of {id} failed: {e}")),
            Asker::Member(n) => n
                .ask::<Sink, Echo>(id, Echo(payload), MEMBER_TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("member ask of {id} failed: {e}")),
        };
        assert_eq!(reply.len(), PAYLOAD, "echo of {id}");
    }
}

/// Latency summary, µs truncated (what node/examples/remote_bench/stats.rs `summary`
/// computes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
}

impl Stats {
    pub(crate) fn of(mut lat: Vec<u64>) -> Stats {
        assert!(!lat.is_empty(), "no samples");
        lat.sort_unstable();
        let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        Stats {
            count: lat.len(),
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

/// One measurement: `count` asks at a fixed number in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) stats: Stats,
    /// Asks over the wall time of the measured asks.
    pub(crate) rate: f64,
    /// CPU µs per ask of this (the asking) process, all threads.
    pub(crate) cpu_us: f64,
    /// CPU µs per ask of the owner processes, all threads.
    pub(crate) owner_cpu_us: f64,
}

/// CPU time of every thread of `pid` so far, in ns (`/proc/PID/task/*/schedstat`).
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn cpu_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| cpu_ns(p)).sum()
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `asks` asks over `ids` from `in_flight` spawned closed loops: ask `j` goes to
/// `ids[j % len]`, loop `w` takes `j = w, w + in_flight, ...`, so both askers send the same
/// sequence. Returns every latency in µs.
async fn drive(asker: &Asker, ids: &Arc<Vec<ActorId>>, in_flight: usize, asks: usize) -> Vec<u64> {
    let mut loops = tokio::task::JoinSet::new();
    for w in 0..in_flight {
        let (asker, ids) = (asker.clone(), ids.clone());
        loops.spawn(async move {
            let payload = vec![7u8; PAYLOAD];
            let mut lat = Vec::with_capacity(asks / in_flight + 1);
            let mut j = w;
            while j < asks {
                let t = Instant::now();
                asker.ask(&ids[j % ids.len()], payload.clone()).await;
                lat.push(t.elapsed().as_micros() as u64);
                j += in_flight;
            }
            lat
        });
    }
    let mut all = Vec::with_capacity(asks);
    while let Some(r) = loops.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// `warm` unmeasured asks, then `asks` measured ones, `in_flight` at a time; CPU of this
/// process and of `owners` over the measured asks.
pub(crate) async fn measure(
    asker: &Asker,
    ids: &Arc<Vec<ActorId>>,
    in_flight: usize,
    warm: usize,
    asks: usize,
    owners: &[u32],
) -> Run {
    drive(asker, ids, in_flight, warm).await;
    let me = std::process::id();
    let (c0, o0) = (cpu_ns(me), cpu_of(owners));
    let started = Instant::now();
    let lat = drive(asker, ids, in_flight, asks).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (c1, o1) = (cpu_ns(me), cpu_of(owners));
    let n = lat.len() as f64;
    Run {
        stats: Stats::of(lat),
        rate: n / elapsed,
        cpu_us: c1.saturating_sub(c0) as f64 / n / 1e3,
        owner_cpu_us: o1.saturating_sub(o0) as f64 / n / 1e3,
    }
}

/// Waits (polling every 20 ms, 60 s at most) until `node`'s ring holds `members` and is
/// settled.
pub(crate) async fn wait_ring(node: &Node, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = node.ring();
        if view.ring.members().len() == members && view.is_settled(Instant::now()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the member's ring did not settle on {members} members"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
