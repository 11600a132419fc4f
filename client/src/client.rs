//! The [`Client`]: one QUIC endpoint, lazily opened connections to the nodes, the latest
//! topology, a circuit breaker per node and a maintenance task that keeps at least one
//! connection (and every subscription) alive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cortex_protocol::{
    ActorId, FEATURE_BATCH, FEATURE_REPLY_LANE, FEATURE_TOPOLOGY, NodeId, PeerIdentity,
};
use cortex_runtime::resilience::{
    CircuitGuard, CircuitState, RetryConfig, RetryPolicy, SharedCircuitBreaker,
};
use cortex_transport::{Connection, Endpoint, EndpointConfig, TransportError};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ClientBuilder, ClientConfig};
use crate::error::ClientError;
use crate::handler::{ClientHandler, Shared};
use crate::topology::TopologyView;

/// A seed as dialed: its address and the TLS name checked against its certificate.
#[derive(Debug, Clone)]
struct Seed {
    addr: SocketAddr,
    server_name: String,
}

/// A handle to a Cortex cluster. Cheap to clone; clones share connections and state.
/// Dropping the last clone closes every connection and stops the background task.
///
/// Requests go straight to the owner of their actor id as computed from the latest
/// topology a node sent (one hop). Without a view, or when the owner cannot be reached,
/// they go to any live node, which forwards them.
///
/// ```no_run
/// # async fn demo(client: cortex_client::Client) -> Result<(), cortex_client::ClientError> {
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Deposit(u64);
/// cortex_runtime::message!(Deposit => u64, "bank.Deposit");
///
/// let id = "account/alice".parse().unwrap();
/// let balance: u64 = client.ask(&id, Deposit(5)).await?;
/// client.tell(&id, Deposit(1)).await?;
/// # let _ = balance; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.inner.cfg.name)
            .field("cluster", &self.inner.cfg.cluster)
            .finish()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
};

pub(crate) struct Inner {
    pub(crate) cfg: ClientConfig,
    pub(crate) endpoint: Endpoint,
    pub(crate) shared: Arc<Shared>,
    seeds: Vec<Seed>,
    breakers: Mutex<HashMap<String, SharedCircuitBreaker>>,
    pub(crate) retry: RetryPolicy<ClientError>,
    next_pick: AtomicUsize,
    pub(crate) publish_seq: AtomicU64,
    pub(crate) cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Where one request goes: a connection, the node on the other end, and the breaker
/// permit the outcome is booked against.
pub(crate) struct Route {
    pub(crate) conn: Connection,
    pub(crate) node: NodeId,
    /// The ring digest the request is sent under (its `epoch`): the view's when `node` is
    /// the owner the client computed on it, else 0 (a fallback route to any node: the
    /// node routes it on its own view).
    pub(crate) digest: u64,
    guard: Option<CircuitGuard>,
}

impl Route {
    /// The node answered (whatever it said).
    pub(crate) fn success(&mut self) {
        if let Some(g) = self.guard.take() {
            g.success();
        }
    }
    /// The node did not answer.
    pub(crate) fn failure(&mut self) {
        if let Some(g) = self.guard.take() {
            g.failure();
        }
    }
}

/// Names of nodes one call no longer tries (it failed there). A call meets few nodes, so a
/// vector beats a hash set: nothing to allocate or hash on the common path, where it stays
/// empty.
pub(crate) type Avoid = Vec<String>;

fn avoids(avoid: &[String], name: &str) -> bool {
    avoid.iter().any(|n| n == name)
}

/// Counters for monitoring a client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Open connections to nodes.
    pub connections: usize,
    /// Subscription deliveries dropped because a subscriber fell behind.
    pub dropped_deliveries: u64,
    /// Circuit breaker state per node name.
    pub breakers: Vec<(String, CircuitState)>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn budget_us(left: Duration) -> u64 {
    // 0 means "no deadline" on the wire: never send it for a request that has one.
    micros(left).max(1)
}

fn split_host(seed: &str) -> Option<(&str, &str)> {
    if let Some(rest) = seed.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host, port));
    }
    seed.rsplit_once(':')
}

