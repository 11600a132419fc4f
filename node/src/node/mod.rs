//! A running Cortex node: the library entry point ([`NodeBuilder`], [`Node`]) and the
//! binary's [`run_node`].
//!
//! Start order: incarnation, TLS, the actor system and its kinds, the HTTP listener and the
//! QUIC endpoint (so their OS-picked ports are known), then membership, which publishes those
//! addresses. A watcher task turns every membership change into a new ring view, passivates
//! the activations this node no longer owns (handover) and pushes the topology to clients.
//!
//! # Examples
//! ```no_run
//! use std::time::Duration;
//! use cortex_node::{NodeBuilder, config::NodeConfig};
//! use cortex_runtime::{Actor, Context, Handler, Kind};
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)] struct Deposit(u64);
//! cortex_runtime::message!(Deposit => u64, "bank.Deposit");
//! struct Account(u64);
//! impl Actor for Account {}
//! impl Handler<Deposit> for Account {
//!     async fn handle(&mut self, d: Deposit, _: &mut Context<Self>) -> u64 { self.0 += d.0; self.0 }
//! }
//! # async fn run(config: NodeConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let node = NodeBuilder::new(config)
//!     .kind(Kind::new("account", |_| Account(0)).handles::<Deposit>())
//!     .start()
//!     .await?;
//! let balance = node
//!     .ask::<Account, _>(&"account/alice".parse()?, Deposit(5), Duration::from_secs(2))
//!     .await?;
//! assert_eq!(balance, 5);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod actors_http;
mod admin;
mod entry;
mod inbound;
mod inner;
mod pubsub;
mod scrape;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use cortex_protocol::{ActorId, NodeId, PeerIdentity, TopicId};
use cortex_runtime::{
    Actor, ActorError, Codec, Handler, Kind, RemoteMessage, SubscribeOptions, Subscription, System,
    SystemConfig, VirtualConfig,
};
use cortex_transport::{Endpoint, EndpointConfig, TlsMaterial};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{NodeConfig, next_incarnation};
use crate::http::{AdminServer, HttpLimits};
use crate::membership::{MemberMeta, Membership, MembershipConfig, SeedSpec};
use crate::metrics::NodeMetrics;
use crate::placement::Placement;
use crate::routing::activations::ActivationLog;
use crate::routing::dedupe::Dedupe;

pub use entry::main_with;
pub use inner::MAX_HOPS;
pub use pubsub::Published;

