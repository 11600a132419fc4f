//! When each request of an open loop is due. `Pacing::Burst` (the default, and this bench's
//! pattern from the start: tokio's timer has a 1 ms granularity) makes `rate / 1000`
//! requests due together at the start of every millisecond, so the last of each burst waits
//! behind the others. `Pacing::Even` (`--bench-pacing=even`) makes one due every `1 / rate`
//! seconds. Even pacing is not the gentler load on this VM: between two asks 100 µs apart
//! every thread goes idle and its vCPU halts, and each ask then pays the wakes of halted
//! vCPUs (2 to 12 µs each, see BENCHMARKS.md); measured, raw quinn's CPU per round trip
//! went from 18 µs in bursts to 89 µs evenly paced, and its p99 from 316 to 392 µs.
//!
//! A thread of its own sleeps until the next request is due and then hands the generator
//! every request due by then, in one message over a bounded channel: `std::thread::sleep`
//! wakes within ~50 µs (Linux's default timer slack), and a late wake hands over every
//! request already due, which is the generator's own lateness (measured: `from_schedule` in
//! `openloop.rs`). One message per burst, not one per request: the first hand-over wakes
//! the generator, and where the two share a CPU the kernel ran the woken generator at once,
//! which issued the burst's first request and waited for its answer before the pacer got
//! the CPU back to hand over the other nine (traced with one worker per process: the
//! second request of a burst issued 48 µs after the first, median).
//!
//! Raw quinn's generator takes its due times from the same pacer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How due times are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// `rate / 1000` requests due together at the start of every millisecond.
    Burst,
    /// Request `i` is due at `i / rate` seconds.
    Even,
}

impl std::str::FromStr for Pacing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "even" => Ok(Pacing::Even),
            "burst" => Ok(Pacing::Burst),
            other => Err(format!("pacing {other:?}: use even or burst")),
        }
    }
}

impl Pacing {
    /// When request `i` is due, from the start, at `rate` per second.
    pub(crate) fn offset(self, i: u64, rate: u64) -> Duration {
        let rate = rate.max(1);
        match self {
            Pacing::Even => {
                Duration::from_nanos((u128::from(i) * 1_000_000_000 / u128::from(rate)) as u64)
            }
            Pacing::Burst => Duration::from_millis(i / (rate / 1000).max(1)),
        }
    }
}

/// Hands out request numbers `0..total` as they fall due. The thread is stopped and
/// joined on drop.
pub(crate) struct Pacer {
    /// How many requests are due so far (each message a higher count).
    rx: mpsc::Receiver<u64>,
    /// The next request to hand out.
    next: u64,
    /// How many are due, as of the last hand-over received.
    due: u64,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    start: Instant,
    rate: u64,
    pacing: Pacing,
}

/// Hand-overs the channel holds before the pacer thread waits for the generator.
const AHEAD: usize = 4096;
/// The longest single sleep, so that a stop is seen soon.
const MAX_SLEEP: Duration = Duration::from_millis(10);

impl Pacer {
    /// Starts pacing `total` requests at `rate` per second from now.
    pub(crate) fn start(rate: u64, total: u64, pacing: Pacing) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel(AHEAD);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let std_start = start.into_std();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || {
                    let mut handed = 0;
                    while handed < total {
                        let due = std_start + pacing.offset(handed, rate);
                        let now = loop {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let now = std::time::Instant::now();
                            if now >= due {
                                break now;
                            }
                            std::thread::sleep((due - now).min(MAX_SLEEP));
                        };
                        let mut upto = handed + 1;
                        while upto < total && std_start + pacing.offset(upto, rate) <= now {
                            upto += 1;
                        }
                        // Err: the generator is gone (it closes the channel when dropped).
                        if tx.blocking_send(upto).is_err() {
                            return;
                        }
                        handed = upto;
                    }
                })
                .map_err(|e| format!("cannot start the pacer thread: {e}"))?
        };
        Ok(Self {
            rx,
            next: 0,
            due: 0,
            stop,
            thread: Some(thread),
            start,
            rate,
            pacing,
        })
    }

    /// The next due request, or `None` once all were handed out.
    pub(crate) async fn next(&mut self) -> Option<u64> {
        if self.next == self.due {
            self.due = self.rx.recv().await?;
        }
        let i = self.next;
        self.next += 1;
        Some(i)
    }

    /// When request `i` was due.
    pub(crate) fn due(&self, i: u64) -> Instant {
        self.start + self.pacing.offset(i, self.rate)
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing wakes a pacer blocked on a full channel; it then sees the stop.
        self.rx.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
