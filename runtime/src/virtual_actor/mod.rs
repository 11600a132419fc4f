//! Virtual actors: addressed by [`ActorId`], activated by their first message, passivated
//! when idle, under memory pressure (LRU), on request or at shutdown.
//!
//! The registry keeps one slot per live activation in a sharded map. An activation that is
//! passivating stays in its slot (marked stopping) until its task has ended, so a message
//! for the same id waits for the old activation to finish before a new one starts: there
//! is never more than one activation of an id on this node.

mod events;
mod kind;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use cortex_protocol::{ActorId, MessageName};
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::actor::{Actor, Handler, Message};
use crate::actor_ref::{ActorRef, AskFail};
use crate::error::{ActorError, SendError};
use crate::remote::{Codec, ErasedActor, ErasedFail};
use crate::supervision::{InlineParent, Parent, TaskGuard};
use crate::system::SystemInner;

pub use events::{PassivationReason, VirtualEvent, VirtualEventKind, VirtualStats};
use kind::KindEntry;
pub use kind::{Kind, KindOptions};

/// Consulted before every activation; an `Err` refuses it and is returned to the caller.
/// The cluster uses it to refuse activating an actor this node does not own.
pub type ActivationGate = Arc<dyn Fn(&ActorId) -> Result<(), ActorError> + Send + Sync>;

const SHARDS: usize = 16;
/// Largest payload `try_tell_erased` decodes while holding a shard's lock.
const DECODE_UNDER_LOCK_MAX: usize = 1024;
/// How many times a message is offered to fresh activations when the one it found was
/// passivating; each retry waits for the old activation to end first.
const ATTEMPTS: usize = 3;

/// Settings of the virtual registry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VirtualConfig {
    /// Live activations allowed on this node; activating one more passivates the least
    /// recently used.
    pub max_activations: usize,
    /// How often idle activations are looked for (idle passivation happens between
    /// `idle_timeout` and `idle_timeout + sweep_interval` after the last message).
    pub sweep_interval: Duration,
    /// Events buffered per subscriber of [`VirtualRegistry::events`]; a slower subscriber
    /// skips ahead (`RecvError::Lagged`).
    pub event_capacity: usize,
}

impl Default for VirtualConfig {
    fn default() -> Self {
        Self {
            max_activations: 100_000,
            sweep_interval: Duration::from_secs(1),
            event_capacity: 1024,
        }
    }
}

impl VirtualConfig {
    /// Sets the bound on live activations (at least 1).
    pub fn max_activations(mut self, n: usize) -> Self {
        self.max_activations = n.max(1);
        self
    }
    /// Sets the sweep interval.
    pub fn sweep_interval(mut self, d: Duration) -> Self {
        self.sweep_interval = d.max(Duration::from_millis(1));
        self
    }
    /// Sets the event buffer.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }
}

/// Why a kind could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is not a valid actor kind.
    #[error("{0:?} is not a valid actor kind: use 1 to 64 of [A-Za-z0-9._-]")]
    InvalidKind(String),
    /// A kind of this name is already registered.
    #[error("actor kind {0:?} is already registered: register each kind once")]
    Duplicate(String),
}

struct Activation {
    id: Arc<ActorId>,
    number: u64,
    erased: Arc<dyn ErasedActor>,
    last_used: AtomicU64,
    reason: AtomicU8,
    finished: AtomicBool,
    task: Mutex<Option<TaskGuard>>,
}

struct Slot {
    act: Arc<Activation>,
    idle: Option<Duration>,
    stop_timeout: Duration,
    /// `Some(deadline)` once passivation began.
    stopping: Option<Instant>,
    seen_seq: u64,
    seen_at: Instant,
}

/// Activations by id. Ids come from the network, so the table's hash is keyed (a random
/// seed per table: a peer cannot aim ids at one bucket chain), and fast: it is computed
/// for every message delivered by id (SipHash was ~4% of a receiving node's CPU).
type Table = HashMap<ActorId, Slot, foldhash::fast::RandomState>;
type Shard = Mutex<Table>;

