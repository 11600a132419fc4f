//! The IO-free membership state machine: foca plus authentication, seeds and the view.
//!
//! # Driving contract
//! - Time is given as [`Now`]: `mono` is a monotonic `Duration` since an origin the driver
//!   picks (timers are expressed on it), `wall` is the wall clock (replay counters and
//!   `since` stamps). Neither is read inside the core.
//! - Feed inputs: [`MembershipCore::handle_datagram`] for every received UDP datagram,
//!   [`MembershipCore::handle_timer`] for every timer that came due, and
//!   [`MembershipCore::set_seed_addrs`] whenever seeds were (re-)resolved.
//! - After **every** call drain [`MembershipCore::poll_transmit`] (send each datagram),
//!   [`MembershipCore::poll_timer`] (schedule each timer at its absolute deadline and hand it
//!   back once due; every timer must come back) and [`MembershipCore::poll_event`].
//! - [`MembershipCore::leave`] produces the farewell datagrams; after it the core ignores
//!   all inputs.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cortex_protocol::NodeId;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec};
use rand::rngs::SmallRng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};

use super::MembershipCounters;
use super::auth::{Authenticator, CounterCells, Kind, MAX_DATAGRAM, OVERHEAD, RejectReason};
use super::config::{MembershipError, SwimTuning, check_secret};
use super::identity::MemberIdentity;
use super::view::{MembershipEvent, MembershipView, Observed, ViewTracker};

/// Largest encoded identity accepted: a foca header carries two, and updates need room.
pub const MAX_IDENTITY_LEN: usize = 400;
/// Most seed addresses remembered.
pub(crate) const MAX_SEED_ADDRS: usize = 1024;
/// Seeds sent a join request per re-announcement while the node is in a cluster.
const REANNOUNCE_FANOUT: usize = 2;

/// The current time, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since the driver's origin; timer deadlines use this clock.
    pub mono: Duration,
    /// Wall-clock time.
    pub wall: SystemTime,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
    /// The sealed datagram.
    pub payload: Vec<u8>,
}

/// A timer the core asked for; hand it back through [`MembershipCore::handle_timer`].
#[derive(Debug, Clone)]
pub struct CoreTimer(TimerKind);

#[derive(Debug, Clone)]
enum TimerKind {
    Swim(foca::Timer<MemberIdentity>),
    Reannounce,
}

/// What the core is built from.
#[derive(Clone)]
#[non_exhaustive]
pub struct CoreConfig {
    /// This node's identity (with its advertised gossip address).
    pub identity: MemberIdentity,
    /// Cluster name (part of the key).
    pub cluster_name: String,
    /// Shared secret.
    pub cluster_secret: Vec<u8>,
    /// SWIM timing.
    pub tuning: SwimTuning,
    /// Clock skew tolerated by replay protection.
    pub max_clock_skew: Duration,
    /// How long removed members stay in the view.
    pub removed_retention: Duration,
}

impl std::fmt::Debug for CoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreConfig")
            .field("identity", &self.identity)
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

impl CoreConfig {
    /// A core configuration with default timing.
    pub fn new(identity: MemberIdentity, cluster_name: &str, cluster_secret: &[u8]) -> Self {
        Self {
            identity,
            cluster_name: cluster_name.to_owned(),
            cluster_secret: cluster_secret.to_vec(),
            tuning: SwimTuning::default(),
            max_clock_skew: Duration::from_secs(60),
            removed_retention: Duration::from_secs(600),
        }
    }
}

