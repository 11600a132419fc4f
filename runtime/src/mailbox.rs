//! The bounded mailbox: one user queue plus a control lane that jumps ahead of it.
//!
//! A lock around two `VecDeque`s beats a lock-free ring here: the queue starts empty (no
//! allocation for an idle actor), grows only as far as the configured capacity, and the
//! critical sections are a handful of instructions. The lock is a spin lock whose release
//! is a plain store, so a push costs one locked instruction (the trade-off, a waiter
//! yielding its thread while a preempted holder is off the CPU, is in [`lock`]). The
//! single receiver (the actor's task) parks its waker inside the lock; senders waiting for
//! room park on a `Notify` that is only signalled while someone waits.
//!
//! The receiver takes up to [`TAKE`] user messages per lock acquisition into a [`Batch`]
//! kept in its own task, so most pops touch no shared memory. Messages in the batch still
//! count against the capacity until the receiver comes back for more, so the bound holds
//! exactly; room therefore reappears (and waiting senders are woken) once per batch rather
//! than once per message. A control message raises a flag that the receiver reads before
//! every pop from its batch, so the control lane never waits behind user messages.
//!
//! Handled envelopes come back to the mailbox as spares (with the receiver's next lock
//! acquisition) and the next sender of the same message type refills one instead of
//! allocating. The handler run is held in the actor's task (see `envelope::RUN_INLINE`), so in
//! steady state a tell allocates nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::actor::Actor;
use crate::envelope::panic_message;
use crate::envelope::{BoxEnvelope, Envelope, Fill, Spare};
use crate::inline::{Home, Lent, Resume};

mod lock;
pub(crate) mod trim;
use lock::Lock;

/// User messages the receiver takes per lock acquisition, besides the one it handles next.
pub(crate) const TAKE: usize = 63;

/// Spare envelopes kept while the actor is busy (enough for the messages a sender can
/// push between two scheduler turns of the actor). When it goes idle it keeps as many as
/// it handled since it last went idle, between `SPARE_IDLE` and `SPARE_IDLE_MAX`: an actor
/// fed in bursts reuses them across bursts (freeing them at each pause made the next
/// burst allocate on the sender's thread what the actor's thread had just freed), and one
/// fed a trickle shrinks back to a few.
///
/// Past those sizes (more spares, or a queue grown by a burst), the release waits until
/// the actor has stayed idle for a while ([`trim`]): releasing at every pause made each
/// burst regrow the queue and the spares, and glibc answers every allocation of a
/// kilobyte or more by consolidating all the small blocks freed since (measured: the
/// 1,000-actor tell row on 2 work-stealing workers, 6.4–7.0 → 14.0–14.4 M/s).
const SPARE_BUSY: usize = 256;
const SPARE_IDLE: usize = 4;
const SPARE_IDLE_MAX: usize = 16;
/// Handled envelopes the receiver holds between two lock acquisitions (at most a batch).
const SPENT_MAX: usize = TAKE + 1;
// `pop_locked` swaps the handled envelopes in for the last spares of a full list: it needs
// at least as many spares as one batch can hand back.
const _: () = assert!(SPENT_MAX <= SPARE_BUSY);
/// Spares a sender inspects for one of its type.
const SPARE_SEARCH: usize = 4;

/// Messages of the control lane. Each child has at most one failure report and one
/// termination outstanding, and a parent sends at most one directive at a time, so the
/// lane is bounded by twice the number of children plus a constant.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop now; queued user messages are dropped (their asks get `Stopped`).
    Stop,
    /// Refuse new messages, handle the queued ones until `deadline`, then stop.
    Drain { deadline: Instant },
    /// The supervisor's decision after a failure: restart.
    Restart,
    /// A child failed and waits for a directive.
    ChildFailed { id: u64, reason: String },
    /// A child has terminated.
    ChildTerminated { id: u64 },
    /// A handler that an asker ran inline (see [`crate::inline`]) panicked: the actor has
    /// failed, as if its own task had run it.
    Failed { reason: String },
}

