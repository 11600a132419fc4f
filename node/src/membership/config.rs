//! Settings of the membership: addresses, seeds, secret, metadata and SWIM timing.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use cortex_protocol::NodeId;

use super::auth::{MAX_DATAGRAM, MIN_SECRET_LEN, OVERHEAD};
use super::identity::MemberMeta;

/// Default SWIM gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7401;

/// Why the membership could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The gossip socket could not be bound. Nothing was started.
    #[error(
        "cannot bind the gossip socket to {addr}: {source}; pick a free port or another address"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gossip address to advertise could not be determined. Nothing was started.
    #[error(
        "gossip bind address {0} is unspecified and no advertise address was given: set the advertised gossip address (the one other nodes can reach)"
    )]
    NoAdvertiseAddress(SocketAddr),
    /// The cluster secret is too short. Nothing was started.
    #[error("the cluster secret is {len} bytes; use at least {min} random bytes")]
    WeakSecret {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A setting is invalid. Nothing was started.
    #[error("invalid membership setting: {0}")]
    InvalidConfig(String),
    /// A seed was not of the form `host:port`.
    #[error("seed {seed:?} is not HOST:PORT or HOST ({reason})")]
    BadSeed {
        /// The text given.
        seed: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The membership task has stopped (after `leave`, `shutdown`, or a crash of the task).
    #[error("the membership task is not running (it left, was shut down, or failed)")]
    Stopped,
    /// `leave` did not finish sending before its deadline; peers will notice the departure
    /// by timeout instead. The task has stopped anyway.
    #[error(
        "leaving did not finish before the deadline; peers will detect the departure by timeout"
    )]
    LeaveTimedOut,
}

/// A seed to announce to: `host:port` (a name is re-resolved periodically, so a DNS name
/// that resolves to many addresses, such as a Kubernetes headless Service, works), or
/// `host` alone for the default port 7401. IPv6 literals need brackets: `[::1]:7401`.
///
/// ```
/// use cortex_node::membership::SeedSpec;
/// let s: SeedSpec = "cortex-0.cortex.default.svc:7401".parse().unwrap();
/// assert_eq!(s.as_str(), "cortex-0.cortex.default.svc:7401");
/// let d: SeedSpec = "cortex".parse().unwrap();
/// assert_eq!(d.as_str(), "cortex:7401");
/// assert!("bad seed:1".parse::<SeedSpec>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeedSpec(String);

