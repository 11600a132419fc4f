//! Node settings: what a `cortex-node` process is told, from where, and how it is checked.
//!
//! Every setting can come from a flag (`--quic-bind`), a `CORTEX_*` environment variable
//! (`CORTEX_QUIC_BIND`), a TOML file (`quic_bind = "..."`, named by `--config` or
//! `CORTEX_CONFIG`) or a default, in that order of precedence. [`Settings`] is the raw,
//! all-optional form shared by the three sources; [`NodeConfig`] is the validated result
//! the node runs with. [`next_incarnation`] gives each run of a node name a larger number.

mod error;
mod incarnation;
mod load;
mod settings;
mod values;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub(crate) use error::clap_one_line;
pub use incarnation::{INCARNATION_FILE, IncarnationError, next_incarnation, next_incarnation_at};
pub use load::{env_layer, file_layer, load_from, resolve, settings_command, strip_env};
pub use settings::Settings;
pub use values::{ByteSize, HumanDuration, LogFormat, Secret, ValueError};

/// Default UDP port of the QUIC endpoint.
pub const DEFAULT_QUIC_PORT: u16 = 7400;
/// Default UDP port of SWIM gossip (also the port assumed for a seed given without one).
pub const DEFAULT_GOSSIP_PORT: u16 = 7401;
/// Default TCP port of the admin HTTP server.
pub const DEFAULT_HTTP_PORT: u16 = 7480;
/// Default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "cortex";
/// Default virtual nodes per member on the hash ring.
pub const DEFAULT_VNODES: u32 = 160;
/// Default time membership must be stable before the node is ready.
pub const DEFAULT_SETTLE_TIME: Duration = Duration::from_secs(2);
/// Default deadline of a graceful leave.
pub const DEFAULT_LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between DNS resolutions of the seeds.
pub const DEFAULT_SEED_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default idempotency window.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);
/// Default log filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Shortest accepted cluster secret or client token, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// File name of the cluster secret inside a TLS directory.
pub const CLUSTER_SECRET_FILE: &str = "cluster.secret";

/// A socket the node binds and the address it tells others to use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Where to bind; port 0 lets the OS pick.
    pub bind: SocketAddr,
    /// What to publish instead of the bound address, if set; port 0 means the bound port.
    pub advertise: Option<SocketAddr>,
}

/// The PEM files of this node's mutual TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate (signed by the CA, naming the node).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `cortex-node certs` writes for `node_name` in `dir`.
    pub fn in_dir(dir: &Path, node_name: &str) -> Self {
        TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("{node_name}.crt")),
            key: dir.join(format!("{node_name}.key")),
        }
    }
}

/// The validated settings a node runs with. Build it with [`load_from`] / [`resolve`]
/// (command line, environment, file) or [`NodeConfig::local`] (in-process tests), then
/// adjust fields as needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Stable node name (valid as a [`cortex_protocol::NodeId`] name).
    pub node_name: String,
    /// Cluster name; peers with another are refused.
    pub cluster_name: String,
    /// Roles offered to placement (deduplicated, in given order).
    pub roles: Vec<String>,
    /// QUIC endpoint (UDP).
    pub quic: Listen,
    /// SWIM gossip socket (UDP).
    pub gossip: Listen,
    /// Admin HTTP server (TCP).
    pub http: Listen,
    /// IP published for endpoints bound to an unspecified address without an advertise.
    pub advertise_host: Option<IpAddr>,
    /// Seeds as `host:port` (port defaulted to 7401); hosts may be DNS names with many
    /// addresses. Resolve with [`resolve_seeds`], again every `seed_resolve_interval`.
    pub seeds: Vec<String>,
    /// Interval between seed resolutions while looking for peers.
    pub seed_resolve_interval: Duration,
    /// Virtual nodes per member on the hash ring.
    pub vnodes: u32,
    /// Membership must be unchanged this long before the node is converged and ready.
    pub settle_time: Duration,
    /// The split-brain rule (see [`crate::placement::quorum`]).
    pub quorum: crate::placement::quorum::QuorumPolicy,
    /// Deadline for a graceful leave on shutdown.
    pub leave_timeout: Duration,
    /// This node's TLS files.
    pub tls: TlsFiles,
    /// Key that authenticates gossip datagrams (at least [`MIN_SECRET_LEN`] bytes).
    pub cluster_secret: Secret,
    /// Bearer tokens accepted from SDK clients (each at least [`MIN_SECRET_LEN`] bytes).
    pub client_tokens: Vec<Secret>,
    /// This node's state directory (incarnation file, journals).
    pub data_dir: PathBuf,
    /// Largest protocol frame, in bytes.
    pub max_frame_size: usize,
    /// Kernel buffer of the QUIC UDP socket, in bytes; 0: the OS default.
    pub udp_buffer_size: usize,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// Tokio worker threads of the `cortex-node` process; `None`: one per core. (Embedders
    /// build their own runtime; the node itself does not read it.)
    pub worker_threads: Option<usize>,
    /// Log format on stderr.
    pub log_format: LogFormat,
    /// Log filter directives (validated as a `tracing_subscriber::EnvFilter`).
    pub log_level: String,
    /// OTLP endpoint for traces, if any.
    pub otlp_endpoint: Option<String>,
    /// System actors started on this node (see [`crate::system`]).
    pub system_actors: Vec<String>,
    /// Protocol versions this node offers to peers (gossip metadata and QUIC handshake).
    pub protocol_versions: cortex_protocol::VersionRange,
}

