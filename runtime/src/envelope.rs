//! Type-erased messages as they sit in a mailbox, and the panic boundary around handlers.

use std::any::{Any, TypeId};
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use stackfuture::StackFuture;
use tokio::sync::oneshot;

use crate::actor::{Handler, Message};
use crate::context::Context;
use crate::error::ActorError;

/// What a caught panic carried.
pub(crate) type Panic = Box<dyn Any + Send>;

/// Bytes of a handler run held inline, in the actor's own task, instead of in a box of its
/// own. A handler that finishes without waiting on anything large (a counter's `add`, a
/// getter, an ask's reply) fits; a larger run is boxed. Every idle actor carries this space
/// in its task, so it was sized as the largest that kept a stateless actor's tokio task in
/// its 256-byte size class (`-Zprint-type-sizes`: the loop's future was then 151 of 152
/// bytes). Since the actor's state moved to its own box (inline asks), the loop's future is
/// 144 bytes (the size test in `cell.rs`); the slack was not spent. Measured: 1.01 → 0.01
/// allocations per tell, +12% on the one-actor tell row (BENCHMARKS.md, Runtime).
pub(crate) const RUN_INLINE: usize = 40;

/// A handler run: the handler's future behind the panic boundary, `Err` carrying a caught
/// panic.
pub(crate) type Run<'a> = StackFuture<'a, Result<(), Panic>, RUN_INLINE>;

/// A queued message for actor `A`.
pub(crate) type BoxEnvelope<A> = Box<dyn Envelope<A>>;

/// A spent envelope box, kept by the mailbox for the next sender of the same type.
///
/// Tagged with its type so that a sender's search for one of its own compares inline; only
/// the final downcast asks the box itself.
pub(crate) struct Spare {
    ty: TypeId,
    env: Box<dyn Any + Send>,
}

impl Spare {
    fn new<E: Any + Send>(env: Box<E>) -> Self {
        Self {
            ty: TypeId::of::<E>(),
            env,
        }
    }

    /// True when this spare is an `E`.
    #[inline]
    pub(crate) fn is<E: Any>(&self) -> bool {
        self.ty == TypeId::of::<E>()
    }

    /// The box as an `E`, or itself back when it is not one.
    pub(crate) fn downcast<E: Any>(self) -> Result<Box<E>, Self> {
        let ty = self.ty;
        self.env.downcast::<E>().map_err(|env| Self { ty, env })
    }
}

pub(crate) trait Envelope<A>: Send {
    /// Moves the message out and returns the handler run, and the emptied box for reuse by
    /// a later sender (see [`Fill`]). The run's `Err` carries a caught panic (any ask was
    /// already answered with `Failed`). One call (one dynamic dispatch) for both: this is
    /// the per-message path.
    fn handle<'a>(self: Box<Self>, actor: &'a mut A, ctx: &'a mut Context<A>) -> (Run<'a>, Spare)
    where
        A: crate::Actor;

    /// The box itself, unhandled, for reuse by a later sender.
    #[cfg(test)]
    fn recycle(self: Box<Self>) -> Spare;
}

/// An envelope type that a sender fills with its payload, reusing a spent box of the same
/// type when the mailbox has one: one allocation less per message, and none of the
/// cross-thread frees that a box allocated by the sender's thread and freed by the
/// actor's costs the allocator.
pub(crate) trait Fill: Sized + Send + 'static {
    type Payload;
    fn new(p: Self::Payload) -> Self;
    fn put(&mut self, p: Self::Payload);
}

pub(crate) struct TellEnvelope<M>(pub(crate) Option<M>);

impl<M: Send + 'static> Fill for TellEnvelope<M> {
    type Payload = M;
    fn new(p: M) -> Self {
        Self(Some(p))
    }
    fn put(&mut self, p: M) {
        self.0 = Some(p);
    }
}

/// A run that is over at once: a spent envelope (never queued), a skipped ask, or a
/// handler that panicked before returning its future.
fn done<'a>(r: Result<(), Panic>) -> Run<'a> {
    Run::from(std::future::ready(r))
}

impl<A, M> Envelope<A> for TellEnvelope<M>
where
    A: Handler<M>,
    M: Message,
{
    fn handle<'a>(
        mut self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> (Run<'a>, Spare) {
        let Some(msg) = self.0.take() else {
            return (done(Ok(())), Spare::new(self));
        };
        // A combinator, not an `async` block: one state machine less to enter per message
        // (measured: +5% on the one-actor tell row).
        let run = match start(actor, msg, ctx) {
            Ok(fut) => Run::from_or_box(AssertUnwindSafe(fut).catch_unwind().map(|r| r.map(drop))),
            Err(panic) => done(Err(panic)),
        };
        (run, Spare::new(self))
    }

    #[cfg(test)]
    fn recycle(self: Box<Self>) -> Spare {
        Spare::new(self)
    }
}

pub(crate) type ReplyTx<R> = oneshot::Sender<Result<R, ActorError>>;

pub(crate) struct AskEnvelope<M: Message>(Option<(M, ReplyTx<M::Reply>)>);

impl<M: Message> Fill for AskEnvelope<M> {
    type Payload = (M, ReplyTx<M::Reply>);
    fn new(p: Self::Payload) -> Self {
        Self(Some(p))
    }
    fn put(&mut self, p: Self::Payload) {
        self.0 = Some(p);
    }
}

impl<A, M> Envelope<A> for AskEnvelope<M>
where
    A: Handler<M>,
    M: Message,
{
    fn handle<'a>(
        mut self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> (Run<'a>, Spare) {
        let Some((msg, tx)) = self.0.take() else {
            return (done(Ok(())), Spare::new(self));
        };
        if tx.is_closed() {
            // The asker gave up (deadline passed); skip the work.
            return (done(Ok(())), Spare::new(self));
        }
        // The reply sender stays outside the guarded future so a panic can still be answered
        // with a typed error. A combinator like a tell's run, so that it fits inline.
        let run = match start(actor, msg, ctx) {
            Ok(fut) => Run::from_or_box(
                AssertUnwindSafe(fut)
                    .catch_unwind()
                    .map(move |reply| answer(tx, reply)),
            ),
            Err(panic) => done(answer(tx, Err(panic))),
        };
        (run, Spare::new(self))
    }

    #[cfg(test)]
    fn recycle(self: Box<Self>) -> Spare {
        Spare::new(self)
    }
}

/// Sends an ask's reply, or `Failed` for a caught panic, which it hands back for
/// supervision.
pub(crate) fn answer<R>(tx: ReplyTx<R>, reply: Result<R, Panic>) -> Result<(), Panic> {
    match reply {
        Ok(reply) => {
            let _ = tx.send(Ok(reply));
            Ok(())
        }
        Err(panic) => {
            let _ = tx.send(Err(ActorError::Failed {
                reason: panic_message(&panic),
            }));
            Err(panic)
        }
    }
}

/// Calls the handler behind the panic boundary: a `handle` that panics in its synchronous
/// part, before returning its future, fails the actor like one that panics inside it.
pub(crate) fn start<'a, A, M>(
    actor: &'a mut A,
    msg: M,
    ctx: &'a mut Context<A>,
) -> Result<impl Future<Output = M::Reply> + Send + 'a, Panic>
where
    A: Handler<M>,
    M: Message,
{
    std::panic::catch_unwind(AssertUnwindSafe(move || actor.handle(msg, ctx)))
}

/// Best-effort text of a panic payload.
pub(crate) fn panic_message(p: &Panic) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}
