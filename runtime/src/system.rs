//! [`System`]: the root of the actor tree on one node, and its graceful shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::actor::{Actor, SupervisorStrategy};
use crate::actor_ref::ActorRef;
use crate::cell::{DEFAULT_STOP_TIMEOUT, Factory, spawn_actor};
use crate::mailbox::{Control, ControlSink};
use crate::remote::ErasedRef;
use crate::shards::{Executor, Shards};
use crate::supervision::{Parent, RestartHistory, TaskGuard};
use crate::virtual_actor::{VirtualConfig, VirtualRegistry};

/// Default mailbox capacity.
pub const DEFAULT_MAILBOX: usize = 1024;

/// Default of [`SystemConfig::shard_event_interval`].
pub const DEFAULT_SHARD_EVENT_INTERVAL: u32 = 512;

/// What a stopping shard thread gets past the shutdown deadline to drop the actors aborted
/// at it and end.
const SHARD_STOP_GRACE: Duration = Duration::from_secs(1);

/// Options for one spawned actor.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpawnOptions {
    /// Mailbox capacity: user messages that may wait before `tell` waits and `try_tell`
    /// fails. The queue grows to this size only as needed.
    pub mailbox: usize,
    /// In a sharded system ([`Executor::Shards`]), the shard to run on (modulo the shard
    /// count). `None`: the spawning thread's shard when it is one, else round-robin.
    /// Ignored by an [`Executor::Ambient`] system.
    pub shard: Option<usize>,
    /// Whether an ask to this actor while it is idle may run the handler on the asking
    /// task (default `true`; see [`ActorRef::ask`](crate::ActorRef::ask)). `false` keeps
    /// every handler on the actor's own task.
    pub inline_asks: bool,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        Self {
            mailbox: DEFAULT_MAILBOX,
            shard: None,
            inline_asks: true,
        }
    }
}

impl SpawnOptions {
    /// Sets the mailbox capacity (at least 1).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Places the actor on shard `k` of a sharded system (see [`SpawnOptions::shard`]).
    pub fn shard(mut self, k: usize) -> Self {
        self.shard = Some(k);
        self
    }

    /// Allows or forbids inline asks (see [`SpawnOptions::inline_asks`]).
    pub fn inline_asks(mut self, allow: bool) -> Self {
        self.inline_asks = allow;
        self
    }
}

/// Settings of a [`System`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SystemConfig {
    /// How top-level actors are supervised (there is nowhere to escalate: past the limits
    /// the actor is stopped).
    pub root_strategy: SupervisorStrategy,
    /// How long a stopping actor waits for its children before aborting them.
    pub stop_timeout: Duration,
    /// The virtual-actor registry.
    pub virtuals: VirtualConfig,
    /// Where actors run: tasks of the ambient tokio runtime (the default), or the system's
    /// own shard threads.
    pub executor: Executor,
    /// With [`Executor::Shards`]: task polls between two checks of a busy shard's timers
    /// and I/O (tokio's `event_interval`; an idle shard checks at once). tokio's default,
    /// 61, puts that check (a syscall) inside ~3% of a same-shard ask's round trips; the
    /// default here, [`DEFAULT_SHARD_EVENT_INTERVAL`], inside ~0.4%, at the price of
    /// timers firing up to that many polls late on a saturated shard (well under a
    /// millisecond with short handlers).
    pub shard_event_interval: u32,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            root_strategy: SupervisorStrategy::default(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            virtuals: VirtualConfig::default(),
            executor: Executor::Ambient,
            shard_event_interval: DEFAULT_SHARD_EVENT_INTERVAL,
        }
    }
}

