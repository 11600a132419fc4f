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
use tokio::time::{Instant, Interval, MissedTickBehavior};

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

const TICK: Duration = Duration::from_millis(1);

/// The tick schedule both drivers follow: `per_tick` requests every millisecond, the first
/// `warm_ticks` not measured.
struct Schedule {
    per_tick: u64,
    warm_ticks: u64,
    ticks: u64,
    start: Instant,
    warm: Duration,
}

impl Schedule {
    fn new(rate: u64, warm: Duration, secs: Duration) -> (Self, Interval) {
        let warm_ticks = warm.as_millis() as u64;
        let start = Instant::now();
        let mut interval = tokio::time::interval_at(start, TICK);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let schedule = Schedule {
            per_tick: (rate / 1000).max(1),
            warm_ticks,
            ticks: warm_ticks + secs.as_millis() as u64,
            start,
            warm,
        };
        (schedule, interval)
    }

    /// Issues tick `tick`'s requests through `spawn` (which gets each one timed), shedding
    /// those past `max_inflight` (`in_flight` were out before this tick).
    #[allow(clippy::too_many_arguments)]
    fn issue<Fut>(
        &self,
        tick: u64,
        out: &mut OpenLoop,
        n: &mut u64,
        mut in_flight: usize,
        max_inflight: usize,
        request: &impl Fn(u64) -> Fut,
        mut spawn: impl FnMut(Fut, bool, Instant, Instant),
    ) {
        let scheduled = self.start + TICK * tick as u32;
        let measured = tick >= self.warm_ticks;
        for _ in 0..self.per_tick {
            if measured {
                out.scheduled += 1;
            }
            if in_flight >= max_inflight {
                if measured {
                    out.shed += 1;
                }
                continue;
            }
            let issued = Instant::now();
            let fut = request(*n);
            *n += 1;
            in_flight += 1;
            spawn(fut, measured, issued, scheduled);
        }
    }

    /// Seconds from the first measured start until now.
    fn elapsed_s(&self) -> f64 {
        Instant::now()
            .saturating_duration_since(self.start + self.warm)
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
    let (schedule, mut interval) = Schedule::new(rate, warm, secs);
    let mut out = OpenLoop::default();
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut n = 0u64;
    let joined = |out: &mut OpenLoop, r: Result<Outcome, tokio::task::JoinError>| match r {
        Ok(o) => record(out, o),
        Err(e) => *out.errors.entry(format!("task: {e}")).or_default() += 1,
    };
    for tick in 0..schedule.ticks {
        interval.tick().await;
        schedule.issue(
            tick,
            &mut out,
            &mut n,
            tasks.len(),
            max_inflight,
            &request,
            |f, m, i, s| {
                tasks.spawn(timed(f, m, i, s));
            },
        );
        while let Some(r) = tasks.try_join_next() {
            joined(&mut out, r);
        }
    }
    let deadline = Instant::now() + drain;
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
    let (schedule, mut interval) = Schedule::new(rate, warm, secs);
    let mut out = OpenLoop::default();
    let mut pending = FuturesUnordered::new();
    let mut n = 0u64;
    for tick in 0..schedule.ticks {
        // Replies are taken as they come while waiting for the next tick.
        loop {
            tokio::select! {
                biased;
                _ = interval.tick() => break,
                Some(r) = pending.next(), if !pending.is_empty() => record(&mut out, r),
            }
        }
        schedule.issue(
            tick,
            &mut out,
            &mut n,
            pending.len(),
            max_inflight,
            &request,
            |f, m, i, s| pending.push(timed(f, m, i, s)),
        );
    }
    let deadline = Instant::now() + drain;
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
    out
}
