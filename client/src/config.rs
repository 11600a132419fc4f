//! Client settings and the builder that connects.

use std::net::SocketAddr;
use std::time::Duration;

use cortex_runtime::resilience::CircuitBreakerConfig;
use cortex_transport::TlsMaterial;

use crate::client::Client;
use crate::error::ClientError;

/// Per-call options of [`Client::ask_with`].
///
/// ```
/// use std::time::Duration;
/// use cortex_client::AskOptions;
/// let opts = AskOptions::new(Duration::from_secs(2)).retries(3);
/// assert_eq!(opts.retries, 3);
/// assert!(opts.idempotency_key.is_none(), "generated per call when retries > 0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AskOptions {
    /// Deadline for the whole call, failovers and retries included; the time left is sent
    /// with each attempt (`budget_us`), so the nodes give up when the caller does.
    pub timeout: Duration,
    /// The owner runs an ask with this key at most once within its dedupe window and
    /// answers retries with the first reply.
    pub idempotency_key: Option<[u8; 16]>,
    /// Extra attempts after a failure that may have let the ask run (a connection lost
    /// with the ask in flight, a timeout of one attempt). Each retry carries the same
    /// idempotency key: a random one is generated when `retries > 0` and none is given.
    /// Failures that certainly did not run the ask are failed over regardless.
    pub retries: u32,
}

impl AskOptions {
    /// Options with `timeout`, no key and no retries.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            idempotency_key: None,
            retries: 0,
        }
    }

    /// Sets the retries.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the idempotency key.
    #[must_use]
    pub fn idempotency_key(mut self, key: [u8; 16]) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Settings of a [`Client`]; made by [`ClientBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) seeds: Vec<String>,
    pub(crate) cluster: String,
    pub(crate) tls: Option<TlsMaterial>,
    pub(crate) token: Option<String>,
    pub(crate) name: String,
    pub(crate) server_name: Option<String>,
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) default_timeout: Duration,
    pub(crate) default_retries: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) breaker: CircuitBreakerConfig,
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) subscription_buffer: usize,
    pub(crate) lanes: usize,
    pub(crate) udp_buffer: usize,
}

/// Configures and connects a [`Client`].
///
/// ```no_run
/// # async fn demo() -> Result<(), cortex_client::ClientError> {
/// use std::path::Path;
/// use std::time::Duration;
/// use cortex_client::Client;
/// use cortex_transport::TlsMaterial;
/// let dir = Path::new(".cortex/dev-ca");
/// let tls = TlsMaterial::load(&dir.join("ca.crt"), &dir.join("app.crt"), &dir.join("app.key"))?;
/// let client = Client::builder()
///     .seeds(["127.0.0.1:7400"])
///     .cluster("cortex")
///     .tls(tls)
///     .default_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .connect().await"]
pub struct ClientBuilder {
    cfg: ClientConfig,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            cfg: ClientConfig {
                seeds: Vec::new(),
                cluster: "cortex".into(),
                tls: None,
                token: None,
                name: "cortex-client".into(),
                server_name: None,
                bind: None,
                default_timeout: Duration::from_secs(5),
                default_retries: 0,
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
                keep_alive: Duration::from_secs(1),
                breaker: CircuitBreakerConfig {
                    failure_threshold: 3,
                    reset_timeout: Duration::from_secs(2),
                    ..CircuitBreakerConfig::default()
                },
                retry_base: Duration::from_millis(20),
                retry_max: Duration::from_millis(500),
                // The deadline is what ends failover; this only stops a runaway loop.
                max_attempts: 10_000,
                subscription_buffer: 1024,
                lanes: 8,
                udp_buffer: cortex_transport::DEFAULT_UDP_BUFFER,
            },
        }
    }
}

impl ClientBuilder {
    /// Nodes to connect to first, as `host:port` of their QUIC address (any one is enough;
    /// the client learns the rest from the topology the node sends).
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cfg.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The cluster name the nodes run with (default `cortex`).
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cfg.cluster = name.into();
        self
    }

    /// The cluster CA and, for certificate authentication, a client certificate and key
    /// ([`TlsMaterial::ca_only`] with a [`token`](Self::token) otherwise).
    pub fn tls(mut self, tls: TlsMaterial) -> Self {
        self.cfg.tls = Some(tls);
        self
    }

    /// A bearer token for nodes started with `--client-token` (for clients without a
    /// certificate).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = Some(token.into());
        self
    }

    /// A name for the nodes' logs (default `cortex-client`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.cfg.name = name.into();
        self
    }

    /// The TLS server name checked against a seed's certificate (default: the seed's
    /// host, which node certificates carry for `localhost` and loopback addresses).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.cfg.server_name = Some(name.into());
        self
    }

    /// Local UDP address to bind (default: the unspecified address of the seeds' family,
    /// port 0).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.cfg.bind = Some(addr);
        self
    }

    /// Deadline of [`Client::ask`] and [`Client::tell`] (default 5 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.default_timeout = timeout;
        self
    }

    /// Retries of [`Client::ask`] (default 0); see [`AskOptions::retries`].
    pub fn default_retries(mut self, retries: u32) -> Self {
        self.cfg.default_retries = retries;
        self
    }

    /// Deadline for dialing one node (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.connect_timeout = timeout;
        self
    }

    /// A connection whose peer stops acknowledging for this long is declared dead and its
    /// requests fail over (default 5 s; keep-alives go out every `idle / 5`).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.cfg.idle_timeout = idle;
        self.cfg.keep_alive = idle / 5;
        self
    }

    /// The per-node circuit breaker (default: 3 consecutive failures open it for 2 s).
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.cfg.breaker = config;
        self
    }

    /// Backoff between failover attempts: full jitter under `base * 2^n`, capped at `max`
    /// (default 20 ms and 500 ms).
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.cfg.retry_base = base;
        self.cfg.retry_max = max;
        self
    }

    /// Deliveries buffered per subscription before new ones are dropped (default 1024).
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.cfg.subscription_buffer = n;
        self
    }

    /// Ordered lanes per connection (default 8, at most 64).
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.cfg.lanes = lanes;
        self
    }

    /// Kernel send and receive buffer of the client's UDP socket, in bytes (default
    /// [`cortex_transport::DEFAULT_UDP_BUFFER`], 4 MiB; 0 keeps the OS default). A client
    /// that receives bursts of replies or publications faster than it reads them loses
    /// datagrams with a smaller one; Linux caps it at `net.core.rmem_max`.
    ///
    /// ```
    /// let b = cortex_client::Client::builder().udp_buffer(1 << 20);
    /// # drop(b);
    /// ```
    pub fn udp_buffer(mut self, bytes: usize) -> Self {
        self.cfg.udp_buffer = bytes;
        self
    }

    /// Connects to the first seed that answers and returns the client.
    ///
    /// # Errors
    /// [`ClientError::Config`] for unusable settings, [`ClientError::Unauthorized`] when
    /// the cluster refuses the certificate, token or cluster name,
    /// [`ClientError::Unreachable`] when no seed answers.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing outlives a dropped future.
    pub async fn connect(self) -> Result<Client, ClientError> {
        Client::connect(self.cfg).await
    }
}
