//! Registering a virtual actor kind: its factory, its message table and its options.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cortex_protocol::ActorId;

use crate::actor::{Actor, Handler, SupervisorStrategy};
use crate::cell::spawn_actor;
use crate::envelope::panic_message;
use crate::error::ActorError;
use crate::remote::{Codec, ErasedActor, ErasedRef, MessageTable, RemoteMessage};
use crate::supervision::{Parent, TaskGuard};
use crate::system::{DEFAULT_MAILBOX, SpawnOptions, SystemInner};

/// Per-kind settings of virtual activations.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KindOptions {
    /// Mailbox capacity of each activation.
    pub mailbox: usize,
    /// Passivate an activation after this long without a message from outside (messages
    /// an actor sends itself, timers included, do not count). `None`: only LRU pressure,
    /// an explicit passivation or shutdown end it.
    pub idle_timeout: Option<Duration>,
    /// Restarts allowed after handler panics; past them the activation is passivated and
    /// the next message activates a fresh one.
    pub strategy: SupervisorStrategy,
    /// How long a passivating activation may take to finish its queued messages and stop
    /// hooks before it is aborted.
    pub stop_timeout: Duration,
}

impl Default for KindOptions {
    fn default() -> Self {
        Self {
            mailbox: DEFAULT_MAILBOX,
            idle_timeout: Some(Duration::from_secs(300)),
            strategy: SupervisorStrategy::default(),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// A virtual actor kind ready to register: name, factory, messages, options.
///
/// ```
/// use std::time::Duration;
/// use cortex_runtime::{Actor, Context, Handler, Kind};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Deposit(u64);
/// # cortex_runtime::message!(Deposit => u64, "bank.Deposit");
/// struct Account { balance: u64 }
/// impl Actor for Account {}
/// impl Handler<Deposit> for Account {
///     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 {
///         self.balance += d.0;
///         self.balance
///     }
/// }
/// let kind = Kind::new("account", |_id| Account { balance: 0 })
///     .handles::<Deposit>()
///     .mailbox(256)
///     .idle_timeout(Some(Duration::from_secs(60)));
/// assert_eq!(kind.name(), "account");
/// ```
pub struct Kind<A: Actor> {
    name: String,
    factory: Arc<dyn Fn(&ActorId) -> A + Send + Sync>,
    table: MessageTable<A>,
    options: KindOptions,
}

impl<A: Actor> std::fmt::Debug for Kind<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind")
            .field("name", &self.name)
            .field("messages", &self.table)
            .field("options", &self.options)
            .finish()
    }
}

impl<A: Actor> Kind<A> {
    /// A kind named `name` (the `kind` part of its actor ids) whose activations `factory`
    /// builds from their id. The factory runs while the registry holds the id's shard
    /// lock: keep it quick and do not call into the registry from it (load state in
    /// [`Actor::started`] instead). A panicking factory fails the activation with
    /// [`ActorError::Failed`].
    pub fn new(
        name: impl Into<String>,
        factory: impl Fn(&ActorId) -> A + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            factory: Arc::new(factory),
            table: MessageTable::new(),
            options: KindOptions::default(),
        }
    }
    /// The kind name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Accepts message type `M` by name.
    pub fn handles<M>(mut self) -> Self
    where
        M: RemoteMessage,
        A: Handler<M>,
    {
        self.table = self.table.handles::<M>();
        self
    }
    /// Replaces all options.
    pub fn options(mut self, options: KindOptions) -> Self {
        self.options = options;
        self
    }
    /// Sets the mailbox capacity (at least 1).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.options.mailbox = capacity.max(1);
        self
    }
    /// Sets the idle passivation time.
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.options.idle_timeout = idle;
        self
    }
    /// Sets the restart limits.
    pub fn strategy(mut self, strategy: SupervisorStrategy) -> Self {
        self.options.strategy = strategy;
        self
    }
    /// Sets the stop timeout.
    pub fn stop_timeout(mut self, t: Duration) -> Self {
        self.options.stop_timeout = t;
        self
    }

    pub(crate) fn into_entry(self) -> (String, Arc<dyn KindEntry>) {
        let entry = TypedKind {
            factory: self.factory,
            table: Arc::new(self.table),
            options: self.options,
        };
        (self.name, Arc::new(entry))
    }
}

pub(crate) trait KindEntry: Send + Sync {
    fn options(&self) -> &KindOptions;
    fn handles(&self, name: &str) -> bool;
    fn transcode(
        &self,
        name: &str,
        payload: &[u8],
        from: Codec,
        to: Codec,
    ) -> Option<Result<Vec<u8>, ActorError>>;
    fn activate(
        &self,
        sys: &Weak<SystemInner>,
        id: Arc<ActorId>,
        parent: Arc<dyn Parent>,
    ) -> Result<(Arc<dyn ErasedActor>, TaskGuard), ActorError>;
}

struct TypedKind<A: Actor> {
    factory: Arc<dyn Fn(&ActorId) -> A + Send + Sync>,
    table: Arc<MessageTable<A>>,
    options: KindOptions,
}

impl<A: Actor> KindEntry for TypedKind<A> {
    fn options(&self) -> &KindOptions {
        &self.options
    }
    fn handles(&self, name: &str) -> bool {
        self.table.contains(name)
    }
    fn transcode(
        &self,
        name: &str,
        payload: &[u8],
        from: Codec,
        to: Codec,
    ) -> Option<Result<Vec<u8>, ActorError>> {
        self.table.transcode(name, payload, from, to)
    }
    fn activate(
        &self,
        sys: &Weak<SystemInner>,
        id: Arc<ActorId>,
        parent: Arc<dyn Parent>,
    ) -> Result<(Arc<dyn ErasedActor>, TaskGuard), ActorError> {
        let first =
            std::panic::catch_unwind(AssertUnwindSafe(|| (self.factory)(&id))).map_err(|p| {
                ActorError::Failed {
                    reason: format!("factory of {id}: {}", panic_message(&p)),
                }
            })?;
        let factory = Arc::clone(&self.factory);
        let fid = Arc::clone(&id);
        let opts = SpawnOptions::default().mailbox(self.options.mailbox);
        let (r, task) = spawn_actor(
            sys,
            first,
            Some(Box::new(move || factory(&fid))),
            &opts,
            parent,
            Some(id),
        );
        let erased = ErasedRef::new(r, Arc::clone(&self.table));
        Ok((erased.inner, task))
    }
}
