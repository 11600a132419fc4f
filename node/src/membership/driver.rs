//! The async shell: one task owns the UDP socket, the timer queue and the core.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cortex_protocol::NodeId;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::MembershipCounters;
use super::auth::{CounterCells, MAX_DATAGRAM};
use super::config::{MembershipConfig, MembershipError, SeedSpec};
use super::identity::MemberIdentity;
use super::machine::{CoreConfig, CoreTimer, MembershipCore, Now};
use super::timers::{DEFAULT_TIMER_CAPACITY, TimerQueue};
use super::view::{MembershipEvent, MembershipView};

/// Addresses taken from one seed resolution.
const MAX_ADDRS_PER_SEED: usize = 256;
/// How long `shutdown` waits for the task before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Longest wait for room in the socket's send buffer; a datagram not sent by then is
/// dropped (and counted), like a datagram lost on the wire.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// Starts the membership of a node.
#[derive(Debug)]
pub struct Membership;

impl Membership {
    /// Binds the gossip socket, resolves the seeds and starts the membership task.
    ///
    /// The task runs until [`MembershipHandle::leave`], [`MembershipHandle::shutdown`], or
    /// until the last clone of the handle is dropped.
    ///
    /// # Errors
    /// Invalid settings ([`MembershipError::InvalidConfig`], [`MembershipError::WeakSecret`]),
    /// a socket that cannot be bound ([`MembershipError::Bind`]) or no address to advertise
    /// ([`MembershipError::NoAdvertiseAddress`]). Seeds that do not resolve are not an error:
    /// they are retried every `seed_refresh_interval`.
    ///
    /// # Examples
    /// ```
    /// use cortex_node::membership::{MemberMeta, Membership, MembershipConfig};
    /// use cortex_protocol::{NodeId, SUPPORTED_VERSIONS};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let meta = MemberMeta {
    ///     quic_addr: "127.0.0.1:7400".parse()?,
    ///     http_addr: "127.0.0.1:7480".parse()?,
    ///     roles: vec![],
    ///     versions: SUPPORTED_VERSIONS,
    ///     process: 1,
    /// };
    /// let mut config = MembershipConfig::new(NodeId::new("n0", 1)?, b"0123456789abcdef".to_vec(), meta);
    /// config.bind = "127.0.0.1:0".parse()?;
    /// let handle = Membership::start(config).await?;
    /// assert_eq!(handle.view().members.len(), 1); // just this node, for now
    /// handle.leave(tokio::time::Instant::now() + std::time::Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(config: MembershipConfig) -> Result<MembershipHandle, MembershipError> {
        config.validate()?;
        let socket =
            UdpSocket::bind(config.bind)
                .await
                .map_err(|source| MembershipError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let bound = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                addr: config.bind,
                source,
            })?;
        let mut advertised = config.advertise.unwrap_or(bound);
        if advertised.port() == 0 {
            advertised.set_port(bound.port());
        }
        if advertised.ip().is_unspecified() {
            return Err(MembershipError::NoAdvertiseAddress(bound));
        }
        let identity = MemberIdentity {
            id: config.node_id.clone(),
            gossip_addr: advertised,
            meta: config.meta.clone(),
        };
        let mut core_config =
            CoreConfig::new(identity, &config.cluster_name, &config.cluster_secret);
        core_config.tuning = config.tuning.clone();
        core_config.max_clock_skew = config.max_clock_skew;
        core_config.removed_retention = config.removed_retention;

        let origin = Instant::now();
        let core = MembershipCore::new(core_config, random_seed(), now(origin))?;
        let counters = core.counter_cells();
        let (view_tx, view_rx) = watch::channel(Arc::new(core.view()));
        let (events_tx, _) = broadcast::channel(config.event_capacity);
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (seed_tx, seed_rx) = mpsc::channel(1);
        let resolver = (!config.seeds.is_empty()).then(|| {
            AbortOnDrop(tokio::spawn(resolve_seeds(
                config.seeds.clone(),
                config.seed_refresh_interval,
                config.seed_resolve_timeout,
                seed_tx,
            )))
        });
        tracing::info!(id = %config.node_id, %bound, %advertised, seeds = config.seeds.len(), "membership started");
        let driver = Driver {
            core,
            socket,
            timers: TimerQueue::new(DEFAULT_TIMER_CAPACITY),
            origin,
            view_tx,
            events_tx: events_tx.clone(),
            counters: counters.clone(),
            _resolver: resolver,
        };
        let task = tokio::spawn(driver.run(cmd_rx, seed_rx));
        Ok(MembershipHandle {
            inner: Arc::new(Inner {
                cmd: cmd_tx,
                view: view_rx,
                events: events_tx,
                counters,
                bound,
                advertised,
                task: parking_lot::Mutex::new(Some(task)),
            }),
        })
    }
}

