//! The bounded mailbox: one user queue plus a control lane that jumps ahead of it.
//!
//! A `parking_lot` mutex around two `VecDeque`s beats a lock-free ring here: the queue
//! starts empty (no allocation for an idle actor), grows only as far as the configured
//! capacity, and the critical sections are a handful of instructions. The single receiver
//! (the actor's task) parks its waker inside the lock; senders waiting for room park on a
//! `Notify` that is only signalled while someone waits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::envelope::BoxEnvelope;

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

struct State<A> {
    queue: VecDeque<BoxEnvelope<A>>,
    control: VecDeque<Control>,
    rx_waker: Option<Waker>,
    waiting_senders: u32,
    closed: bool,
    terminated: bool,
    /// Created by the first waiter for termination: most actors never have one, and an
    /// inline `Notify` would cost every actor 32 bytes.
    term_waiters: Option<Arc<Notify>>,
}

/// Why a push failed; the envelope comes back.
pub(crate) enum PushError<A> {
    Full(BoxEnvelope<A>),
    Closed(BoxEnvelope<A>),
}

pub(crate) struct Mailbox<A> {
    state: Mutex<State<A>>,
    room: Notify,
    capacity: u32,
    id: u64,
}

impl<A> Mailbox<A> {
    pub(crate) fn new(id: u64, capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                control: VecDeque::new(),
                rx_waker: None,
                waiting_senders: 0,
                closed: false,
                terminated: false,
                term_waiters: None,
            }),
            room: Notify::new(),
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
            id,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Enqueues at once or fails.
    pub(crate) fn try_push(&self, env: BoxEnvelope<A>) -> Result<(), PushError<A>> {
        let waker = {
            let mut st = self.state.lock();
            if st.closed {
                return Err(PushError::Closed(env));
            }
            if st.queue.len() >= self.capacity as usize {
                return Err(PushError::Full(env));
            }
            st.queue.push_back(env);
            st.rx_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Enqueues, waiting for room. Cancel safety: dropping the future drops the envelope.
    pub(crate) async fn push(&self, mut env: BoxEnvelope<A>) -> Result<(), BoxEnvelope<A>> {
        loop {
            match self.try_push(env) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed(e)) => return Err(e),
                Err(PushError::Full(e)) => env = e,
            }
            self.wait_room().await;
        }
    }

    /// Resolves when the queue may have room (or the mailbox closed). Cancel safe.
    pub(crate) async fn wait_room(&self) {
        let mut notified = pin!(self.room.notified());
        {
            let mut st = self.state.lock();
            if st.closed || st.queue.len() < self.capacity as usize {
                return;
            }
            // Registered under the lock, so a pop right after the unlock finds us counted
            // and its notify_one reaches us.
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
        let waker = {
            let mut st = self.state.lock();
            st.control.push_back(c);
            st.closed |= closing;
            st.rx_waker.take()
        };
        if closing {
            self.room.notify_waiters();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Refuses further user messages; queued ones stay for draining.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Removes every queued user message (dropping them answers their asks with `Stopped`).
    pub(crate) fn clear(&self) {
        let dropped = std::mem::take(&mut self.state.lock().queue);
        drop(dropped);
    }

    /// Non-blocking pop for draining; control first.
    pub(crate) fn try_recv(&self, accept_user: bool) -> Option<Item<A>> {
        let (item, notify) = {
            let mut st = self.state.lock();
            if let Some(c) = st.control.pop_front() {
                return Some(Item::Control(c));
            }
            if !accept_user {
                return None;
            }
            let env = st.queue.pop_front()?;
            if st.queue.is_empty() && st.queue.capacity() > 64 {
                // A burst grew the queue; give the memory back while idle.
                st.queue.shrink_to(8);
            }
            (Item::Msg(env), st.waiting_senders > 0)
        };
        if notify {
            self.room.notify_one();
        }
        Some(item)
    }

    /// Waits for the next item. Only the actor's own task calls this.
    pub(crate) fn recv(&self, accept_user: bool) -> Recv<'_, A> {
        Recv {
            mb: self,
            accept_user,
        }
    }

    pub(crate) fn mark_terminated(&self) {
        self.close();
        self.clear();
        let waiters = {
            let mut st = self.state.lock();
            st.terminated = true;
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
    accept_user: bool,
}

impl<A> Future for Recv<'_, A> {
    type Output = Item<A>;
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Item<A>> {
        let mb = self.mb;
        let (item, notify) = {
            let mut st = mb.state.lock();
            if let Some(c) = st.control.pop_front() {
                return Poll::Ready(Item::Control(c));
            }
            match self.accept_user.then(|| st.queue.pop_front()).flatten() {
                Some(env) => {
                    if st.queue.is_empty() && st.queue.capacity() > 64 {
                        st.queue.shrink_to(8);
                    }
                    (env, st.waiting_senders > 0)
                }
                None => {
                    match &mut st.rx_waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        if notify {
            mb.room.notify_one();
        }
        Poll::Ready(Item::Msg(item))
    }
}

impl<A: Send + 'static> ControlSink for Mailbox<A> {
    fn push_control(&self, c: Control) {
        Mailbox::push_control(self, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::TellEnvelope;
    use crate::{Actor, Context, Handler, Message};

    struct A;
    impl Actor for A {}
    struct M(#[allow(dead_code)] u8);
    impl Message for M {
        type Reply = ();
    }
    impl Handler<M> for A {
        async fn handle(&mut self, _: M, _: &mut Context<Self>) {}
    }

    fn env(i: u8) -> BoxEnvelope<A> {
        Box::new(TellEnvelope(M(i)))
    }

    #[test]
    fn bounded_and_control_first() {
        let mb = Mailbox::<A>::new(1, 2);
        assert!(mb.try_push(env(1)).is_ok());
        assert!(mb.try_push(env(2)).is_ok());
        assert!(matches!(mb.try_push(env(3)), Err(PushError::Full(_))));
        mb.push_control(Control::Restart);
        assert!(matches!(
            mb.try_recv(true),
            Some(Item::Control(Control::Restart))
        ));
        assert!(mb.try_recv(false).is_none());
        assert!(matches!(mb.try_recv(true), Some(Item::Msg(_))));
        // A stop closes the mailbox at once, before the actor reads it.
        mb.push_control(Control::Stop);
        assert!(matches!(mb.try_push(env(4)), Err(PushError::Closed(_))));
        assert!(matches!(
            mb.try_recv(true),
            Some(Item::Control(Control::Stop))
        ));
        assert_eq!(mb.len(), 1);
        mb.mark_terminated();
        assert_eq!(mb.len(), 0);
        assert!(mb.is_terminated());
    }
}