/// What most actors never use, or only when they stop: the control lane's queue and the
/// places to wait for room or for the end. Allocated by the first use; inline, they would
/// cost every idle actor 40 bytes more.
#[derive(Default)]
struct Rare(Option<Box<RareInner>>);

#[derive(Default)]
struct RareInner {
    control: VecDeque<Control>,
    waits: Option<Arc<Waits>>,
}

impl Rare {
    fn push_control(&mut self, c: Control) {
        self.0
            .get_or_insert_with(Default::default)
            .control
            .push_back(c);
    }

    fn pop_control(&mut self) -> Option<Control> {
        self.0.as_mut()?.control.pop_front()
    }

    fn control_is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|r| r.control.is_empty())
    }

    fn waits(&self) -> Option<Arc<Waits>> {
        self.0.as_ref()?.waits.clone()
    }

    fn waits_or_new(&mut self) -> Arc<Waits> {
        let r = self.0.get_or_insert_with(Default::default);
        Arc::clone(r.waits.get_or_insert_with(Default::default))
    }
}

/// Where control messages can be pushed without knowing the actor type.
pub(crate) trait ControlSink: Send + Sync {
    fn push_control(&self, c: Control);
}

/// What the receiver gets.
pub(crate) enum Item<A> {
    Control(Control),
    Msg(BoxEnvelope<A>),
}

/// The receiver's run of user messages taken from the queue under one lock, oldest first.
/// Boxed on first use: it lives in the actor's task, which must stay small while idle.
pub(crate) struct Batch<A>(Option<Box<BatchInner<A>>>);

struct BatchInner<A> {
    queue: VecDeque<BoxEnvelope<A>>,
    /// Handled envelopes, handed to the mailbox's spares at the next lock acquisition.
    spent: Vec<Spare>,
}

impl<A> Default for BatchInner<A> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            spent: Vec::new(),
        }
    }
}

impl<A> Default for Batch<A> {
    fn default() -> Self {
        Self(None)
    }
}

impl<A> Batch<A> {
    fn pop(&mut self) -> Option<BoxEnvelope<A>> {
        self.0.as_mut()?.queue.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.queue.is_empty())
    }

    /// Keeps a handled envelope for reuse.
    #[inline]
    pub(crate) fn spend(&mut self, spare: Spare) {
        let b = self.0.get_or_insert_with(Default::default);
        if b.spent.len() < SPENT_MAX {
            b.spent.push(spare);
        }
    }

    /// Drops every message of the batch (their asks are answered `Stopped`).
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

struct State<A: Actor> {
    queue: VecDeque<BoxEnvelope<A>>,
    /// The control lane and the waiters.
    rare: Rare,
    rx_waker: Option<Waker>,
    /// Messages moved into the receiver's batch at its last lock acquisition: they count
    /// against the capacity until it comes back.
    taken: u8,
    waiting_senders: u32,
    /// Envelopes recycled since the receiver last went idle.
    recycled: u16,
    /// Spent envelopes for senders to refill.
    spare: Vec<Spare>,
    closed: bool,
    terminated: bool,
    /// Times the receiver took messages from the queue: a trim finds by it whether the
    /// actor stayed idle.
    takes: u32,
    /// A trim of this mailbox is pending with [`trim`].
    trim_queued: bool,
    /// Where the actor's state is (see [`crate::inline`]).
    lent: Lent<A>,
}

impl<A: Actor> State<A> {
    fn has_room(&self, capacity: u32) -> bool {
        self.queue.len() + (self.taken as usize) < capacity as usize
    }

    /// True when this holds more than an idle actor keeps for good.
    fn holds_a_burst(&self) -> bool {
        self.queue.capacity() > IDLE_QUEUE_MAX
            || self.spare.len() > SPARE_IDLE_MAX
            || self.spare.capacity() > 2 * SPARE_IDLE_MAX
    }