impl NodeConfig {
    /// A node on 127.0.0.1 with OS-picked ports and default settings: the starting point
    /// of in-process tests and embedders, who then adjust fields (`seeds`, `data_dir`, ...).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if the name or secret is unacceptable.
    ///
    /// # Examples
    /// ```
    /// use cortex_node::config::{NodeConfig, Secret, TlsFiles};
    /// let tls = TlsFiles::in_dir(std::path::Path::new("certs"), "n1");
    /// let mut cfg = NodeConfig::local("n1", tls, Secret::new(*b"0123456789abcdef")).unwrap();
    /// cfg.seeds = vec!["127.0.0.1:7401".into()];
    /// assert_eq!(cfg.quic.bind.port(), 0);
    /// ```
    pub fn local(
        node_name: &str,
        tls: TlsFiles,
        cluster_secret: Secret,
    ) -> Result<Self, ConfigError> {
        let loopback = |port| Listen {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            advertise: None,
        };
        let settings = Settings {
            node_name: Some(node_name.to_string()),
            quic_bind: Some(loopback(0).bind),
            gossip_bind: Some(loopback(0).bind),
            http_bind: Some(loopback(0).bind),
            tls_ca: Some(tls.ca),
            tls_cert: Some(tls.cert),
            tls_key: Some(tls.key),
            cluster_secret: Some(cluster_secret),
            ..Settings::default()
        };
        Self::from_settings(settings, &HashMap::new())
    }

