//! The raw settings as written by the user: every field optional, one struct shared by the
//! command line (clap), the environment (`CORTEX_*`) and the TOML file, so that the three
//! layers can be merged field by field before defaults fill the rest.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use super::values::{ByteSize, HumanDuration, LogFormat, Secret};

/// Every node setting, each optional. Flag `--a-b`, environment `CORTEX_A_B`, TOML key `a_b`.
///
/// Defaults are documented on each field and applied by [`super::NodeConfig`] resolution.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with any of the settings below (keys are the flag names with '_' for '-').
    #[arg(
        long,
        env = "CORTEX_CONFIG",
        value_name = "PATH",
        help_heading = "Config file"
    )]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Stable name of this node (a DNS label; the pod name on Kubernetes) [default: host name]
    #[arg(
        long,
        env = "CORTEX_NODE_NAME",
        value_name = "NAME",
        help_heading = "Identity"
    )]
    pub node_name: Option<String>,
    /// Name of the cluster; nodes of other clusters are refused [default: cortex]
    #[arg(
        long,
        env = "CORTEX_CLUSTER_NAME",
        value_name = "NAME",
        help_heading = "Identity"
    )]
    pub cluster_name: Option<String>,
    /// Roles this node offers to placement, comma separated [default: none]
    #[arg(
        long = "role",
        alias = "roles",
        env = "CORTEX_ROLES",
        value_name = "ROLE",
        value_delimiter = ',',
        help_heading = "Identity"
    )]
    pub roles: Option<Vec<String>>,

    /// UDP address the QUIC endpoint binds; port 0 lets the OS pick [default: 0.0.0.0:7400]
    #[arg(
        long,
        env = "CORTEX_QUIC_BIND",
        value_name = "ADDR",
        help_heading = "Network"
    )]
    pub quic_bind: Option<SocketAddr>,
    /// QUIC address other nodes dial, when it differs from the bound one (NAT, containers);
    /// port 0 means the bound port [default: --advertise-host with the bound port]
    #[arg(
        long,
        env = "CORTEX_QUIC_ADVERTISE",
        value_name = "ADDR",
        help_heading = "Network"
    )]
    pub quic_advertise: Option<SocketAddr>,
    /// UDP address the SWIM gossip socket binds; port 0 lets the OS pick [default: 0.0.0.0:7401]
    #[arg(
        long,
        env = "CORTEX_GOSSIP_BIND",
        value_name = "ADDR",
        help_heading = "Network"
    )]
    pub gossip_bind: Option<SocketAddr>,
    /// Gossip address other nodes send to, when it differs from the bound one; port 0 means
    /// the bound port [default: --advertise-host with the bound port]
    #[arg(
        long,
        env = "CORTEX_GOSSIP_ADVERTISE",
        value_name = "ADDR",
        help_heading = "Network"
    )]
    pub gossip_advertise: Option<SocketAddr>,
    /// TCP address of the admin HTTP server (health, readiness, members, metrics);
    /// port 0 lets the OS pick [default: 0.0.0.0:7480]
    #[arg(
        long,
        env = "CORTEX_HTTP_BIND",
        value_name = "ADDR",
        help_heading = "Network"
    )]
    pub http_bind: Option<SocketAddr>,
    /// HTTP address published to other nodes, when it differs from the bound one; port 0
    /// means the bound port [default: --advertise-host with the bound port]
    #[arg(
        long,
        env = "CORTEX_HTTP_ADVERTISE",
        value_name = "ADDR",
        help_heading = "Network"
    )]
    pub http_advertise: Option<SocketAddr>,
    /// IP address published for all three endpoints when a bind address is `0.0.0.0` / `[::]`
    /// (on Kubernetes: the pod IP) [default: the bound IP, else this host name's address]
    #[arg(
        long,
        env = "CORTEX_ADVERTISE_HOST",
        value_name = "IP",
        help_heading = "Network"
    )]
    pub advertise_host: Option<IpAddr>,

    /// Gossip address of a node to join through: host:port, or a DNS name that resolves to
    /// many addresses (a headless Service); repeat or comma separate [default: none, start alone]
    #[arg(
        long = "seed",
        alias = "seeds",
        env = "CORTEX_SEEDS",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        help_heading = "Cluster"
    )]
    pub seeds: Option<Vec<String>>,
    /// How often seed DNS names are resolved again while looking for peers [default: 30s]
    #[arg(
        long,
        env = "CORTEX_SEED_RESOLVE_INTERVAL",
        value_name = "DURATION",
        help_heading = "Cluster"
    )]
    pub seed_resolve_interval: Option<HumanDuration>,
    /// Virtual nodes per member on the placement hash ring [default: 160]
    #[arg(
        long,
        env = "CORTEX_VNODES",
        value_name = "N",
        help_heading = "Cluster"
    )]
    pub vnodes: Option<u32>,
    /// How long membership must stay unchanged before the node counts as converged and
    /// ready (like Akka's stable-after) [default: 2s]
    #[arg(
        long,
        env = "CORTEX_SETTLE_TIME",
        value_name = "DURATION",
        help_heading = "Cluster"
    )]
    pub settle_time: Option<HumanDuration>,
    /// Split-brain rule: `majority` (a node that cannot reach a majority of its last known
    /// cluster hosts no virtual actors until it can; an exact half keeps serving only with the
    /// lowest name) or `off` (both sides of a partition stay available and may host the same
    /// id until the heal) [default: majority]
    #[arg(
        long,
        env = "CORTEX_QUORUM",
        value_name = "POLICY",
        help_heading = "Cluster"
    )]
    pub quorum: Option<crate::placement::quorum::QuorumPolicy>,
    /// Longest a graceful leave (hand-off, announcing departure) may take on shutdown [default: 10s]
    #[arg(
        long,
        env = "CORTEX_LEAVE_TIMEOUT",
        value_name = "DURATION",
        help_heading = "Cluster"
    )]
    pub leave_timeout: Option<HumanDuration>,

    /// Directory with ca.crt, NODE.crt, NODE.key and cluster.secret, as written by
    /// `cortex-node certs`; the single files below override its parts [default: none]
    #[arg(
        long,
        env = "CORTEX_TLS_DIR",
        value_name = "DIR",
        help_heading = "Security"
    )]
    pub tls_dir: Option<PathBuf>,
    /// PEM file of the cluster CA that signs every node and client certificate
    /// [default: TLS_DIR/ca.crt]
    #[arg(
        long,
        env = "CORTEX_TLS_CA",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate of this node [default: TLS_DIR/NODE_NAME.crt]
    #[arg(
        long,
        env = "CORTEX_TLS_CERT",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of this node [default: TLS_DIR/NODE_NAME.key]
    #[arg(
        long,
        env = "CORTEX_TLS_KEY",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub tls_key: Option<PathBuf>,
    /// Shared secret that authenticates gossip datagrams, at least 16 bytes, the same on
    /// every node; prefer the file or the environment to the command line
    /// [default: TLS_DIR/cluster.secret]
    #[arg(
        long,
        env = "CORTEX_CLUSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Security"
    )]
    pub cluster_secret: Option<Secret>,
    /// File holding the cluster secret (surrounding whitespace is ignored)
    #[arg(
        long,
        env = "CORTEX_CLUSTER_SECRET_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub cluster_secret_file: Option<PathBuf>,
    /// Bearer token accepted from SDK clients without a client certificate, at least 16
    /// bytes; repeat or comma separate [default: none]
    #[arg(
        long = "client-token",
        alias = "client-tokens",
        env = "CORTEX_CLIENT_TOKENS",
        hide_env_values = true,
        value_name = "TOKEN",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub client_tokens: Option<Vec<Secret>>,
    /// File of accepted client tokens, one per line ('#' starts a comment) [default: none]
    #[arg(
        long,
        env = "CORTEX_CLIENT_TOKENS_FILE",
        value_name = "PATH",
        help_heading = "Security"
    )]
    pub client_tokens_file: Option<PathBuf>,

    /// Directory for this node's state (incarnation counter, journals); a volume on
    /// Kubernetes [default: ./.cortex/NODE_NAME/]
    #[arg(
        long,
        env = "CORTEX_DATA_DIR",
        value_name = "DIR",
        help_heading = "Storage"
    )]
    pub data_dir: Option<PathBuf>,

    /// Largest protocol frame accepted or sent, in bytes or with KiB/MiB/GiB [default: 16MiB]
    #[arg(
        long,
        env = "CORTEX_MAX_FRAME_SIZE",
        value_name = "SIZE",
        help_heading = "Limits"
    )]
    pub max_frame_size: Option<ByteSize>,
    /// Kernel send and receive buffer of the QUIC UDP socket; 0 keeps the OS default. Linux
    /// caps it at net.core.rmem_max / wmem_max (the node warns when it does) [default: 4MiB]
    #[arg(
        long,
        env = "CORTEX_UDP_BUFFER_SIZE",
        value_name = "SIZE",
        help_heading = "Limits"
    )]
    pub udp_buffer_size: Option<ByteSize>,
    /// How long a request's idempotency key is remembered to drop retried duplicates
    /// [default: 5m]
    #[arg(
        long,
        env = "CORTEX_IDEMPOTENCY_WINDOW",
        value_name = "DURATION",
        help_heading = "Limits"
    )]
    pub idempotency_window: Option<HumanDuration>,

    /// Tokio worker threads of the node [default: one per core the process may use]. Set it
    /// to the CPUs the node really gets: two nodes sharing two cores run cheaper with one
    /// worker each (BENCHMARKS.md, Cluster routing)
    #[arg(
        long,
        env = "CORTEX_WORKER_THREADS",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub worker_threads: Option<usize>,

    /// Log line format on stderr [default: human]
    #[arg(
        long,
        env = "CORTEX_LOG_FORMAT",
        value_name = "FORMAT",
        help_heading = "Observability"
    )]
    pub log_format: Option<LogFormat>,
    /// Log filter: a level or tracing directives, e.g. info or info,cortex_node=debug
    /// [default: info]
    #[arg(
        long,
        env = "CORTEX_LOG_LEVEL",
        value_name = "FILTER",
        help_heading = "Observability"
    )]
    pub log_level: Option<String>,
    /// OpenTelemetry OTLP endpoint for traces, e.g. http://collector:4317 [default: off]
    #[arg(
        long,
        env = "CORTEX_OTLP_ENDPOINT",
        value_name = "URL",
        help_heading = "Observability"
    )]
    pub otlp_endpoint: Option<String>,
    /// System actors to start (`system/<name>` on this node), comma separated [default: metrics]
    #[arg(
        long = "system-actor",
        alias = "system-actors",
        env = "CORTEX_SYSTEM_ACTORS",
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "Observability"
    )]
    pub system_actors: Option<Vec<String>>,
    /// Protocol versions to offer, MIN-MAX (a test and rolling-upgrade knob) [default: all this build speaks]
    #[arg(
        long,
        env = "CORTEX_PROTOCOL_VERSIONS",
        value_name = "MIN-MAX",
        help_heading = "Limits"
    )]
    pub protocol_versions: Option<String>,
}

macro_rules! merge_fields {
    ($hi:ident, $lo:ident; $($f:ident),* $(,)?) => {
        Settings { $($f: $hi.$f.or($lo.$f)),* }
    };
}

impl Settings {
    /// Field by field: the value in `self` if set, else the one in `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        let hi = self;
        let lo = lower;
        merge_fields!(hi, lo;
            config, node_name, cluster_name, roles,
            quic_bind, quic_advertise, gossip_bind, gossip_advertise, http_bind, http_advertise,
            advertise_host, seeds, seed_resolve_interval, vnodes, settle_time, quorum, leave_timeout,
            tls_dir, tls_ca, tls_cert, tls_key, cluster_secret, cluster_secret_file,
            client_tokens, client_tokens_file, data_dir, max_frame_size, udp_buffer_size, idempotency_window,
            worker_threads, log_format, log_level, otlp_endpoint, system_actors, protocol_versions,
        )
    }
}
