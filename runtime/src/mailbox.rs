//! The bounded mailbox: one user queue plus a control lane that jumps ahead of it.
//!
//! A `parking_lot` mutex around two `VecDeque`s beats a lock-free ring here: the queue
//! starts empty (no allocation for an idle actor), grows only as far as the configured
//! capacity, and the critical sections are a handful of instructions. The single receiver
//! (the actor's task) parks its waker inside the lock; senders waiting for room park on a
//! `Notify` that is only signalled while someone waits.
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
//! allocating: in steady state a tell allocates only its handler's future.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::envelope::{BoxEnvelope, Envelope, Fill, Spare};

/// User messages the receiver takes per lock acquisition, besides the one it handles next.
pub(crate) const TAKE: usize = 63;

/// Spare envelopes kept while the actor is busy (enough for the messages a sender can
/// push between two scheduler turns of the actor). When it goes idle it keeps as many as
/// it handled since it last went idle, between `SPARE_IDLE` and `SPARE_IDLE_MAX`: an actor
/// fed in bursts reuses them across bursts (freeing them at each pause made the next
/// burst allocate on the sender's thread what the actor's thread had just freed), and one
/// fed a trickle shrinks back to a few.
const SPARE_BUSY: usize = 256;
const SPARE_IDLE: usize = 4;
const SPARE_IDLE_MAX: usize = 16;
/// Handled envelopes the receiver holds between two lock acquisitions (at most a batch).
const SPENT_MAX: usize = TAKE + 1;
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
    pub(crate) fn spend(&mut self, env: BoxEnvelope<A>) {
        let b = self.0.get_or_insert_with(Default::default);
        if b.spent.len() < SPENT_MAX {
            b.spent.push(env.recycle());
        }
    }

    /// Drops every message of the batch (their asks are answered `Stopped`).
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

struct State<A> {
    queue: VecDeque<BoxEnvelope<A>>,
    control: VecDeque<Control>,
    rx_waker: Option<Waker>,
    /// Messages moved into the receiver's batch at its last lock acquisition: they count
    /// against the capacity until it comes back.
    taken: u32,
    waiting_senders: u32,
    /// Envelopes recycled since the receiver last went idle.
    recycled: u32,
    /// Spent envelopes for senders to refill.
    spare: Vec<Spare>,
    /// Where senders wait for room; created by the first one (most actors never have one).
    room: Option<Arc<Notify>>,
    closed: bool,
    terminated: bool,
    /// Created by the first waiter for termination: most actors never have one, and an
    /// inline `Notify` would cost every actor 32 bytes.
    term_waiters: Option<Arc<Notify>>,
}

impl<A> State<A> {
    fn has_room(&self, capacity: u32) -> bool {
        self.queue.len() + (self.taken as usize) < capacity as usize
    }
}

/// Why a push failed; the payload comes back.
pub(crate) enum PushError<P> {
    Full(P),
    Closed(P),
}

pub(crate) struct Mailbox<A> {
    state: Mutex<State<A>>,
    capacity: u32,
    /// True while the control lane holds something; read without the lock before each pop
    /// from the receiver's batch.
    control_pending: AtomicBool,
    id: u64,
}