    /// Applies defaults to merged settings and validates them. `env` is consulted only for
    /// `HOSTNAME` (the default node name).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad or missing setting.
    pub fn from_settings(s: Settings, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let node_name = match s.node_name {
            Some(n) => check_name("--node-name", n)?,
            None => default_node_name(env)?,
        };
        let cluster_name = check_name(
            "--cluster-name",
            s.cluster_name
                .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into()),
        )?;
        let protocol_versions = match s.protocol_versions.as_deref() {
            None => cortex_protocol::SUPPORTED_VERSIONS,
            Some(v) => {
                let parsed = v.split_once('-').and_then(|(a, b)| {
                    Some(cortex_protocol::VersionRange {
                        min: a.trim().parse().ok()?,
                        max: b.trim().parse().ok()?,
                    })
                });
                match parsed {
                    Some(r) if r.min <= r.max => r,
                    _ => {
                        return Err(ConfigError::invalid(
                            "--protocol-versions",
                            v.to_owned(),
                            "write MIN-MAX with MIN <= MAX, for example 1-1",
                        ));
                    }
                }
            }
        };
        let mut system_actors: Vec<String> = Vec::new();
        for a in s
            .system_actors
            .unwrap_or_else(|| vec![crate::system::METRICS.to_owned()])
        {
            let a = a.trim().to_string();
            if a.is_empty() {
                continue;
            }
            if !crate::system::KNOWN.contains(&a.as_str()) {
                return Err(ConfigError::invalid(
                    "--system-actor",
                    a.clone(),
                    format!(
                        "unknown system actor; known: {}",
                        crate::system::KNOWN.join(", ")
                    ),
                ));
            }
            if !system_actors.contains(&a) {
                system_actors.push(a);
            }
        }
        let mut roles: Vec<String> = Vec::new();
        for r in s.roles.unwrap_or_default() {
            let r = check_name("--role", r.trim().to_string())?;
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let quic = Listen {
            bind: s
                .quic_bind
                .unwrap_or(SocketAddr::new(any, DEFAULT_QUIC_PORT)),
            advertise: s.quic_advertise,
        };
        let gossip = Listen {
            bind: s
                .gossip_bind
                .unwrap_or(SocketAddr::new(any, DEFAULT_GOSSIP_PORT)),
            advertise: s.gossip_advertise,
        };
        let http = Listen {
            bind: s
                .http_bind
                .unwrap_or(SocketAddr::new(any, DEFAULT_HTTP_PORT)),
            advertise: s.http_advertise,
        };
        if quic.bind.port() != 0 && quic.bind == gossip.bind {
            return Err(ConfigError::invalid(
                "--gossip-bind",
                gossip.bind.to_string(),
                "QUIC and gossip are both UDP and cannot share an address: give them different ports",
            ));
        }
        for (setting, adv) in [
            ("--quic-advertise", quic.advertise),
            ("--gossip-advertise", gossip.advertise),
            ("--http-advertise", http.advertise),
        ] {
            if let Some(a) = adv.filter(|a| a.ip().is_unspecified()) {
                return Err(ConfigError::invalid(
                    setting,
                    a.to_string(),
                    "an advertised address must be one others can reach, not 0.0.0.0 or [::]",
                ));
            }
        }
        if let Some(ip) = s.advertise_host.filter(IpAddr::is_unspecified) {
            return Err(ConfigError::invalid(
                "--advertise-host",
                ip.to_string(),
                "publish an address others can reach, not 0.0.0.0 or [::]",
            ));
        }
        let seeds = s
            .seeds
            .unwrap_or_default()
            .iter()
            .map(|x| normalize_seed(x))
            .collect::<Result<Vec<_>, _>>()?;

        let tls = resolve_tls(&s.tls_dir, s.tls_ca, s.tls_cert, s.tls_key, &node_name)?;
        let cluster_secret = resolve_secret(s.cluster_secret, s.cluster_secret_file, &s.tls_dir)?;
        let client_tokens = resolve_tokens(s.client_tokens, s.client_tokens_file)?;
        let data_dir = s
            .data_dir
            .unwrap_or_else(|| Path::new(".cortex").join(&node_name));

        let vnodes = s.vnodes.unwrap_or(DEFAULT_VNODES);
        if !(1..=4096).contains(&vnodes) {
            return Err(ConfigError::invalid(
                "--vnodes",
                vnodes.to_string(),
                "use 1 to 4096 (128 to 256 balance well)",
            ));
        }
        let seed_resolve_interval = in_range(
            "--seed-resolve-interval",
            s.seed_resolve_interval,
            DEFAULT_SEED_RESOLVE_INTERVAL,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        let settle_time = in_range(
            "--settle-time",
            s.settle_time,
            DEFAULT_SETTLE_TIME,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        let leave_timeout = in_range(
            "--leave-timeout",
            s.leave_timeout,
            DEFAULT_LEAVE_TIMEOUT,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        let idempotency_window = in_range(
            "--idempotency-window",
            s.idempotency_window,
            DEFAULT_IDEMPOTENCY_WINDOW,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        let max_frame = s
            .max_frame_size
            .map_or(cortex_protocol::DEFAULT_MAX_FRAME as u64, |b| b.0);
        if !(1024..=(1u64 << 30)).contains(&max_frame) {
            return Err(ConfigError::invalid(
                "--max-frame-size",
                max_frame.to_string(),
                "use 1KiB to 1GiB",
            ));
        }
        let max_frame_size = usize::try_from(max_frame).map_err(|_| {
            ConfigError::invalid(
                "--max-frame-size",
                max_frame.to_string(),
                "too large for this machine",
            )
        })?;
        let udp_buffer = s
            .udp_buffer_size
            .map_or(cortex_transport::DEFAULT_UDP_BUFFER as u64, |b| b.0);
        let max = cortex_transport::MAX_UDP_BUFFER as u64;
        if udp_buffer != 0 && !((64 << 10)..=max).contains(&udp_buffer) {
            return Err(ConfigError::invalid(
                "--udp-buffer-size",
                udp_buffer.to_string(),
                "use 64KiB to 1GiB, or 0 for the OS default",
            ));
        }
        // At most MAX_UDP_BUFFER (1 GiB), so it fits any usize this builds for (32 bits and up).
        let udp_buffer_size = udp_buffer as usize;
        if let Some(n) = s.worker_threads
            && !(1..=1024).contains(&n)
        {
            return Err(ConfigError::invalid(
                "--worker-threads",
                n.to_string(),
                "use 1 to 1024, or leave it unset for one per core",
            ));
        }
        let log_level = s.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(ConfigError::invalid(
                "--log-level",
                log_level,
                format!(
                    "{e}; use a level (error, warn, info, debug, trace) or directives like info,cortex_node=debug"
                ),
            ));
        }
        if let Some(url) = &s.otlp_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "--otlp-endpoint",
                url.clone(),
                "write a URL starting with http:// or https://",
            ));
        }
        Ok(NodeConfig {
            node_name,
            cluster_name,
            roles,
            quic,
            gossip,
            http,
            advertise_host: s.advertise_host,
            seeds,
            seed_resolve_interval,
            vnodes,
            settle_time,
            quorum: s.quorum.unwrap_or_default(),
            leave_timeout,
            tls,
            cluster_secret,
            client_tokens,
            data_dir,
            max_frame_size,
            udp_buffer_size,
            idempotency_window,
            worker_threads: s.worker_threads,
            log_format: s.log_format.unwrap_or_default(),
            log_level,
            otlp_endpoint: s.otlp_endpoint,
            system_actors,
            protocol_versions,
        })
    }