struct Inner {
    sys: Weak<SystemInner>,
    config: VirtualConfig,
    kinds: RwLock<HashMap<String, Arc<dyn KindEntry>>>,
    shards: Box<[Shard]>,
    live: AtomicUsize,
    clock: AtomicU64,
    activations: AtomicU64,
    passivations: AtomicU64,
    gate_refusals: AtomicU64,
    events: broadcast::Sender<VirtualEvent>,
    gate: RwLock<Option<ActivationGate>>,
    accepting: AtomicBool,
    sweeper: Mutex<Option<TaskGuard>>,
}

/// The virtual actors of one node. Cheap to clone (a handle).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cortex_protocol::{ActorId, MessageName};
/// use cortex_runtime::{Actor, Codec, Context, Handler, Kind, System};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct Deposit(u64);
/// # cortex_runtime::message!(Deposit => u64, "bank.Deposit");
/// struct Account(u64);
/// impl Actor for Account {}
/// impl Handler<Deposit> for Account {
///     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 { self.0 += d.0; self.0 }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let system = System::new(Default::default());
/// let reg = system.virtuals();
/// reg.register(Kind::new("account", |_| Account(0)).handles::<Deposit>()).unwrap();
///
/// let id: ActorId = "account/alice".parse().unwrap();
/// // Typed: activates on the first message.
/// let alice = reg.get::<Account>(id.clone());
/// assert_eq!(alice.ask(Deposit(10), Duration::from_secs(1)).await, Ok(10));
/// // By name and bytes, as the router does:
/// let name = MessageName::new("bank.Deposit").unwrap();
/// let (_, reply) = reg
///     .send_erased(&id, &name, b"5", Codec::Json, Duration::from_secs(1))
///     .await
///     .unwrap();
/// assert_eq!(reply, b"15");
/// assert!(reg.passivate(&id).await.unwrap());
/// assert!(reg.live_ids().is_empty());
/// # });
/// ```
#[derive(Clone)]
pub struct VirtualRegistry {
    inner: Arc<Inner>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<VirtualRegistry>();
};

impl std::fmt::Debug for VirtualRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualRegistry")
            .field("stats", &self.stats())
            .finish()
    }
}

fn shard_of(id: &ActorId) -> usize {
    // Fixed-seed hashing: stable and cheap; the shard only spreads lock contention.
    (foldhash::fast::FixedState::default().hash_one(id) as usize) % SHARDS
}