impl SystemConfig {
    /// Sets the root supervision strategy.
    pub fn root_strategy(mut self, s: SupervisorStrategy) -> Self {
        self.root_strategy = s;
        self
    }
    /// Sets the stop timeout.
    pub fn stop_timeout(mut self, t: Duration) -> Self {
        self.stop_timeout = t;
        self
    }
    /// Sets the virtual-actor settings.
    pub fn virtuals(mut self, v: VirtualConfig) -> Self {
        self.virtuals = v;
        self
    }
    /// Runs actors on `n` shard threads of the system's own (0: one per core); see
    /// [`Executor::Shards`].
    pub fn shards(mut self, n: usize) -> Self {
        self.executor = Executor::Shards(n);
        self
    }
    /// Sets [`SystemConfig::shard_event_interval`] (at least 1).
    pub fn shard_event_interval(mut self, polls: u32) -> Self {
        self.shard_event_interval = polls.max(1);
        self
    }
}

struct TopEntry {
    ctl: Arc<dyn ControlSink>,
    task: TaskGuard,
}

pub(crate) struct SystemInner {
    pub(crate) config: SystemConfig,
    accepting: AtomicBool,
    top: Mutex<HashMap<u64, TopEntry>>,
    named: RwLock<HashMap<String, ErasedRef>>,
    locals: RwLock<HashMap<u64, ErasedRef>>,
    /// The one supervisor of every top-level actor.
    root: Arc<RootParent>,
    /// The shard threads, in sharded mode.
    pub(crate) shards: Option<Shards>,
}

/// Supervises every top-level actor of a system inline: one object for all of them (an
/// object each cost every idle top-level actor 112 bytes). Past the limits the actor is
/// stopped, since there is no one to escalate to.
struct RootParent {
    sys: Weak<SystemInner>,
    strategy: SupervisorStrategy,
    /// Restart histories of the top-level actors that have failed (most never do), dropped
    /// when the actor ends.
    failures: Mutex<HashMap<u64, RestartHistory>>,
}

impl Parent for RootParent {
    fn child_failed(&self, child: u64, lane: &dyn ControlSink, reason: String) {
        let allowed = self
            .failures
            .lock()
            .entry(child)
            .or_default()
            .allow(Instant::now(), &self.strategy);
        if allowed {
            tracing::warn!(actor = child, %reason, "actor failed; restarting");
            lane.push_control(Control::Restart);
        } else {
            tracing::error!(
                actor = child,
                %reason,
                max_restarts = self.strategy.max_restarts,
                within = ?self.strategy.within,
                "actor failed too often; stopping it"
            );
            lane.push_control(Control::Stop);
        }
    }

    fn child_terminated(&self, child: u64) {
        self.failures.lock().remove(&child);
        if let Some(s) = self.sys.upgrade() {
            if let Some(e) = s.top.lock().remove(&child) {
                e.task.detach();
            }
            s.locals.write().remove(&child);
        }
    }
}

/// What [`System::shutdown`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Top-level actors and virtual activations that stopped by themselves.
    pub stopped: usize,
    /// Those still running at the deadline, aborted.
    pub aborted: usize,
    /// Shard threads still running at the deadline (sharded mode), left to end on their
    /// own; includes the caller's own when it runs on a shard.
    pub threads_left: usize,
}

/// The actors of one node: top-level actors (roots of supervision trees), the virtual
/// actor registry, and a directory of type-erased refs for the router.
///
/// Cloning gives another handle to the same system. Dropping the last handle aborts every
/// actor; call [`System::shutdown`] to stop them gracefully. Must be created inside a
/// tokio runtime.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cortex_runtime::{Actor, Context, System};
///
/// struct Quiet;
/// impl Actor for Quiet {
///     async fn stopped(&mut self, _ctx: &mut Context<Self>) { /* flush, close files */ }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let system = System::new(Default::default());
/// let a = system.spawn(Quiet);
/// let report = system.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.stopped, 1);
/// assert!(!a.is_alive());
/// # });
/// ```
#[derive(Clone)]
pub struct System {
    inner: Arc<SystemInner>,
    virtuals: VirtualRegistry,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<System>();
};

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("top_level", &self.inner.top.lock().len())
            .field("accepting", &self.inner.accepting.load(Ordering::Relaxed))
            .finish()
    }
}