impl<A> Mailbox<A> {
    pub(crate) fn new(id: u64, capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                control: VecDeque::new(),
                rx_waker: None,
                taken: 0,
                waiting_senders: 0,
                recycled: 0,
                spare: Vec::new(),
                room: None,
                closed: false,
                terminated: false,
                term_waiters: None,
            }),
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
            control_pending: AtomicBool::new(false),
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
            Arc::clone(st.room.get_or_insert_with(Default::default))
        };
        let mut notified = pin!(room.notified());
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
            st.control.push_back(c);
            self.control_pending.store(true, Ordering::Release);
            st.closed |= closing;
            let room = if closing { st.room.clone() } else { None };
            (st.rx_waker.take(), room)
        };
        if let Some(room) = room {
            room.notify_waiters();
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
            st.room.clone()
        };
        if let Some(room) = room {
            room.notify_waiters();
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
    pub(crate) fn try_recv(&self, batch: &mut Batch<A>, accept_user: bool) -> Option<Item<A>> {
        self.pop(batch, accept_user, None)
    }

    /// Waits for the next item. Only the actor's own task calls this, always with the same
    /// batch.
    pub(crate) fn recv<'a>(&'a self, batch: &'a mut Batch<A>, accept_user: bool) -> Recv<'a, A> {
        Recv {
            mb: self,
            batch,
            accept_user,
        }
    }

    /// The receiver's pop: from its batch while no control message waits, else under the
    /// lock (control first, then the queue, taking a new batch). With `waker`, parks it when
    /// there is nothing to return.
    fn pop(
        &self,
        batch: &mut Batch<A>,
        accept_user: bool,
        waker: Option<&Waker>,
    ) -> Option<Item<A>> {
        if accept_user
            && !self.control_pending.load(Ordering::Acquire)
            && let Some(env) = batch.pop()
        {
            return Some(Item::Msg(env));
        }
        let (env, notify) = {
            let mut st = self.state.lock();
            if let Some(b) = batch.0.as_mut()
                && !b.spent.is_empty()
            {
                let k = SPARE_BUSY.saturating_sub(st.spare.len()).min(b.spent.len());
                st.recycled = st.recycled.saturating_add(b.spent.len() as u32);
                st.spare.extend(b.spent.drain(..k));
                b.spent.clear();
            }
            if let Some(c) = st.control.pop_front() {
                if st.control.is_empty() {
                    self.control_pending.store(false, Ordering::Relaxed);
                }
                return Some(Item::Control(c));
            }
            if accept_user && let Some(env) = batch.pop() {
                // Only the control flag sent us here.
                return Some(Item::Msg(env));
            }
            // A spent batch gives its room back to the senders. (A suspended receiver may
            // still hold one: those messages keep their room.)
            let released = batch.is_empty() && std::mem::take(&mut st.taken) > 0;
            match accept_user.then(|| st.queue.pop_front()).flatten() {
                Some(env) => {
                    let n = st.queue.len().min(TAKE);
                    if n > 0 {
                        let b = batch.0.get_or_insert_with(Default::default);
                        b.queue.extend(st.queue.drain(..n));
                        st.taken = n as u32;
                    }
                    let room = (st.waiting_senders > 0).then(|| st.room.clone());
                    (Some(env), room.flatten())
                }
                None => {
                    if let Some(waker) = waker {
                        match &mut st.rx_waker {
                            Some(w) if w.will_wake(waker) => {}
                            slot => *slot = Some(waker.clone()),
                        }
                    }
                    // Going idle: keep a little for the next message, not a burst's worth.
                    // (Only here: shrinking whenever a batch emptied the queue made a
                    // steady stream regrow it, allocation by allocation.)
                    if st.queue.is_empty() && st.queue.capacity() > 64 {
                        st.queue.shrink_to(8);
                    }
                    let keep = (std::mem::take(&mut st.recycled) as usize)
                        .clamp(SPARE_IDLE, SPARE_IDLE_MAX);
                    st.spare.truncate(keep);
                    if st.spare.capacity() > 2 * SPARE_IDLE_MAX {
                        st.spare.shrink_to(keep);
                    }
                    if let Some(b) = batch.0.as_mut()
                        && b.queue.is_empty()
                    {
                        if b.queue.capacity() > 16 {
                            b.queue = VecDeque::new();
                        }
                        if b.spent.capacity() > 16 {
                            b.spent = Vec::new();
                        }
                    }
                    let room = (released && st.waiting_senders > 0).then(|| st.room.clone());
                    (None, room.flatten())
                }
            }
        };
        if let Some(room) = notify {
            // Once per batch, not per message: every waiting sender re-checks for room.
            room.notify_waiters();
        }
        env.map(Item::Msg)
    }

    pub(crate) fn mark_terminated(&self) {
        self.close();
        self.clear();
        let waiters = {
            let mut st = self.state.lock();
            st.terminated = true;
            st.taken = 0;
            st.spare = Vec::new();
            st.term_waiters.take()
        };
        if let Some(n) = waiters {
            n.notify_waiters();
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
            Arc::clone(st.term_waiters.get_or_insert_with(Default::default))
        };
        let mut n = pin!(notify.notified());
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

struct WaitGuard<'a, A>(&'a Mailbox<A>);
impl<A> Drop for WaitGuard<'_, A> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.waiting_senders = st.waiting_senders.saturating_sub(1);
    }
}