impl VirtualRegistry {
    pub(crate) fn new(sys: Weak<SystemInner>, config: VirtualConfig) -> Self {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let inner = Arc::new(Inner {
            sys,
            shards: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
            config,
            kinds: RwLock::new(HashMap::new()),
            live: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            gate_refusals: AtomicU64::new(0),
            events,
            gate: RwLock::new(None),
            accepting: AtomicBool::new(true),
            sweeper: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let period = inner.config.sweep_interval;
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.sweep(Instant::now());
            }
        });
        *inner.sweeper.lock() = Some(TaskGuard::new(sweeper));
        Self { inner }
    }

    /// Registers a kind.
    ///
    /// # Errors
    /// [`RegisterError`] for an invalid or duplicate name.
    pub fn register<A: Actor>(&self, kind: Kind<A>) -> Result<(), RegisterError> {
        let (name, entry) = kind.into_entry();
        if ActorId::new(name.as_str(), "k").is_err() {
            return Err(RegisterError::InvalidKind(name));
        }
        let mut kinds = self.inner.kinds.write();
        if kinds.contains_key(&name) {
            return Err(RegisterError::Duplicate(name));
        }
        kinds.insert(name, entry);
        Ok(())
    }

    /// Re-encodes a message by name from codec `from` to `to` with the type some registered
    /// kind declares for that name (every kind that handles a name must use one type for
    /// it): how an edge turns a JSON message into the wire codec without an actor, for
    /// example to publish it.
    ///
    /// # Errors
    /// [`ActorError::UnknownMessage`] when no registered kind handles `name`;
    /// [`ActorError::Decode`] or [`ActorError::Encode`] when the payload is not that type.
    ///
    /// ```
    /// use cortex_protocol::MessageName;
    /// use cortex_runtime::{Actor, Codec, Context, Handler, Kind, System};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Deposit(u64);
    /// # cortex_runtime::message!(Deposit => u64, "bank.Deposit");
    /// struct Account(u64);
    /// impl Actor for Account {}
    /// impl Handler<Deposit> for Account {
    ///     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 { self.0 += d.0; self.0 }
    /// }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let system = System::new(Default::default());
    /// let reg = system.virtuals();
    /// reg.register(Kind::new("account", |_| Account(0)).handles::<Deposit>()).unwrap();
    /// let name = MessageName::new("bank.Deposit").unwrap();
    /// let wire = reg.transcode(&name, b"5", Codec::Json, Codec::Bincode).unwrap();
    /// assert_eq!(wire, cortex_protocol::encode_payload(&5u64).unwrap());
    /// use cortex_runtime::ActorError;
    /// let nope = MessageName::new("bank.Nope").unwrap();
    /// let err = reg.transcode(&nope, b"5", Codec::Json, Codec::Bincode).unwrap_err();
    /// assert!(matches!(err, ActorError::UnknownMessage { .. }));
    /// let err = reg.transcode(&name, b"\"five\"", Codec::Json, Codec::Bincode).unwrap_err();
    /// assert!(matches!(err, ActorError::Decode { .. }));
    /// # });
    /// ```
    pub fn transcode(
        &self,
        name: &MessageName,
        payload: &[u8],
        from: Codec,
        to: Codec,
    ) -> Result<Vec<u8>, ActorError> {
        self.inner
            .kinds
            .read()
            .values()
            .find_map(|k| k.transcode(name.as_str(), payload, from, to))
            .unwrap_or_else(|| {
                Err(ActorError::UnknownMessage {
                    name: name.as_str().chars().take(128).collect(),
                })
            })
    }

    /// True when `kind` is registered.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.inner.kinds.read().contains_key(kind)
    }

    /// Installs the gate consulted before every activation (replacing any earlier one).
    /// The gate runs on the activating caller's task and must not call into this registry.
    pub fn set_activation_gate(&self, gate: ActivationGate) {
        *self.inner.gate.write() = Some(gate);
    }

    /// Removes the activation gate.
    pub fn clear_activation_gate(&self) {
        *self.inner.gate.write() = None;
    }

    /// A typed handle to a virtual actor of type `A`. Nothing is activated until the first
    /// message.
    pub fn get<A: Actor>(&self, id: ActorId) -> VirtualRef<A> {
        VirtualRef {
            id,
            reg: self.clone(),
            _actor: std::marker::PhantomData,
        }
    }

    /// Asks virtual actor `id` by message name and encoded payload; returns the reply's
    /// name and bytes, encoded with the same codec. Activates the actor if needed.
    ///
    /// # Errors
    /// [`ActorError::UnknownKind`], [`ActorError::UnknownMessage`] (both before any
    /// activation), whatever the activation gate returns, [`ActorError::Decode`],
    /// [`ActorError::Timeout`], [`ActorError::Failed`], [`ActorError::Rejected`] during
    /// shutdown.
    pub async fn send_erased(
        &self,
        id: &ActorId,
        name: &MessageName,
        payload: &[u8],
        codec: Codec,
        timeout: Duration,
    ) -> Result<(MessageName, Vec<u8>), ActorError> {
        let deadline = Instant::now() + timeout;
        for _ in 0..ATTEMPTS {
            let act = self
                .inner
                .resolve(id, Some(name.as_str()), deadline)
                .await?;
            let (reply_name, fut) = act.erased.ask(name.as_str(), payload, codec, deadline)?;
            match fut.await {
                Ok(bytes) => return Ok((reply_name, bytes)),
                Err(ErasedFail::NotDelivered) => continue,
                Err(ErasedFail::Failed(e)) => return Err(e),
            }
        }
        Err(ActorError::Stopped)
    }

    /// Tells virtual actor `id` by message name and encoded payload, waiting up to
    /// `timeout` for activation and mailbox room.
    ///
    /// # Errors
    /// As [`VirtualRegistry::send_erased`], plus [`ActorError::Timeout`] when the mailbox
    /// stayed full.
    pub async fn tell_erased(
        &self,
        id: &ActorId,
        name: &MessageName,
        payload: &[u8],
        codec: Codec,
        timeout: Duration,
    ) -> Result<(), ActorError> {
        let deadline = Instant::now() + timeout;
        for _ in 0..ATTEMPTS {
            let act = self
                .inner
                .resolve(id, Some(name.as_str()), deadline)
                .await?;
            match act
                .erased
                .tell(name.as_str(), payload, codec, Some(deadline))?
                .await
            {
                Ok(()) => return Ok(()),
                Err(ErasedFail::NotDelivered) => continue,
                Err(ErasedFail::Failed(e)) => return Err(e),
            }
        }
        Err(ActorError::Stopped)
    }

    /// [`VirtualRegistry::tell_erased`] when it can finish at once: no future, no wait.
    /// `Ok(true)` when the message is in the mailbox (activating `id` if needed);
    /// `Ok(false)` when it would have to wait (a full mailbox, an earlier activation still
    /// stopping): nothing was queued, so call [`VirtualRegistry::tell_erased`] with the same
    /// message. This is the router's path for tells from the network, which are almost
    /// always delivered on the spot.
    ///
    /// ```
    /// use cortex_protocol::{ActorId, MessageName};
    /// use cortex_runtime::{Actor, Codec, Context, Handler, Kind, System};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Deposit(u64);
    /// # cortex_runtime::message!(Deposit => u64, "bank.Deposit");
    /// struct Account(u64);
    /// impl Actor for Account {}
    /// impl Handler<Deposit> for Account {
    ///     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 { self.0 += d.0; self.0 }
    /// }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let system = System::new(Default::default());
    /// let reg = system.virtuals();
    /// reg.register(Kind::new("account", |_| Account(0)).handles::<Deposit>()).unwrap();
    /// let id: ActorId = "account/7".parse().unwrap();
    /// let name = MessageName::new("bank.Deposit").unwrap();
    /// let payload = cortex_protocol::encode_payload(&Deposit(5)).unwrap();
    /// assert!(reg.try_tell_erased(&id, &name, &payload, Codec::Bincode).unwrap());
    /// let nope = MessageName::new("bank.Nope").unwrap();
    /// assert!(reg.try_tell_erased(&id, &nope, &payload, Codec::Bincode).is_err());
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`VirtualRegistry::tell_erased`], except that it never times out.
    pub fn try_tell_erased(
        &self,
        id: &ActorId,
        name: &MessageName,
        payload: &[u8],
        codec: Codec,
    ) -> Result<bool, ActorError> {
        // The common case, a live activation and a small message, pushes under the shard's
        // lock: no clone and drop of the activation (two atomic operations) per message. The
        // push never waits, but it decodes the payload: a large one is decoded outside the
        // lock, so that it does not hold up the other ids of the shard.
        if payload.len() <= DECODE_UNDER_LOCK_MAX {
            match self
                .inner
                .with_live(id, |act| act.erased.try_tell(name.as_str(), payload, codec))
            {
                Lookup::Live(r) => return delivered(r),
                Lookup::Stopping => return Ok(false),
                Lookup::Absent => {}
            }
        }
        let Some(act) = self.inner.try_resolve(id, Some(name.as_str()))? else {
            return Ok(false);
        };
        delivered(act.erased.try_tell(name.as_str(), payload, codec))
    }

    /// Passivates `id` if it is live: it handles what is already queued, runs its stop
    /// hooks and drops its state. Returns `Ok(false)` if it was not live.
    ///
    /// # Errors
    /// [`ActorError::Timeout`] when it did not finish within its kind's stop timeout; it
    /// was aborted (its state is dropped all the same).
    pub async fn passivate(&self, id: &ActorId) -> Result<bool, ActorError> {
        let now = Instant::now();
        let (act, deadline) = {
            let mut shard = self.inner.shard(id).lock();
            let Some(slot) = shard.get_mut(id) else {
                return Ok(false);
            };
            if slot.stopping.is_none() {
                self.inner
                    .begin_passivation(slot, PassivationReason::Requested, now);
            }
            (Arc::clone(&slot.act), slot.stopping.unwrap_or(now))
        };
        if act.erased.wait_terminated(deadline).await {
            Ok(true)
        } else {
            self.inner.force_stop(&act);
            Err(ActorError::Timeout)
        }
    }

    /// The ids of live activations (not those already passivating), for handover.
    pub fn live_ids(&self) -> Vec<ActorId> {
        let mut out = Vec::with_capacity(self.inner.live.load(Ordering::Relaxed));
        for shard in self.inner.shards.iter() {
            out.extend(
                shard
                    .lock()
                    .iter()
                    .filter(|(_, s)| s.stopping.is_none())
                    .map(|(id, _)| id.clone()),
            );
        }
        out
    }

    /// Messages waiting in the mailboxes of live activations, summed per kind (for the
    /// node's mailbox-depth metric). Walks every activation: call it at scrape time, not on
    /// a hot path.
    pub fn queued_by_kind(&self) -> Vec<(String, usize)> {
        let mut out: std::collections::BTreeMap<String, usize> = Default::default();
        for shard in self.inner.shards.iter() {
            for (id, slot) in shard.lock().iter() {
                *out.entry(id.kind().to_owned()).or_default() += slot.act.erased.queued();
            }
        }
        out.into_iter().collect()
    }

    /// True when `id` has a live activation.
    pub fn is_live(&self, id: &ActorId) -> bool {
        self.inner
            .shard(id)
            .lock()
            .get(id)
            .is_some_and(|s| s.stopping.is_none())
    }

    /// A new subscription to activation events. Bounded: a subscriber more than
    /// [`VirtualConfig::event_capacity`] events behind gets `RecvError::Lagged` and skips.
    pub fn events(&self) -> broadcast::Receiver<VirtualEvent> {
        self.inner.events.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> VirtualStats {
        VirtualStats {
            live: self.inner.live.load(Ordering::Relaxed),
            activations: self.inner.activations.load(Ordering::Relaxed),
            passivations: self.inner.passivations.load(Ordering::Relaxed),
            gate_refusals: self.inner.gate_refusals.load(Ordering::Relaxed),
        }
    }

    /// Refuses new activations and passivates every live one, waiting until `deadline`;
    /// stragglers are aborted. Returns (stopped by themselves, aborted).
    pub(crate) async fn shutdown_until(&self, deadline: Instant) -> crate::ShutdownReport {
        self.inner.accepting.store(false, Ordering::Release);
        let mut acts = Vec::new();
        for shard in self.inner.shards.iter() {
            let mut shard = shard.lock();
            for slot in shard.values_mut() {
                if slot.stopping.is_none() {
                    self.inner
                        .begin_passivation_until(slot, PassivationReason::Shutdown, deadline);
                }
                acts.push(Arc::clone(&slot.act));
            }
        }
        let waits = acts.iter().map(|a| a.erased.wait_terminated(deadline));
        let ended = futures::future::join_all(waits).await;
        let mut report = crate::ShutdownReport::default();
        for (a, ended) in acts.iter().zip(ended) {
            if ended {
                report.stopped += 1;
            } else {
                self.inner.force_stop(a);
                report.aborted += 1;
            }
        }
        self.inner.sweeper.lock().take();
        report
    }
}

