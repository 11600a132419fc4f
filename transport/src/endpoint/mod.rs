//! The QUIC endpoint: one per process, server and client at once. Owns every connection
//! task, keeps one connection per peer (with a deterministic tie-break when two nodes dial
//! each other at once) and remembers failed dials so a hot path cannot hammer a dead peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cortex_protocol::{NodeId, PeerIdentity};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EndpointConfig, MAX_LANES};
use crate::connection::{Connection, LaneSpec, NewConn};
use crate::error::{TransportError, from_connection_error};
use crate::handler::Handler;
use crate::handshake::{self, Negotiated, code};
use crate::lane::{self, Writer};
use crate::tls;

struct Backoff {
    failures: u32,
    until: Instant,
    last_error: String,
}

pub(crate) struct EndpointInner {
    quinn: quinn::Endpoint,
    cfg: EndpointConfig,
    me: Option<NodeId>,
    handler: Arc<dyn Handler>,
    /// The connection used for each peer node, by node name.
    peers: Mutex<HashMap<String, Connection>>,
    /// Every live connection, by id.
    conns: Mutex<HashMap<u64, Connection>>,
    backoff: Mutex<HashMap<String, Backoff>>,
    dial_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    seq: AtomicU64,
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

fn transport_config(cfg: &EndpointConfig) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|_| TransportError::Config("idle_timeout is too large".into()))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(cfg.keep_alive));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_LANES as u32));
    // One bidirectional stream per connection: the handshake.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(2));
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
        let mut quinn_ep = if me.is_some() {
            let server_crypto = tls::server_config(&cfg.tls, !cfg.accepted_tokens.is_empty())?;
            let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto)
                .map_err(|e| TransportError::Config(format!("QUIC server crypto: {e}")))?;
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
            server.transport_config(transport);
            quinn::Endpoint::server(server, cfg.bind).map_err(bind_err)?
        } else {
            quinn::Endpoint::client(cfg.bind).map_err(bind_err)?
        };
        quinn_ep.set_default_client_config(client);
        let cancel = CancellationToken::new();
        let inner = Arc::new(EndpointInner {
            quinn: quinn_ep,
            me,
            handler,
            peers: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            dial_locks: Mutex::new(HashMap::new()),
            cancel: cancel.clone(),
            tracker: TaskTracker::new(),
            seq: AtomicU64::new(0),
            cfg,
        });
        if inner.me.is_some() {
            inner.tracker.spawn(accept_loop(inner.clone()));
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
    pub fn cached_connection(&self, name: &str) -> Option<Connection> {
        self.inner
            .peers
            .lock()
            .get(name)
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Every open connection (including duplicates still draining).
    pub fn connections(&self) -> Vec<Connection> {
        self.inner.conns.lock().values().cloned().collect()
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

impl EndpointInner {
    async fn dial(
        self: Arc<Self>,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, TransportError> {
        let connecting =
            self.quinn
                .connect(addr, server_name)
                .map_err(|e| TransportError::Connect {
                    peer: addr,
                    reason: e.to_string(),
                })?;
        let qc = connecting
            .await
            .map_err(|e| from_connection_error(addr, &e))?;
        let (neg, _) = match handshake::dial(&qc, &self.cfg).await {
            Ok(v) => v,
            Err(e) => {
                qc.close(code::REFUSED, b"handshake failed");
                return Err(e);
            }
        };
        self.establish(qc, neg, true).await
    }

    /// Sets up lanes and tasks for a handshaken connection, registers it and returns the
    /// connection to use for the peer (which is another one if this one lost a tie-break).
    async fn establish(
        self: Arc<Self>,
        qc: quinn::Connection,
        neg: Negotiated,
        dialed_by_us: bool,
    ) -> Result<Connection, TransportError> {
        let cfg = &self.cfg;
        let conn = Connection::new(
            NewConn {
                quinn: qc.clone(),
                peer: neg.peer,
                dialed_by_us,
                version: neg.version,
                features: neg.features,
                max_pending: cfg.max_pending_asks,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
            },
            &LaneSpec {
                lanes: cfg.lanes,
                queue: cfg.batch.queue,
                reply_queue: cfg.batch.reply_queue,
                batch_limit: cfg.batch_limit(),
                max_frame: cfg.max_frame,
            },
        );
        let mut streams = Vec::with_capacity(cfg.lanes);
        for _ in 0..cfg.lanes {
            streams.push(
                qc.open_uni()
                    .await
                    .map_err(|e| from_connection_error(qc.remote_address(), &e))?,
            );
        }
        let (winner, announce) = self.register(&conn);
        self.tracker
            .spawn(self.clone().drive(conn, streams, announce));
        Ok(winner)
    }

    /// Records `conn`; returns the connection to use for its peer and whether `conn` is it.
    fn register(&self, conn: &Connection) -> (Connection, bool) {
        self.conns.lock().insert(conn.id(), conn.clone());
        let Some(peer) = conn.peer_node().cloned() else {
            return (conn.clone(), true);
        };
        let mut peers = self.peers.lock();
        let old = match peers.get(peer.name()) {
            Some(old) if !old.is_closed() => old.clone(),
            _ => {
                peers.insert(peer.name().to_string(), conn.clone());
                return (conn.clone(), true);
            }
        };
        // Both ends hold the same pair of node ids, so they pick the same winner.
        let new_wins = match old.peer_node() {
            Some(o) if o.incarnation() != peer.incarnation() => {
                peer.incarnation() > o.incarnation()
            }
            _ => self.prefer(conn, &old),
        };
        if new_wins {
            peers.insert(peer.name().to_string(), conn.clone());
            drop(peers);
            tracing::debug!(peer = %peer, "connection {} replaces {}", conn.id(), old.id());
            old.supersede(conn);
            (conn.clone(), true)
        } else {
            drop(peers);
            tracing::debug!(peer = %peer, "connection {} loses to {}", conn.id(), old.id());
            conn.supersede(&old);
            (old, false)
        }
    }

    /// True when `a` should win over `b` (same peer, same incarnation): the connection
    /// dialed by the smaller node id wins; between two dialed by the same side, the newer.
    fn prefer(&self, a: &Connection, b: &Connection) -> bool {
        let dialer_is_smaller = |c: &Connection| match (&self.me, c.peer_node()) {
            (Some(me), Some(peer)) => c.dialed_by_us() == (me < peer),
            _ => true,
        };
        match (dialer_is_smaller(a), dialer_is_smaller(b)) {
            (true, false) => true,
            (false, true) => false,
            _ => a.inner.seq > b.inner.seq,
        }
    }

    async fn drive(
        self: Arc<Self>,
        conn: Connection,
        streams: Vec<quinn::SendStream>,
        announce: bool,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut writers = tokio::task::JoinSet::new();
        for (lane, stream) in streams.into_iter().enumerate() {
            writers.spawn(
                Writer {
                    stream,
                    conn: conn.clone(),
                    lane,
                }
                .run(),
            );
        }
        if announce {
            self.handler.on_connection(&conn);
        }
        tasks.spawn(lane::accept_lanes(
            conn.clone(),
            self.handler.clone(),
            self.cfg.max_frame,
        ));
        let qc = conn.inner.quinn.clone();
        let reason = tokio::select! {
            e = qc.closed() => describe_close(&e),
            _ = self.cancel.cancelled() => {
                // Flush what callers queued and wait for the peer to acknowledge it, then
                // close; bounded by drain_timeout.
                for o in &conn.inner.outboxes {
                    o.finish();
                }
                let drained = async { while writers.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(self.cfg.drain_timeout, drained).await;
                qc.close(code::SHUTDOWN, b"endpoint shutting down");
                "this endpoint shut down".to_string()
            }
            r = self.retire_when_superseded(&conn) => r,
        };
        tracing::debug!(peer = %conn.inner.peer_label, "connection {} closed: {reason}", conn.id());
        conn.mark_closed(reason);
        self.conns.lock().remove(&conn.id());
        {
            let mut peers = self.peers.lock();
            if let Some(name) = conn.peer_node().map(|n| n.name().to_string())
                && peers.get(&name).is_some_and(|c| c.same(&conn))
            {
                peers.remove(&name);
            }
        }
        if announce && conn.superseded_by().is_none() {
            self.handler.on_disconnect(&conn);
        }
        tasks.shutdown().await;
        writers.shutdown().await;
    }

    /// Once `conn` is superseded, lets in-flight traffic finish (linger, then until nothing
    /// is pending or the drain deadline passes) and closes it.
    async fn retire_when_superseded(&self, conn: &Connection) -> String {
        if conn.superseded_by().is_none() {
            conn.inner.superseded_notify.notified().await;
        }
        let cfg = &self.cfg;
        tokio::time::sleep(cfg.duplicate_linger).await;
        let deadline = Instant::now() + cfg.drain_timeout;
        while !conn.quiescent() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let same_incarnation = match (
            conn.peer_node(),
            conn.superseded_by()
                .as_ref()
                .and_then(|w| w.peer_node().cloned()),
        ) {
            (Some(a), Some(b)) => a.incarnation() == b.incarnation(),
            _ => true,
        };
        let (c, why) = if same_incarnation {
            (
                code::DUPLICATE,
                "duplicate connection closed after a simultaneous dial",
            )
        } else {
            (
                code::SUPERSEDED,
                "replaced by a newer incarnation of the peer",
            )
        };
        conn.inner.quinn.close(c, why.as_bytes());
        why.to_string()
    }
}

fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(a) => {
            let reason = String::from_utf8_lossy(&a.reason);
            let what = match a.error_code {
                c if c == code::NORMAL => "closed by the peer",
                c if c == code::PROTOCOL_VIOLATION => "the peer reported a protocol violation",
                c if c == code::REFUSED => "the peer refused the handshake",
                c if c == code::DUPLICATE => "duplicate connection closed by the peer",
                c if c == code::SUPERSEDED => "superseded",
                c if c == code::SHUTDOWN => "the peer shut down",
                _ => "closed by the peer with an unknown code",
            };
            if reason.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {reason}")
            }
        }
        quinn::ConnectionError::TimedOut => "idle timeout: the peer stopped answering".into(),
        other => other.to_string(),
    }
}

async fn accept_loop(inner: Arc<EndpointInner>) {
    let slots = Arc::new(Semaphore::new(inner.cfg.max_concurrent_handshakes));
    loop {
        let incoming = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            i = inner.quinn.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(from = %incoming.remote_address(), "refusing connection: too many handshakes in progress");
            incoming.refuse();
            continue;
        };
        let inner2 = inner.clone();
        inner.tracker.spawn(async move {
            let _permit = permit;
            let from = incoming.remote_address();
            let after = inner2.cfg.connect_timeout;
            let cancel = inner2.cancel.clone();
            let work = tokio::time::timeout(after, inner2.accept_one(incoming));
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = work => r,
            };
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::info!(%from, "inbound connection refused: {e}"),
                Err(_) => tracing::info!(%from, "inbound handshake timed out after {after:?}"),
            }
        });
    }
}

impl EndpointInner {
    async fn accept_one(
        self: Arc<Self>,
        incoming: quinn::Incoming,
    ) -> Result<Connection, TransportError> {
        let from = incoming.remote_address();
        let qc = incoming
            .await
            .map_err(|e| from_connection_error(from, &e))?;
        let Some(me) = self.me.clone() else {
            return Err(TransportError::Unsupported("accept connections"));
        };
        let neg = handshake::accept(&qc, &self.cfg, &me).await?;
        self.establish(qc, neg, false).await
    }
}