    /// Releases what an idle actor does not keep: all but `keep` spares, and the queue's
    /// room beyond a few messages.
    fn shrink_idle(&mut self, keep: usize) {
        if self.queue.is_empty() && self.queue.capacity() > IDLE_QUEUE_MAX {
            self.queue.shrink_to(8);
        }
        self.spare.truncate(keep);
        if self.spare.capacity() > 2 * SPARE_IDLE_MAX {
            self.spare.shrink_to(keep);
        }
    }
}

/// Where senders wait for room, and callers for the actor's end.
#[derive(Default)]
pub(crate) struct Waits {
    room: Notify,
    term: Notify,
}

/// What a receiver going idle does with what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Releases a burst's worth now (it held no more than an idle actor keeps).
    Release,
    /// Keeps it and registers with [`trim`], at this take count.
    Defer(u32),
    /// Keeps it; a trim is already pending.
    Keep,
}

/// Queue capacity an idle actor keeps without a trim.
const IDLE_QUEUE_MAX: usize = 64;

/// Why a push failed; the payload comes back.
pub(crate) enum PushError<P> {
    Full(P),
    Closed(P),
}

pub(crate) struct Mailbox<A: Actor> {
    state: Lock<State<A>>,
    capacity: u32,
    /// True while the control lane holds something; read without the lock before each pop
    /// from the receiver's batch.
    control_pending: AtomicBool,
    /// True while the parked task's state is lent and idle: read without the lock by askers,
    /// so that an ask to a busy actor pays one load for the inline path it cannot take. Set
    /// and cleared under the lock; a stale read costs one lock, or one queued ask.
    idle_lent: AtomicBool,
    id: u64,
}