async fn resolve_seeds(cfg: &ClientConfig) -> Result<Vec<Seed>, ClientError> {
    if cfg.seeds.is_empty() {
        return Err(ClientError::Config(
            "no seeds: call .seeds([\"host:port\"]) with the QUIC address of any node".into(),
        ));
    }
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for s in &cfg.seeds {
        let Some((host, port)) = split_host(s) else {
            return Err(ClientError::Config(format!(
                "seed {s:?} is not host:port (write [v6]:port for IPv6)"
            )));
        };
        if port.parse::<u16>().is_err() {
            return Err(ClientError::Config(format!("seed {s:?} has no valid port")));
        }
        let server_name = cfg.server_name.clone().unwrap_or_else(|| host.to_string());
        match tokio::time::timeout(cfg.connect_timeout, tokio::net::lookup_host(s.as_str())).await {
            Ok(Ok(addrs)) => out.extend(addrs.map(|addr| Seed {
                addr,
                server_name: server_name.clone(),
            })),
            Ok(Err(e)) => failures.push(format!("{s}: {e}")),
            Err(_) => failures.push(format!("{s}: DNS lookup timed out")),
        }
    }
    if out.is_empty() {
        return Err(ClientError::Unreachable {
            detail: format!("no seed resolved: {}", failures.join("; ")),
            maybe_ran: false,
        });
    }
    Ok(out)
}