impl System {
    /// Creates a system. Must be called inside a tokio runtime (the virtual registry
    /// starts its idle sweeper).
    ///
    /// # Panics
    /// With [`Executor::Shards`], if the shard threads cannot be started (the operating
    /// system refused a thread or an event queue); [`System::try_new`] returns that error.
    pub fn new(config: SystemConfig) -> Self {
        match Self::try_new(config) {
            Ok(s) => s,
            Err(e) => panic!("cannot start the system's shard threads: {e}"),
        }
    }

    /// Creates a system, returning the error of starting its shard threads.
    ///
    /// # Errors
    /// The operating system's, when a shard thread or its runtime cannot be created (check
    /// the process's thread and file-descriptor limits). Never with [`Executor::Ambient`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use cortex_runtime::{Actor, Context, Handler, Message, SpawnOptions, System, SystemConfig};
    ///
    /// struct Where;
    /// impl Actor for Where {}
    /// struct Shard;
    /// impl Message for Shard { type Reply = Option<usize>; }
    /// impl Handler<Shard> for Where {
    ///     async fn handle(&mut self, _: Shard, ctx: &mut Context<Self>) -> Option<usize> {
    ///         ctx.shard()
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let system = System::try_new(SystemConfig::default().shards(2)).unwrap();
    /// let a = system.spawn_with(Where, SpawnOptions::default().shard(1));
    /// assert_eq!(a.ask(Shard, Duration::from_secs(1)).await, Ok(Some(1)));
    /// let report = system.shutdown(Duration::from_secs(1)).await;
    /// assert_eq!(report.threads_left, 0);
    /// # });
    /// ```
    pub fn try_new(config: SystemConfig) -> std::io::Result<Self> {
        let shards = match config.executor {
            Executor::Ambient => None,
            Executor::Shards(n) => Some(Shards::start(n, config.shard_event_interval)?),
        };
        let inner = Arc::new_cyclic(|sys| SystemInner {
            root: Arc::new(RootParent {
                sys: sys.clone(),
                strategy: config.root_strategy,
                failures: Mutex::new(HashMap::new()),
            }),
            config,
            accepting: AtomicBool::new(true),
            top: Mutex::new(HashMap::new()),
            named: RwLock::new(HashMap::new()),
            locals: RwLock::new(HashMap::new()),
            shards,
        });
        let virtuals = VirtualRegistry::new(Arc::downgrade(&inner), inner.config.virtuals.clone());
        Ok(Self { inner, virtuals })
    }

    /// The number of shard threads (0 with [`Executor::Ambient`]).
    pub fn shards(&self) -> usize {
        self.inner.shards.as_ref().map_or(0, Shards::len)
    }

    /// The shard the calling thread drives, if it is one of this system's.
    pub fn current_shard(&self) -> Option<usize> {
        self.inner.shards.as_ref()?.current()
    }

    /// The tokio runtime of shard `k`, to run plain tasks beside that shard's actors (a
    /// task spawned there shares their thread, as they do). `None` without shard `k`.
    /// After shutdown the runtime is gone: tasks spawned on it are dropped at once.
    pub fn shard_handle(&self, k: usize) -> Option<tokio::runtime::Handle> {
        self.inner.shards.as_ref()?.handle(k).cloned()
    }

    /// The virtual-actor registry of this system.
    pub fn virtuals(&self) -> &VirtualRegistry {
        &self.virtuals
    }

