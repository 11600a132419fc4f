//! The traits a user implements: [`Actor`] (lifecycle), [`Message`] and [`Handler`].

use std::future::Future;
use std::time::Duration;

use crate::context::Context;

/// A message type and the type of its reply.
///
/// Tells discard the reply; asks return it. Use `()` for messages that answer nothing.
pub trait Message: Send + 'static {
    /// What a handler returns for this message.
    type Reply: Send + 'static;
}

/// A unit of state that handles one message at a time.
///
/// Every hook has a no-op default. A panic inside any hook or handler is caught and
/// reported to the actor's supervisor (see [`SupervisorStrategy`]); it never takes down the
/// runtime or another actor.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cortex_runtime::{Actor, Context, Handler, Message, System};
///
/// struct Counter(u64);
/// impl Actor for Counter {}
///
/// struct Add(u64);
/// impl Message for Add { type Reply = u64; }
///
/// impl Handler<Add> for Counter {
///     async fn handle(&mut self, msg: Add, _ctx: &mut Context<Self>) -> u64 {
///         self.0 += msg.0;
///         self.0
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let system = System::new(Default::default());
/// let counter = system.spawn(Counter(0));
/// counter.tell(Add(2)).await.unwrap();
/// assert_eq!(counter.ask(Add(3), Duration::from_secs(1)).await.unwrap(), 5);
/// system.shutdown(Duration::from_secs(1)).await;
/// # });
/// ```
pub trait Actor: Sized + Send + 'static {
    /// Runs once before the first message.
    fn started(&mut self, _ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Runs when the actor is about to stop, while its children still live.
    fn stopping(&mut self, _ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Runs last, after the children have stopped and the mailbox is closed.
    fn stopped(&mut self, _ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Runs after a supervisor restarted the actor following a failure, in place of
    /// [`Actor::started`] (which it calls by default). The children were stopped first;
    /// the state is a fresh instance when the actor was spawned from a factory, otherwise
    /// the same instance, which this hook should bring back to a consistent state.
    fn restarted(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        self.started(ctx)
    }
    /// How this actor supervises its children.
    fn supervisor_strategy(&self) -> SupervisorStrategy {
        SupervisorStrategy::default()
    }
}

/// Handles one message type `M`.
///
/// Write the method as `async fn handle(&mut self, msg: M, ctx: &mut Context<Self>) -> M::Reply`.
/// The returned future must be `Send`.
pub trait Handler<M: Message>: Actor {
    /// Handles `msg`; the value is the reply to an ask (dropped for a tell).
    fn handle(&mut self, msg: M, ctx: &mut Context<Self>) -> impl Future<Output = M::Reply> + Send;
}

/// Which children a supervisor restarts when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestartScope {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// Every child of the supervisor.
    AllForOne,
}

/// How a supervisor reacts when a child fails.
///
/// A child is restarted while it failed at most `max_restarts` times within the sliding
/// window `within`; past that, the child is stopped and the failure escalates: the
/// supervisor itself fails and its own supervisor decides. At the root of the tree (a
/// top-level actor or a virtual actor) the actor is stopped instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorStrategy {
    /// Which children restart.
    pub scope: RestartScope,
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The window.
    pub within: Duration,
}

impl Default for SupervisorStrategy {
    fn default() -> Self {
        Self {
            scope: RestartScope::OneForOne,
            max_restarts: 3,
            within: Duration::from_secs(5),
        }
    }
}

impl SupervisorStrategy {
    /// One-for-one with the given limits.
    pub fn one_for_one(max_restarts: u32, within: Duration) -> Self {
        Self {
            scope: RestartScope::OneForOne,
            max_restarts,
            within,
        }
    }
    /// All-for-one with the given limits.
    pub fn all_for_one(max_restarts: u32, within: Duration) -> Self {
        Self {
            scope: RestartScope::AllForOne,
            max_restarts,
            within,
        }
    }
    /// Never restart: the first failure stops the child and escalates.
    pub fn never() -> Self {
        Self::one_for_one(0, Duration::ZERO)
    }
}