impl SeedSpec {
    /// Parses and normalises a seed.
    ///
    /// # Errors
    /// [`MembershipError::BadSeed`] saying what is wrong.
    pub fn new(s: &str) -> Result<Self, MembershipError> {
        let bad = |reason| MembershipError::BadSeed {
            seed: s.chars().take(200).collect(),
            reason,
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(Self(s.to_owned()));
        }
        if s.starts_with('[') || s.matches(':').count() > 1 {
            return Err(bad("IPv6 addresses are written [ADDR]:PORT"));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port must be 0-65535"))?,
            ),
            None => (s, DEFAULT_GOSSIP_PORT),
        };
        if host.is_empty() || host.len() > 253 {
            return Err(bad("the host must be 1 to 253 characters"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(bad(
                "the host may contain letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self(format!("{host}:{port}")))
    }

    /// The normalised `host:port` text, ready for `lookup_host`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SeedSpec {
    type Err = MembershipError;
    fn from_str(s: &str) -> Result<Self, MembershipError> {
        Self::new(s)
    }
}

impl fmt::Display for SeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SWIM timing. The defaults detect a crashed member everywhere in about 2 s and within 3 s
/// in the common case on a LAN:
///
/// `detection ≈ wait for a probe of the dead member (≤ 1 period with ≥ 3 members, usually
/// less) + 1 probe period (the failed probe is turned into a suspicion at the next period)
/// + suspect_to_down_after + dissemination (periodic gossip, a few × gossip_interval)`
///
/// = 0.5 + 0.5 + 1.0 + ~0.3 s with the defaults. The bound is probabilistic: with very few
/// members, or under packet loss, the first probe of the dead member can come later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwimTuning {
    /// How often each member probes one other member.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly.
    pub num_indirect_probes: usize,
    /// How long a suspected member may refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// How often pending updates are gossiped, and to how many members.
    pub gossip_interval: Duration,
    /// Members per periodic gossip.
    pub gossip_fanout: usize,
    /// How often to ask one random member for its member list (finds the full roster).
    pub announce_interval: Duration,
    /// How often to announce to members believed down (merges healed partitions).
    pub announce_to_down_interval: Duration,
    /// How often to send a join request to seeds (to two of them while in a cluster, to all
    /// while alone), so that separated groups that share seeds merge.
    pub reannounce_interval: Duration,
    /// How long a down member's record is kept before it may be forgotten.
    pub remove_down_after: Duration,
    /// Expected cluster size; sets how often each update is retransmitted.
    pub cluster_size_hint: u32,
}

impl Default for SwimTuning {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            num_indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(1000),
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            announce_interval: Duration::from_secs(1),
            announce_to_down_interval: Duration::from_secs(2),
            reannounce_interval: Duration::from_secs(2),
            remove_down_after: Duration::from_secs(15 * 60),
            cluster_size_hint: 16,
        }
    }
}

impl SwimTuning {
    /// Checks the relations foca relies on.
    ///
    /// # Errors
    /// [`MembershipError::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<(), MembershipError> {
        let bad = |s: &str| Err(MembershipError::InvalidConfig(s.to_owned()));
        let zero = [
            (self.probe_rtt, "probe_rtt"),
            (self.suspect_to_down_after, "suspect_to_down_after"),
            (self.gossip_interval, "gossip_interval"),
            (self.announce_interval, "announce_interval"),
            (self.announce_to_down_interval, "announce_to_down_interval"),
            (self.reannounce_interval, "reannounce_interval"),
            (self.remove_down_after, "remove_down_after"),
        ];
        if let Some((_, name)) = zero.iter().find(|(d, _)| d.is_zero()) {
            return Err(MembershipError::InvalidConfig(format!(
                "{name} must be above zero"
            )));
        }
        if self.probe_rtt >= self.probe_period {
            return bad("probe_rtt must be shorter than probe_period (ideally under half of it)");
        }
        if self.num_indirect_probes == 0 || self.gossip_fanout == 0 || self.cluster_size_hint == 0 {
            return bad(
                "num_indirect_probes, gossip_fanout and cluster_size_hint must be at least 1",
            );
        }
        Ok(())
    }

    /// The foca configuration: `Config::new_lan` with these timings.
    pub(crate) fn foca_config(&self) -> foca::Config {
        let size = NonZeroU32::new(self.cluster_size_hint).unwrap_or(NonZeroU32::MIN);
        let mut c = foca::Config::new_lan(size);
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.num_indirect_probes =
            NonZeroUsize::new(self.num_indirect_probes).unwrap_or(NonZeroUsize::MIN);
        c.suspect_to_down_after = self.suspect_to_down_after;
        // At least 6 retransmissions: small clusters under loss need the redundancy more
        // than the bytes.
        let tx = c.max_transmissions.get().max(6);
        c.max_transmissions = NonZeroU8::new(tx).unwrap_or(NonZeroU8::MIN);
        c.remove_down_after = Some(self.remove_down_after);
        c.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - OVERHEAD).unwrap_or(NonZeroUsize::MIN);
        c.notify_down_members = true;
        let fanout = NonZeroUsize::new(self.gossip_fanout).unwrap_or(NonZeroUsize::MIN);
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_interval,
            num_members: fanout,
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.announce_interval,
            num_members: NonZeroUsize::MIN,
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_to_down_interval,
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        });
        c
    }
}

