//! The QUIC endpoint: one per process, server and client at once. Owns every connection
//! task, keeps one connection per peer (with a deterministic tie-break when two nodes dial
//! each other at once) and remembers failed dials so a hot path cannot hammer a dead peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cortex_protocol::{NodeId, PeerIdentity};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EndpointConfig, MAX_LANES};
use crate::connection::Connection;
use crate::error::TransportError;
use crate::handler::Handler;
use crate::handshake::code;
use crate::tls;

mod driver;
mod socket;

pub use socket::{SocketBuffers, bind_udp_socket};

struct Backoff {
    failures: u32,
    until: Instant,
    last_error: String,
}

/// Endpoints made so far in this process (for `EndpointInner::uid`).
static ENDPOINTS: AtomicU64 = AtomicU64::new(0);

/// The connection a thread last got from [`Endpoint::with_cached_connection`].
struct LastPeer {
    endpoint: u64,
    generation: u64,
    name: String,
    conn: Connection,
}

thread_local! {
    static LAST_PEER: std::cell::RefCell<Option<LastPeer>> = const { std::cell::RefCell::new(None) };
}

pub(crate) struct EndpointInner {
    quinn: quinn::Endpoint,
    cfg: EndpointConfig,
    me: Option<NodeId>,
    handler: Arc<dyn Handler>,
    /// The connection used for each peer node, by node name.
    peers: Mutex<HashMap<String, Connection>>,
    /// Bumped, under the `peers` lock, whenever `peers` changes (see
    /// [`Endpoint::with_cached_connection`]).
    pub(crate) peers_gen: AtomicU64,
    /// Tells this endpoint's connections from another's in a thread's cache.
    uid: u64,
    /// Every live connection, by id.
    conns: Mutex<HashMap<u64, Connection>>,
    /// The last counters of connections that closed since [`Endpoint::take_closed`] was
    /// last called, oldest first, at most [`MAX_CLOSED_KEPT`].
    pub(crate) closed: Mutex<std::collections::VecDeque<ClosedConnection>>,
    backoff: Mutex<HashMap<String, Backoff>>,
    dial_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    seq: AtomicU64,
}

/// Closed connections whose final counters [`Endpoint::take_closed`] keeps between calls.
pub const MAX_CLOSED_KEPT: usize = 1024;

/// A connection that closed, with its last counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedConnection {
    /// [`Connection::id`] of the connection.
    pub id: u64,
    /// The peer node, when the peer was a node (not a client).
    pub peer: Option<cortex_protocol::NodeId>,
    /// Its counters when it closed.
    pub stats: crate::ConnectionStats,
}

/// Cancels every task of the endpoint when the last [`Endpoint`] handle goes away.
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A QUIC endpoint speaking the Cortex protocol. Cheap to clone. Keep one alive for as long
/// as its connections are used: dropping the last handle closes them all.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use cortex_protocol::{Ask, Envelope, MessageName, NodeId, PeerIdentity, ReplyResult};
/// use cortex_protocol::{RequestId, RequestMeta, Target};
/// use cortex_transport::certs::{generate_ca, issue, CertRole};
/// use cortex_transport::{Connection, Endpoint, EndpointConfig, Handler, Responder, TlsMaterial};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_envelope(&self, _: &Connection, _: Envelope) {}
///     fn on_ask(&self, _: &Connection, ask: Ask, reply: Responder) {
///         reply.send(ReplyResult::Ok { message: ask.message, payload: ask.payload });
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let ca = generate_ca("demo").unwrap();
/// let node = |name: &str| {
///     let cert = issue(&ca, name, CertRole::Node, &[]).unwrap();
///     let id = PeerIdentity::Node(NodeId::new(name, 1).unwrap());
///     let tls = TlsMaterial::from_certified(&ca, &cert);
///     Endpoint::bind(EndpointConfig::new("127.0.0.1:0".parse().unwrap(), tls, id, "demo"), Arc::new(Echo)).unwrap()
/// };
/// let (a, b) = (node("a"), node("b"));
/// let conn = a.connect(b.local_addr().unwrap(), "b").await.unwrap();
/// let ask = Ask {
///     request: RequestId(0), // assigned by the connection
///     target: Target::Virtual("echo/1".parse().unwrap()),
///     message: MessageName::new("demo.Ping").unwrap(),
///     payload: vec![1, 2, 3].into(),
///     meta: RequestMeta::default(),
///     epoch: 0,
///     idempotency_key: None,
/// };
/// let reply = conn.ask(ask, Duration::from_secs(5)).await.unwrap();
/// assert!(matches!(reply, ReplyResult::Ok { payload, .. } if payload[..] == [1, 2, 3]));
/// a.close().await;
/// b.close().await;
/// # });
/// ```
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
    _guard: Arc<DropGuard>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("identity", &self.inner.cfg.identity)
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