impl Inner {
    fn shard(&self, id: &ActorId) -> &Shard {
        &self.shards[shard_of(id)]
    }

    fn touch(&self, act: &Activation) {
        act.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
    }

    fn emit(&self, act: &Activation, event: VirtualEventKind) {
        let _ = self.events.send(VirtualEvent {
            id: (*act.id).clone(),
            event,
            at: SystemTime::now(),
            activation: act.number,
            live: self.live.load(Ordering::Relaxed),
        });
    }

    /// Marks a live slot as passivating and asks its actor to drain and stop. The caller
    /// holds the slot's shard lock.
    fn begin_passivation(&self, slot: &mut Slot, reason: PassivationReason, now: Instant) {
        self.begin_passivation_until(slot, reason, now + slot.stop_timeout);
    }

    fn begin_passivation_until(
        &self,
        slot: &mut Slot,
        reason: PassivationReason,
        deadline: Instant,
    ) {
        slot.stopping = Some(deadline);
        slot.act.reason.store(reason.to_u8(), Ordering::Relaxed);
        self.live.fetch_sub(1, Ordering::Relaxed);
        slot.act.erased.drain(deadline);
    }

    /// Applies `f` to the live activation of `id` (counting it as used) under its shard's
    /// lock, without activating anything.
    fn with_live<R>(&self, id: &ActorId, f: impl FnOnce(&Arc<Activation>) -> R) -> Lookup<R> {
        let shard = self.shard(id).lock();
        match shard.get(id) {
            Some(slot) if slot.stopping.is_none() => {
                self.touch(&slot.act);
                Lookup::Live(f(&slot.act))
            }
            Some(_) => Lookup::Stopping,
            None => Lookup::Absent,
        }
    }

