//! [`ActorRef`]: the typed, cheaply cloned handle to a local actor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::actor::{Actor, Handler, Message};
use crate::envelope::{AskEnvelope, TellEnvelope, panic_message};
use crate::error::{ActorError, SendError};
use crate::inline::{self, Home};
use crate::mailbox::{Control, Mailbox, PushError};

/// A handle to a running actor of type `A`: tell, ask, stop.
///
/// Cloning is one atomic increment. A ref does not keep the actor alive: the actor runs
/// until it stops itself, is stopped, or its supervisor or the [`System`](crate::System)
/// stops it; after that every send fails with [`ActorError::Stopped`] at once.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cortex_runtime::{Actor, Context, Handler, Message, SendError, SpawnOptions, System};
///
/// struct Sink;
/// impl Actor for Sink {}
/// struct Ping;
/// impl Message for Ping { type Reply = &'static str; }
/// impl Handler<Ping> for Sink {
///     async fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> &'static str { "pong" }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let system = System::new(Default::default());
/// let sink = system.spawn_with(Sink, SpawnOptions::default().mailbox(16));
/// assert_eq!(sink.ask(Ping, Duration::from_secs(1)).await, Ok("pong"));
/// sink.stop();
/// sink.wait_stopped(Duration::from_secs(1)).await.unwrap();
/// assert!(matches!(sink.try_tell(Ping), Err(SendError::Stopped(Ping))));
/// # });
/// ```
pub struct ActorRef<A: Actor> {
    pub(crate) mb: Arc<Mailbox<A>>,
}

const _: () = {
    struct Probe;
    impl Actor for Probe {}
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ActorRef<Probe>>();
};

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        Self {
            mb: Arc::clone(&self.mb),
        }
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("id", &self.mb.id())
            .field("type", &std::any::type_name::<A>())
            .finish()
    }
}

impl<A: Actor> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.mb, &other.mb)
    }
}
impl<A: Actor> Eq for ActorRef<A> {}