/// Ack-eliciting packets a peer may receive before it must acknowledge at once (QUIC's
/// default is 1: an ACK for every other packet). Requests and replies flow both ways, so an
/// acknowledgement nearly always rides on the next packet going back; with the default, a
/// node answering asks at 10k/s got an ACK-only packet for every ~1.6 packets of replies,
/// each costing both processes a syscall and a decrypt (about a tenth of an ask's CPU).
/// The delay is still bounded by `max_ack_delay` (25 ms), which loss detection accounts
/// for; quinn on both ends supports the ACK frequency extension this relies on.
const ACK_ELICITING_THRESHOLD: u32 = 8;

fn transport_config(cfg: &EndpointConfig) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|_| TransportError::Config("idle_timeout is too large".into()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(cfg.keep_alive));
    // The lanes and the reply lane.
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_LANES as u32 + 1));
    // One bidirectional stream per connection: the handshake.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(2));
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    t.ack_frequency_config(Some(ack));
    Ok(t)
}

impl Endpoint {
    /// Binds the UDP socket and starts accepting (for a `Node` identity).
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`TransportError::Config`] for an unusable configuration, [`TransportError::Tls`] for
    /// bad certificate material, [`TransportError::Bind`] if the socket cannot be bound.
    pub fn bind(
        cfg: EndpointConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Endpoint, TransportError> {
        cfg.validate()?;
        tls::install_crypto_provider();
        let transport = Arc::new(transport_config(&cfg)?);
        let client_crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(&cfg.tls)?)
                .map_err(|e| TransportError::Config(format!("QUIC client crypto: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport.clone());
        let me = match &cfg.identity {
            PeerIdentity::Node(n) => Some(n.clone()),
            PeerIdentity::Client { .. } => None,
        };
        let bind_err = |source| TransportError::Bind {
            addr: cfg.bind,
            source,
        };
        let server = if me.is_some() {
            let server_crypto = tls::server_config(&cfg.tls, !cfg.accepted_tokens.is_empty())?;
            let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto)
                .map_err(|e| TransportError::Config(format!("QUIC server crypto: {e}")))?;
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
            server.transport_config(transport);
            Some(server)
        } else {
            None
        };
        let (udp, _) = socket::bind_udp_socket(cfg.bind, cfg.udp_buffer).map_err(bind_err)?;
        let mut quinn_ep = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            server,
            udp,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        quinn_ep.set_default_client_config(client);
        let cancel = CancellationToken::new();
        let inner = Arc::new(EndpointInner {
            quinn: quinn_ep,
            me,
            handler,
            peers: Mutex::new(HashMap::new()),
            peers_gen: AtomicU64::new(0),
            uid: ENDPOINTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            conns: Mutex::new(HashMap::new()),
            closed: Mutex::new(std::collections::VecDeque::new()),
            backoff: Mutex::new(HashMap::new()),
            dial_locks: Mutex::new(HashMap::new()),
            cancel: cancel.clone(),
            tracker: TaskTracker::new(),
            seq: AtomicU64::new(0),
            cfg,
        });
        if inner.me.is_some() {
            inner.tracker.spawn(driver::accept_loop(inner.clone()));
        }
        Ok(Endpoint {
            inner,
            _guard: Arc::new(DropGuard(cancel)),
        })
    }

    /// The bound UDP address (with the OS-chosen port when bound to port 0).
    ///
    /// # Errors
    /// The OS error if the socket is gone.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.quinn.local_addr()
    }

    /// This endpoint's configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.inner.cfg
    }

    /// Dials `addr`, verifying its certificate for `server_name` (a node's name, or
    /// `localhost`), and runs the protocol handshake, all within `connect_timeout`.
    ///
    /// The result is registered as the connection for the peer node; if a connection to
    /// that node already exists and wins the tie-break, that one is returned instead.
    ///
    /// # Errors
    /// [`TransportError::TlsHandshake`], [`TransportError::Refused`],
    /// [`TransportError::VersionMismatch`], [`TransportError::IdentityMismatch`],
    /// [`TransportError::Timeout`], [`TransportError::Connect`] and the like.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, TransportError> {
        if self.inner.cancel.is_cancelled() {
            return Err(TransportError::EndpointClosed);
        }
        let after = self.inner.cfg.connect_timeout;
        match tokio::time::timeout(after, self.inner.clone().dial(addr, server_name)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                peer: addr,
                what: "connect and handshake",
                after,
            }),
        }
    }

    /// The connection to `node`, reusing the cached one or dialing `addr`.
    ///
    /// Concurrent callers share one dial. After a failed dial, calls fail fast with
    /// [`TransportError::Backoff`] until the backoff window (doubling per failure, capped
    /// at `backoff_max`) has passed.
    ///
    /// # Errors
    /// As [`Endpoint::connect`], plus [`TransportError::Backoff`] and
    /// [`TransportError::UnexpectedPeer`] when another incarnation answers.
    pub async fn connection_to(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<Connection, TransportError> {
        if let Some(c) = self.cached(node, addr)? {
            return Ok(c);
        }
        self.check_backoff(node.name())?;
        let lock = self
            .inner
            .dial_locks
            .lock()
            .entry(node.name().to_string())
            .or_default()
            .clone();
        let after = self.inner.cfg.connect_timeout;
        let _turn = tokio::time::timeout(after, lock.lock())
            .await
            .map_err(|_| TransportError::Timeout {
                peer: addr,
                what: "waiting for another dial",
                after,
            })?;
        // Someone else may have dialed (or failed to) while we waited.
        if let Some(c) = self.cached(node, addr)? {
            return Ok(c);
        }
        self.check_backoff(node.name())?;
        match self.connect(addr, node.name()).await {
            Ok(conn) => {
                self.inner.backoff.lock().remove(node.name());
                match conn.peer_node() {
                    Some(got) if got == node => Ok(conn),
                    Some(got) => Err(TransportError::UnexpectedPeer {
                        peer: addr,
                        expected: node.clone(),
                        got: got.clone(),
                    }),
                    None => Err(TransportError::Protocol {
                        peer: addr,
                        reason: "peer is not a node".into(),
                    }),
                }
            }
            Err(e) => {
                self.record_failure(node.name(), &e);
                Err(e)
            }
        }
    }

    fn cached(
        &self,
        node: &NodeId,
        addr: SocketAddr,
    ) -> Result<Option<Connection>, TransportError> {
        let peers = self.inner.peers.lock();
        let Some(c) = peers.get(node.name()) else {
            return Ok(None);
        };
        if c.is_closed() {
            return Ok(None);
        }
        match c.peer_node() {
            Some(got) if got == node => Ok(Some(c.clone())),
            Some(got) if got.incarnation() > node.incarnation() => {
                Err(TransportError::UnexpectedPeer {
                    peer: addr,
                    expected: node.clone(),
                    got: got.clone(),
                })
            }
            _ => Ok(None),
        }
    }

    fn check_backoff(&self, name: &str) -> Result<(), TransportError> {
        let b = self.inner.backoff.lock();
        if let Some(b) = b.get(name) {
            let now = Instant::now();
            if now < b.until {
                return Err(TransportError::Backoff {
                    peer: name.to_string(),
                    retry_in: b.until - now,
                    last_error: b.last_error.clone(),
                });
            }
        }
        Ok(())
    }

    fn record_failure(&self, name: &str, e: &TransportError) {
        let cfg = &self.inner.cfg;
        let mut map = self.inner.backoff.lock();
        let b = map.entry(name.to_string()).or_insert(Backoff {
            failures: 0,
            until: Instant::now(),
            last_error: String::new(),
        });
        b.failures = b.failures.saturating_add(1);
        let factor = 1u32 << (b.failures - 1).min(16);
        let window = cfg
            .backoff_initial
            .saturating_mul(factor)
            .min(cfg.backoff_max);
        b.until = Instant::now() + window;
        b.last_error = e.to_string();
    }

    /// The cached connection to a node by name, if one is open.
    ///
    /// This is on every remote request's path, so it checks only the connection's own
    /// closed flag (no lock on quinn's connection state, which its driver holds while it
    /// sends and receives): a connection quinn closed microseconds ago, before its driver
    /// marked it, may still be returned, and a request on it fails with
    /// [`crate::TransportError::ConnectionLost`] like one sent just before the close.
    pub fn cached_connection(&self, name: &str) -> Option<Connection> {
        let c = self.inner.peers.lock().get(name).cloned()?;
        (!c.marked_closed()).then_some(c)
    }

    /// Runs `f` with [`Self::cached_connection`]`(name)`, without cloning it and, when this
    /// thread asked for the same peer last and the peer table has not changed since, without
    /// the table's lock: every remote request of a busy node asks, from every worker thread,
    /// and the lock, the name's hash and the clone's reference count were shared writes.
    /// `None` when no open connection to `name` is cached.
    ///
    /// A thread keeps the last connection it was given until it asks again (one per thread).
    pub fn with_cached_connection<R>(
        &self,
        name: &str,
        f: impl FnOnce(&Connection) -> R,
    ) -> Option<R> {
        let inner = &*self.inner;
        let generation = inner.peers_gen.load(std::sync::atomic::Ordering::Acquire);
        let mut f = Some(f);
        let done = LAST_PEER.try_with(|last| {
            let mut last = last.try_borrow_mut().ok()?;
            let hit = last.as_ref().is_some_and(|l| {
                l.endpoint == inner.uid && l.generation == generation && l.name == name
            });
            if !hit {
                let peers = inner.peers.lock();
                // Bumped only under this lock: consistent with the table read here.
                let generation = inner.peers_gen.load(std::sync::atomic::Ordering::Relaxed);
                *last = peers.get(name).map(|c| LastPeer {
                    endpoint: inner.uid,
                    generation,
                    name: name.to_owned(),
                    conn: c.clone(),
                });
            }
            // No connection (just looked up) or a closed one: `None` without a second lookup.
            let Some(conn) = last.as_ref().map(|l| &l.conn) else {
                return Some(None);
            };
            if conn.marked_closed() {
                return Some(None);
            }
            Some(Some((f.take()?)(conn)))
        });
        match done {
            Ok(Some(r)) => r,
            // This thread's cache is unavailable (a nested call, or the thread is exiting).
            _ => {
                let c = self.cached_connection(name)?;
                // The closure above takes `f` only to return its result, so it is here.
                f.map(|f| f(&c))
            }
        }
    }

    /// Every open connection (including duplicates still draining).
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.conns.lock().values().cloned().collect()
    }

    /// The final counters of the connections that closed since the last call, oldest
    /// first (at most [`MAX_CLOSED_KEPT`]; older ones are dropped). A metrics scrape that
    /// reports counters by the difference since its previous scrape reads these too, so
    /// that what a connection did between its last scrape and its close is not lost.
    ///
    /// A connection is listed here before it leaves [`Endpoint::connections`], so a
    /// scrape that reads `connections()` and then `take_closed()` sees every connection
    /// in at least one of them.
    ///
    /// # Examples
    /// ```
    /// // Bytes sent by the connections that closed since the last call.
    /// fn sent_by_closed(ep: &cortex_transport::Endpoint) -> u64 {
    ///     ep.take_closed().iter().map(|c| c.stats.bytes_sent).sum()
    /// }
    /// ```
    pub fn take_closed(&self) -> Vec<ClosedConnection> {
        self.inner.closed.lock().drain(..).collect()
    }

    /// Closes gracefully: stops accepting, lets every lane write what callers queued and
    /// waits (up to `drain_timeout`) for the peers to acknowledge it, then closes every
    /// connection with the shutdown code.
    pub async fn close(&self) {
        let inner = &self.inner;
        inner.quinn.set_server_config(None);
        inner.cancel.cancel();
        inner.tracker.close();
        // Drivers bound their own drain by drain_timeout; allow a little beyond for the
        // close itself.
        let deadline = Instant::now() + inner.cfg.drain_timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout_at(deadline, inner.tracker.wait()).await;
        inner.quinn.close(code::SHUTDOWN, b"endpoint shutting down");
        let _ = tokio::time::timeout_at(deadline, inner.quinn.wait_idle()).await;
    }
}