use inner::NodeInner;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The incarnation could not be persisted in the data directory.
    #[error("cannot record the incarnation in the data directory: {0}")]
    Incarnation(String),
    /// TLS files are missing or invalid.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] cortex_transport::TlsError),
    /// The QUIC endpoint could not start.
    #[error("QUIC endpoint failed: {0}")]
    Transport(#[from] cortex_transport::TransportError),
    /// Membership could not start.
    #[error("membership failed to start: {0}")]
    Membership(#[from] crate::membership::MembershipError),
    /// The HTTP endpoint could not bind.
    #[error("cannot bind the HTTP endpoint {addr}: {source} (pick another --http-bind port)")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// An actor kind was registered twice or has a bad name.
    #[error("actor kind registration failed: {0}")]
    Kind(#[from] cortex_runtime::RegisterError),
    /// A setting is invalid.
    #[error("invalid node setting: {0}")]
    Config(String),
}

type KindReg = Box<
    dyn FnOnce(&cortex_runtime::VirtualRegistry) -> Result<(), cortex_runtime::RegisterError>
        + Send,
>;

/// Configures and starts a [`Node`].
pub struct NodeBuilder {
    config: NodeConfig,
    kinds: Vec<KindReg>,
    kind_names: Vec<String>,
    virtuals: VirtualConfig,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("node", &self.config.node_name)
            .field("kinds", &self.kinds.len())
            .finish()
    }
}

impl NodeBuilder {
    /// A builder for a node with `config`.
    pub fn new(config: NodeConfig) -> Self {
        Self {
            config,
            kinds: Vec::new(),
            kind_names: Vec::new(),
            virtuals: VirtualConfig::default().event_capacity(65_536),
        }
    }

    /// Registers a virtual actor kind. Every node of a cluster must register the same kinds.
    pub fn kind<A: Actor>(mut self, kind: Kind<A>) -> Self {
        self.kind_names.push(kind.name().to_owned());
        self.kinds.push(Box::new(move |reg| reg.register(kind)));
        self
    }

    /// Sets the virtual-actor limits (live activations per node, sweep interval).
    pub fn virtuals(mut self, config: VirtualConfig) -> Self {
        self.virtuals = config.event_capacity(65_536);
        self
    }

    /// Starts the node: binds its ports, joins the cluster through its seeds and begins
    /// serving. Returns once everything is listening; joining continues in the background
    /// (see `GET /ready`).
    ///
    /// # Errors
    /// [`NodeError`] naming what failed; nothing is left running.
    pub async fn start(self) -> Result<Node, NodeError> {
        cortex_transport::tls::install_crypto_provider();
        let cfg = self.config;
        let incarnation =
            next_incarnation(&cfg.data_dir).map_err(|e| NodeError::Incarnation(e.to_string()))?;
        let id = NodeId::new(cfg.node_name.clone(), incarnation)
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let tls = TlsMaterial::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)?;

        let system = System::new(SystemConfig::default().virtuals(self.virtuals));
        for reg in self.kinds {
            reg(system.virtuals())?;
        }

        let http_listener =
            tokio::net::TcpListener::bind(cfg.http.bind)
                .await
                .map_err(|source| NodeError::Http {
                    addr: cfg.http.bind,
                    source,
                })?;
        let http_bound = http_listener
            .local_addr()
            .map_err(|source| NodeError::Http {
                addr: cfg.http.bind,
                source,
            })?;
        let http_addr = cfg.advertised(&cfg.http, http_bound);

        let mut ep_cfg = EndpointConfig::new(
            cfg.quic.bind,
            tls,
            PeerIdentity::Node(id.clone()),
            cfg.cluster_name.clone(),
        );
        ep_cfg.max_frame = cfg.max_frame_size;
        ep_cfg.udp_buffer = cfg.udp_buffer_size;
        ep_cfg.hello_versions = cfg.protocol_versions;
        ep_cfg.accepted_tokens = cfg
            .client_tokens
            .iter()
            .map(|t| String::from_utf8_lossy(t.expose()).into_owned())
            .collect();

        let metrics = NodeMetrics::new(id.name());
        for k in &self.kind_names {
            metrics.register_kind(k);
        }
        crate::system::start(&system, &cfg.system_actors, &metrics);
        let placement = Placement::new(id.clone(), cfg.vnodes, cfg.settle_time);
        let cancel = CancellationToken::new();
        let inner = Arc::new(NodeInner::new(
            id.clone(),
            cfg.clone(),
            system,
            placement,
            ActivationLog::new(id.clone(), 200_000),
            Dedupe::new(cfg.idempotency_window, 100_000),
            metrics,
            cancel.clone(),
        ));
        // Always on: answered idempotency keys follow their actors through handovers.
        crate::system::handover::spawn(&inner.system, inner.dedupe.clone(), inner.metrics.clone());
        inner.metrics.register_kind(crate::metrics::SYSTEM);
        let endpoint = Endpoint::bind(ep_cfg, Arc::new(inbound::Inbound(Arc::downgrade(&inner))))?;
        let quic_bound = endpoint.local_addr().map_err(|e| {
            NodeError::Transport(cortex_transport::TransportError::Config(e.to_string()))
        })?;
        let quic_addr = cfg.advertised(&cfg.quic, quic_bound);
        inner.set_endpoint(endpoint);

        let meta = MemberMeta {
            quic_addr,
            http_addr,
            roles: cfg.roles.clone(),
            versions: cfg.protocol_versions,
            process: id.incarnation(),
        };
        let mut mcfg =
            MembershipConfig::new(id.clone(), cfg.cluster_secret.expose().to_vec(), meta);
        mcfg.bind = cfg.gossip.bind;
        mcfg.advertise = cfg.gossip.advertise;
        mcfg.cluster_name = cfg.cluster_name.clone();
        mcfg.seed_refresh_interval = cfg.seed_resolve_interval;
        mcfg.seeds = cfg
            .seeds
            .iter()
            .map(|s| SeedSpec::new(s))
            .collect::<Result<_, _>>()?;
        if mcfg.advertise.is_none() && cfg.gossip.bind.ip().is_unspecified() {
            // Publish a reachable address rather than 0.0.0.0.
            mcfg.advertise = Some(cfg.advertised(&cfg.gossip, cfg.gossip.bind));
        }
        let membership = Membership::start(mcfg).await?;
        inner.set_membership(membership);

        let tasks = inner.tasks.clone();
        watch::start(&inner, &tasks);

        let admin = AdminServer::start(
            http_listener,
            Arc::new(admin::Admin::new(Arc::downgrade(&inner))),
            HttpLimits::default(),
        )
        .map_err(|source| NodeError::Http {
            addr: http_bound,
            source,
        })?;
        tracing::info!(node = %id, quic = %quic_addr, http = %admin.local_addr(), "node started");
        Ok(Node {
            inner,
            admin: Arc::new(Mutex::new(Some(admin))),
            tasks,
            cancel,
        })
    }
}

/// A running node. Cheap to clone; [`Node::shutdown`] leaves the cluster gracefully.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
    admin: Arc<Mutex<Option<AdminServer>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).finish()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Node>();
};