type SwimFoca = Foca<MemberIdentity, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// The membership state machine of one node.
///
/// Driving contract: after every call, drain [`Self::poll_transmit`], [`Self::poll_timer`]
/// and [`Self::poll_event`]; hand every timer back through [`Self::handle_timer`] once its
/// deadline (on the `mono` clock of [`Now`]) has passed; feed every received datagram to
/// [`Self::handle_datagram`]. Nothing inside reads a clock or a global RNG.
///
/// # Examples
/// Two cores wired back to back, no sockets:
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use cortex_node::membership::{CoreConfig, MemberIdentity, MemberMeta, MembershipCore, Now};
/// use cortex_protocol::{NodeId, SUPPORTED_VERSIONS};
///
/// let ident = |name: &str, port: u16| MemberIdentity {
///     id: NodeId::new(name, 1).unwrap(),
///     gossip_addr: ([10, 0, 0, 1], port).into(),
///     meta: MemberMeta {
///         quic_addr: ([10, 0, 0, 1], 7400).into(),
///         http_addr: ([10, 0, 0, 1], 7480).into(),
///         roles: vec![],
///         versions: SUPPORTED_VERSIONS,
///         process: 1,
///     },
/// };
/// let now = Now { mono: Duration::ZERO, wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000) };
/// let secret = b"0123456789abcdef";
/// let mut a = MembershipCore::new(CoreConfig::new(ident("a", 1), "demo", secret), 1, now).unwrap();
/// let mut b = MembershipCore::new(CoreConfig::new(ident("b", 2), "demo", secret), 2, now).unwrap();
///
/// b.set_seed_addrs([a.identity().gossip_addr], now); // b asks a to let it in
/// for _ in 0..4 {
///     while let Some(t) = a.poll_transmit() { b.handle_datagram(a.identity().gossip_addr, &t.payload, now) }
///     while let Some(t) = b.poll_transmit() { a.handle_datagram(b.identity().gossip_addr, &t.payload, now) }
/// }
/// assert_eq!(a.view().members.len(), 2);
/// assert_eq!(b.view().members.len(), 2);
/// ```
pub struct MembershipCore {
    foca: SwimFoca,
    rt: AccumulatingRuntime<MemberIdentity>,
    auth: Authenticator,
    view: ViewTracker,
    rng: SmallRng,
    tuning: SwimTuning,
    seeds: BTreeSet<SocketAddr>,
    transmits: VecDeque<Transmit>,
    timers: VecDeque<(Duration, CoreTimer)>,
    counters: Arc<CounterCells>,
    left: bool,
    /// Join rounds sent while alone with no answer.
    unanswered_joins: u32,
    /// When a refusal was last logged per sender (bounded).
    refusal_warned: std::collections::HashMap<SocketAddr, Duration>,
}