/// Future of [`Mailbox::recv`].
pub(crate) struct Recv<'a, A> {
    mb: &'a Mailbox<A>,
    batch: &'a mut Batch<A>,
    accept_user: bool,
}

impl<A> Future for Recv<'_, A> {
    type Output = Item<A>;
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Item<A>> {
        let this = self.get_mut();
        match this.mb.pop(this.batch, this.accept_user, Some(cx.waker())) {
            Some(item) => Poll::Ready(item),
            None => Poll::Pending,
        }
    }
}

impl<A: Send + 'static> ControlSink for Mailbox<A> {
    fn push_control(&self, c: Control) {
        Mailbox::push_control(self, c);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::TellEnvelope;
    use crate::{Actor, Context, Handler, Message};

    struct A;
    impl Actor for A {}
    struct M(u32);
    impl Message for M {
        type Reply = ();
    }
    impl Handler<M> for A {
        async fn handle(&mut self, _: M, _: &mut Context<Self>) {}
    }

    fn env(i: u32) -> M {
        M(i)
    }

    impl Mailbox<A> {
        fn try_push_m(&self, m: M) -> Result<(), PushError<M>> {
            self.try_push::<TellEnvelope<M>>(m)
        }
    }

    /// The payload of a popped user message (panics on a control message).
    fn payload(item: Option<Item<A>>) -> u32 {
        match item {
            Some(Item::Msg(e)) => {
                let e = e.recycle().downcast::<TellEnvelope<M>>().expect("an M");
                e.0.expect("not yet handled").0
            }
            Some(Item::Control(c)) => panic!("expected a user message, got {c:?}"),
            None => panic!("expected a user message, got nothing"),
        }
    }

    #[test]
    fn bounded_and_control_first() {
        let mb = Mailbox::<A>::new(1, 2);
        let mut batch = Batch::default();
        assert!(mb.try_push_m(env(1)).is_ok());
        assert!(mb.try_push_m(env(2)).is_ok());
        assert!(matches!(mb.try_push_m(env(3)), Err(PushError::Full(_))));
        mb.push_control(Control::Restart);
        assert!(matches!(
            mb.try_recv(&mut batch, true),
            Some(Item::Control(Control::Restart))
        ));
        assert!(mb.try_recv(&mut batch, false).is_none());
        assert_eq!(payload(mb.try_recv(&mut batch, true)), 1);
        // A stop closes the mailbox at once, before the actor reads it.
        mb.push_control(Control::Stop);
        assert!(matches!(mb.try_push_m(env(4)), Err(PushError::Closed(_))));
        assert!(matches!(
            mb.try_recv(&mut batch, true),
            Some(Item::Control(Control::Stop))
        ));
        assert_eq!(mb.len(), 1);
        batch.clear();
        mb.mark_terminated();
        assert_eq!(mb.len(), 0);
        assert!(mb.is_terminated());
    }

    #[test]
    fn fifo_across_batches_and_refills() {
        let mb = Mailbox::<A>::new(1, 1000);
        let mut batch = Batch::default();
        let mut next_in = 0;
        let mut next_out = 0;
        // Pushes and pops interleave so that refills meet a queue that grew meanwhile.
        for round in 0..20 {
            for _ in 0..(round * 7 % 150) {
                assert!(mb.try_push_m(env(next_in)).is_ok());
                next_in += 1;
            }
            for _ in 0..(round * 5 % 90) {
                if next_out == next_in {
                    break;
                }
                assert_eq!(payload(mb.try_recv(&mut batch, true)), next_out);
                next_out += 1;
            }
        }
        while next_out < next_in {
            assert_eq!(payload(mb.try_recv(&mut batch, true)), next_out);
            next_out += 1;
        }
        assert!(mb.try_recv(&mut batch, true).is_none());
        assert_eq!(mb.len(), 0);
    }

    #[test]
    fn the_batch_counts_against_capacity_until_the_next_refill() {
        let cap = 100;
        let mb = Mailbox::<A>::new(1, cap);
        let mut batch = Batch::default();
        for i in 0..cap as u32 {
            assert!(mb.try_push_m(env(i)).is_ok());
        }
        assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
        // The first pop takes one message and a batch of TAKE more.
        assert_eq!(payload(mb.try_recv(&mut batch, true)), 0);
        assert_eq!(mb.len(), cap - 1);
        assert!(mb.try_push_m(env(100)).is_ok());
        assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
        // Pops from the batch free no room: the bound holds at every step.
        for i in 1..=TAKE as u32 {
            assert_eq!(payload(mb.try_recv(&mut batch, true)), i);
            assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
            assert!(mb.len() <= cap);
        }
        // The next pop returns the spent batch's room.
        assert_eq!(payload(mb.try_recv(&mut batch, true)), TAKE as u32 + 1);
        assert_eq!(mb.len(), cap - TAKE - 1);
        for i in 0..=TAKE as u32 {
            assert!(mb.try_push_m(env(101 + i)).is_ok());
        }
        assert!(matches!(mb.try_push_m(env(999)), Err(PushError::Full(_))));
        // Everything comes out once, in order.
        for i in TAKE as u32 + 2..=101 + TAKE as u32 {
            assert_eq!(payload(mb.try_recv(&mut batch, true)), i);
        }
        assert!(mb.try_recv(&mut batch, true).is_none());
    }

    struct Other;
    impl Message for Other {
        type Reply = ();
    }
    impl Handler<Other> for A {
        async fn handle(&mut self, _: Other, _: &mut Context<Self>) {}
    }

    #[test]
    fn spent_envelopes_are_reused_by_senders_of_their_type() {
        let mb = Mailbox::<A>::new(1, 16);
        let mut batch = Batch::default();
        let spares = |mb: &Mailbox<A>| mb.state.lock().spare.len();
        for i in 0..3 {
            assert!(mb.try_push_m(env(i)).is_ok());
        }
        for _ in 0..3 {
            let Some(Item::Msg(e)) = mb.try_recv(&mut batch, true) else {
                panic!("expected a user message");
            };
            batch.spend(e);
        }
        assert_eq!(spares(&mb), 0, "spent envelopes wait for the next lock");
        assert!(mb.try_recv(&mut batch, true).is_none());
        assert_eq!(spares(&mb), 3);
        // Another message type allocates afresh; the same type refills a spare.
        assert!(mb.try_push::<TellEnvelope<Other>>(Other).is_ok());
        assert_eq!(spares(&mb), 3);
        assert!(mb.try_push_m(env(7)).is_ok());
        assert_eq!(spares(&mb), 2);
        assert!(matches!(mb.try_recv(&mut batch, true), Some(Item::Msg(_))));
        assert_eq!(payload(mb.try_recv(&mut batch, true)), 7);
        // An idle mailbox keeps only a few spares; a stopped one none.
        for _ in 0..40 {
            assert!(mb.try_push_m(env(1)).is_ok());
            let Some(Item::Msg(e)) = mb.try_recv(&mut batch, true) else {
                panic!("expected a user message");
            };
            batch.spend(e);
        }
        assert!(mb.try_recv(&mut batch, true).is_none());
        assert!(spares(&mb) <= SPARE_IDLE);
        mb.mark_terminated();
        assert_eq!(spares(&mb), 0);
    }

    #[test]
    fn control_overtakes_a_taken_batch() {
        let mb = Mailbox::<A>::new(1, 64);
        let mut batch = Batch::default();
        for i in 0..10 {
            assert!(mb.try_push_m(env(i)).is_ok());
        }
        assert_eq!(payload(mb.try_recv(&mut batch, true)), 0);
        mb.push_control(Control::ChildTerminated { id: 7 });
        mb.push_control(Control::Restart);
        assert!(matches!(
            mb.try_recv(&mut batch, true),
            Some(Item::Control(Control::ChildTerminated { id: 7 }))
        ));
        assert!(matches!(
            mb.try_recv(&mut batch, true),
            Some(Item::Control(Control::Restart))
        ));
        // A suspended receiver gets nothing from its batch, and its batch keeps its room.
        assert!(mb.try_recv(&mut batch, false).is_none());
        assert_eq!(mb.len(), 9);
        for i in 1..10 {
            assert_eq!(payload(mb.try_recv(&mut batch, true)), i);
        }
        assert!(mb.try_recv(&mut batch, true).is_none());
        assert_eq!(mb.len(), 0);
    }

    /// Senders contending for a tiny mailbox, some waiting with `push`, some with
    /// `try_push` plus `wait_room` under a timeout that gets cancelled; the receiver parks
    /// whenever it runs dry. Every message must arrive once, in per-sender order, without
    /// anyone sleeping forever (a lost wake-up would trip the deadline).
    #[test]
    fn no_lost_wake_ups_under_contention() {
        const SENDERS: u32 = 4;
        const EACH: u32 = 20_000;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for cap in [1, 3, 70] {
            rt.block_on(async {
                let mb = Arc::new(Mailbox::<A>::new(1, cap));
                let receiver = {
                    let mb = mb.clone();
                    tokio::spawn(async move {
                        let mut batch = Batch::default();
                        let mut next = [0u32; SENDERS as usize];
                        for _ in 0..SENDERS * EACH {
                            let v = payload(Some(mb.recv(&mut batch, true).await));
                            let (s, seq) = ((v / EACH) as usize, v % EACH);
                            assert_eq!(seq, next[s], "sender {s} out of order");
                            next[s] += 1;
                            assert!(mb.len() <= cap);
                        }
                        // Coming back for more returns the last batch's room.
                        assert!(mb.try_recv(&mut batch, true).is_none());
                        assert_eq!(mb.len(), 0);
                    })
                };
                let senders: Vec<_> = (0..SENDERS)
                    .map(|s| {
                        let mb = mb.clone();
                        tokio::spawn(async move {
                            for seq in 0..EACH {
                                let mut e = env(s * EACH + seq);
                                if s % 2 == 0 {
                                    assert!(mb.push::<TellEnvelope<M>>(e).await.is_ok());
                                    continue;
                                }
                                loop {
                                    match mb.try_push_m(e) {
                                        Ok(()) => break,
                                        Err(PushError::Full(back)) => e = back,
                                        Err(PushError::Closed(_)) => panic!("closed"),
                                    }
                                    // Half of these waits are abandoned at once.
                                    if seq % 2 == 0 {
                                        let _ =
                                            tokio::time::timeout(Duration::ZERO, mb.wait_room())
                                                .await;
                                    } else {
                                        mb.wait_room().await;
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                let all = async {
                    for s in senders {
                        s.await.unwrap();
                    }
                    receiver.await.unwrap();
                };
                tokio::time::timeout(Duration::from_secs(120), all)
                    .await
                    .expect("every sender and the receiver finished (no lost wake-up)");
            });
        }
    }
}
