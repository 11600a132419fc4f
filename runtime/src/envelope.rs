//! Type-erased messages as they sit in a mailbox, and the panic boundary around handlers.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::actor::{Handler, Message};
use crate::context::Context;
use crate::error::ActorError;

/// What a caught panic carried.
pub(crate) type Panic = Box<dyn Any + Send>;

/// A queued message for actor `A`.
pub(crate) type BoxEnvelope<A> = Box<dyn Envelope<A>>;

pub(crate) trait Envelope<A>: Send {
    /// Runs the handler; `Err` carries a caught panic (any ask was already answered
    /// with `Failed`).
    fn handle<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Panic>>
    where
        A: crate::Actor;

    /// Gives the message back after a failed push.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

pub(crate) struct TellEnvelope<M>(pub(crate) M);

impl<A, M> Envelope<A> for TellEnvelope<M>
where
    A: Handler<M>,
    M: Message,
{
    fn handle<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Panic>> {
        let msg = self.0;
        Box::pin(async move {
            AssertUnwindSafe(actor.handle(msg, ctx))
                .catch_unwind()
                .await
                .map(drop)
        })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.0)
    }
}

pub(crate) type ReplyTx<R> = oneshot::Sender<Result<R, ActorError>>;

pub(crate) struct AskEnvelope<M: Message> {
    pub(crate) msg: M,
    pub(crate) tx: ReplyTx<M::Reply>,
}

impl<A, M> Envelope<A> for AskEnvelope<M>
where
    A: Handler<M>,
    M: Message,
{
    fn handle<'a>(
        self: Box<Self>,
        actor: &'a mut A,
        ctx: &'a mut Context<A>,
    ) -> BoxFuture<'a, Result<(), Panic>> {
        let AskEnvelope { msg, tx } = *self;
        Box::pin(async move {
            if tx.is_closed() {
                // The asker gave up (deadline passed); skip the work.
                return Ok(());
            }
            // The reply sender stays outside the guarded future so a panic can still be
            // answered with a typed error.
            match AssertUnwindSafe(actor.handle(msg, ctx))
                .catch_unwind()
                .await
            {
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
        })
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.msg)
    }
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