    /// The live activation of `id`, activating it if needed; `None` when an earlier
    /// activation is still stopping (only [`Inner::resolve`] can wait for that).
    fn try_resolve(
        self: &Arc<Self>,
        id: &ActorId,
        message: Option<&str>,
    ) -> Result<Option<Arc<Activation>>, ActorError> {
        loop {
            // No `handles` check here: the caller's send looks the name up anyway and fails
            // the same way.
            match self.with_live(id, Arc::clone) {
                Lookup::Live(act) => return Ok(Some(act)),
                Lookup::Stopping => return Ok(None),
                Lookup::Absent => {}
            }
            if let Some(act) = self.activate(id, message)? {
                return Ok(Some(act));
            }
        }
    }

    /// The live activation of `id`, activating it if needed. Waits (until `deadline`) for
    /// a passivating activation to end first.
    async fn resolve(
        self: &Arc<Self>,
        id: &ActorId,
        message: Option<&str>,
        deadline: Instant,
    ) -> Result<Arc<Activation>, ActorError> {
        loop {
            let old = {
                let shard = self.shard(id).lock();
                match shard.get(id) {
                    Some(slot) if slot.stopping.is_none() => {
                        if let Some(name) = message
                            && !slot.act.erased.handles(name)
                        {
                            return Err(unknown_message(name));
                        }
                        self.touch(&slot.act);
                        return Ok(Arc::clone(&slot.act));
                    }
                    Some(slot) => Some(Arc::clone(&slot.act)),
                    None => None,
                }
            };
            if let Some(old) = old {
                if !old.erased.wait_terminated(deadline).await {
                    return Err(ActorError::Timeout);
                }
                continue;
            }
            if let Some(act) = self.activate(id, message)? {
                return Ok(act);
            }
        }
    }