impl<A: Actor> Mailbox<A> {
    pub(crate) fn new(id: u64, capacity: usize) -> Self {
        Self {
            state: Lock::new(State {
                queue: VecDeque::new(),
                rare: Rare::default(),
                rx_waker: None,
                taken: 0,
                waiting_senders: 0,
                recycled: 0,
                spare: Vec::new(),
                closed: false,
                terminated: false,
                takes: 0,
                trim_queued: false,
                lent: Lent::Task,
            }),
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
            control_pending: AtomicBool::new(false),
            idle_lent: AtomicBool::new(false),
            id,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// User messages waiting: queued, or taken by the receiver into its current batch and
    /// not yet handled (the one being handled excepted, unless it came from a batch).
    pub(crate) fn len(&self) -> usize {
        let st = self.state.lock();
        st.queue.len() + st.taken as usize
    }

    /// Enqueues at once or fails.
    pub(crate) fn try_push<E>(&self, p: E::Payload) -> Result<(), PushError<E::Payload>>
    where
        E: Fill + Envelope<A>,
    {
        let waker = {
            let mut st = self.state.lock();
            if st.closed {
                return Err(PushError::Closed(p));
            }
            if !st.has_room(self.capacity) {
                return Err(PushError::Full(p));
            }
            let n = st.spare.len();
            let reuse = (n.saturating_sub(SPARE_SEARCH)..n)
                .rev()
                .find(|&i| st.spare[i].is::<E>())
                .map(|i| st.spare.swap_remove(i).downcast::<E>());
            let env: BoxEnvelope<A> = match reuse {
                Some(Ok(mut e)) => {
                    e.put(p);
                    e
                }
                // Invariant: `is::<E>` just said this spare is an E, so the downcast
                // cannot fail; were it to, a fresh box does as well.
                Some(Err(_)) | None => Box::new(E::new(p)),
            };
            st.queue.push_back(env);
            st.rx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Enqueues, waiting for room; `Err` gives the payload back when the mailbox closed.
    /// Cancel safety: dropping the future drops the payload.
    pub(crate) async fn push<E>(&self, mut p: E::Payload) -> Result<(), E::Payload>
    where
        E: Fill + Envelope<A>,
    {
        loop {
            match self.try_push::<E>(p) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(e)) => return Err(e),
                Err(PushError::Full(e)) => p = e,
            }
            self.wait_room().await;
        }
    }

    /// Resolves when the queue may have room (or the mailbox closed). Cancel safe.
    pub(crate) async fn wait_room(&self) {
        let room = {
            let mut st = self.state.lock();
            if st.closed || st.has_room(self.capacity) {
                return;
            }
            st.rare.waits_or_new()
        };
        let mut notified = pin!(room.room.notified());
        {
            let mut st = self.state.lock();
            if st.closed || st.has_room(self.capacity) {
                return;
            }
            // Registered under the lock, so a pop right after the unlock finds us counted
            // and its notify_waiters reaches us.
            notified.as_mut().enable();
            st.waiting_senders += 1;
        }
        let _guard = WaitGuard(self);
        notified.await;
    }

    pub(crate) fn push_control(&self, c: Control) {
        // A stop refuses new messages from the moment it is asked for, not from when the
        // actor gets to it (it may be busy in a long handler).
        let closing = matches!(c, Control::Stop | Control::Drain { .. });
        let (waker, room) = {
            let mut st = self.state.lock();
            st.rare.push_control(c);
            self.control_pending.store(true, Ordering::Release);
            st.closed |= closing;
            let room = if closing { st.rare.waits() } else { None };
            (st.rx_waker.take(), room)
        };
        if let Some(room) = room {
            room.room.notify_waiters();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Refuses further user messages; queued ones stay for draining.
    pub(crate) fn close(&self) {
        let room = {
            let mut st = self.state.lock();
            st.closed = true;
            st.rare.waits()
        };
        if let Some(room) = room {
            room.room.notify_waiters();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Removes every queued user message (dropping them answers their asks with `Stopped`).
    /// The receiver clears its own batch.
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut self.state.lock().queue);
        drop(dropped);
    }

    /// Non-blocking pop for draining; control first.
    pub(crate) fn try_recv(
        self: &Arc<Self>,
        batch: &mut Batch<A>,
        accept_user: bool,
    ) -> Option<Item<A>>
    where
        A: 'static,
    {
        self.pop(batch, accept_user, None)
    }

    /// Waits for the next item. Only the actor's own task calls this, always with the same
    /// batch. (The actor's task uses [`Mailbox::recv_lending`].)
    #[cfg(test)]
    pub(crate) fn recv<'a>(
        self: &'a Arc<Self>,
        batch: &'a mut Batch<A>,
        accept_user: bool,
    ) -> Recv<'a, A>
    where
        A: 'static,
    {
        Recv {
            mb: self,
            batch,
            accept_user,
        }
    }

    /// The receiver's pop: from its batch while no control message waits, else under the
    /// lock (control first, then the queue, taking a new batch). With `waker`, parks it when
    /// there is nothing to return. (Draining and tests; the actor's loop calls
    /// [`Mailbox::pop_batch`] and [`Mailbox::recv_lending`].)
    fn pop(
        self: &Arc<Self>,
        batch: &mut Batch<A>,
        accept_user: bool,
        waker: Option<&Waker>,
    ) -> Option<Item<A>>
    where
        A: 'static,
    {
        if accept_user && let Some(env) = self.pop_batch(batch) {
            return Some(Item::Msg(env));
        }
        self.pop_slow(batch, accept_user, waker, None)
    }

    /// [`Mailbox::pop`] past its batch, once per batch. With `lend` (the state the task
    /// holds, and its runtime tag), a receiver that parks while accepting user messages
    /// lends the state to the mailbox for inline asks.
    #[inline(never)]
    fn pop_slow(
        self: &Arc<Self>,
        batch: &mut Batch<A>,
        accept_user: bool,
        waker: Option<&Waker>,
        lend: Option<Lend<'_, A>>,
    ) -> Option<Item<A>>
    where
        A: 'static,
    {
        let (item, notify, mut idle) = self.pop_locked(batch, accept_user, waker, lend);
        if let Some(Idle::Defer(epoch)) = idle
            && !self.defer_trim(epoch)
        {
            idle = Some(Idle::Release);
        }
        if let Some(b) = batch.0.as_mut() {
            // Freed after the unlock: handled envelopes the spares had no room for.
            b.spent.clear();
            // Kept while a trim is pending, like the mailbox's own buffers: the trim wakes
            // the actor, whose pause then releases them.
            if matches!(idle, Some(Idle::Release)) && b.queue.is_empty() {
                // Going idle: keep a little for the next message, not a burst's worth.
                if b.queue.capacity() > 16 {
                    b.queue = VecDeque::new();
                }
                if b.spent.capacity() > 16 {
                    b.spent = Vec::new();
                }
            }
        }
        if let Some(room) = notify {
            // Once per batch, not per message: every waiting sender re-checks for room.
            room.room.notify_waiters();
        }
        item
    }

    /// The part of [`Mailbox::pop_slow`] under the lock. Returns the item, the `Notify` to
    /// signal after the unlock, and, when it goes idle, what to do with what it holds.
    fn pop_locked(
        &self,
        batch: &mut Batch<A>,
        accept_user: bool,
        waker: Option<&Waker>,
        lend: Option<Lend<'_, A>>,
    ) -> (Option<Item<A>>, Option<Arc<Waits>>, Option<Idle>) {
        let mut st = self.state.lock();
        if let Some(b) = batch.0.as_mut()
            && !b.spent.is_empty()
        {
            st.recycled = st
                .recycled
                .saturating_add(u16::try_from(b.spent.len()).unwrap_or(u16::MAX));
            let excess = (st.spare.len() + b.spent.len()).saturating_sub(SPARE_BUSY);
            if excess == 0 {
                // The usual case; a block copy, where `extend` moves one at a time.
                st.spare.append(&mut b.spent);
            } else {
                // Full: the handled ones go in at the end, where senders look, in place of
                // as many of the last spares, which stay in `spent` to be freed after the
                // unlock. (Keeping the older spares instead made an actor that had a burst
                // of one type allocate for every message of another until trimmed.)
                // At most `spare.len()`: `spent` holds at most SPENT_MAX <= SPARE_BUSY.
                let excess = excess.min(b.spent.len());
                let at = st.spare.len() - excess;
                st.spare[at..].swap_with_slice(&mut b.spent[..excess]);
                st.spare.extend(b.spent.drain(excess..));
            }
        }
        if let Some(c) = st.rare.pop_control() {
            if st.rare.control_is_empty() {
                self.control_pending.store(false, Ordering::Relaxed);
            }
            return (Some(Item::Control(c)), None, None);
        }
        if accept_user && let Some(env) = batch.pop() {
            // Only the control flag sent us here.
            return (Some(Item::Msg(env)), None, None);
        }
        // A spent batch gives its room back to the senders. (A suspended receiver may
        // still hold one: those messages keep their room.)
        let released = batch.is_empty() && std::mem::take(&mut st.taken) > 0;
        if let Some(env) = accept_user.then(|| st.queue.pop_front()).flatten() {
            st.takes = st.takes.wrapping_add(1);
            let n = st.queue.len().min(TAKE);
            if n > 0 {
                let b = batch.0.get_or_insert_with(Default::default);
                if n == st.queue.len() {
                    // The whole rest fits: a block copy, where `extend` moves one at a time.
                    b.queue.append(&mut st.queue);
                } else {
                    b.queue.extend(st.queue.drain(..n));
                }
                // At most TAKE, which fits.
                st.taken = n as u8;
            }
            let room = (st.waiting_senders > 0).then(|| st.rare.waits());
            return (Some(Item::Msg(env)), room.flatten(), None);
        }
        if let Some(waker) = waker {
            match &mut st.rx_waker {
                Some(w) if w.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
            // Parked with nothing queued: an asker may run a handler on the state until
            // the task wants it back. Under the lock that saw the queue empty, so a push
            // after it finds the state lent and wakes the task to reclaim it.
            if accept_user
                && let Some((home, rt)) = lend
                && matches!(st.lent, Lent::Task)
                && let Some(h) = home.take()
            {
                st.lent = Lent::Idle(h, rt);
                self.idle_lent.store(true, Ordering::Relaxed);
            }
        }
        // Going idle: keep a little for the next message, not a burst's worth; a burst's
        // worth only once the actor has stayed idle (see `SPARE_BUSY`). (Only here:
        // shrinking whenever a batch emptied the queue made a steady stream regrow it,
        // allocation by allocation.)
        let keep = (std::mem::take(&mut st.recycled) as usize).clamp(SPARE_IDLE, SPARE_IDLE_MAX);
        let idle = if st.trim_queued {
            Idle::Keep
        } else if st.holds_a_burst() {
            st.trim_queued = true;
            Idle::Defer(st.takes)
        } else {
            // Freed under the lock, but only here, on going idle: shedding them after the
            // unlock took a `Vec` allocation (measured: allocations per ask 2.01 -> 2.02).
            st.shrink_idle(keep);
            Idle::Release
        };
        let room = (released && st.waiting_senders > 0).then(|| st.rare.waits());
        (None, room.flatten(), Some(idle))
    }

    /// Hands this mailbox to [`trim`] for a release if the receiver stays idle, its take
    /// count still `epoch`; releases at once, and returns false, when `trim` refuses.
    fn defer_trim(self: &Arc<Self>, epoch: u32) -> bool
    where
        A: 'static,
    {
        let me: std::sync::Weak<dyn trim::Trim> = Arc::downgrade(self) as _;
        if trim::defer(me, epoch).is_err() {
            trim::Trim::release(&**self);
            return false;
        }
        true
    }

    pub(crate) fn mark_terminated(&self) {
        self.close();
        self.clear();
        let waiters = {
            let mut st = self.state.lock();
            st.terminated = true;
            st.taken = 0;
            st.spare = Vec::new();
            st.rare.waits()
        };
        if let Some(w) = waiters {
            w.term.notify_waiters();
        }
    }

    pub(crate) fn is_terminated(&self) -> bool {
        self.state.lock().terminated
    }

    /// Resolves once the actor's task has finished (or the deadline passed: `false`).
    pub(crate) async fn wait_terminated(&self, deadline: Instant) -> bool {
        let notify = {
            let mut st = self.state.lock();
            if st.terminated {
                return true;
            }
            st.rare.waits_or_new()
        };
        let mut n = pin!(notify.term.notified());
        n.as_mut().enable();
        // Checked again after registering: the end may have come in between.
        if self.is_terminated() {
            return true;
        }
        if tokio::time::timeout_at(deadline, n).await.is_err() {
            return self.is_terminated();
        }
        true
    }
}

struct WaitGuard<'a, A: Actor>(&'a Mailbox<A>);
impl<A: Actor> Drop for WaitGuard<'_, A> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.waiting_senders = st.waiting_senders.saturating_sub(1);
    }
}

impl<A: Actor> trim::Trim for Mailbox<A> {
    fn trim(&self, epoch: u32) -> Option<u32> {
        let mut st = self.state.lock();
        st.trim_queued = false;
        // Parked, its waker stored and not taken by a sender since. Busy now: its next pause
        // registers it again, or releases at once.
        st.rx_waker.as_ref()?;
        // Busy in between and idle again with a burst's worth: look again a round later.
        if st.takes != epoch && st.holds_a_burst() {
            st.trim_queued = true;
            return Some(st.takes);
        }
        // Idle since it registered (or holding no more than an idle actor keeps): release,
        // and wake the receiver, whose batch buffers are in its task: at the pause that
        // follows it finds no trim pending and releases them.
        st.shrink_idle(SPARE_IDLE);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        None
    }

