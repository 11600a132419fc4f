//! Drivers that run inside a member node once the cluster has formed, and print their
//! results as `BENCH {json}` lines:
//! - `placement` (see `placement.rs`): tells and asks to every id, pass after pass, until a
//!   stop file appears: the load of the kill test in cluster-tests/tests/placement_kill.rs;
//! - `pair`: against the node named `--bench-peer`: remote tell throughput with 64-byte
//!   payloads to many actors, then ask round trips closed-loop and open-loop.

use std::sync::Arc;
use std::time::Duration;

use cortex_node::Node;
use cortex_protocol::ActorId;
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use crate::host::DriverOpts;
use crate::kinds::{Blob, Echo, Received, Sink};
use crate::stats::{emit, summary, unix_us};

/// Runs workload `name`.
pub(crate) async fn run(name: &str, node: &Node, opts: &DriverOpts) -> Result<(), String> {
    match name {
        "placement" => crate::placement::run(node, opts).await,
        "pair" => pair(node, opts).await,
        other => Err(format!("unknown workload {other:?}: use placement or pair")),
    }
}

/// Waits until this node's ring holds `n` members and is settled.
pub(crate) async fn wait_ready(node: &Node, n: usize, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let view = node.ring();
        let members = view.ring.members().len();
        if members == n && view.is_settled(Instant::now()) {
            emit(
                "ready",
                json!({ "node": node.id().to_string(), "members": members, "epoch": view.epoch }),
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the ring did not reach {n} settled members within {within:?} (it has {members})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `count` ids of `kind` owned by the node named `owner` in `node`'s current view.
pub(crate) fn ids_owned_by(node: &Node, kind: &str, owner: &str, count: usize) -> Vec<ActorId> {
    let view = node.ring();
    (0u64..)
        .filter_map(|i| ActorId::new(kind, format!("b{i}")).ok())
        .filter(|id| view.owner(id).is_some_and(|o| o.name() == owner))
        .take(count)
        .collect()
}

async fn pair(node: &Node, o: &DriverOpts) -> Result<(), String> {
    let peer = o
        .text("peer")
        .ok_or("the pair workload needs --bench-peer=NODE_NAME")?
        .to_owned();
    // Five seconds or so of steady state: a run of one million tells (about one second)
    // also counts QUIC's slow start and the first batches' allocations, ~5-10% lower.
    let tells: u64 = o.get("tells", 5_000_000)?;
    let actors: usize = o.get("actors", 1_000)?;
    let senders: usize = o.get("senders", 16)?;
    let payload_len: usize = o.get("payload", 64)?;
    let rate: u64 = o.get("rate", 10_000)?;
    let secs: u64 = o.get("secs", 10)?;
    let round_trips: usize = o.get("round-trips", 20_000)?;
    // One task issues every ask by default, as the raw quinn baseline's generator writes
    // every request from one task (`--bench-driver=tasks`: a task per ask, as before).
    let issue: crate::openloop::Issue = o.get("driver", crate::openloop::Issue::Single)?;
    let pacing: crate::pacer::Pacing = o.get("pacing", crate::pacer::Pacing::Burst)?;
    wait_ready(node, o.get("nodes", 2)?, Duration::from_secs(60)).await?;
    let ids = Arc::new(ids_owned_by(node, "sink", &peer, actors));
    let payload = crate::kinds::Payload(vec![7u8; payload_len]);
    let timeout = Duration::from_secs(10);

    // Activate every actor and open the connection before measuring.
    let warm_errors = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let node = node.clone();
            let p = payload.clone();
            async move { node.ask::<Sink, Echo>(&id, Echo(p), timeout).await.is_err() }
        })
        .buffer_unordered(64)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if warm_errors > 0 {
        return Err(format!("{warm_errors} warm-up asks to {peer} failed"));
    }

    emit("tell_start", json!({}));
    let probe = ids[0].clone();
    let before = node
        .ask::<Sink, Received>(&probe, Received, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let per = tells / senders as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let node = node.clone();
        let ids = ids.clone();
        let p = payload.clone();
        tasks.spawn(async move {
            let mut errors = 0u64;
            let mut j = s;
            for _ in 0..per {
                let id = &ids[j % ids.len()];
                j += senders;
                if node
                    .tell::<Sink, Blob>(id, Blob(p.clone()), timeout)
                    .await
                    .is_err()
                {
                    errors += 1;
                }
            }
            errors
        });
    }
    let mut tell_errors = 0;
    while let Some(r) = tasks.join_next().await {
        tell_errors += r.unwrap_or(per);
    }
    let sent_s = started.elapsed().as_secs_f64();
    let want = before + per * senders as u64 - tell_errors;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut received = before;
    while received < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
        received = node
            .ask::<Sink, Received>(&probe, Received, timeout)
            .await
            .map_err(|e| e.to_string())?;
    }
    let total_s = started.elapsed().as_secs_f64();
    let delivered = received - before;
    emit(
        "tell",
        json!({
            "tells": per * senders as u64,
            "senders": senders,
            "actors": ids.len(),
            "payload": payload_len,
            "send_errors": tell_errors,
            "delivered": delivered,
            "send_s": sent_s,
            "total_s": total_s,
            "rate": (delivered as f64 / total_s).round(),
        }),
    );

    // Closed loop: one ask outstanding at a time.
    let mut lat = Vec::with_capacity(round_trips);
    let mut closed_errors = 0u64;
    for i in 0..round_trips + 1_000 {
        let id = &ids[i % ids.len()];
        let t = Instant::now();
        let r = node
            .ask::<Sink, Echo>(id, Echo(payload.clone()), timeout)
            .await;
        if i >= 1_000 {
            match r {
                Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                Err(_) => closed_errors += 1,
            }
        }
    }
    emit(
        "ask_closed",
        json!({ "errors": closed_errors, "latency": summary(lat) }),
    );

    // Open loop at `rate`.
    let load = crate::openloop::Load {
        rate,
        warm: Duration::from_secs(1),
        secs: Duration::from_secs(secs),
        max_inflight: 50_000,
        drain: Duration::from_secs(10),
        issue,
        pacing,
    };
    let ol = crate::openloop::run(load, |i| {
        let node = node.clone();
        let id = ids[i as usize % ids.len()].clone();
        let p = payload.clone();
        async move {
            node.ask::<Sink, Echo>(&id, Echo(p), timeout)
                .await
                .map(|_| ())
                .map_err(|e| format!("{:?}", e.code()))
        }
    })
    .await?;
    emit("ask_open", ol.json(rate));
    emit("done", json!({ "at_us": unix_us() }));
    Ok(())
}