/// A handle on the running membership. Cheap to clone; the task stops when the last clone
/// is dropped (without a farewell: prefer [`MembershipHandle::leave`]).
#[derive(Debug, Clone)]
pub struct MembershipHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cmd: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<MembershipView>>,
    events: broadcast::Sender<MembershipEvent>,
    counters: Arc<CounterCells>,
    bound: SocketAddr,
    advertised: SocketAddr,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
    }
}

#[derive(Debug)]
enum Command {
    Leave(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MembershipHandle>();
};

impl MembershipHandle {
    /// The current membership (live members with this node, recently removed members,
    /// epoch).
    pub fn view(&self) -> MembershipView {
        self.inner.view.borrow().as_ref().clone()
    }

    /// A receiver that sees every new view (`changed().await`), for placement and topology
    /// pushes.
    pub fn watch(&self) -> watch::Receiver<Arc<MembershipView>> {
        self.inner.view.clone()
    }

    /// Membership events from now on. The channel is bounded (`event_capacity`); a receiver
    /// that falls behind gets `RecvError::Lagged` and should re-read [`Self::view`].
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.inner.events.subscribe()
    }

    /// Datagram counters (accepted, sent, refused by reason).
    pub fn counters(&self) -> MembershipCounters {
        self.inner.counters.snapshot()
    }

    /// This node's current id (its incarnation grows if it had to rejoin).
    pub fn local_id(&self) -> NodeId {
        self.inner.view.borrow().local.clone()
    }

