//! What every runtime's bench shares: the messages, the completion signal, the start
//! counter, tokio runtimes of both flavours, and latency statistics.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Every wait in the bench gives up after this long (a stuck runtime must not hang a run).
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// Mailbox capacity given to bounded mailboxes (Cortex, kameo): Cortex's default, so that
/// kameo's default of 64 does not make it park its senders more often.
pub(crate) const MAILBOX: usize = 1024;

/// A tell: the actor adds the payload (not zero-sized, so boxing it really allocates).
#[derive(Debug)]
pub(crate) struct Ping(pub(crate) u64);

/// An ask: replies with the count so far.
#[derive(Debug)]
pub(crate) struct Get;

/// Completion of a group of counting actors: each actor calls [`Group::one_done`] once
/// when it has handled its quota; the last one wakes the measuring task.
#[derive(Debug)]
pub(crate) struct Group {
    remaining: AtomicUsize,
    notify: Notify,
}

impl Group {
    pub(crate) fn new(actors: usize) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(actors),
            notify: Notify::new(),
        })
    }

    pub(crate) fn one_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // notify_one keeps a permit if the waiter is not registered yet.
            self.notify.notify_one();
        }
    }

    pub(crate) async fn wait(&self) {
        tokio::time::timeout(DEADLINE, self.notify.notified())
            .await
            .expect("the counting actors finished within the bench deadline");
    }
}

/// The state every runtime's counting actor keeps.
#[derive(Debug)]
pub(crate) struct Count {
    pub(crate) sum: u64,
    pub(crate) seen: u64,
    pub(crate) quota: u64,
    pub(crate) group: Arc<Group>,
}

impl Count {
    pub(crate) fn new(quota: u64, group: Arc<Group>) -> Self {
        Self {
            sum: 0,
            seen: 0,
            quota,
            group,
        }
    }

    #[inline]
    pub(crate) fn ping(&mut self, p: Ping) {
        self.sum = self.sum.wrapping_add(p.0);
        self.seen += 1;
        if self.seen == self.quota {
            self.group.one_done();
        }
    }
}

/// Bumped by every idle actor's start hook, so spawn and memory rows count actors that
/// really started, not spawn calls that returned.
pub(crate) static STARTED: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn started() {
    STARTED.fetch_add(1, Ordering::Relaxed);
}

/// Yields until `n` actors have started since `base` (`STARTED` before the spawns).
pub(crate) async fn wait_started(base: usize, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while STARTED.load(Ordering::Relaxed) - base < n {
        assert!(
            Instant::now() < deadline,
            "actors did not start within the bench deadline"
        );
        tokio::task::yield_now().await;
    }
    // One more turn, so that every actor finishes its start and parks on its mailbox.
    tokio::task::yield_now().await;
}

/// Which tokio scheduler a row runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// One thread (`current_thread`): sender and actor take turns.
    One,
    /// `multi_thread` with 2 workers (this machine's cores).
    Two,
}

impl Flavor {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Flavor::One => "1 thread",
            Flavor::Two => "2 workers",
        }
    }
}

/// Runs `f` on a fresh tokio runtime, so that no row inherits another's tasks.
pub(crate) fn on_tokio<F: Future>(flavor: Flavor, f: F) -> F::Output {
    let rt = match flavor {
        Flavor::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::Two => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .expect("a tokio runtime can be built");
    rt.block_on(f)
}

/// Sequential ask latencies, summarised.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AskStats {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Share of the asks that took over 5 µs, in percent: on 2 workers these are the asks
    /// that paid for waking the idle worker, and the p99 is one of them when they are over
    /// 1% (BENCHMARKS.md, Runtime), so the share shows how close a runtime is to that edge.
    pub(crate) over_5us: f64,
    pub(crate) per_sec: f64,
}

impl AskStats {
    pub(crate) fn from_nanos(mut nanos: Vec<u64>, total: Duration) -> Self {
        nanos.sort_unstable();
        let at = |q: f64| {
            let i = ((nanos.len() as f64 - 1.0) * q).round() as usize;
            Duration::from_nanos(nanos[i])
        };
        let slow = nanos.len() - nanos.partition_point(|&n| n <= 5_000);
        Self {
            p50: at(0.50),
            p99: at(0.99),
            over_5us: 100.0 * slow as f64 / nanos.len().max(1) as f64,
            per_sec: nanos.len() as f64 / total.as_secs_f64(),
        }
    }
}

/// Heap bytes and heap blocks held per actor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerActor {
    pub(crate) bytes: f64,
    pub(crate) blocks: f64,
}

impl PerActor {
    pub(crate) fn between(
        a: &crate::alloc::Snapshot,
        b: &crate::alloc::Snapshot,
        n: usize,
    ) -> Self {
        Self {
            bytes: b.bytes_since(a) as f64 / n as f64,
            blocks: b.blocks_since(a) as f64 / n as f64,
        }
    }
}

/// Times a sequence of asks: `$warm` untimed, then `$n` timed one at a time; `$ask` is an
/// expression evaluating to a future of the reply. A macro rather than a generic function
/// over an async closure, so that the spawned task stays provably `Send`.
macro_rules! time_asks {
    ($warm:expr, $n:expr, $ask:expr) => {{
        for _ in 0..$warm {
            std::hint::black_box($ask.await);
        }
        let mut nanos: Vec<u64> = Vec::with_capacity($n);
        let start = std::time::Instant::now();
        for _ in 0..$n {
            let t = std::time::Instant::now();
            std::hint::black_box($ask.await);
            nanos.push(t.elapsed().as_nanos() as u64);
        }
        $crate::common::AskStats::from_nanos(nanos, start.elapsed())
    }};
}
pub(crate) use time_asks;

/// What waking a thread whose core has gone idle costs the waker: `Thread::unpark` of a
/// thread parked for 200 µs, median of 200. On a virtual machine whose idle vCPUs halt,
/// this is the price tokio's multi-thread scheduler pays whenever it wakes its idle worker,
/// and it sets the 2-worker ask p99 of every runtime here; it changes with the host's state
/// (~2 µs or ~12 µs on the machine of BENCHMARKS.md), so the bench prints it beside the
/// ask rows.
pub(crate) fn idle_wake_cost() -> Duration {
    use std::sync::atomic::AtomicBool;
    const ROUNDS: usize = 200;
    const PARKED_FOR: Duration = Duration::from_micros(200);
    let parked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sleeper = {
        let (parked, stop) = (Arc::clone(&parked), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                parked.store(true, Ordering::SeqCst);
                // A spurious return just parks again; the waker waits for the flag.
                std::thread::park_timeout(Duration::from_secs(1));
                parked.store(false, Ordering::SeqCst);
            }
        })
    };
    let mut nanos = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        // Spin (this core stays busy, as an asker's does) until the sleeper has parked and
        // its core has been idle for PARKED_FOR; give up on a round after a second.
        while !parked.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(1) {}
        let since = Instant::now();
        while since.elapsed() < PARKED_FOR {}
        let t = Instant::now();
        sleeper.thread().unpark();
        nanos.push(t.elapsed().as_nanos() as u64);
    }
    stop.store(true, Ordering::SeqCst);
    sleeper.thread().unpark();
    sleeper.join().expect("the sleeper thread does not panic");
    nanos.sort_unstable();
    Duration::from_nanos(nanos[ROUNDS / 2])
}