    /// Starts an activation; `Ok(None)` when another caller won the race (look again).
    fn activate(
        self: &Arc<Self>,
        id: &ActorId,
        message: Option<&str>,
    ) -> Result<Option<Arc<Activation>>, ActorError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(ActorError::rejected(
                "the node is shutting down: send to another node",
            ));
        }
        let kind =
            self.kinds
                .read()
                .get(id.kind())
                .cloned()
                .ok_or_else(|| ActorError::UnknownKind {
                    kind: id.kind().to_owned(),
                })?;
        if let Some(name) = message
            && !kind.handles(name)
        {
            return Err(unknown_message(name));
        }
        let gate = self.gate.read().clone();
        if let Some(gate) = gate
            && let Err(e) = gate(id)
        {
            self.gate_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.config.max_activations {
            self.evict_lru(id);
        }
        let mut shard = self.shard(id).lock();
        if shard.contains_key(id) {
            drop(shard);
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Ok(None);
        }
        let number = self.activations.fetch_add(1, Ordering::Relaxed) + 1;
        let id_arc = Arc::new(id.clone());
        let weak_reg = Arc::downgrade(self);
        let term_id = Arc::clone(&id_arc);
        let strategy = kind.options().strategy;
        let parent: Arc<dyn Parent> =
            Arc::new(InlineParent::new(strategy, move |_local, gave_up| {
                if let Some(reg) = weak_reg.upgrade() {
                    reg.on_terminated(&term_id, number, gave_up);
                }
            }));
        let (erased, task) = match kind.activate(&self.sys, Arc::clone(&id_arc), parent) {
            Ok(v) => v,
            Err(e) => {
                drop(shard);
                self.live.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        let act = Arc::new(Activation {
            id: id_arc,
            number,
            erased,
            last_used: AtomicU64::new(0),
            reason: AtomicU8::new(PassivationReason::Stopped.to_u8()),
            finished: AtomicBool::new(false),
            task: Mutex::new(Some(task)),
        });
        self.touch(&act);
        let now = Instant::now();
        shard.insert(
            id.clone(),
            Slot {
                act: Arc::clone(&act),
                idle: kind.options().idle_timeout,
                stop_timeout: kind.options().stop_timeout,
                stopping: None,
                seen_seq: act.last_used.load(Ordering::Relaxed),
                seen_at: now,
            },
        );
        drop(shard);
        tracing::debug!(actor = %id, activation = number, "activated");
        self.emit(&act, VirtualEventKind::Activated);
        Ok(Some(act))
    }

    /// Passivates the least recently used live activation other than `except`.
    fn evict_lru(&self, except: &ActorId) {
        let mut best: Option<(u64, ActorId, u64)> = None;
        for shard in self.shards.iter() {
            for (id, slot) in shard.lock().iter() {
                if slot.stopping.is_some() || id == except {
                    continue;
                }
                let used = slot.act.last_used.load(Ordering::Relaxed);
                if best.as_ref().is_none_or(|(b, _, _)| used < *b) {
                    best = Some((used, id.clone(), slot.act.number));
                }
            }
        }
        let Some((_, victim, number)) = best else {
            return;
        };
        let mut shard = self.shard(&victim).lock();
        if let Some(slot) = shard.get_mut(&victim)
            && slot.act.number == number
            && slot.stopping.is_none()
        {
            tracing::debug!(actor = %victim, "activation bound reached; passivating least recently used");
            self.begin_passivation(slot, PassivationReason::LeastRecentlyUsed, Instant::now());
        }
    }

    /// Runs on the activation's own task as it ends (after its state was dropped).
    fn on_terminated(&self, id: &ActorId, number: u64, gave_up: bool) {
        let act = {
            let mut shard = self.shard(id).lock();
            match shard.get(id) {
                Some(slot) if slot.act.number == number => {
                    if slot.stopping.is_none() {
                        self.live.fetch_sub(1, Ordering::Relaxed);
                    }
                    let act = shard.remove(id).map(|s| s.act);
                    give_back_room(&mut shard);
                    act
                }
                _ => None,
            }
        };
        if let Some(act) = act {
            if gave_up {
                act.reason
                    .store(PassivationReason::Failed.to_u8(), Ordering::Relaxed);
            }
            if let Some(t) = act.task.lock().take() {
                // This very task is ending; nothing to abort.
                t.detach();
            }
            self.finish(&act);
        }
    }

    /// Aborts an activation that did not stop in time.
    fn force_stop(&self, act: &Arc<Activation>) {
        tracing::warn!(actor = %act.id, "activation did not stop in time; aborting it");
        drop(act.task.lock().take());
        {
            let mut shard = self.shard(&act.id).lock();
            if let Some(slot) = shard.get(&*act.id)
                && slot.act.number == act.number
            {
                if slot.stopping.is_none() {
                    self.live.fetch_sub(1, Ordering::Relaxed);
                }
                shard.remove(&*act.id);
                give_back_room(&mut shard);
            }
        }
        act.erased.mark_terminated();
        self.finish(act);
    }

    fn finish(&self, act: &Activation) {
        if act.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        self.passivations.fetch_add(1, Ordering::Relaxed);
        let reason = PassivationReason::from_u8(act.reason.load(Ordering::Relaxed));
        tracing::debug!(actor = %act.id, activation = act.number, ?reason, "passivated");
        self.emit(act, VirtualEventKind::Passivated(reason));
    }

    /// Passivates idle activations and aborts those stuck passivating.
    fn sweep(&self, now: Instant) {
        let mut stuck = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for slot in shard.values_mut() {
                if let Some(deadline) = slot.stopping {
                    if now > deadline + slot.stop_timeout {
                        stuck.push(Arc::clone(&slot.act));
                    }
                    continue;
                }
                let Some(idle) = slot.idle else { continue };
                let seq = slot.act.last_used.load(Ordering::Relaxed);
                if seq != slot.seen_seq {
                    slot.seen_seq = seq;
                    slot.seen_at = now;
                } else if now.saturating_duration_since(slot.seen_at) >= idle {
                    self.begin_passivation(slot, PassivationReason::Idle, now);
                }
            }
        }
        for act in stuck {
            self.force_stop(&act);
        }
    }
}

