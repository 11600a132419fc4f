//! The `placement` workload: every node tells and asks every id, pass after pass, and
//! reports what each request saw, so that a test can kill a node under this load and check
//! how requests to the dead node's ids behaved.
//!
//! Flags: `--bench-nodes` (members to wait for, 3), `--bench-ids` (10000),
//! `--bench-concurrency` (requests in flight, 64), `--bench-timeout-ms` (per request,
//! 30000), `--bench-stop-file` (stop after the pass during which it appears),
//! `--bench-max-passes` (1000), `--bench-result-dir` (also write the result to
//! `DIR/NODE_NAME.json`, whole: a long stdout line can interleave with log lines).
//!
//! Events: `ready`, `warm` (the first pass, before any fault), `pass` after each further
//! pass, and `result` at the end with every failed request aggregated per id, the slowest
//! requests, and the largest latencies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cortex_node::Node;
use cortex_protocol::ActorId;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::actors::Account;
use crate::host::DriverOpts;
use crate::messages::{Balance, Deposit};
use crate::stats::{emit, unix_us};

/// Asks slower than this are listed one by one in the result.
const SLOW_US: u64 = 500_000;
/// Most slow asks listed.
const SLOW_CAP: usize = 5_000;

/// Failures of one kind of request to one id.
#[derive(Debug, Default, Serialize)]
struct Failures {
    count: u64,
    first_error: String,
    first_us: u64,
    last_us: u64,
    max_latency_us: u64,
}

#[derive(Debug, Default, Serialize)]
struct Pass {
    pass: u64,
    start_us: u64,
    end_us: u64,
    asks_ok: u64,
    asks_failed: u64,
    tells_ok: u64,
    tells_failed: u64,
    max_ask_us: u64,
}

#[derive(Debug, Default)]
struct Totals {
    ask_failures: BTreeMap<String, Failures>,
    tell_failures: BTreeMap<String, Failures>,
    slow: Vec<(String, u64, u64)>,
    max_ok_us: u64,
    max_failed_us: u64,
}

/// What one id's tell-then-ask saw.
struct Outcome {
    id: ActorId,
    start_us: u64,
    tell: Result<(), String>,
    tell_us: u64,
    ask: Result<u64, String>,
    ask_us: u64,
}

fn note(map: &mut BTreeMap<String, Failures>, id: &ActorId, at: u64, us: u64, e: &str) {
    let f = map.entry(id.to_string()).or_default();
    if f.count == 0 {
        f.first_error = e.to_owned();
        f.first_us = at;
    }
    f.count += 1;
    f.last_us = at;
    f.max_latency_us = f.max_latency_us.max(us);
}

async fn one(node: Node, id: ActorId, timeout: Duration) -> Outcome {
    let start_us = unix_us();
    let t = Instant::now();
    let tell = node
        .tell::<Account, _>(&id, Deposit(1), timeout)
        .await
        .map_err(|e| format!("{:?}: {e}", e.code()));
    let tell_us = t.elapsed().as_micros() as u64;
    let t = Instant::now();
    let ask = node
        .ask::<Account, _>(&id, Balance, timeout)
        .await
        .map_err(|e| format!("{:?}: {e}", e.code()));
    let ask_us = t.elapsed().as_micros() as u64;
    Outcome {
        id,
        start_us,
        tell,
        tell_us,
        ask,
        ask_us,
    }
}

async fn pass(
    node: &Node,
    ids: &[ActorId],
    concurrency: usize,
    timeout: Duration,
    number: u64,
    totals: &mut Totals,
) -> Pass {
    let mut p = Pass {
        pass: number,
        start_us: unix_us(),
        ..Pass::default()
    };
    let mut results = futures::stream::iter(ids.iter().cloned())
        .map(|id| one(node.clone(), id, timeout))
        .buffer_unordered(concurrency);
    while let Some(o) = results.next().await {
        match &o.tell {
            Ok(()) => p.tells_ok += 1,
            Err(e) => {
                p.tells_failed += 1;
                note(&mut totals.tell_failures, &o.id, o.start_us, o.tell_us, e);
            }
        }
        p.max_ask_us = p.max_ask_us.max(o.ask_us);
        match &o.ask {
            Ok(_) => {
                p.asks_ok += 1;
                totals.max_ok_us = totals.max_ok_us.max(o.ask_us);
                if o.ask_us >= SLOW_US && totals.slow.len() < SLOW_CAP {
                    totals.slow.push((o.id.to_string(), o.start_us, o.ask_us));
                }
            }
            Err(e) => {
                p.asks_failed += 1;
                totals.max_failed_us = totals.max_failed_us.max(o.ask_us);
                note(&mut totals.ask_failures, &o.id, o.start_us, o.ask_us, e);
            }
        }
    }
    p.end_us = unix_us();
    p
}

/// Runs the workload until the stop file appears (or the pass limit).
pub(crate) async fn run(node: &Node, o: &DriverOpts) -> Result<(), String> {
    let nodes: usize = o.get("nodes", 3)?;
    let count: usize = o.get("ids", 10_000)?;
    let concurrency: usize = o.get("concurrency", 64)?;
    let timeout = Duration::from_millis(o.get("timeout-ms", 30_000)?);
    let max_passes: u64 = o.get("max-passes", 1_000)?;
    let stop = o.text("stop-file").map(PathBuf::from);
    crate::workload::wait_ready(node, nodes, Duration::from_secs(60)).await?;
    let ids: Vec<ActorId> = (0..count)
        .map(|i| ActorId::new("account", format!("p{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;

    let mut warm_totals = Totals::default();
    let warm = pass(node, &ids, concurrency, timeout, 0, &mut warm_totals).await;
    emit(
        "warm",
        json!({ "pass": warm, "ask_failures": warm_totals.ask_failures }),
    );

    let mut totals = Totals::default();
    let mut passes = 0;
    for number in 1..=max_passes {
        if stop.as_ref().is_some_and(|s| s.exists()) {
            break;
        }
        let p = pass(node, &ids, concurrency, timeout, number, &mut totals).await;
        emit("pass", json!(p));
        passes = number;
    }
    let result = json!({
            "node": node.id().to_string(),
            "passes": passes,
            "max_ok_us": totals.max_ok_us,
            "max_failed_us": totals.max_failed_us,
            "ask_failures": totals.ask_failures,
            "tell_failures": totals.tell_failures,
            "slow": totals.slow,
    });
    if let Some(dir) = o.text("result-dir") {
        let dir = PathBuf::from(dir);
        let tmp = dir.join(format!("{}.json.tmp", node.id().name()));
        std::fs::write(&tmp, result.to_string())
            .and_then(|()| std::fs::rename(&tmp, dir.join(format!("{}.json", node.id().name()))))
            .map_err(|e| format!("writing the result to {}: {e}", dir.display()))?;
    }
    emit("result", result);
    Ok(())
}