    fn release(&self) {
        let mut st = self.state.lock();
        st.trim_queued = false;
        st.shrink_idle(SPARE_IDLE);
    }
}

/// Future of [`Mailbox::recv`].
#[cfg(test)]
pub(crate) struct Recv<'a, A: Actor> {
    mb: &'a Arc<Mailbox<A>>,
    batch: &'a mut Batch<A>,
    accept_user: bool,
}

#[cfg(test)]
impl<A: Actor> Future for Recv<'_, A> {
    type Output = Item<A>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Item<A>> {
        let this = self.get_mut();
        match this.mb.pop(this.batch, this.accept_user, Some(cx.waker())) {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }
}

/// The state a receiver may lend while parked, and its runtime tag.
type Lend<'a, A> = (&'a mut Option<Box<Home<A>>>, u32);

impl<A: Actor> Mailbox<A> {
    /// The next message of the receiver's batch, if no control message waits.
    #[inline]
    pub(crate) fn pop_batch(&self, batch: &mut Batch<A>) -> Option<BoxEnvelope<A>> {
        if self.control_pending.load(Ordering::Acquire) {
            return None;
        }
        batch.pop()
    }

    /// Waits for the next item like `Mailbox::recv` (tests only), lending the actor's state `home` to
    /// inline asks while parked (see [`crate::inline`]); the state comes back with the
    /// item. A run that an asker started inline and left waiting is finished here first;
    /// if it panicked, the item is the `Failed` control message it makes.
    pub(crate) fn recv_lending<'a>(
        self: &'a Arc<Self>,
        batch: &'a mut Batch<A>,
        accept_user: bool,
        rt: u32,
        home: Box<Home<A>>,
    ) -> RecvLending<'a, A> {
        RecvLending {
            mb: self,
            batch,
            accept_user,
            rt,
            home: Some(home),
            lent: false,
            resume: None,
        }
    }

    /// True when the actor's state may be lent and idle (a hint: see [`Mailbox::try_borrow`]).
    #[inline]
    pub(crate) fn may_lend(&self) -> bool {
        self.idle_lent.load(Ordering::Relaxed)
    }

    /// Borrows the state of an idle actor for an inline ask from runtime `rt`: only when
    /// its task lent it from that runtime and nothing waits (no user message, no control
    /// message, not closing), so that the ask overtakes nothing.
    pub(crate) fn try_borrow(&self, rt: u32) -> Option<Box<Home<A>>> {
        let mut st = self.state.lock();
        if !matches!(st.lent, Lent::Idle(_, lent_rt) if lent_rt == rt)
            || st.closed
            || !st.queue.is_empty()
            || !st.rare.control_is_empty()
        {
            return None;
        }
        self.idle_lent.store(false, Ordering::Relaxed);
        match std::mem::replace(&mut st.lent, Lent::Away) {
            Lent::Idle(h, _) => Some(h),
            // Checked above.
            other => {
                st.lent = other;
                None
            }
        }
    }

    /// Gives back a state borrowed from runtime `rt`; `failure` when its handler panicked.
    /// Wakes the task when something waits for it (messages that came meanwhile, the
    /// failure, a stop the handler asked for).
    pub(crate) fn give_back(&self, home: Box<Home<A>>, rt: u32, failure: Option<String>) {
        let stop = home.ctx.stop_requested();
        let mut st = self.state.lock();
        if matches!(st.lent, Lent::Abandoned) {
            drop(st);
            // The task is gone: nobody will run this actor again.
            drop(home);
            return;
        }
        st.lent = Lent::Idle(home, rt);
        self.idle_lent.store(true, Ordering::Relaxed);
        if let Some(reason) = failure {
            st.rare.push_control(Control::Failed { reason });
            self.control_pending.store(true, Ordering::Release);
        }
        let waker = if stop || !st.queue.is_empty() || !st.rare.control_is_empty() {
            st.rx_waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Hands the task a run that an inline ask started and could not finish at once.
    pub(crate) fn resume(&self, run: Resume<A>) {
        let mut st = self.state.lock();
        if matches!(st.lent, Lent::Abandoned) {
            drop(st);
            // Dropping it answers the ask `Stopped`.
            drop(run);
            return;
        }
        st.lent = Lent::Resume(run);
        let waker = st.rx_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Future of [`Mailbox::recv_lending`].
pub(crate) struct RecvLending<'a, A: Actor> {
    mb: &'a Arc<Mailbox<A>>,
    batch: &'a mut Batch<A>,
    accept_user: bool,
    rt: u32,
    /// `None` while lent, and once returned.
    home: Option<Box<Home<A>>>,
    /// The state is lent to the mailbox.
    lent: bool,
    /// A run an asker left for the task (it holds the state).
    resume: Option<Resume<A>>,
}

impl<A: Actor> Future for RecvLending<'_, A> {
    type Output = (Item<A>, Box<Home<A>>);
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(run) = this.resume.as_mut() {
                let Poll::Ready((h, outcome)) = (**run).as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.resume = None;
                if let Err(p) = outcome {
                    let reason = panic_message(&p);
                    return Poll::Ready((Item::Control(Control::Failed { reason }), h));
                }
                if h.ctx.stop_requested() {
                    // The handler called `Context::stop`: what the loop does after its own.
                    return Poll::Ready((Item::Control(Control::Stop), h));
                }
                this.home = Some(h);
            }
            if !this.lent {
                break;
            }
            // Lent at the last park: take it back, or wait while an asker runs a handler.
            let mut st = this.mb.state.lock();
            this.mb.idle_lent.store(false, Ordering::Relaxed);
            match std::mem::replace(&mut st.lent, Lent::Task) {
                Lent::Idle(h, _) => {
                    this.lent = false;
                    if h.ctx.stop_requested() && st.rare.control_is_empty() {
                        // An inline handler called `Context::stop`: what the loop does after
                        // a handler of its own that did. (With a control message waiting,
                        // such as its failure, that goes first, and the loop stops after.)
                        return Poll::Ready((Item::Control(Control::Stop), h));
                    }
                    this.home = Some(h);
                }
                Lent::Resume(run) => {
                    this.resume = Some(run);
                    this.lent = false;
                }
                other => {
                    // Away (an asker gives it back and wakes us when something waits),
                    // or a state that only this future's drop sets.
                    st.lent = other;
                    match &mut st.rx_waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        }
        // Runtime tag 0: inline asks are off for this actor (or no runtime was found).
        let lend = if this.rt != 0 {
            Some((&mut this.home, this.rt))
        } else {
            None
        };
        let item = this
            .mb
            .pop_slow(this.batch, this.accept_user, Some(cx.waker()), lend);
        match (item, this.home.take()) {
            (Some(item), Some(h)) => Poll::Ready((item, h)),
            (None, h) => {
                this.lent = h.is_none();
                this.home = h;
                Poll::Pending
            }
            // Invariant: `pop` lends the state only when it returns nothing.
            (Some(_), None) => unreachable!("the mailbox lent the state and returned an item"),
        }
    }
}

impl<A: Actor> Drop for RecvLending<'_, A> {
    fn drop(&mut self) {
        if !self.lent {
            return;
        }
        // The task ends while the state is lent (it was aborted): take the state back to
        // drop it here, or leave word for the asker that has it.
        let mut st = self.mb.state.lock();
        self.mb.idle_lent.store(false, Ordering::Relaxed);
        let lent = std::mem::replace(&mut st.lent, Lent::Task);
        if matches!(lent, Lent::Away) {
            st.lent = Lent::Abandoned;
        }
        drop(st);
        drop(lent);
    }
}

impl<A: Actor> ControlSink for Mailbox<A> {
    fn push_control(&self, c: Control) {
        Mailbox::push_control(self, c);
    }
}

#[cfg(test)]
mod tests;
