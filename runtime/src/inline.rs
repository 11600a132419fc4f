//! Inline asks: an ask to an idle actor runs its handler on the asking task.
//!
//! A sequential ask through the mailbox costs two scheduler hand-offs (the actor's task
//! woken, then the asker's), and on a tokio multi-thread runtime one of them now and then
//! wakes an idle worker, which on a virtual machine costs the asker 2 to 12 µs and sets
//! the p99 (BENCHMARKS.md, Runtime). When the actor is idle (its task parked, nothing
//! queued, no control message waiting), there is nothing to order the ask behind, so the
//! asker can run the handler itself: the parked task lends the actor's state (its
//! [`Home`]) to the mailbox, an asker on the same tokio runtime borrows it, runs the
//! handler, and gives it back. One message at a time still holds: while the state is
//! away, the actor's task cannot run, and senders queue as usual.
//!
//! A handler that does not finish at its first poll (it awaits I/O, a timer, another
//! actor's queued reply) is not driven by the asker, whose deadline or cancellation must
//! not cut a handler short: the asker hands the run to the actor's task ([`Lent::Resume`])
//! and waits for the reply like any queued ask. A panic is caught as in the task and
//! reported through the control lane, so supervision sees the same failure either way.
//!
//! The state is boxed so that it lives in one place whoever runs it: the task holds the
//! box while it works, the mailbox while the task is parked.
//!
//! An inline ask consumes the asking task's tokio coop budget, as a channel receive does
//! (a spent budget makes the asker yield first). A handler that asks another idle actor
//! nests that handler in its own poll, so the nesting is bounded per thread
//! ([`MAX_DEPTH`]); past it, the ask is queued.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use futures::FutureExt;

use crate::actor::{Actor, Handler, Message};
use crate::context::Context;
use crate::envelope::{Panic, ReplyTx, answer, start};

/// The actor's state: what a handler borrows.
pub(crate) struct Home<A: Actor> {
    pub(crate) actor: A,
    pub(crate) ctx: Context<A>,
}

/// A handler run that an inline ask started and that did not finish at once, for the
/// actor's task to finish. It gives back the state and the run's outcome (`Err`: a caught
/// panic, the ask already answered `Failed`). Boxed twice so that the mailbox's slot stays
/// two words: this path is the rare one.
pub(crate) type Resume<A> = Box<Pin<Box<dyn Future<Output = Taken<A>> + Send>>>;

/// The state and the outcome of a handler run.
type Taken<A> = (Box<Home<A>>, Result<(), Panic>);

/// Where the actor's state is, as the mailbox sees it.
pub(crate) enum Lent<A: Actor> {
    /// With the actor's task (running, or parked without lending it).
    Task,
    /// Lent by the parked task, which runs on the runtime of this tag ([`current_rt`]): an
    /// asker on that runtime may borrow it.
    Idle(Box<Home<A>>, u32),
    /// Borrowed by an asker that is running a handler.
    Away,
    /// A handler run an asker started, waiting for the task to finish it.
    Resume(Resume<A>),
    /// The task ended (aborted) while the state was away: whoever has it drops it.
    Abandoned,
}

/// How many inline handlers may run inside one another on a thread. A handler that asks
/// another idle actor runs that one's handler inside its own poll, so a chain of asks
/// nests polls on the thread's stack; past this depth an ask goes through the mailbox,
/// whose task starts from an empty stack.
pub(crate) const MAX_DEPTH: u32 = 32;

thread_local! {
    /// Inline handlers being polled on this thread, one inside the other.
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// True when one more inline handler may run on this thread.
pub(crate) fn may_nest() -> bool {
    DEPTH.with(|d| d.get() < MAX_DEPTH)
}

/// Counts one inline poll for as long as it lives (a panic included).
struct Nested;

impl Nested {
    fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        Nested
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// A small tag for the tokio runtime the caller runs on (0: none). An inline handler must
/// run on the actor's own runtime: whatever it spawns (timers, children, tasks) lands on
/// the runtime it runs on. Runtime ids come from a counter, so their low 32 bits differ
/// between any two runtimes one process has at once, short of four billion of them.
pub(crate) fn current_rt() -> u32 {
    let Ok(h) = tokio::runtime::Handle::try_current() else {
        return 0;
    };
    let mut id = IdBits(0);
    h.id().hash(&mut id);
    // Never 0: that means "no runtime".
    (id.0 as u32).max(1)
}

/// Reads back the integer a runtime `Id` hashes (a `NonZeroU64`, hashed as its `u64`).
struct IdBits(u64);

impl Hasher for IdBits {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The run of an inline ask: the handler behind the panic boundary, owning the state so
/// that it can be handed to the actor's task if it does not finish at once.
type Run<A, R> = Pin<Box<dyn Future<Output = (Box<Home<A>>, Result<R, Panic>)> + Send>>;

/// What polling an inline ask's run once gave.
pub(crate) enum First<A: Actor, R> {
    /// Finished: the state to give back, and the reply or a caught panic.
    Done(Box<Home<A>>, Result<R, Panic>),
    /// Waiting on something: the run, for the actor's task to finish (see [`resume`]).
    Pending(Run<A, R>),
}

/// Runs `msg`'s handler on the calling task, on the borrowed state `home`, as far as its
/// first poll goes.
pub(crate) async fn run<A, M>(home: Box<Home<A>>, msg: M) -> First<A, M::Reply>
where
    A: Handler<M>,
    M: Message,
{
    let mut run: Run<A, M::Reply> = Box::pin(async move {
        let mut home = home;
        let Home { actor, ctx } = &mut *home;
        let reply = match start(actor, msg, ctx) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        (home, reply)
    });
    let first = std::future::poll_fn(|cx| {
        let _nested = Nested::enter();
        Poll::Ready(run.as_mut().poll(cx))
    })
    .await;
    match first {
        Poll::Ready((home, reply)) => First::Done(home, reply),
        Poll::Pending => First::Pending(run),
    }
}

/// The rest of a run for the actor's task: it answers `tx` when the handler finishes.
pub(crate) fn resume<A: Actor, R: Send + 'static>(run: Run<A, R>, tx: ReplyTx<R>) -> Resume<A> {
    Box::new(Box::pin(
        run.map(move |(home, reply)| (home, answer(tx, reply))),
    ))
}
