//! The load, through `cortex-client`: register reads, writes and compare-and-sets on many
//! ids; counter increments (one sequential writer per counter, so the checker can account
//! for every increment); pub-sub publishes with every subscriber's deliveries.
//! Every op goes into the [`History`] with invoke and complete times.

use std::sync::Arc;
use std::time::Duration;

use cortex_client::{AskOptions, Client, ClientError};
use cortex_protocol::{ActorId, TopicId};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::history::{History, Op, Outcome, PubSubRec, now_us};
use crate::messages::{Cas, Deposit, Get, Incr, Read, Write};
use crate::scenario::{SplitMix, WorkloadSpec};

/// Counters shown on the progress bar.
#[derive(Debug, Default)]
pub struct Live {
    /// Ops answered.
    pub ok: std::sync::atomic::AtomicU64,
    /// Ops failed.
    pub failed: std::sync::atomic::AtomicU64,
}

/// Workload switches.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The scenario's workload.
    pub spec: WorkloadSpec,
    /// Send counter retries WITHOUT an idempotency key (a deliberately broken client,
    /// to show the counter checker catches double application).
    pub dedupe_off: bool,
    /// Seed for op choice.
    pub seed: u64,
}

/// The error class names used in reports.
pub fn error_class(e: &ClientError) -> (&'static str, bool) {
    match e {
        ClientError::Timeout { .. } => ("timeout", true),
        ClientError::Unreachable { maybe_ran, .. } => ("unreachable", *maybe_ran),
        ClientError::Rejected { .. } => ("rejected", false),
        ClientError::HopLimit { .. } => ("hop_limit", false),
        ClientError::ActorFailed { .. } => ("actor_failed", true),
        ClientError::ActorStopped { .. } => ("actor_stopped", true),
        ClientError::Decode { .. } => ("decode", true),
        ClientError::Closed => ("closed", false),
        ClientError::Unauthorized { .. } => ("unauthorized", false),
        _ => ("other", true),
    }
}

fn err_outcome(e: &ClientError) -> Outcome {
    let (class, maybe_ran) = error_class(e);
    Outcome::Err {
        class: class.into(),
        maybe_ran,
        detail: e.to_string(),
    }
}

fn register_id(i: usize) -> ActorId {
    // Invariant: "register" and "chaos-N" are valid kind and key characters.
    ActorId::new("register", format!("chaos-{i}")).expect("valid register id")
}

fn counter_id(i: usize) -> ActorId {
    // Invariant: as register_id.
    ActorId::new("counter", format!("chaos-{i}")).expect("valid counter id")
}

/// Starts every workload task; they stop when `stop` is cancelled.
pub fn spawn(
    client: Client,
    subscribers: Vec<Client>,
    cfg: LoadConfig,
    history: Arc<History>,
    live: Arc<Live>,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let spec = &cfg.spec;
    for w in 0..spec.register_workers {
        let (c, h, l, s, cfg) = (
            client.clone(),
            history.clone(),
            live.clone(),
            stop.clone(),
            cfg.clone(),
        );
        tasks.spawn(async move { register_worker(w as u32, c, cfg, h, l, s).await });
    }
    for i in 0..spec.counters {
        let (c, h, l, s, cfg) = (
            client.clone(),
            history.clone(),
            live.clone(),
            stop.clone(),
            cfg.clone(),
        );
        tasks.spawn(async move { counter_worker(i, c, cfg, h, l, s).await });
    }
    for t in 0..spec.topics {
        // Invariant: "chaos-N" is a valid topic name.
        let topic = TopicId::new(format!("chaos-{t}")).expect("valid topic");
        for (si, sub) in subscribers.iter().enumerate() {
            let (c, h, s, topic) = (sub.clone(), history.clone(), stop.clone(), topic.clone());
            tasks.spawn(async move { subscriber(si as u32, c, topic, h, s).await });
        }
        let (c, h, s) = (client.clone(), history.clone(), stop.clone());
        let rate = spec.publish_rate.max(1);
        tasks.spawn(async move { publisher(c, topic, rate, h, s).await });
    }
}

async fn register_worker(
    w: u32,
    client: Client,
    cfg: LoadConfig,
    h: Arc<History>,
    live: Arc<Live>,
    stop: CancellationToken,
) {
    let spec = cfg.spec;
    let mut rng = SplitMix::new(cfg.seed ^ (u64::from(w) << 32) ^ 0x5eed);
    let mut seen: Vec<Option<String>> = vec![None; spec.registers.max(1)];
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        let i = rng.below(spec.registers.max(1) as u64) as usize;
        let id = register_id(i);
        let opts = AskOptions::new(spec.ask_timeout).retries(spec.retries);
        let roll = rng.below(10);
        seq += 1;
        let invoke_us = now_us();
        let deadline_us = invoke_us + spec.ask_timeout.as_micros() as u64;
        let (op, arg, outcome) = if roll < 5 {
            let r = client.ask_with(&id, Read, opts).await;
            if let Ok(v) = &r {
                seen[i] = v.clone();
            }
            ("read", None, to_outcome(r))
        } else if roll < 8 {
            let v = format!("w{w}-{seq}");
            let r = client.ask_with(&id, Write(v.clone()), opts).await;
            if r.is_ok() {
                seen[i] = Some(v.clone());
            }
            ("write", Some(serde_json::json!(v)), to_outcome(r))
        } else {
            let new = format!("w{w}-{seq}");
            let expected = seen[i].clone();
            let r = client
                .ask_with(
                    &id,
                    Cas {
                        expected: expected.clone(),
                        new: new.clone(),
                    },
                    opts,
                )
                .await;
            if let Ok(true) = r {
                seen[i] = Some(new.clone());
            }
            (
                "cas",
                Some(serde_json::json!({"expected": expected, "new": new})),
                to_outcome(r),
            )
        };
        record(
            &h,
            &live,
            w,
            &id,
            op,
            arg,
            invoke_us,
            deadline_us,
            1,
            outcome,
        );
        pause(&stop, spec.think).await;
    }
}