    /// The address to publish for `listen` once it is bound at `bound` (which carries the
    /// OS-picked port when the configured port was 0): the configured advertise address (its
    /// port 0 replaced by the bound port), else `advertise_host` with the bound port, else the
    /// bound address if it is specific, else this host name's address (127.0.0.1 when the host
    /// name does not resolve to a non-loopback address).
    pub fn advertised(&self, listen: &Listen, bound: SocketAddr) -> SocketAddr {
        if let Some(a) = listen.advertise {
            let port = if a.port() == 0 {
                bound.port()
            } else {
                a.port()
            };
            return SocketAddr::new(a.ip(), port);
        }
        if let Some(ip) = self.advertise_host {
            return SocketAddr::new(ip, bound.port());
        }
        if !bound.ip().is_unspecified() {
            return bound;
        }
        SocketAddr::new(host_ip(bound.is_ipv6()), bound.port())
    }
}

/// Resolves seeds to socket addresses (every address of each DNS name), each lookup under
/// `deadline`. Seeds that fail to resolve are logged and skipped: a seed that is not up yet
/// is normal while a cluster starts.
pub async fn resolve_seeds(seeds: &[String], deadline: Duration) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        match tokio::time::timeout(deadline, tokio::net::lookup_host(seed.as_str())).await {
            Ok(Ok(addrs)) => {
                for a in addrs {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(seed = %seed, error = %e, "seed does not resolve (yet)"),
            Err(_) => tracing::debug!(seed = %seed, "seed resolution timed out"),
        }
    }
    out
}

fn check_name(setting: &'static str, name: String) -> Result<String, ConfigError> {
    match cortex_protocol::NodeId::new(name.clone(), 0) {
        Ok(_) => Ok(name),
        Err(e) => Err(ConfigError::invalid(setting, name, e.to_string())),
    }
}

fn default_node_name(env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let host = env
        .get("HOSTNAME")
        .cloned()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let label = host.trim().split('.').next().unwrap_or("").to_string();
    if label.is_empty() {
        return Err(ConfigError::Missing {
            setting: "--node-name",
            hint: "the host name is unknown; set --node-name or CORTEX_NODE_NAME".into(),
        });
    }
    check_name("--node-name", label).map_err(|e| ConfigError::Missing {
        setting: "--node-name",
        hint: format!(
            "the host name is not usable as one ({e}); set --node-name or CORTEX_NODE_NAME"
        ),
    })
}

