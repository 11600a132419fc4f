//! Sharded (thread-per-core) execution, chosen with [`Executor::Shards`]: N threads, each
//! driving its own tokio `current_thread` runtime, as actix arbiters or Seastar shards do.
//!
//! An actor spawned from a shard's thread (a child, a virtual activation, a top-level actor
//! spawned by a task running there) stays on that shard, so an actor and the ones it talks
//! to share a thread: a tell's wake never crosses a core, and envelopes are freed by the
//! thread that allocated them. Work-stealing cannot give that: it moves a woken actor to
//! whichever worker is free. [`SpawnOptions::shard`](crate::SpawnOptions::shard) places an
//! actor explicitly; spawns from other threads go round-robin.
//!
//! The pool owns its threads: [`System::shutdown`](crate::System::shutdown) stops them
//! after the actors and joins each under the deadline; dropping the last handle stops them
//! too, and joins them when that happens outside any tokio runtime (inside one, blocking
//! would stall it: a blocking task of that runtime joins them instead).

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where a [`System`](crate::System) runs its actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Executor {
    /// Each actor is a task of the tokio runtime it is spawned from (a child: its parent's;
    /// a top-level actor: the caller's). On a multi-thread runtime, actors move between
    /// workers as tokio's work-stealing sees fit.
    #[default]
    Ambient,
    /// The system starts this many threads (0: one per available core), each driving a
    /// tokio `current_thread` runtime, and keeps every actor on one of them (see the
    /// placement rules below).
    ///
    /// Also a mode for ask latency: a sequential ask that finds its actor busy (an idle
    /// one is answered inline, on the asking task) goes through the scheduler, and on a
    /// work-stealing runtime tokio then unparks its idle worker every few dozen round
    /// trips, which on a virtual machine costs the asker 2 to 12 µs; on a shard there is no
    /// idle worker to wake.
    ///
    /// An actor spawned from a shard thread (a child, a virtual activation, anything
    /// spawned by a task running there) stays on that shard, so a sender and the actors it
    /// talks to can share a thread and a tell never wakes another core.
    /// [`SpawnOptions::shard`](crate::SpawnOptions::shard) places an actor explicitly;
    /// spawns from other threads go round-robin. Timers and tasks an actor starts with
    /// `tokio::spawn` run on its shard. [`System::shard_handle`](crate::System::shard_handle)
    /// runs other tasks beside a shard's actors.
    ///
    /// Spawn a shard's busy actors from a task on that shard when you can: their mailbox
    /// and task are then allocated by the thread that uses them. In the bench, with glibc
    /// malloc, 1,000 actors spawned from the main thread (after another runtime's threads
    /// had come and gone in the process) took 2.7 times as long to handle the same tells
    /// as when spawned on their shards (with mimalloc: no slower).
    Shards(usize),
}

/// How long a stopping shard lets its runtime's blocking tasks finish (its actors were
/// already stopped or are aborted: this only bounds `spawn_blocking` work users started).
const RUNTIME_DROP_GRACE: Duration = Duration::from_secs(1);

/// How long dropping the last handle waits for the shard threads when it can block.
const DROP_JOIN: Duration = Duration::from_secs(5);

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The (pool, shard) this thread drives, if it is a shard thread.
    static CURRENT: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// The (pool, shard) of the calling thread.
fn current() -> Option<(u64, usize)> {
    CURRENT.with(Cell::get)
}

/// The shard index of the calling thread, if it drives a shard of any system.
pub(crate) fn current_index() -> Option<usize> {
    current().map(|(_, k)| k)
}

/// Threads that have not yet finished, and the signals of their ends (a condvar for the
/// blocking join of `Drop`, a `Notify` for the async join of shutdown).
#[derive(Default)]
struct Exits {
    live: Mutex<usize>,
    cv: Condvar,
    notify: Notify,
}

/// Counts its thread out when dropped, as the thread's last act (even when it panicked).
struct ExitGuard(Arc<Exits>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        *self.0.live.lock() -= 1;
        self.0.cv.notify_all();
        self.0.notify.notify_waiters();
    }
}

