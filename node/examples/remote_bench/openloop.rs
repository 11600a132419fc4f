//! An open-loop request generator: requests start on a fixed schedule whatever the replies
//! do. Each latency is measured twice: from the moment the request was issued (`latency`,
//! the service time) and from its scheduled start (`from_schedule`, which also counts the
//! generator's own lateness: tokio's timer has a 1 ms granularity, so on a loaded machine
//! this adds up to about a millisecond to every sample, but a stall of the sender can never
//! hide in it).
//!
//! Two ways to issue the requests ([`Issue`]): a task per request (as a server that spawns
//! one per incoming request would), or all of them polled by the generator's own task, as
//! the raw quinn baseline's generator writes every request from one task. Which one matters
//! for packets: requests pushed by one task in one turn of the scheduler leave in one
//! packet; requests spread over tasks on two workers in several.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// What an open-loop run measured.
#[derive(Debug, Default)]
pub(crate) struct OpenLoop {
    /// Latencies of successful requests after the warm-up, from issue, microseconds.
    pub(crate) latencies: Vec<u64>,
    /// The same, from the scheduled start.
    pub(crate) from_schedule: Vec<u64>,
    /// Failed requests after the warm-up, by error text.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Requests not started because `max_inflight` were outstanding.
    pub(crate) shed: u64,
    /// Requests scheduled after the warm-up.
    pub(crate) scheduled: u64,
    /// Seconds the measured part took, from its first scheduled start to the last reply.
    pub(crate) elapsed_s: f64,
}

impl OpenLoop {
    /// The result as JSON, with latency percentiles.
    pub(crate) fn json(self, rate: u64) -> serde_json::Value {
        let done = self.latencies.len() as u64;
        serde_json::json!({
            "target_rate": rate,
            "scheduled": self.scheduled,
            "ok": done,
            "errors": self.errors,
            "shed": self.shed,
            "achieved_rate": (done as f64 / self.elapsed_s.max(1e-9)).round(),
            "latency": crate::stats::summary(self.latencies),
            "from_schedule": crate::stats::summary(self.from_schedule),
        })
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issue {
    /// A spawned task per request.
    Tasks,
    /// Every request polled by the generator's task (a `FuturesUnordered`).
    Single,
}

impl std::str::FromStr for Issue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tasks" => Ok(Issue::Tasks),
            "single" => Ok(Issue::Single),
            other => Err(format!("driver {other:?}: use tasks or single")),
        }
    }
}

/// What one request task returns: whether it is measured (past the warm-up), and its
/// latencies from issue and from schedule (µs) or its error.
type Outcome = (bool, Result<(u64, u64), String>);

/// Starts `rate` requests per second for `warm + secs`, at most `max_inflight` at once;
/// `request(i)` makes the i-th. Requests of the first `warm` are not measured. Waits for
/// the stragglers at most `drain` after the schedule ends.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<F, Fut>(
    rate: u64,
    warm: Duration,
    secs: Duration,
    max_inflight: usize,
    drain: Duration,
    issue: Issue,
    request: F,
) -> OpenLoop
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    if issue == Issue::Single {
        return run_single(rate, warm, secs, max_inflight, drain, request).await;
    }
    const TICK: Duration = Duration::from_millis(1);
    let per_tick = (rate / 1000).max(1);
    let warm_ticks = warm.as_millis() as u64;
    let ticks = warm_ticks + secs.as_millis() as u64;
    let mut out = OpenLoop::default();
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let start = Instant::now();
    let mut interval = tokio::time::interval_at(start, TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0u64;
    let collect = |out: &mut OpenLoop, r: Result<Outcome, _>| match r {
        Ok((true, Ok((us, sched)))) => {
            out.latencies.push(us);
            out.from_schedule.push(sched);
        }
        Ok((true, Err(e))) => *out.errors.entry(e).or_default() += 1,
        Ok((false, _)) => {}
        Err(e) => *out.errors.entry(format!("task: {e}")).or_default() += 1,
    };
    for tick in 0..ticks {
        interval.tick().await;
        let scheduled = start + TICK * tick as u32;
        let measured = tick >= warm_ticks;
        for _ in 0..per_tick {
            if measured {
                out.scheduled += 1;
            }
            if tasks.len() >= max_inflight {
                if measured {
                    out.shed += 1;
                }
                continue;
            }
            let issued = Instant::now();
            let fut = request(n);
            n += 1;
            tasks.spawn(async move {
                let r = fut.await;
                let now = Instant::now();
                let us = |from: Instant| now.saturating_duration_since(from).as_micros() as u64;
                (measured, r.map(|()| (us(issued), us(scheduled))))
            });
        }
        while let Some(r) = tasks.try_join_next() {
            collect(&mut out, r);
        }
    }
    let deadline = Instant::now() + drain;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(r)) => collect(&mut out, r),
            Ok(None) => break,
            Err(_) => {
                let left = tasks.len() as u64;
                *out.errors
                    .entry("no reply before the drain deadline".into())
                    .or_default() += left;
                tasks.abort_all();
                break;
            }
        }
    }
    out.elapsed_s = Instant::now()
        .saturating_duration_since(start + warm)
        .as_secs_f64();
    out
}

/// [`run`] with every request polled by this task.
async fn run_single<F, Fut>(
    rate: u64,
    warm: Duration,
    secs: Duration,
    max_inflight: usize,
    drain: Duration,
    request: F,
) -> OpenLoop
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    const TICK: Duration = Duration::from_millis(1);
    let per_tick = (rate / 1000).max(1);
    let warm_ticks = warm.as_millis() as u64;
    let ticks = warm_ticks + secs.as_millis() as u64;
    let mut out = OpenLoop::default();
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    let mut interval = tokio::time::interval_at(start, TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0u64;
    let collect = |out: &mut OpenLoop, r: Outcome| match r {
        (true, Ok((us, sched))) => {
            out.latencies.push(us);
            out.from_schedule.push(sched);
        }
        (true, Err(e)) => *out.errors.entry(e).or_default() += 1,
        (false, _) => {}
    };
    for tick in 0..ticks {
        // Replies are taken as they come while waiting for the next tick.
        loop {
            tokio::select! {
                biased;
                _ = interval.tick() => break,
                Some(r) = pending.next(), if !pending.is_empty() => collect(&mut out, r),
            }
        }
        let scheduled = start + TICK * tick as u32;
        let measured = tick >= warm_ticks;
        for _ in 0..per_tick {
            if measured {
                out.scheduled += 1;
            }
            if pending.len() >= max_inflight {
                if measured {
                    out.shed += 1;
                }
                continue;
            }
            let issued = Instant::now();
            let fut = request(n);
            n += 1;
            pending.push(async move {
                let r = fut.await;
                let now = Instant::now();
                let us = |from: Instant| now.saturating_duration_since(from).as_micros() as u64;
                (measured, r.map(|()| (us(issued), us(scheduled))))
            });
        }
    }
    let deadline = Instant::now() + drain;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(r)) => collect(&mut out, r),
            Ok(None) => break,
            Err(_) => {
                *out.errors
                    .entry("no reply before the drain deadline".into())
                    .or_default() += pending.len() as u64;
                break;
            }
        }
    }
    out.elapsed_s = Instant::now()
        .saturating_duration_since(start + warm)
        .as_secs_f64();
    out
}