/// Why an ask failed before or after delivery; `NotDelivered` gives the message back so
/// the virtual registry can retry on a fresh activation.
pub(crate) enum AskFail<M> {
    NotDelivered(M),
    Failed(ActorError),
}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn from_mailbox(mb: Arc<Mailbox<A>>) -> Self {
        Self { mb }
    }

    /// The node-local number of this actor (the `local` of a spawned wire target).
    pub fn id(&self) -> u64 {
        self.mb.id()
    }

    /// True until the actor has stopped or begun stopping (its mailbox closed).
    pub fn is_alive(&self) -> bool {
        !self.mb.is_closed()
    }

    /// User messages waiting in the mailbox.
    pub fn queued(&self) -> usize {
        self.mb.len()
    }

    /// The mailbox capacity.
    pub fn capacity(&self) -> usize {
        self.mb.capacity()
    }

    /// Sends `msg`, waiting for mailbox room.
    ///
    /// # Errors
    /// [`SendError::Stopped`] with the message when the actor has stopped.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes drops the message unsent.
    pub async fn tell<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        // The common case first, outside the waiting loop's state machine.
        let msg = match self.mb.try_push::<TellEnvelope<M>>(msg) {
            Ok(()) => return Ok(()),
            Err(PushError::Closed(m)) => return Err(SendError::Stopped(m)),
            Err(PushError::Full(m)) => m,
        };
        self.mb
            .push::<TellEnvelope<M>>(msg)
            .await
            .map_err(SendError::Stopped)
    }

    /// Like [`ActorRef::tell`], giving up after `timeout`.
    ///
    /// # Errors
    /// [`SendError::Timeout`] or [`SendError::Stopped`], with the message.
    pub async fn tell_timeout<M>(&self, msg: M, timeout: Duration) -> Result<(), SendError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        let deadline = Instant::now() + timeout;
        let mut msg = msg;
        loop {
            match self.try_tell(msg) {
                Err(SendError::Full(m)) => msg = m,
                other => return other,
            }
            // Waiting for room without holding the message lets a timeout give it back.
            if tokio::time::timeout_at(deadline, self.mb.wait_room())
                .await
                .is_err()
            {
                return Err(SendError::Timeout(msg));
            }
        }
    }

    /// Sends `msg` only if the mailbox has room right now.
    ///
    /// # Errors
    /// [`SendError::Full`] or [`SendError::Stopped`], with the message.
    pub fn try_tell<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        self.mb
            .try_push::<TellEnvelope<M>>(msg)
            .map_err(|e| match e {
                PushError::Full(m) => SendError::Full(m),
                PushError::Closed(m) => SendError::Stopped(m),
            })
    }

    /// Sends `msg` and waits for the reply, for at most `timeout` in all (mailbox room
    /// included).
    ///
    /// # Errors
    /// [`ActorError::Timeout`]; [`ActorError::Stopped`] at once if the actor has stopped
    /// (or when it stops before answering); [`ActorError::Failed`] if the handler panicked.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the ask; the actor skips it if it was not yet started.
    ///
    /// # Inline asks
    /// When the actor is idle (its task parked, nothing queued, no control message waiting)
    /// and the asker runs on the same tokio runtime, the handler runs on the asking task:
    /// no wake of the actor's task and none back, which is what a sequential ask otherwise
    /// spends most of its time on (and, on a multi-thread runtime, now and then a wake of an
    /// idle worker, 2 to 12 µs on a virtual machine). Nothing else changes: the actor still
    /// handles one message at a time (its task waits while the handler runs elsewhere, and
    /// senders queue), an ask never overtakes a queued message, a panic is supervised like
    /// any other, and a handler that awaits something at its first poll is finished by the
    /// actor's own task, so that the asker's deadline or cancellation never cuts it short.
    /// Like a channel receive, an inline ask counts against the task's tokio coop budget,
    /// and a handler that asks another idle actor nests that handler in its own poll, at
    /// most 32 deep on a thread (deeper asks are queued).
    /// [`SpawnOptions::inline_asks`](crate::SpawnOptions::inline_asks) turns this off for
    /// an actor whose handlers must run on its own task.
    pub async fn ask<M>(&self, msg: M, timeout: Duration) -> Result<M::Reply, ActorError>
    where
        A: Handler<M>,
        M: Message,
    {
        match self.ask_deadline(msg, Instant::now() + timeout).await {
            Ok(r) => Ok(r),
            Err(AskFail::NotDelivered(_)) => Err(ActorError::Stopped),
            Err(AskFail::Failed(e)) => Err(e),
        }
    }

    pub(crate) async fn ask_deadline<M>(
        &self,
        msg: M,
        deadline: Instant,
    ) -> Result<M::Reply, AskFail<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        // An idle actor on this runtime: run the handler here (see `crate::inline`), unless
        // this is already deep inside other inline handlers on this thread. A busy actor
        // costs this path one load. The ask counts against the task's coop budget, as a
        // channel receive would, so that a loop of inline asks still lets the task's
        // neighbours run.
        if self.mb.may_lend() && inline::may_nest() {
            let rt = inline::current_rt();
            if rt != 0 {
                tokio::task::coop::consume_budget().await;
                if let Some(home) = self.mb.try_borrow(rt) {
                    return self.ask_inline(home, rt, msg, deadline).await;
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let env = match self.mb.try_push::<AskEnvelope<M>>((msg, tx)) {
            Ok(()) => None,
            Err(PushError::Closed((msg, _))) => return Err(AskFail::NotDelivered(msg)),
            Err(PushError::Full(env)) => Some(env),
        };
        let mut rx = rx;
        if env.is_none() {
            // Fast path: give the actor one scheduler turn before arming a timer. Most
            // asks are answered within it, and a timer entry costs more than the ask.
            YieldOnce(false).await;
            match rx.try_recv() {
                Ok(r) => return r.map_err(AskFail::Failed),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(AskFail::Failed(ActorError::Stopped));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        let wait = async {
            if let Some(env) = env
                && let Err((msg, _)) = self.mb.push::<AskEnvelope<M>>(env).await
            {
                return Err(AskFail::NotDelivered(msg));
            }
            replied(rx.await)
        };
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(r) => r,
            Err(_) => Err(AskFail::Failed(ActorError::Timeout)),
        }
    }

    /// The rest of an inline ask, on the borrowed state `home`.
    async fn ask_inline<M>(
        &self,
        home: Box<Home<A>>,
        rt: u32,
        msg: M,
        deadline: Instant,
    ) -> Result<M::Reply, AskFail<M>>
    where
        A: Handler<M>,
        M: Message,
    {
        let run = match inline::run(home, msg).await {
            inline::First::Done(home, Ok(reply)) => {
                self.mb.give_back(home, rt, None);
                return Ok(reply);
            }
            inline::First::Done(home, Err(panic)) => {
                let reason = panic_message(&panic);
                self.mb.give_back(home, rt, Some(reason.clone()));
                return Err(AskFail::Failed(ActorError::Failed { reason }));
            }
            inline::First::Pending(run) => run,
        };
        // The handler waits on something: the actor's task finishes it, and this ask
        // waits for the reply like a queued one, under its deadline.
        let (tx, rx) = oneshot::channel();
        self.mb.resume(inline::resume(run, tx));
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(r) => replied(r),
            Err(_) => Err(AskFail::Failed(ActorError::Timeout)),
        }
    }

    /// Asks the actor to stop. The stop request overtakes queued messages, which are
    /// dropped (their asks fail with [`ActorError::Stopped`]). Returns at once; use
    /// [`ActorRef::wait_stopped`] to wait for the end.
    pub fn stop(&self) {
        self.mb.push_control(Control::Stop);
    }

    /// Asks the actor to refuse new messages, handle the queued ones (until `timeout`),
    /// then stop.
    pub fn drain_and_stop(&self, timeout: Duration) {
        self.mb.push_control(Control::Drain {
            deadline: Instant::now() + timeout,
        });
    }

    /// Waits until the actor has fully stopped (its `stopped` hook ran and its state was
    /// dropped).
    ///
    /// # Errors
    /// [`ActorError::Timeout`] if it is still running after `timeout`.
    pub async fn wait_stopped(&self, timeout: Duration) -> Result<(), ActorError> {
        if self.mb.wait_terminated(Instant::now() + timeout).await {
            Ok(())
        } else {
            Err(ActorError::Timeout)
        }
    }
}

/// What an ask's reply channel gave: the reply, the handler's failure, or `Stopped` when the
/// actor dropped the ask unanswered.
fn replied<R, M>(
    r: Result<Result<R, ActorError>, oneshot::error::RecvError>,
) -> Result<R, AskFail<M>> {
    match r {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(AskFail::Failed(e)),
        Err(_) => Err(AskFail::Failed(ActorError::Stopped)),
    }
}

/// Reschedules the task once, behind whatever is already runnable (the actor just woken).
/// Unlike `tokio::task::yield_now`, which defers the wake to the next driver turn (a
/// syscall), waking ourselves puts us straight back in the run queue.
///
/// On a multi-thread runtime tokio answers this reschedule, as it answers any wake that
/// misses the LIFO slot, by unparking an idle worker if one sleeps; when that worker's
/// vCPU has halted, the unpark costs the asker 2 to 12 µs, which sets the p99 of a
/// sequential ask. Measured, not avoidable here: a plain reply await (tokio's LIFO limit
/// of 3 polls per tick reschedules and notifies about every other ask), `yield_now`, or a
/// timer at once unpark the idle worker as often or more (BENCHMARKS.md, Runtime).
/// Shards (`Executor::Shards`) have no idle worker to wake, and an inline ask (an idle
/// actor) schedules nothing at all; this is the path of an ask to a busy actor.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