/// A burst of activations grows a shard's table, which a `HashMap` never shrinks by itself:
/// without this, every passivated activation would keep the room of its ~130-byte slot until
/// the next burst. Halving once the table is three-quarters empty keeps the rehashing
/// amortised O(1) per removal.
fn give_back_room(shard: &mut Table) {
    if shard.len() * 4 < shard.capacity() {
        shard.shrink_to(shard.len() * 2);
    }
}

/// What [`Inner::with_live`] found for an id.
enum Lookup<R> {
    /// Live: what the function returned.
    Live(R),
    /// An activation is still stopping.
    Stopping,
    /// No activation.
    Absent,
}

/// A non-waiting push's outcome as `try_tell_erased` answers it.
fn delivered(r: Result<bool, ErasedFail>) -> Result<bool, ActorError> {
    match r {
        Ok(delivered) => Ok(delivered),
        // Closed between the lookup and the push: the waiting path retries on a fresh
        // activation.
        Err(ErasedFail::NotDelivered) => Ok(false),
        Err(ErasedFail::Failed(e)) => Err(e),
    }
}

fn unknown_message(name: &str) -> ActorError {
    ActorError::UnknownMessage {
        name: name.chars().take(128).collect(),
    }
}

/// A typed handle to a virtual actor; see [`VirtualRegistry::get`].
pub struct VirtualRef<A: Actor> {
    id: ActorId,
    reg: VirtualRegistry,
    _actor: std::marker::PhantomData<fn() -> A>,
}