    /// True until [`System::shutdown`] starts.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Acquire)
    }

    /// Spawns a top-level actor with default options.
    ///
    /// After shutdown has begun the returned ref is already stopped: every send fails
    /// with [`ActorError::Stopped`](crate::ActorError::Stopped).
    pub fn spawn<A: Actor>(&self, actor: A) -> ActorRef<A> {
        self.spawn_inner(actor, None, &SpawnOptions::default())
    }

    /// Spawns a top-level actor with explicit options.
    pub fn spawn_with<A: Actor>(&self, actor: A, opts: SpawnOptions) -> ActorRef<A> {
        self.spawn_inner(actor, None, &opts)
    }

    /// Spawns a top-level actor built by `factory`; a restart builds a fresh instance.
    pub fn spawn_factory<A, F>(&self, mut factory: F, opts: SpawnOptions) -> ActorRef<A>
    where
        A: Actor,
        F: FnMut() -> A + Send + 'static,
    {
        let first = factory();
        self.spawn_inner(first, Some(Box::new(factory)), &opts)
    }

    fn spawn_inner<A: Actor>(
        &self,
        actor: A,
        factory: Option<Factory<A>>,
        opts: &SpawnOptions,
    ) -> ActorRef<A> {
        let weak_sys = Arc::downgrade(&self.inner);
        let parent: Arc<dyn Parent> = self.inner.root.clone();
        // Held across the spawn so a child that ends at once cannot try to remove its
        // entry before it exists.
        let mut top = self.inner.top.lock();
        let (r, task) = spawn_actor(&weak_sys, actor, factory, opts, parent, None);
        if !self.is_accepting() {
            drop(top);
            r.stop();
            drop(task);
            r.mb.mark_terminated();
            return r;
        }
        let ctl: Arc<dyn ControlSink> = r.mb.clone();
        top.insert(r.id(), TopEntry { ctl, task });
        r
    }

    /// Top-level actors currently running.
    pub fn top_level(&self) -> usize {
        self.inner.top.lock().len()
    }

    /// Publishes an erased ref under a name (for example a system actor `metrics`), for the
    /// router to find with [`System::lookup`]. Replaces any earlier ref of that name.
    pub fn expose(&self, name: impl Into<String>, r: ErasedRef) {
        self.inner.named.write().insert(name.into(), r);
    }

    /// The erased ref published under `name`, if it is still alive.
    pub fn lookup(&self, name: &str) -> Option<ErasedRef> {
        let r = self.inner.named.read().get(name).cloned()?;
        if r.is_alive() {
            Some(r)
        } else {
            self.inner.named.write().remove(name);
            None
        }
    }

    /// Removes a published name.
    pub fn unexpose(&self, name: &str) -> Option<ErasedRef> {
        self.inner.named.write().remove(name)
    }

    /// Makes a top-level actor reachable by its node-local number (the `local` of a
    /// spawned wire target) through [`System::lookup_local`]. Forgotten when it stops.
    pub fn register_local(&self, r: ErasedRef) {
        self.inner.locals.write().insert(r.id(), r);
    }

    /// The erased ref registered under a node-local number, if still alive.
    pub fn lookup_local(&self, id: u64) -> Option<ErasedRef> {
        let r = self.inner.locals.read().get(&id).cloned()?;
        if r.is_alive() {
            Some(r)
        } else {
            self.inner.locals.write().remove(&id);
            None
        }
    }

    /// Stops everything gracefully: refuses new spawns, activations and sends to stopping
    /// actors; lets every actor handle what is already queued; stops children before their
    /// parents; and aborts whatever is still running at the deadline.
    ///
    /// Virtual activations and top-level trees stop concurrently. In sharded mode the shard
    /// threads stop last and are joined, under the same deadline plus one second for each
    /// to drop what it still holds. Calling it again (or on a clone) returns at once with
    /// an empty report.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        if !self.inner.accepting.swap(false, Ordering::AcqRel) {
            return ShutdownReport::default();
        }
        let tops: Vec<TopEntry> = self.inner.top.lock().drain().map(|(_, e)| e).collect();
        for e in &tops {
            e.ctl.push_control(Control::Drain { deadline });
        }
        let total = tops.len();
        let joins =
            futures::future::join_all(tops.into_iter().map(|e| e.task.join_until(deadline)));
        let (ended, virt) = tokio::join!(joins, self.virtuals.shutdown_until(deadline));
        let stopped = ended.iter().filter(|e| **e).count();
        self.inner.named.write().clear();
        self.inner.locals.write().clear();
        let threads_left = match &self.inner.shards {
            Some(shards) => {
                shards
                    .stop_and_join(deadline.max(Instant::now()) + SHARD_STOP_GRACE)
                    .await
            }
            None => 0,
        };
        ShutdownReport {
            stopped: stopped + virt.stopped,
            aborted: total - stopped + virt.aborted,
            threads_left,
        }
    }
}