impl Node {
    /// This node's id (name and incarnation).
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The actor system hosting this node's actors.
    pub fn system(&self) -> &System {
        &self.inner.system
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.lock().as_ref().map(|a| a.local_addr())
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.endpoint().and_then(|e| e.local_addr().ok())
    }

    /// The bound gossip address.
    pub fn gossip_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.membership().map(|m| m.bound_addr())
    }

    /// Asks virtual actor `id` wherever it lives. Delivered without serialization when this
    /// node owns `id`, over QUIC to the owner otherwise.
    ///
    /// # Errors
    /// [`ActorError`]: the same typed errors whether the owner is local or remote.
    pub async fn ask<A, M>(
        &self,
        id: &ActorId,
        msg: M,
        timeout: Duration,
    ) -> Result<M::Reply, ActorError>
    where
        A: Handler<M>,
        M: RemoteMessage,
    {
        self.inner.ask_typed::<A, M>(id, msg, timeout).await
    }

    /// Tells virtual actor `id` wherever it lives (at most once).
    ///
    /// # Errors
    /// [`ActorError`] when it could not be handed to the owner before `timeout`.
    pub async fn tell<A, M>(
        &self,
        id: &ActorId,
        msg: M,
        timeout: Duration,
    ) -> Result<(), ActorError>
    where
        A: Handler<M>,
        M: RemoteMessage,
    {
        self.inner.tell_typed::<A, M>(id, msg, timeout).await
    }

    /// Asks by message name and encoded payload (what gateways and the CLI use).
    ///
    /// # Errors
    /// As [`Node::ask`].
    pub async fn ask_erased(
        &self,
        id: &ActorId,
        name: &cortex_protocol::MessageName,
        payload: Vec<u8>,
        codec: Codec,
        timeout: Duration,
    ) -> Result<(cortex_protocol::MessageName, Vec<u8>), ActorError> {
        self.inner
            .ask_erased(id, name, payload, codec, timeout)
            .await
    }

    /// Publishes to every subscriber of `topic` in the cluster (each gets it once).
    ///
    /// # Errors
    /// [`ActorError::Encode`] if the message cannot be encoded.
    pub async fn publish<M: RemoteMessage>(
        &self,
        topic: &TopicId,
        msg: &M,
    ) -> Result<(), ActorError> {
        let payload = cortex_runtime::encode_with(msg, Codec::Bincode)?;
        let name = inner::message_name::<M>()?;
        self.inner.publish(topic, name, payload.into()).await;
        Ok(())
    }

    /// Subscribes to `topic` on this node; messages published anywhere in the cluster
    /// arrive here once.
    pub fn subscribe(&self, topic: &TopicId, opts: SubscribeOptions) -> Subscription<Published> {
        self.inner.pubsub.subscribe(topic, opts)
    }

    /// Records of activations on this node (the activation log).
    pub fn activations(&self) -> &ActivationLog {
        &self.inner.activations
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.metrics
    }

    /// The current placement view.
    pub fn ring(&self) -> Arc<crate::placement::RingView> {
        self.inner.placement.view()
    }

    /// Leaves the cluster gracefully (others drop this node at once), passivates every
    /// activation, closes connections and stops all tasks, within the leave timeout.
    pub async fn shutdown(&self) {
        let leave = self.inner.config.leave_timeout;
        let deadline = tokio::time::Instant::now() + leave;
        // Hand over first: drop this node from its own ring, so requests go to the new
        // owners and every activation here stops (its stop hook runs), and only then tell
        // the cluster, whose members activate the ids after their settle time.
        self.inner
            .leaving
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(m) = self.inner.membership() {
            let view = m.view();
            let _ = tokio::time::timeout_at(deadline, watch::apply_view(&self.inner, &view)).await;
        }
        if let Some(m) = self.inner.membership()
            && let Err(e) = m.leave(deadline).await
        {
            tracing::warn!(error = %e, "graceful leave did not complete");
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.inner
            .system
            .shutdown(left.max(Duration::from_millis(100)))
            .await;
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        if let Some(e) = self.inner.endpoint() {
            e.close().await;
        }
        if let Some(m) = self.inner.membership() {
            m.shutdown().await;
        }
        let admin = self.admin.lock().take();
        if let Some(a) = admin {
            let _ = a.shutdown().await;
        }
        tracing::info!(node = %self.inner.id, "node stopped");
    }
}

/// Runs a node with `config` until SIGINT or SIGTERM, then leaves gracefully.
///
/// # Errors
/// Start-up failures ([`NodeError`]).
pub async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    run_builder(NodeBuilder::new(config)).await
}

/// Starts `builder`'s node and runs it until SIGINT or SIGTERM, then leaves gracefully.
///
/// # Errors
/// Start-up failures ([`NodeError`]).
pub async fn run_builder(builder: NodeBuilder) -> anyhow::Result<()> {
    let node = builder.start().await?;
    wait_for_signal().await;
    tracing::info!("signal received: leaving the cluster");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