impl<A: Actor> Clone for VirtualRef<A> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            reg: self.reg.clone(),
            _actor: std::marker::PhantomData,
        }
    }
}

impl<A: Actor> std::fmt::Debug for VirtualRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualRef").field("id", &self.id).finish()
    }
}

impl<A: Actor> VirtualRef<A> {
    /// The actor id.
    pub fn id(&self) -> &ActorId {
        &self.id
    }

    async fn typed(&self, deadline: Instant) -> Result<ActorRef<A>, ActorError> {
        let act = self.reg.inner.resolve(&self.id, None, deadline).await?;
        act.erased
            .as_any()
            .downcast_ref::<ActorRef<A>>()
            .cloned()
            .ok_or_else(|| {
                ActorError::rejected(format!(
                    "kind {:?} is not registered with actor type {}",
                    self.id.kind(),
                    std::any::type_name::<A>()
                ))
            })
    }

    /// Asks, activating the actor if needed.
    ///
    /// # Errors
    /// As [`VirtualRegistry::send_erased`] (without the codec errors).
    pub async fn ask<M>(&self, msg: M, timeout: Duration) -> Result<M::Reply, ActorError>
    where
        A: Handler<M>,
        M: Message,
    {
        let deadline = Instant::now() + timeout;
        let mut msg = msg;
        for _ in 0..ATTEMPTS {
            let r = self.typed(deadline).await?;
            match r.ask_deadline(msg, deadline).await {
                Ok(reply) => return Ok(reply),
                Err(AskFail::NotDelivered(m)) => msg = m,
                Err(AskFail::Failed(e)) => return Err(e),
            }
        }
        Err(ActorError::Stopped)
    }

    /// Tells, activating the actor if needed and waiting up to `timeout` for room.
    ///
    /// # Errors
    /// As [`VirtualRegistry::tell_erased`].
    pub async fn tell<M>(&self, msg: M, timeout: Duration) -> Result<(), ActorError>
    where
        A: Handler<M>,
        M: Message,
    {
        let deadline = Instant::now() + timeout;
        let mut msg = msg;
        for _ in 0..ATTEMPTS {
            let r = self.typed(deadline).await?;
            match r
                .tell_timeout(msg, deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Ok(()) => return Ok(()),
                Err(SendError::Stopped(m)) => msg = m,
                Err(e) => return Err(e.error()),
            }
        }
        Err(ActorError::Stopped)
    }
}
