//! An open-loop request generator: requests start on a fixed schedule whatever the replies
//! do. Each latency is measured twice: from the moment the request was issued (`latency`,
//! the service time) and from its scheduled start (`from_schedule`, which also counts the
//! generator's own lateness, up to the pacer's ~50 µs of timer slack on a quiet machine, so
//! that a stall of the sender can never hide in it). When requests are due: `pacer.rs`.
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
use tokio::time::Instant;

use crate::pacer::{Pacer, Pacing};

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

/// What one request returns: whether it is measured (past the warm-up), and its latencies
/// from issue and from schedule (µs) or its error.
type Outcome = (bool, Result<(u64, u64), String>);

/// How an open loop runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Requests per second.
    pub(crate) rate: u64,
    /// Time at the start whose requests are not measured.
    pub(crate) warm: Duration,
    /// Time measured after the warm-up.
    pub(crate) secs: Duration,
    /// Requests outstanding at most; further ones are shed.
    pub(crate) max_inflight: usize,
    /// How long to wait for stragglers after the last request started.
    pub(crate) drain: Duration,
    /// How requests are issued.
    pub(crate) issue: Issue,
    /// How due times are spread.
    pub(crate) pacing: Pacing,
}

/// The schedule both drivers follow: the pacer's due times, the first `warm_n` requests
/// not measured.
struct Schedule {
    pacer: Pacer,
    warm_n: u64,
    max_inflight: usize,
}

impl Schedule {
    fn new(load: &Load) -> Result<Self, String> {
        let per_s = |d: Duration| (u128::from(load.rate) * d.as_millis() / 1000) as u64;
        let warm_n = per_s(load.warm);
        Ok(Schedule {
            pacer: Pacer::start(load.rate, warm_n + per_s(load.secs), load.pacing)?,
            warm_n,
            max_inflight: load.max_inflight,
        })
    }

    /// Issues request `i` through `spawn` (which gets it timed), or sheds it when
    /// `in_flight` requests are already out.
    fn issue<Fut>(
        &self,
        i: u64,
        out: &mut OpenLoop,
        in_flight: usize,
        request: &impl Fn(u64) -> Fut,
        spawn: impl FnOnce(Fut, bool, Instant, Instant),
    ) {
        let measured = i >= self.warm_n;
        if measured {
            out.scheduled += 1;
        }
        if in_flight >= self.max_inflight {
            if measured {
                out.shed += 1;
            }
            return;
        }
        let issued = Instant::now();
        spawn(request(i), measured, issued, self.pacer.due(i));
    }

    /// Seconds from the first measured start until now.
    fn elapsed_s(&self) -> f64 {
        Instant::now()
            .saturating_duration_since(self.pacer.due(self.warm_n))
            .as_secs_f64()
    }
}

/// `fut`, timed from `issued` and from `scheduled`.
async fn timed<Fut>(fut: Fut, measured: bool, issued: Instant, scheduled: Instant) -> Outcome
where
    Fut: Future<Output = Result<(), String>>,
{
    let r = fut.await;
    let now = Instant::now();
    let us = |from: Instant| now.saturating_duration_since(from).as_micros() as u64;
    (measured, r.map(|()| (us(issued), us(scheduled))))
}

fn record(out: &mut OpenLoop, r: Outcome) {
    match r {
        (true, Ok((us, sched))) => {
            out.latencies.push(us);
            out.from_schedule.push(sched);
        }
        (true, Err(e)) => *out.errors.entry(e).or_default() += 1,
        (false, _) => {}
    }
}

fn unanswered(out: &mut OpenLoop, left: usize) {
    *out.errors
        .entry("no reply before the drain deadline".into())
        .or_default() += left as u64;
}

/// Starts requests as `load` says; `request(i)` makes the i-th. Requests of the warm-up
/// are not measured. Waits for the stragglers at most `load.drain` after the schedule ends.
pub(crate) async fn run<F, Fut>(load: Load, request: F) -> Result<OpenLoop, String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    if load.issue == Issue::Single {
        return run_single(load, request).await;
    }
    let mut schedule = Schedule::new(&load)?;
    let mut out = OpenLoop::default();
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let joined = |out: &mut OpenLoop, r: Result<Outcome, tokio::task::JoinError>| match r {
        Ok(o) => record(out, o),
        Err(e) => *out.errors.entry(format!("task: {e}")).or_default() += 1,
    };
    while let Some(i) = schedule.pacer.next().await {
        schedule.issue(i, &mut out, tasks.len(), &request, |f, m, i, s| {
            tasks.spawn(timed(f, m, i, s));
        });
        while let Some(r) = tasks.try_join_next() {
            joined(&mut out, r);
        }
    }
    let deadline = Instant::now() + load.drain;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(r)) => joined(&mut out, r),
            Ok(None) => break,
            Err(_) => {
                unanswered(&mut out, tasks.len());
                tasks.abort_all();
                break;
            }
        }
    }
    out.elapsed_s = schedule.elapsed_s();
    Ok(out)
}

/// [`run`] with every request polled by this task.
async fn run_single<F, Fut>(load: Load, request: F) -> Result<OpenLoop, String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    let mut schedule = Schedule::new(&load)?;
    let mut out = OpenLoop::default();
    let mut pending = FuturesUnordered::new();
    loop {
        // Replies are taken as they come while waiting for the next due request.
        let i = loop {
            tokio::select! {
                biased;
                i = schedule.pacer.next() => break i,
                Some(r) = pending.next(), if !pending.is_empty() => record(&mut out, r),
            }
        };
        let Some(i) = i else { break };
        schedule.issue(i, &mut out, pending.len(), &request, |f, m, i, s| {
            pending.push(timed(f, m, i, s))
        });
    }
    let deadline = Instant::now() + load.drain;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some(r)) => record(&mut out, r),
            Ok(None) => break,
            Err(_) => {
                unanswered(&mut out, pending.len());
                break;
            }
        }
    }
    out.elapsed_s = schedule.elapsed_s();
    Ok(out)
}