impl std::fmt::Debug for MembershipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipCore")
            .field("identity", self.foca.identity())
            .field("members", &self.foca.num_members())
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl MembershipCore {
    /// Builds a core. `seed` seeds its random choices (probe order, gossip targets): give a
    /// random value in production and a fixed one in simulations.
    ///
    /// # Errors
    /// [`MembershipError::WeakSecret`] or [`MembershipError::InvalidConfig`].
    pub fn new(config: CoreConfig, seed: u64, now: Now) -> Result<Self, MembershipError> {
        check_secret(&config.cluster_secret)?;
        config.tuning.validate()?;
        config
            .identity
            .meta
            .validate()
            .map_err(MembershipError::InvalidConfig)?;
        let encoded = postcard::to_allocvec(&config.identity).map_err(|e| {
            MembershipError::InvalidConfig(format!("identity does not encode: {e}"))
        })?;
        if encoded.len() > MAX_IDENTITY_LEN {
            return Err(MembershipError::InvalidConfig(format!(
                "the identity encodes to {} bytes, over the {MAX_IDENTITY_LEN}-byte limit: use fewer or shorter roles",
                encoded.len()
            )));
        }
        let counters = Arc::new(CounterCells::default());
        let auth = Authenticator::new(
            &config.cluster_secret,
            &config.cluster_name,
            &config.identity.id,
            config.max_clock_skew,
        );
        let mut rng = SmallRng::seed_from_u64(seed);
        let foca_rng = SmallRng::seed_from_u64(rng.next_u64());
        let foca = Foca::new(
            config.identity.clone(),
            config.tuning.foca_config(),
            foca_rng,
            PostcardCodec,
        );
        let view = ViewTracker::new(&config.identity, config.removed_retention, now.wall);
        let mut core = Self {
            foca,
            rt: AccumulatingRuntime::new(),
            auth,
            view,
            rng,
            tuning: config.tuning,
            seeds: BTreeSet::new(),
            transmits: VecDeque::new(),
            timers: VecDeque::new(),
            counters,
            left: false,
            unanswered_joins: 0,
            refusal_warned: std::collections::HashMap::new(),
        };
        core.timers.push_back((
            now.mono + core.tuning.reannounce_interval,
            CoreTimer(TimerKind::Reannounce),
        ));
        Ok(core)
    }

    /// This node's current identity.
    pub fn identity(&self) -> &MemberIdentity {
        self.foca.identity()
    }

    /// This node's current id.
    pub fn local_id(&self) -> &NodeId {
        &self.foca.identity().id
    }

    /// A snapshot of the membership.
    pub fn view(&self) -> MembershipView {
        self.view.snapshot()
    }

    /// The ring epoch (see [`MembershipView::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.view.epoch()
    }

    /// Datagram counters.
    pub fn counters(&self) -> MembershipCounters {
        self.counters.snapshot()
    }

    pub(crate) fn counter_cells(&self) -> Arc<CounterCells> {
        self.counters.clone()
    }

    /// True after [`Self::leave`].
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next timer to schedule, with its absolute deadline on the `mono` clock.
    pub fn poll_timer(&mut self) -> Option<(Duration, CoreTimer)> {
        self.timers.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.view.pop_event()
    }

    /// Replaces the resolved seed addresses; new ones get a join request at once.
    pub fn set_seed_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>, now: Now) {
        if self.left {
            return;
        }
        let own = self.identity().gossip_addr;
        let fresh: BTreeSet<SocketAddr> = addrs
            .into_iter()
            .filter(|a| *a != own)
            .take(MAX_SEED_ADDRS)
            .collect();
        let new: Vec<SocketAddr> = fresh.difference(&self.seeds).copied().collect();
        self.seeds = fresh;
        for addr in new {
            self.send_join(addr, now);
        }
    }

    /// Says once a minute per sender, at warning level, why a well-formed Cortex datagram
    /// was refused: these are misconfigurations an operator must see (another secret or
    /// cluster name, another version). Garbage stays at debug level, so a flood of it cannot
    /// flood the log.
    fn warn_refusal(&mut self, from: SocketAddr, reason: RejectReason, now: Now) {
        let hint = match reason {
            RejectReason::BadTag => {
                "authentication failed: the sender uses another cluster secret or cluster name"
            }
            RejectReason::UnsupportedVersion => {
                "the sender speaks another gossip datagram version: upgrade the older node"
            }
            _ => return,
        };
        const EVERY: Duration = Duration::from_secs(60);
        if let Some(last) = self.refusal_warned.get(&from)
            && now.mono.saturating_sub(*last) < EVERY
        {
            return;
        }
        if self.refusal_warned.len() >= 256 {
            self.refusal_warned.clear();
        }
        self.refusal_warned.insert(from, now.mono);
        tracing::warn!(%from, ?reason, "gossip from {from} refused: {hint}");
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Now) {
        if self.left {
            return;
        }
        let (kind, payload) = match self.auth.open(bytes, now.wall) {
            Ok(v) => v,
            Err(reason) => {
                tracing::debug!(%from, ?reason, len = bytes.len(), "gossip datagram refused");
                self.counters.rejected(reason);
                self.warn_refusal(from, reason, now);
                return;
            }
        };
        let ok = match kind {
            Kind::Swim => match self.foca.handle_data(payload, &mut self.rt) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(%from, error = %e, "swim payload refused");
                    false
                }
            },
            Kind::Join => self.on_join(payload),
            Kind::Leave => self.on_leave(payload),
        };
        if ok {
            self.counters.accepted();
        } else {
            self.counters.rejected(RejectReason::Malformed);
        }
        self.after_input(now);
    }

    /// Feeds a timer that came due.
    pub fn handle_timer(&mut self, timer: CoreTimer, now: Now) {
        if self.left {
            return;
        }
        match timer.0 {
            TimerKind::Swim(t) => {
                let suspect = match &t {
                    foca::Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
                    _ => None,
                };
                if let Err(e) = self.foca.handle_timer(t, &mut self.rt) {
                    tracing::debug!(error = %e, "swim timer");
                }
                if let Some(member) = suspect
                    && self.foca.iter_members().any(|m| *m.id() == member)
                {
                    self.drop_sends_to(&member);
                }
            }
            TimerKind::Reannounce => {
                self.reannounce(now);
                self.timers.push_back((
                    now.mono + self.tuning.reannounce_interval,
                    CoreTimer(TimerKind::Reannounce),
                ));
            }
        }
        self.after_input(now);
    }

    /// Leaves the cluster: tells every live member directly (twice, against loss), then
    /// lets foca gossip our departure. Drain [`Self::poll_transmit`] afterwards.
    pub fn leave(&mut self, now: Now) {
        if self.left {
            return;
        }
        match postcard::to_allocvec(self.identity()) {
            Ok(me) => {
                let targets: Vec<SocketAddr> = self
                    .foca
                    .iter_members()
                    .map(|m| m.id().gossip_addr)
                    .collect();
                for _ in 0..2 {
                    for dst in &targets {
                        let payload = self.auth.seal(Kind::Leave, &me, now.wall);
                        self.transmits.push_back(Transmit { dst: *dst, payload });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode own identity for the leave notice"),
        }
        // Set first: leaving makes foca report this node defunct, which is expected here.
        self.left = true;
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            tracing::warn!(error = %e, "foca refused to leave");
        }
        self.drain_runtime(now);
        self.timers.clear();
    }

    /// foca 2.0.0 answers a suspicion timer with `TurnUndead` to the suspect even when the
    /// suspect refuted in time and is still alive (its `apply_existing_if` reports a failed
    /// condition as `Some`). The suspect would then renew its identity for nothing: a
    /// needless membership change. So when the suspect is still active after its suspicion
    /// timer, whatever that timer sent to it (only that message) is dropped.
    fn drop_sends_to(&mut self, member: &MemberIdentity) {
        let mut keep = Vec::new();
        while let Some((to, data)) = self.rt.to_send() {
            if to == *member {
                tracing::debug!(id = %member.id, "dropping TurnUndead to a member that refuted suspicion");
            } else {
                keep.push((to, data));
            }
        }
        for (to, data) in keep {
            foca::Runtime::send_to(&mut self.rt, to, &data);
        }
    }

    fn on_join(&mut self, payload: &[u8]) -> bool {
        let Some(ident) = decode_identity(payload) else {
            return false;
        };
        if ident.id.name() == self.local_id().name() {
            if ident.id != *self.local_id() {
                tracing::warn!(
                    other = %ident.id,
                    local = %self.local_id(),
                    "a join request carries this node's name with another incarnation: is the name used twice?"
                );
            }
            return true;
        }
        if !self.view.note_incarnation(&ident.id) {
            tracing::debug!(id = %ident.id, "join from a superseded incarnation ignored");
            return true;
        }
        if let Err(e) = self.foca.announce(ident, &mut self.rt) {
            tracing::debug!(error = %e, "announce in reply to a join failed");
        }
        true
    }

    fn on_leave(&mut self, payload: &[u8]) -> bool {
        let Some(ident) = decode_identity(payload) else {
            return false;
        };
        if ident.id.name() == self.local_id().name() {
            return true;
        }
        tracing::debug!(id = %ident.id, "member leaves");
        self.view.mark_left(ident.id.clone());
        if let Err(e) = self.foca.apply_many(
            std::iter::once(foca::Member::down(ident)),
            true,
            &mut self.rt,
        ) {
            tracing::debug!(error = %e, "applying a leave failed");
        }
        true
    }

    fn reannounce(&mut self, now: Now) {
        let alone = self.foca.num_members() == 0;
        if alone && !self.seeds.is_empty() {
            self.unanswered_joins += 1;
            // A few rounds unanswered: likely a wrong secret or cluster name (the seeds
            // refuse the joins silently) or unreachable seeds. Said once, then every 30.
            if self.unanswered_joins % 30 == 5 {
                let seeds: Vec<String> = self.seeds.iter().map(|s| s.to_string()).collect();
                tracing::warn!(
                    seeds = %seeds.join(","),
                    rounds = self.unanswered_joins,
                    "no answer from the seeds: check that they are up and that this node has the same cluster secret and cluster name"
                );
            }
        } else {
            self.unanswered_joins = 0;
        }
        let targets: Vec<SocketAddr> = if alone {
            self.seeds.iter().copied().collect()
        } else {
            self.seeds
                .iter()
                .copied()
                .sample(&mut self.rng, REANNOUNCE_FANOUT)
        };
        for addr in targets {
            self.send_join(addr, now);
        }
    }

    fn send_join(&mut self, dst: SocketAddr, now: Now) {
        match postcard::to_allocvec(self.identity()) {
            Ok(me) => {
                let payload = self.auth.seal(Kind::Join, &me, now.wall);
                self.transmits.push_back(Transmit { dst, payload });
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode own identity for a join request"),
        }
    }

    fn after_input(&mut self, now: Now) {
        self.drain_runtime(now);
        // A stale incarnation found in foca is declared down; doing so can change the view
        // again, hence the second round (a third finds nothing new: the stale ids are down).
        for _ in 0..2 {
            let observed = self.foca.iter_membership_state().map(|m| Observed {
                ident: m.id(),
                active: m.state() != foca::State::Down,
                suspect: m.state() == foca::State::Suspect,
            });
            let stale = self.view.sync(observed, now.wall);
            if stale.is_empty() {
                break;
            }
            for ident in &stale {
                tracing::debug!(id = %ident.id, "declaring a superseded incarnation down");
            }
            if let Err(e) = self.foca.apply_many(
                stale.into_iter().map(foca::Member::down),
                true,
                &mut self.rt,
            ) {
                tracing::debug!(error = %e, "declaring stale incarnations down failed");
            }
            self.drain_runtime(now);
        }
    }

    fn drain_runtime(&mut self, now: Now) {
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::Rejoin(ident) => {
                    tracing::info!(id = %ident.id, "declared down by the cluster; rejoined under a new incarnation");
                    self.auth.set_local(&ident.id);
                    self.view.renew_local(&ident, now.wall);
                }
                OwnedNotification::Defunct if !self.left => {
                    tracing::error!("this node was declared down and cannot renew its identity");
                }
                OwnedNotification::Active => tracing::debug!("member of a cluster"),
                OwnedNotification::Idle => tracing::debug!("no other live member known"),
                _ => {}
            }
        }
        while let Some((to, data)) = self.rt.to_send() {
            debug_assert!(data.len() + OVERHEAD <= MAX_DATAGRAM);
            let payload = self.auth.seal(Kind::Swim, &data, now.wall);
            self.transmits.push_back(Transmit {
                dst: to.gossip_addr,
                payload,
            });
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timers
                .push_back((now.mono + after, CoreTimer(TimerKind::Swim(timer))));
        }
    }
}

fn decode_identity(payload: &[u8]) -> Option<MemberIdentity> {
    match postcard::take_from_bytes::<MemberIdentity>(payload) {
        Ok((ident, [])) if ident.meta.validate().is_ok() => Some(ident),
        _ => None,
    }
}
