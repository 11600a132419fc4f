//! Cortex local actors: mailboxes, supervision, tell/ask, timers, virtual actors, pub-sub.
//!
//! This crate knows nothing of networks. The node's router reaches actors through
//! [`ErasedRef`] and [`VirtualRegistry::send_erased`], which take a message name and
//! encoded bytes; everything else is typed.
//!
//! - [`Actor`], [`Handler`], [`Message`]: what users implement.
//! - [`System`]: spawns top-level actors (roots of supervision trees), owns the
//!   [`VirtualRegistry`], shuts everything down gracefully. Actors run on the caller's tokio
//!   runtime, or on the system's own shard threads ([`Executor::Shards`]), where an actor
//!   stays on the shard that spawned it.
//! - [`ActorRef`]: `tell` (waits for room), `try_tell` (fails fast), `ask` (with deadline).
//!   An ask to an idle actor runs its handler on the asking task (an *inline ask*: no
//!   scheduler hand-off either way), with every guarantee of a queued one (one message at a
//!   time, mailbox order, supervision, deadlines); see [`ActorRef::ask`].
//! - [`Context`]: the actor's own ref, supervised children, timers, stop.
//! - [`message!`], [`MessageTable`], [`Codec`]: messages by stable name, bincode or JSON.
//! - [`PubSub`]: local topics with bounded per-subscriber buffers.
//!
//! Costs: in steady state a tell allocates nothing (message boxes are recycled through the
//! mailbox, and a handler's run is held in the actor's task when its future is small) and an
//! ask allocates once (its reply channel, or an inline ask's run). An actor that goes idle after a burst keeps the burst's
//! queue room and spare message boxes for the next one, and releases them once it has
//! stayed idle for half a second to a second (one `cortex-trim` thread, running only while
//! such actors wait for it): releasing them at every pause made each burst regrow them,
//! which glibc's allocator answers by consolidating every block freed since.
//!
//! ```
//! use std::time::Duration;
//! use cortex_runtime::{Actor, Context, Handler, Message, System};
//!
//! struct Greeter;
//! impl Actor for Greeter {}
//! struct Hello(String);
//! impl Message for Hello { type Reply = String; }
//! impl Handler<Hello> for Greeter {
//!     async fn handle(&mut self, m: Hello, _: &mut Context<Self>) -> String {
//!         format!("hello, {}", m.0)
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let system = System::new(Default::default());
//! let g = system.spawn(Greeter);
//! let reply = g.ask(Hello("ada".into()), Duration::from_secs(1)).await.unwrap();
//! assert_eq!(reply, "hello, ada");
//! system.shutdown(Duration::from_secs(1)).await;
//! # });
//! ```

mod actor;
mod actor_ref;
mod cell;
mod context;
mod envelope;
mod error;
mod inline;
mod mailbox;
mod pubsub;
mod remote;
pub mod resilience;
mod shards;
mod supervision;
mod system;
mod timer;
mod virtual_actor;

pub use actor::{Actor, Handler, Message, RestartScope, SupervisorStrategy};
pub use actor_ref::ActorRef;
pub use context::Context;
pub use error::{ActorError, SendError};
pub use pubsub::{PubSub, PubSubStats, SlowPolicy, SubscribeOptions, Subscription, SubscriptionId};
pub use remote::{
    Codec, ErasedRef, MessageTable, RemoteMessage, decode_with, encode_with, valid_message_name,
};
pub use shards::Executor;
pub use system::{
    DEFAULT_MAILBOX, DEFAULT_SHARD_EVENT_INTERVAL, ShutdownReport, SpawnOptions, System,
    SystemConfig,
};
pub use timer::TimerHandle;
pub use virtual_actor::{
    ActivationGate, Kind, KindOptions, PassivationReason, RegisterError, VirtualConfig,
    VirtualEvent, VirtualEventKind, VirtualRef, VirtualRegistry, VirtualStats,
};