    /// The gossip address other members use for this node.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.inner.advertised
    }

    /// The address the gossip socket is bound to.
    pub fn bound_addr(&self) -> SocketAddr {
        self.inner.bound
    }

    /// True until the task stopped (left, shut down, or failed).
    pub fn is_running(&self) -> bool {
        self.inner
            .task
            .lock()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Leaves the cluster gracefully: every live member is told directly and foca gossips
    /// the departure, so peers drop this node at once instead of after a failure timeout.
    /// The task stops afterwards.
    ///
    /// # Errors
    /// [`MembershipError::Stopped`] if the task was not running,
    /// [`MembershipError::LeaveTimedOut`] if the farewell was not sent by `deadline` (the task
    /// is stopped anyway).
    ///
    /// # Cancel safety
    /// If the future is dropped after the request was sent, the leave still completes in the
    /// background.
    pub async fn leave(&self, deadline: Instant) -> Result<(), MembershipError> {
        let (tx, rx) = oneshot::channel();
        match tokio::time::timeout_at(deadline, self.inner.cmd.send(Command::Leave(tx))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(MembershipError::Stopped),
            Err(_) => {
                self.abort();
                return Err(MembershipError::LeaveTimedOut);
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(())) => {
                self.join_until(deadline).await;
                Ok(())
            }
            Ok(Err(_)) => Err(MembershipError::Stopped),
            Err(_) => {
                self.abort();
                Err(MembershipError::LeaveTimedOut)
            }
        }
    }

    /// Stops the task without a farewell (peers will detect the silence as a failure).
    /// Waits up to one second for it to stop, then aborts it.
    pub async fn shutdown(&self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let (tx, rx) = oneshot::channel();
        if let Ok(Ok(())) =
            tokio::time::timeout_at(deadline, self.inner.cmd.send(Command::Shutdown(tx))).await
        {
            let _ = tokio::time::timeout_at(deadline, rx).await;
        }
        self.join_until(deadline).await;
        self.abort();
    }

    async fn join_until(&self, deadline: Instant) {
        let task = self.inner.task.lock().take();
        if let Some(mut task) = task
            && tokio::time::timeout_at(deadline, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    fn abort(&self) {
        if let Some(task) = self.inner.task.lock().take() {
            task.abort();
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now(origin: Instant) -> Now {
    Now {
        mono: Instant::now().saturating_duration_since(origin),
        wall: SystemTime::now(),
    }
}

fn random_seed() -> u64 {
    // Only probe order and gossip targets depend on it; a clock-derived fallback is fine.
    match ring::rand::generate::<[u8; 8]>(&ring::rand::SystemRandom::new()) {
        Ok(r) => u64::from_le_bytes(r.expose()),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    }
}

async fn resolve_seeds(
    seeds: Vec<SeedSpec>,
    every: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Vec<SocketAddr>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut all = BTreeSet::new();
        let mut failed = 0usize;
        for seed in &seeds {
            match tokio::time::timeout(timeout, tokio::net::lookup_host(seed.as_str())).await {
                Ok(Ok(addrs)) => all.extend(addrs.take(MAX_ADDRS_PER_SEED)),
                Ok(Err(e)) => {
                    failed += 1;
                    tracing::debug!(%seed, error = %e, "seed did not resolve");
                }
                Err(_) => {
                    failed += 1;
                    tracing::debug!(%seed, ?timeout, "seed resolution timed out");
                }
            }
        }
        if failed == seeds.len() {
            tracing::warn!(
                seeds = seeds.len(),
                "no seed resolved; retrying (check the seed names and DNS)"
            );
        }
        let addrs: Vec<SocketAddr> = all
            .into_iter()
            .take(super::machine::MAX_SEED_ADDRS)
            .collect();
        if tx.send(addrs).await.is_err() {
            return;
        }
    }
}

struct Driver {
    core: MembershipCore,
    socket: UdpSocket,
    timers: TimerQueue<CoreTimer>,
    origin: Instant,
    view_tx: watch::Sender<Arc<MembershipView>>,
    events_tx: broadcast::Sender<MembershipEvent>,
    counters: Arc<CounterCells>,
    _resolver: Option<AbortOnDrop>,
}

impl Driver {
    async fn run(
        mut self,
        mut cmd: mpsc::Receiver<Command>,
        mut seeds: mpsc::Receiver<Vec<SocketAddr>>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        self.pump().await;
        loop {
            // With no timer pending (only after leaving) wake up rarely; the loop then
            // still answers commands.
            let deadline = self.timers.next_deadline().map_or_else(
                || Instant::now() + Duration::from_secs(3600),
                |d| self.origin + d,
            );
            tokio::select! {
                c = cmd.recv() => match c {
                    Some(Command::Leave(reply)) => {
                        self.core.leave(now(self.origin));
                        self.pump().await;
                        let _ = reply.send(());
                        tracing::info!(id = %self.core.local_id(), "left the cluster");
                        return;
                    }
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        tracing::info!(id = %self.core.local_id(), "membership shut down");
                        return;
                    }
                    None => return,
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        // A datagram filling the buffer was longer than MAX_DATAGRAM and got
                        // cut: hand it over whole-length so the core refuses it as too large.
                        self.core.handle_datagram(from, &buf[..n], now(self.origin));
                    }
                    Err(e) => tracing::debug!(error = %e, "gossip receive failed"),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let n = now(self.origin);
                    while let Some(t) = self.timers.pop_due(n.mono) {
                        self.core.handle_timer(t, n);
                        self.queue_timers();
                    }
                }
                Some(addrs) = seeds.recv() => {
                    self.core.set_seed_addrs(addrs, now(self.origin));
                }
            }
            self.pump().await;
        }
    }

    fn queue_timers(&mut self) {
        while let Some((at, t)) = self.core.poll_timer() {
            if let Err(t) = self.timers.push(at, t) {
                tracing::error!(timer = ?t, "timer queue full; timer dropped");
            }
        }
    }

    /// Moves the core's output to the world: datagrams, timers, events, the view.
    async fn pump(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match tokio::time::timeout(SEND_TIMEOUT, self.socket.send_to(&t.payload, t.dst)).await {
                Ok(Ok(_)) => self.counters.sent(),
                Ok(Err(e)) => {
                    self.counters.send_error();
                    tracing::debug!(dst = %t.dst, error = %e, "gossip send failed");
                }
                Err(_) => {
                    self.counters.send_error();
                    tracing::debug!(dst = %t.dst, "gossip send timed out");
                }
            }
        }
        self.queue_timers();
        let mut changed = false;
        while let Some(ev) = self.core.poll_event() {
            changed = true;
            match &ev {
                MembershipEvent::Renewed { previous, current } => {
                    tracing::warn!(%previous, %current, "this node was declared down and rejoined")
                }
                ev => {
                    if let Some(m) = ev.member() {
                        tracing::info!(member = %m.id, state = ?m.state, gossip = %m.gossip_addr, "membership change");
                    }
                }
            }
            // No subscriber is fine: events are also reflected in the view.
            let _ = self.events_tx.send(ev);
        }
        if changed {
            self.view_tx.send_replace(Arc::new(self.core.view()));
        }
    }
}