impl Client {
    /// A builder; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        cortex_transport::tls::install_crypto_provider();
        let tls = cfg.tls.clone().ok_or_else(|| {
            ClientError::Config(
                "no TLS material: call .tls(TlsMaterial::load(ca, cert, key)) or .tls(TlsMaterial::load_ca_only(ca)) with .token(..)".into(),
            )
        })?;
        if !tls.has_identity() && cfg.token.is_none() {
            return Err(ClientError::Config(
                "no client certificate and no token: the cluster accepts neither; pass a client certificate in .tls(..) or call .token(..)".into(),
            ));
        }
        if cfg.default_timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return Err(ClientError::Config("timeouts must be above zero".into()));
        }
        if cfg.subscription_buffer == 0 || cfg.max_attempts == 0 {
            return Err(ClientError::Config(
                "subscription_buffer and max_attempts must be at least 1".into(),
            ));
        }
        SharedCircuitBreaker::new("check", cfg.breaker.clone())
            .map_err(|e| ClientError::Config(format!("circuit breaker: {e}")))?;
        let seeds = resolve_seeds(&cfg).await?;
        let bind = cfg.bind.unwrap_or_else(|| {
            if seeds[0].addr.is_ipv6() {
                SocketAddr::from(([0u16; 8], 0))
            } else {
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        });
        let mut ep = EndpointConfig::new(
            bind,
            tls,
            PeerIdentity::Client {
                name: cfg.name.clone(),
            },
            cfg.cluster.clone(),
        );
        ep.token = cfg.token.clone();
        ep.features = FEATURE_BATCH | FEATURE_TOPOLOGY | FEATURE_REPLY_LANE;
        ep.connect_timeout = cfg.connect_timeout;
        ep.idle_timeout = cfg.idle_timeout;
        ep.keep_alive = cfg.keep_alive;
        ep.lanes = cfg.lanes;
        ep.udp_buffer = cfg.udp_buffer;
        ep.backoff_initial = Duration::from_millis(50);
        ep.backoff_max = Duration::from_secs(2);
        let shared = Arc::new(Shared::new());
        let endpoint = Endpoint::bind(ep, Arc::new(ClientHandler(shared.clone())))
            .map_err(|e| ClientError::from_dial(&e))?;

        let mut errors: Vec<ClientError> = Vec::new();
        let mut connected = false;
        for seed in &seeds {
            match endpoint.connect(seed.addr, &seed.server_name).await {
                Ok(conn) => {
                    tracing::debug!(peer = ?conn.peer(), "connected to seed {}", seed.addr);
                    connected = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(seed = %seed.addr, error = %e, "seed did not answer");
                    errors.push(ClientError::from_dial(&e));
                }
            }
        }
        if !connected {
            // A refusal says more than "unreachable": report it first.
            let refusal = errors
                .iter()
                .find(|e| !matches!(e, ClientError::Unreachable { .. }))
                .cloned();
            return Err(refusal.unwrap_or_else(|| ClientError::Unreachable {
                detail: format!(
                    "none of the seeds answered: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                maybe_ran: false,
            }));
        }

        let retry = RetryPolicy::new(
            RetryConfig {
                max_attempts: u32::MAX,
                base_delay: cfg.retry_base,
                max_delay: cfg.retry_max,
                deadline: None,
            },
            rand::make_rng::<rand::rngs::StdRng>(),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        let inner = Arc::new(Inner {
            cfg,
            endpoint,
            shared: shared.clone(),
            seeds,
            breakers: Mutex::new(HashMap::new()),
            retry,
            next_pick: AtomicUsize::new(0),
            publish_seq: AtomicU64::new(1),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(maintain(
            Arc::downgrade(&inner),
            inner.cancel.clone(),
            shared.clone(),
        ));
        // The node sends its topology right after the handshake; waiting for it briefly
        // lets the very first requests go straight to their owners.
        let mut rx = shared.topology.watch();
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(Option::is_some)).await;
        Ok(Client { inner })
    }

    /// The latest topology any node sent, if one arrived yet.
    pub fn topology(&self) -> Option<Arc<TopologyView>> {
        self.inner.shared.topology.current()
    }

    /// The owner of `id` in the client's current view.
    pub fn owner_of(&self, id: &ActorId) -> Option<NodeId> {
        self.topology().and_then(|v| v.owner(id).cloned())
    }

    /// Waits until the view satisfies `ready` (for example "has 3 owners").
    ///
    /// # Errors
    /// [`ClientError::Timeout`] if it does not within `timeout`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for_topology(
        &self,
        timeout: Duration,
        ready: impl Fn(&TopologyView) -> bool,
    ) -> Result<Arc<TopologyView>, ClientError> {
        let mut rx = self.inner.shared.topology.watch();
        let r = tokio::time::timeout(
            timeout,
            rx.wait_for(|v| v.as_ref().is_some_and(|v| ready(v))),
        )
        .await;
        match r {
            Ok(Ok(v)) => Ok(v.clone().ok_or(ClientError::Closed)?),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout {
                after: timeout,
                detail: "waiting for the topology".into(),
            }),
        }
    }

    /// Connection and breaker counters.
    pub fn stats(&self) -> ClientStats {
        let mut breakers: Vec<(String, CircuitState)> = self
            .inner
            .breakers
            .lock()
            .iter()
            .map(|(n, b)| (n.clone(), b.state()))
            .collect();
        breakers.sort_by(|a, b| a.0.cmp(&b.0));
        ClientStats {
            connections: self.inner.live_connections().len(),
            dropped_deliveries: self.inner.shared.subs.dropped(),
            breakers,
        }
    }

    /// Closes every connection gracefully (queued requests are flushed first) and stops
    /// the background task. Later calls fail with [`ClientError::Closed`].
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.tasks.wait()).await;
        self.inner.endpoint.close().await;
    }
}

impl Inner {
    pub(crate) fn breaker(&self, node: &str) -> SharedCircuitBreaker {
        let mut map = self.breakers.lock();
        if let Some(b) = map.get(node) {
            return b.clone();
        }
        let b = match SharedCircuitBreaker::new(node.to_owned(), self.cfg.breaker.clone()) {
            Ok(b) => b,
            Err(e) => {
                // An invalid breaker config must not stop traffic: fall back to the default.
                tracing::warn!(error = %e, "invalid circuit breaker config; using the default");
                SharedCircuitBreaker::new(node.to_owned(), Default::default())
                    .unwrap_or_else(|_| unreachable_default())
            }
        };
        map.insert(node.to_owned(), b.clone());
        b
    }

    pub(crate) fn live_connections(&self) -> Vec<Connection> {
        self.endpoint
            .connections()
            .into_iter()
            .filter(|c| !c.is_closed() && c.superseded_by().is_none() && c.peer_node().is_some())
            .collect()
    }