/// A shard's runtime until its thread takes it. Dropped unused (the thread could not be
/// started), it is let go without blocking: a runtime dropped the ordinary way inside an
/// async context panics, and systems are created in one.
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Shard {
    handle: Handle,
    /// Dropping (or sending on) it stops the shard's thread.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The shard threads of one system.
pub(crate) struct Shards {
    id: u64,
    shards: Vec<Shard>,
    next: AtomicUsize,
    exits: Arc<Exits>,
}

impl Shards {
    /// Starts `n` shard threads (0: one per available core), whose runtimes poll their
    /// driver every `event_interval` task polls when busy.
    pub(crate) fn start(n: usize, event_interval: u32) -> std::io::Result<Self> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            n
        };
        let id = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        let exits = Arc::new(Exits::default());
        let mut pool = Self {
            id,
            shards: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
            exits,
        };
        for k in 0..n {
            // Built here rather than on the thread, so that a failure is the caller's error.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(event_interval.max(1))
                .build()?;
            let handle = rt.handle().clone();
            let rt = RuntimeGuard(Some(rt));
            let (stop, stopped) = oneshot::channel::<()>();
            *pool.exits.live.lock() += 1;
            let guard = ExitGuard(Arc::clone(&pool.exits));
            // On failure the closure is dropped: its guards count it out and let its runtime
            // go without blocking; `pool` is dropped, which stops the threads already
            // started.
            let thread = std::thread::Builder::new()
                .name(format!("cortex-shard-{k}"))
                .spawn(move || {
                    // Declared first, so dropped last: after the runtime and its tasks.
                    let _exit = guard;
                    let mut rt = rt;
                    let Some(rt) = rt.0.take() else { return };
                    CURRENT.with(|c| c.set(Some((id, k))));
                    // Ends on a stop signal or when the pool is dropped (sender gone).
                    let _ = rt.block_on(stopped);
                    // Drops every task still there (actors that outlived the deadline).
                    rt.shutdown_timeout(RUNTIME_DROP_GRACE);
                    CURRENT.with(|c| c.set(None));
                })?;
            pool.shards.push(Shard {
                handle,
                stop: Mutex::new(Some(stop)),
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(pool)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    /// The shard of the calling thread, if it is one of this pool's.
    pub(crate) fn current(&self) -> Option<usize> {
        current().and_then(|(pool, k)| (pool == self.id).then_some(k))
    }

    pub(crate) fn handle(&self, k: usize) -> Option<&Handle> {
        self.shards.get(k).map(|s| &s.handle)
    }

    /// Spawns `fut` on shard `placement` (modulo the shard count), else on the calling
    /// thread's shard, else round-robin.
    pub(crate) fn spawn<F>(&self, placement: Option<usize>, fut: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.shards.len();
        let k = match placement {
            Some(k) => k % n,
            None => self
                .current()
                .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed) % n),
        };
        // From the shard's own thread this goes to its local run queue, with no wake-up
        // of anything; from elsewhere, to its injection queue, waking its thread.
        self.shards[k].handle.spawn(fut)
    }

    /// Stops every shard but `except` (the caller's own: stopping it would drop the
    /// caller's task at its next await).
    fn signal_stop(&self, except: Option<usize>) {
        for (k, s) in self.shards.iter().enumerate() {
            if Some(k) != except {
                drop(s.stop.lock().take());
            }
        }
    }

    /// Threads this call must not wait for: the caller's own, when it is one of ours.
    fn own(&self) -> usize {
        usize::from(self.current().is_some())
    }

    /// Joins every thread that has counted itself out; returns how many are left.
    fn join_finished(&self) -> usize {
        let mine = self.current();
        let mut left = 0;
        for (k, s) in self.shards.iter().enumerate() {
            let mut slot = s.thread.lock();
            let Some(h) = slot.take() else { continue };
            if Some(k) == mine || !h.is_finished() && *self.exits.live.lock() > self.own() {
                // Still running (or it is us): keep the handle for a later join.
                *slot = Some(h);
                left += 1;
                continue;
            }
            // Either finished, or past its exit guard with only thread teardown left.
            if h.join().is_err() {
                tracing::error!(shard = k, "shard thread panicked");
            }
        }
        left
    }

    /// Stops every shard thread and joins them until `deadline`. Returns the threads still
    /// running then, which includes the caller's own thread when shutdown runs on a shard:
    /// that one stops when the last handle of the system is dropped.
    pub(crate) async fn stop_and_join(&self, deadline: Instant) -> usize {
        self.signal_stop(self.current());
        loop {
            let mut ended = pin!(self.exits.notify.notified());
            ended.as_mut().enable();
            if *self.exits.live.lock() <= self.own() {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        let left = self.join_finished();
        if left > 0 {
            tracing::warn!(
                threads = left,
                "shard threads still running at the deadline"
            );
        }
        left
    }

    /// Waits (blocking) until the threads have counted themselves out or `timeout` passed,
    /// then joins those that have.
    fn blocking_join(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let own = self.own();
        let mut live = self.exits.live.lock();
        while *live > own {
            if self.exits.cv.wait_until(&mut live, deadline).timed_out() {
                break;
            }
        }
        drop(live);
        let left = self.join_finished();
        if left > own {
            tracing::warn!(threads = left, "shard threads still running after the drop");
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.signal_stop(None);
        if self.shards.iter_mut().all(|s| s.thread.get_mut().is_none()) {
            // Every thread was joined (by shutdown).
            return;
        }
        if self.own() > 0 {
            // On one of our own threads: it cannot join itself; the others are stopping
            // and nothing else waits for them.
            tracing::debug!("system dropped on a shard thread; shard threads exit unjoined");
            return;
        }
        match Handle::try_current() {
            Err(_) => self.blocking_join(DROP_JOIN),
            Ok(rt) => {
                // Blocking here would stall the caller's runtime: hand the handles to one
                // of its blocking tasks, which joins them under the same deadline.
                let mut pool = Self {
                    id: self.id,
                    shards: std::mem::take(&mut self.shards),
                    next: AtomicUsize::new(0),
                    exits: Arc::clone(&self.exits),
                };
                drop(rt.spawn_blocking(move || {
                    pool.blocking_join(DROP_JOIN);
                    // Threads not joined by now are given up on (and `pool`'s own drop
                    // then has nothing left to do).
                    pool.shards.clear();
                }));
            }
        }
    }
}