/// `host:port`, `[v6]:port`, a bare IP or a bare host (port 7401 assumed).
fn normalize_seed(seed: &str) -> Result<String, ConfigError> {
    let s = seed.trim();
    let bad = |why: &str| ConfigError::invalid("--seed", s, why.to_string());
    if s.is_empty() {
        return Err(bad("empty seed; write host:port"));
    }
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_GOSSIP_PORT).to_string());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port must be 1 to 65535"))?,
        ),
        None => (s, DEFAULT_GOSSIP_PORT),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !host_ok {
        return Err(bad(
            "write host:port with a DNS name or an IP address ([v6]:port for IPv6)",
        ));
    }
    Ok(format!("{host}:{port}"))
}

fn resolve_tls(
    dir: &Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    node_name: &str,
) -> Result<TlsFiles, ConfigError> {
    let from_dir = dir.as_ref().map(|d| TlsFiles::in_dir(d, node_name));
    let pick = |given: Option<PathBuf>,
                part: fn(TlsFiles) -> PathBuf,
                setting: &'static str,
                env: &str| {
        given
            .or_else(|| from_dir.clone().map(part))
            .ok_or_else(|| ConfigError::Missing {
                setting,
                hint: format!(
                    "set {setting} / {env}, or --tls-dir DIR with the files `cortex-node certs init` and `certs issue {node_name}` write"
                ),
            })
    };
    Ok(TlsFiles {
        ca: pick(ca, |t| t.ca, "--tls-ca", "CORTEX_TLS_CA")?,
        cert: pick(cert, |t| t.cert, "--tls-cert", "CORTEX_TLS_CERT")?,
        key: pick(key, |t| t.key, "--tls-key", "CORTEX_TLS_KEY")?,
    })
}

fn resolve_secret(
    value: Option<Secret>,
    file: Option<PathBuf>,
    tls_dir: &Option<PathBuf>,
) -> Result<Secret, ConfigError> {
    let secret = match (value, file) {
        (Some(v), _) => v,
        (None, Some(path)) => read_secret_file("--cluster-secret-file", &path)?,
        (None, None) => {
            let in_dir = tls_dir.as_ref().map(|d| d.join(CLUSTER_SECRET_FILE));
            match in_dir.filter(|p| p.is_file()) {
                Some(path) => read_secret_file("--cluster-secret-file", &path)?,
                None => {
                    return Err(ConfigError::Missing {
                        setting: "--cluster-secret",
                        hint: format!(
                            "set --cluster-secret-file PATH or CORTEX_CLUSTER_SECRET (the same value, at least {MIN_SECRET_LEN} bytes, on every node); `cortex-node certs init` writes one to DIR/{CLUSTER_SECRET_FILE}"
                        ),
                    });
                }
            }
        }
    };
    if secret.len() < MIN_SECRET_LEN {
        return Err(ConfigError::invalid(
            "--cluster-secret",
            "<redacted>",
            format!(
                "it is {} bytes; use at least {MIN_SECRET_LEN}",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

fn read_secret_file(setting: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SettingFile {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Secret::new(text.trim().as_bytes()))
}

fn resolve_tokens(
    given: Option<Vec<Secret>>,
    file: Option<PathBuf>,
) -> Result<Vec<Secret>, ConfigError> {
    let mut tokens = given.unwrap_or_default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::SettingFile {
            setting: "--client-tokens-file",
            path: path.clone(),
            source,
        })?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| Secret::new(l.as_bytes())),
        );
    }
    if let Some(short) = tokens.iter().find(|t| t.len() < MIN_SECRET_LEN) {
        return Err(ConfigError::invalid(
            "--client-token",
            "<redacted>",
            format!(
                "a token is {} bytes; use at least {MIN_SECRET_LEN}",
                short.len()
            ),
        ));
    }
    Ok(tokens)
}

fn in_range(
    setting: &'static str,
    given: Option<HumanDuration>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let d = given.map_or(default, |h| h.0);
    if d < min || d > max {
        return Err(ConfigError::invalid(
            setting,
            HumanDuration(d).to_string(),
            format!("use {} to {}", HumanDuration(min), HumanDuration(max)),
        ));
    }
    Ok(d)
}

/// This host name's first non-loopback address of the wanted family, else loopback.
fn host_ip(v6: bool) -> IpAddr {
    let loopback = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
        return loopback;
    };
    let found = (host.trim(), 0u16)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| {
            it.find(|a| a.is_ipv6() == v6 && !a.ip().is_loopback())
                .map(|a| a.ip())
        });
    found.unwrap_or(loopback)
}

#[cfg(test)]
mod tests;