    /// Waits `backoff(attempt)` (full jitter), never past `deadline`.
    pub(crate) async fn backoff(&self, attempt: u32, deadline: Instant) {
        let wake = Instant::now() + self.retry.next_delay(attempt);
        tokio::time::sleep_until(wake.min(deadline)).await;
    }

    /// [`Inner::route`] for one attempt of a call: `Ok(None)` when every candidate failed in a
    /// way worth retrying, after forgetting the exclusions, keeping the error in `last` and
    /// waiting this attempt's backoff.
    pub(crate) async fn route_or_back_off(
        &self,
        id: &ActorId,
        avoid: &mut Avoid,
        last: &mut Option<ClientError>,
        attempt: u32,
        deadline: Instant,
    ) -> Result<Option<Route>, ClientError> {
        match self.route(Some(id), avoid, deadline).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_safe_to_retry() => {
                avoid.clear();
                *last = Some(e);
                self.backoff(attempt, deadline).await;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Picks where a request goes: the owner of `id` if the view names one that is not in
    /// `avoid` and can be reached, else any open connection, else any member or seed that
    /// can be dialed.
    pub(crate) async fn route(
        &self,
        id: Option<&ActorId>,
        avoid: &[String],
        deadline: Instant,
    ) -> Result<Route, ClientError> {
        if self.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let view = self.shared.topology.current();
        let digest = view.as_ref().map_or(0, |v| v.digest());
        let mut last: Option<ClientError> = None;
        if let (Some(id), Some(view)) = (id, &view)
            && let Some(owner) = view.owner(id)
            && !avoids(avoid, owner.name())
        {
            match self.dial_member(view, owner, deadline).await {
                Ok((conn, guard)) => {
                    return Ok(Route {
                        conn,
                        node: owner.clone(),
                        digest,
                        guard: Some(guard),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        let conns: Vec<Connection> = self
            .live_connections()
            .into_iter()
            .filter(|c| c.peer_node().is_some_and(|n| !avoids(avoid, n.name())))
            .collect();
        let start = self.next_pick.fetch_add(1, Ordering::Relaxed);
        for k in 0..conns.len() {
            let c = &conns[(start + k) % conns.len()];
            let Some(node) = c.peer_node().cloned() else {
                continue;
            };
            if let Ok(guard) = self.breaker(node.name()).try_acquire() {
                return Ok(Route {
                    conn: c.clone(),
                    node,
                    digest: 0,
                    guard: Some(guard),
                });
            }
        }
        if let Some(view) = &view {
            let owners = view.owners();
            for k in 0..owners.len() {
                let node = &owners[(start + k) % owners.len()];
                if avoids(avoid, node.name()) {
                    continue;
                }
                match self.dial_member(view, node, deadline).await {
                    Ok((conn, guard)) => {
                        return Ok(Route {
                            conn,
                            node: node.clone(),
                            digest: 0,
                            guard: Some(guard),
                        });
                    }
                    Err(e) => last = Some(e),
                }
            }
        }
        for seed in &self.seeds {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let dial = self.endpoint.connect(seed.addr, &seed.server_name);
            match tokio::time::timeout(left, dial).await {
                Ok(Ok(conn)) => {
                    let Some(node) = conn.peer_node().cloned() else {
                        continue;
                    };
                    if avoids(avoid, node.name()) {
                        continue;
                    }
                    return Ok(Route {
                        conn,
                        node,
                        digest: 0,
                        guard: None,
                    });
                }
                Ok(Err(e)) => last = Some(ClientError::from_dial(&e)),
                Err(_) => break,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            detail: "no node of the cluster could be reached".into(),
            maybe_ran: false,
        }))
    }

    async fn dial_member(
        &self,
        view: &TopologyView,
        node: &NodeId,
        deadline: Instant,
    ) -> Result<(Connection, CircuitGuard), ClientError> {
        let guard =
            self.breaker(node.name())
                .try_acquire()
                .map_err(|open| ClientError::Unreachable {
                    detail: format!(
                        "circuit open for {node} after repeated failures; next probe in {:?}",
                        open.retry_after
                    ),
                    maybe_ran: false,
                })?;
        // Hot path: the open connection to this very process, without arming a dial timer.
        if let Some(conn) = self.endpoint.cached_connection(node.name())
            && conn.peer_node() == Some(node)
        {
            return Ok((conn, guard));
        }
        let Some(addr) = view.member(node.name()).map(|m| m.quic_addr) else {
            return Err(ClientError::Unreachable {
                detail: format!("{node} has no address in the topology"),
                maybe_ran: false,
            });
        };
        match tokio::time::timeout_at(deadline, self.endpoint.connection_to(node, addr)).await {
            Ok(Ok(conn)) => Ok((conn, guard)),
            Ok(Err(e @ TransportError::Backoff { .. })) => {
                // Already booked when the dial failed; releasing books nothing twice.
                drop(guard);
                Err(ClientError::from_dial(&e))
            }
            Ok(Err(e)) => {
                guard.failure();
                Err(ClientError::from_dial(&e))
            }
            Err(_) => {
                drop(guard);
                Err(ClientError::Unreachable {
                    detail: format!("the deadline passed while dialing {node} at {addr}"),
                    maybe_ran: false,
                })
            }
        }
    }

    /// One maintenance round: keep a connection open (topology and subscriptions need
    /// one) and move subscriptions off closed connections. False if nothing is reachable.
    async fn maintain_once(&self) -> bool {
        if self.live_connections().is_empty() {
            let deadline = Instant::now() + self.cfg.connect_timeout;
            if let Err(e) = self.route(None, &[], deadline).await {
                tracing::warn!(error = %e, "no node reachable; retrying with backoff");
                return false;
            }
        }
        for (id, topic) in self.shared.subs.orphans() {
            let deadline = Instant::now() + self.cfg.connect_timeout;
            if let Err(e) = self.place_subscription(id, &topic, deadline).await {
                tracing::debug!(subscription = id, error = %e, "subscription not re-placed yet");
                return false;
            }
        }
        true
    }
}

/// `SharedCircuitBreaker::new` with the default config cannot fail (it is valid by
/// construction); this is only reached if that invariant is ever broken.
fn unreachable_default() -> SharedCircuitBreaker {
    SharedCircuitBreaker::from_core(
        "default",
        cortex_runtime::resilience::CircuitBreaker::new(Default::default())
            .unwrap_or_else(|e| panic!("the default circuit breaker config is valid: {e}")),
    )
}

/// Keeps the client connected: wakes on a closed connection or every second, reconnects
/// with exponential backoff (full jitter) while nothing is reachable.
async fn maintain(weak: std::sync::Weak<Inner>, cancel: CancellationToken, shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        let wait = {
            let Some(inner) = weak.upgrade() else { return };
            if inner.maintain_once().await {
                failures = 0;
                Duration::from_secs(1)
            } else {
                failures = failures.saturating_add(1);
                inner
                    .retry
                    .next_delay(failures.min(8))
                    .max(Duration::from_millis(50))
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_split() {
        assert_eq!(split_host("127.0.0.1:7400"), Some(("127.0.0.1", "7400")));
        assert_eq!(split_host("[::1]:7400"), Some(("::1", "7400")));
        assert_eq!(
            split_host("node-0.cortex:7400"),
            Some(("node-0.cortex", "7400"))
        );
        assert_eq!(split_host("nope"), None);
    }

    #[tokio::test]
    async fn bad_settings_are_config_errors() {
        let e = Client::builder().connect().await.unwrap_err();
        assert!(matches!(e, ClientError::Config(_)), "{e}");
        let e = Client::builder()
            .seeds(["127.0.0.1:1"])
            .tls(cortex_transport::TlsMaterial::ca_only(String::new()))
            .connect()
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("no client certificate and no token"),
            "{e}"
        );
        let e = Client::builder()
            .seeds(["no-port"])
            .tls(cortex_transport::TlsMaterial::ca_only(String::new()))
            .token("t0ken-t0ken-t0ken")
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Config(_)), "{e}");
    }
}