fn to_outcome<T: serde::Serialize>(r: Result<T, ClientError>) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok {
            value: serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
        },
        Err(e) => err_outcome(&e),
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    h: &History,
    live: &Live,
    worker: u32,
    id: &ActorId,
    op: &str,
    arg: Option<serde_json::Value>,
    invoke_us: u64,
    deadline_us: u64,
    attempts: u32,
    outcome: Outcome,
) {
    use std::sync::atomic::Ordering::Relaxed;
    if outcome.is_ok() {
        live.ok.fetch_add(1, Relaxed);
    } else {
        live.failed.fetch_add(1, Relaxed);
    }
    h.op(Op {
        worker,
        id: id.to_string(),
        op: op.into(),
        arg,
        invoke_us,
        complete_us: now_us(),
        deadline_us,
        attempts,
        outcome,
    });
}

async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// One logical increment: attempts of `ask_timeout / (retries + 1)` each, retried while
/// the failure may have let it run. With a key, the owner runs it at most once; with
/// `dedupe_off`, each retry is a fresh ask and may apply again.
async fn counter_worker(
    i: usize,
    client: Client,
    cfg: LoadConfig,
    h: Arc<History>,
    live: Arc<Live>,
    stop: CancellationToken,
) {
    let spec = cfg.spec;
    let id = counter_id(i);
    let mut rng = SplitMix::new(cfg.seed ^ ((i as u64) << 40) ^ 0xc0);
    let worker = 1000 + i as u32;
    let attempt_timeout = (spec.ask_timeout / (spec.retries + 1)).max(Duration::from_millis(50));
    while !stop.is_cancelled() {
        let invoke_us = now_us();
        let deadline = tokio::time::Instant::now() + spec.ask_timeout;
        let deadline_us = invoke_us + spec.ask_timeout.as_micros() as u64;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        key[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut opts = AskOptions::new(attempt_timeout.min(left).max(Duration::from_millis(1)));
            if !cfg.dedupe_off {
                opts = opts.idempotency_key(key);
            }
            let r = client.ask_with(&id, Incr, opts).await;
            match r {
                Ok(v) => break to_outcome::<u64>(Ok(v)),
                Err(e) => {
                    let (_, maybe_ran) = error_class(&e);
                    let retryable = maybe_ran || e.is_safe_to_retry();
                    if !retryable
                        || attempts > spec.retries
                        || tokio::time::Instant::now() + Duration::from_millis(20) >= deadline
                        || stop.is_cancelled()
                    {
                        break err_outcome(&e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        record(
            &h,
            &live,
            worker,
            &id,
            "incr",
            None,
            invoke_us,
            deadline_us,
            attempts,
            outcome,
        );
        pause(&stop, spec.think).await;
    }
}

/// Reads every counter once more (after the faults healed), for the final-value check.
pub async fn final_reads(client: &Client, spec: &WorkloadSpec, h: &History, live: &Live) {
    for i in 0..spec.counters {
        let id = counter_id(i);
        let invoke_us = now_us();
        let deadline_us = invoke_us + spec.ask_timeout.as_micros() as u64;
        let r = client
            .ask_with(&id, Get, AskOptions::new(spec.ask_timeout).retries(3))
            .await;
        record(
            h,
            live,
            2000 + i as u32,
            &id,
            "get",
            None,
            invoke_us,
            deadline_us,
            1,
            to_outcome(r),
        );
    }
}

async fn publisher(
    client: Client,
    topic: TopicId,
    rate: u32,
    h: Arc<History>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(1) / rate;
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        let t_us = now_us();
        let ok = client.publish(&topic, &Deposit(seq)).await.is_ok();
        h.pubsub.lock().push(PubSubRec {
            topic: topic.to_string(),
            seq,
            what: "publish".into(),
            subscriber: None,
            t_us,
            ok,
        });
    }
}

async fn subscriber(
    si: u32,
    client: Client,
    topic: TopicId,
    h: Arc<History>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let sub = tokio::select! {
            _ = stop.cancelled() => return,
            s = client.subscribe::<Deposit>(&topic) => s,
        };
        let Ok(mut sub) = sub else {
            pause(&stop, Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => return,
                m = sub.next() => m,
            };
            match m {
                Some(Ok(Deposit(seq))) => h.pubsub.lock().push(PubSubRec {
                    topic: topic.to_string(),
                    seq,
                    what: "deliver".into(),
                    subscriber: Some(si),
                    t_us: now_us(),
                    ok: true,
                }),
                Some(Err(_)) => {}
                None => break,
            }
        }
    }
}