/// Everything [`super::Membership::start`] needs.
///
/// ```
/// use cortex_node::membership::{MemberMeta, MembershipConfig};
/// use cortex_protocol::{NodeId, SUPPORTED_VERSIONS};
/// let meta = MemberMeta {
///     quic_addr: "10.0.0.1:7400".parse().unwrap(),
///     http_addr: "10.0.0.1:7480".parse().unwrap(),
///     roles: vec!["gateway".into()],
///     versions: SUPPORTED_VERSIONS,
///     process: 1,
/// };
/// let mut config = MembershipConfig::new(
///     NodeId::new("cortex-0", 1_700_000_000_000).unwrap(),
///     b"a long random cluster secret".to_vec(),
///     meta,
/// );
/// config.seeds = vec!["cortex.default.svc:7401".parse().unwrap()];
/// config.advertise = Some("10.0.0.1:7401".parse().unwrap());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// This node's id. The incarnation must grow across restarts of the same name (use the
    /// start time in milliseconds, or a persisted counter); renewals add one to it.
    pub node_id: NodeId,
    /// Where to bind the gossip socket (default `0.0.0.0:7401`; port 0 lets the OS pick).
    pub bind: SocketAddr,
    /// The gossip address others should use; defaults to the bound address, which then
    /// must not be unspecified (`0.0.0.0`).
    pub advertise: Option<SocketAddr>,
    /// Seeds to announce to; re-resolved every `seed_refresh_interval`.
    pub seeds: Vec<SeedSpec>,
    /// Cluster name; part of the key, so two clusters with one secret still don't merge.
    pub cluster_name: String,
    /// The shared secret every datagram is authenticated with (at least 16 bytes).
    pub cluster_secret: Vec<u8>,
    /// Addresses, roles and versions announced with the id.
    pub meta: MemberMeta,
    /// SWIM timing.
    pub tuning: SwimTuning,
    /// How often seeds are resolved again.
    pub seed_refresh_interval: Duration,
    /// Longest a single seed resolution may take.
    pub seed_resolve_timeout: Duration,
    /// How far apart two members' clocks may be (bounds replay protection, see
    /// the `auth` module docs).
    pub max_clock_skew: Duration,
    /// How long removed members stay visible in the view.
    pub removed_retention: Duration,
    /// Capacity of the event channel; slow subscribers miss events (and see `Lagged`).
    pub event_capacity: usize,
}

impl fmt::Debug for MembershipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipConfig")
            .field("node_id", &self.node_id)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("cluster_name", &self.cluster_name)
            .field("cluster_secret", &"<redacted>")
            .field("meta", &self.meta)
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl MembershipConfig {
    /// Defaults for everything but the id, the secret and the metadata.
    pub fn new(node_id: NodeId, cluster_secret: Vec<u8>, meta: MemberMeta) -> Self {
        Self {
            node_id,
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GOSSIP_PORT)),
            advertise: None,
            seeds: Vec::new(),
            cluster_name: "cortex".to_owned(),
            cluster_secret,
            meta,
            tuning: SwimTuning::default(),
            seed_refresh_interval: Duration::from_secs(5),
            seed_resolve_timeout: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(60),
            removed_retention: Duration::from_secs(600),
            event_capacity: 1024,
        }
    }

    /// Checks every setting that does not need the network.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), MembershipError> {
        check_secret(&self.cluster_secret)?;
        self.tuning.validate()?;
        self.meta
            .validate()
            .map_err(MembershipError::InvalidConfig)?;
        if self.cluster_name.is_empty() || self.cluster_name.len() > 64 {
            return Err(MembershipError::InvalidConfig(
                "cluster_name must be 1 to 64 bytes".to_owned(),
            ));
        }
        if self.event_capacity == 0
            || self.seed_refresh_interval.is_zero()
            || self.seed_resolve_timeout.is_zero()
        {
            return Err(MembershipError::InvalidConfig(
                "event_capacity, seed_refresh_interval and seed_resolve_timeout must be above zero"
                    .to_owned(),
            ));
        }
        if self.max_clock_skew < Duration::from_secs(1) {
            return Err(MembershipError::InvalidConfig(
                "max_clock_skew must be at least 1 s".to_owned(),
            ));
        }
        Ok(())
    }
}

pub(crate) fn check_secret(secret: &[u8]) -> Result<(), MembershipError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(MembershipError::WeakSecret {
            len: secret.len(),
            min: MIN_SECRET_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse() {
        assert_eq!(SeedSpec::new("a:1").unwrap().as_str(), "a:1");
        assert_eq!(SeedSpec::new("[::1]:9").unwrap().as_str(), "[::1]:9");
        assert_eq!(SeedSpec::new("10.1.2.3").unwrap().as_str(), "10.1.2.3:7401");
        assert!(SeedSpec::new("::1").is_err());
        assert!(SeedSpec::new("a:99999").is_err());
        assert!(SeedSpec::new("").is_err());
    }

    #[test]
    fn default_tuning_is_valid() {
        SwimTuning::default().validate().unwrap();
        let c = SwimTuning::default().foca_config();
        assert_eq!(c.max_packet_size.get(), MAX_DATAGRAM - OVERHEAD);
        let bad = SwimTuning {
            probe_rtt: Duration::from_secs(1),
            ..SwimTuning::default()
        };
        assert!(bad.validate().is_err());
    }
}
