//! Endpoint configuration.

use std::net::SocketAddr;
use std::time::Duration;

use cortex_protocol::{DEFAULT_MAX_FRAME, PeerIdentity, SUPPORTED_VERSIONS, VersionRange};

use crate::error::TransportError;
use crate::tls::TlsMaterial;

/// Most lanes a connection may use (and the uni-stream limit each side grants).
pub const MAX_LANES: usize = 64;
/// Default UDP socket buffer: 4 MiB, about 40 ms of a busy lane at 100 MB/s. Linux's
/// default (208 KiB) overflows in ~2 ms and every dropped datagram is a QUIC loss (see
/// BENCHMARKS.md, "UDP socket buffers").
pub const DEFAULT_UDP_BUFFER: usize = 4 << 20;
/// Largest accepted `udp_buffer`: 1 GiB.
pub const MAX_UDP_BUFFER: usize = 1 << 30;
/// Smallest accepted `max_frame`: room for a full batch plus the largest header.
pub const MIN_MAX_FRAME: usize = 8 * 1024;

/// How lanes coalesce envelopes into batch frames.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// A batch is flushed once it holds this many bytes, or as soon as the lane's queue is
    /// momentarily empty (so batching never adds latency).
    pub max_bytes: usize,
    /// Envelopes queued per lane before `send` waits (`try_send` fails).
    pub queue: usize,
    /// Replies queued per lane; an inbound ask waits for a reply slot before it is
    /// dispatched, which bounds the asks a peer can have outstanding here.
    pub reply_queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            queue: 1024,
            reply_queue: 1024,
        }
    }
}

/// Settings of one [`crate::Endpoint`].
///
/// ```
/// use cortex_transport::{EndpointConfig, TlsMaterial};
/// use cortex_protocol::{NodeId, PeerIdentity};
/// let cfg = EndpointConfig::new(
///     "127.0.0.1:0".parse().unwrap(),
///     TlsMaterial::ca_only(String::new()),
///     PeerIdentity::Client { name: "cli".into() },
///     "prod",
/// );
/// assert_eq!(cfg.lanes, 8);
/// assert_eq!(cfg.udp_buffer, cortex_transport::DEFAULT_UDP_BUFFER);
/// ```
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// UDP address to bind (port 0: the OS picks).
    pub bind: SocketAddr,
    /// CA, certificate and key. A client may leave its certificate empty and use a token.
    pub tls: TlsMaterial,
    /// Who we are. A `Node` endpoint accepts connections; a `Client` endpoint only dials.
    pub identity: PeerIdentity,
    /// Cluster name; peers with another name are refused.
    pub cluster: String,
    /// Tokens a node accepts from certificate-less clients. Empty: every peer needs a
    /// certificate from the cluster CA.
    pub accepted_tokens: Vec<String>,
    /// Token this side presents in its Hello (clients without a certificate).
    pub token: Option<String>,
    /// Largest frame accepted or sent, in bytes (at least [`MIN_MAX_FRAME`]).
    pub max_frame: usize,
    /// A connection silent for this long is closed (QUIC idle timeout).
    pub idle_timeout: Duration,
    /// Keep-alive interval; must be below `idle_timeout`.
    pub keep_alive: Duration,
    /// Deadline for dialing plus the protocol handshake.
    pub connect_timeout: Duration,
    /// Ordered lanes (unidirectional streams) per direction per connection, 1..=64.
    pub lanes: usize,
    /// Kernel send and receive buffer of the UDP socket, in bytes; 0 keeps the OS default.
    /// The default, [`DEFAULT_UDP_BUFFER`], absorbs the bursts a busy peer sends while this
    /// side's thread decodes; Linux caps it at `net.core.rmem_max` (a warning says so).
    pub udp_buffer: usize,
    /// Batching and queue sizes.
    pub batch: BatchConfig,
    /// Asks one connection may have waiting for replies.
    pub max_pending_asks: usize,
    /// First reconnect backoff window after a failed dial; doubles per failure.
    pub backoff_initial: Duration,
    /// Longest backoff window.
    pub backoff_max: Duration,
    /// How long a duplicate connection (lost a simultaneous-dial race, or replaced by a
    /// newer incarnation) stays open for in-flight traffic before it is closed.
    pub duplicate_linger: Duration,
    /// How long [`crate::Endpoint::close`] waits for connections to drain.
    pub drain_timeout: Duration,
    /// Inbound handshakes in progress at once; more are refused.
    pub max_concurrent_handshakes: usize,
    /// Feature bits offered in the Hello.
    pub features: u64,
    /// Versions offered in the Hello. Leave at the default; tests change it to exercise
    /// version negotiation.
    pub hello_versions: VersionRange,
}

impl EndpointConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        bind: SocketAddr,
        tls: TlsMaterial,
        identity: PeerIdentity,
        cluster: impl Into<String>,
    ) -> Self {
        Self {
            bind,
            tls,
            identity,
            cluster: cluster.into(),
            accepted_tokens: Vec::new(),
            token: None,
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(15),
            keep_alive: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            lanes: 8,
            udp_buffer: DEFAULT_UDP_BUFFER,
            batch: BatchConfig::default(),
            max_pending_asks: 65_536,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            duplicate_linger: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(3),
            max_concurrent_handshakes: 256,
            features: cortex_protocol::FEATURE_BATCH | cortex_protocol::FEATURE_REPLY_LANE,
            hello_versions: SUPPORTED_VERSIONS,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), TransportError> {
        let bad = |m: String| Err(TransportError::Config(m));
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return bad(format!("lanes must be 1..={MAX_LANES}, got {}", self.lanes));
        }
        if self.max_frame < MIN_MAX_FRAME || u32::try_from(self.max_frame).is_err() {
            return bad(format!(
                "max_frame must be at least {MIN_MAX_FRAME} bytes and fit in 32 bits, got {}",
                self.max_frame
            ));
        }
        if self.keep_alive >= self.idle_timeout {
            return bad(format!(
                "keep_alive ({:?}) must be shorter than idle_timeout ({:?})",
                self.keep_alive, self.idle_timeout
            ));
        }
        if self.batch.queue == 0 || self.batch.reply_queue == 0 || self.max_pending_asks == 0 {
            return bad("queue sizes and max_pending_asks must be at least 1".into());
        }
        // The kernel takes an int and doubles it.
        if self.udp_buffer > MAX_UDP_BUFFER {
            return bad(format!(
                "udp_buffer must be at most {MAX_UDP_BUFFER} bytes (1 GiB), got {}",
                self.udp_buffer
            ));
        }
        if self.cluster.is_empty() {
            return bad("cluster name must not be empty".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff_initial must be > 0 and <= backoff_max".into());
        }
        if matches!(self.identity, PeerIdentity::Node(_)) && !self.tls.has_identity() {
            return bad("a node endpoint needs its own certificate and key".into());
        }
        Ok(())
    }

    /// The batch size limit actually used: never so large that a batch plus one more small
    /// envelope could exceed `max_frame`.
    pub(crate) fn batch_limit(&self) -> usize {
        self.batch.max_bytes.min(self.max_frame / 2).max(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_cfg() -> EndpointConfig {
        EndpointConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            TlsMaterial::ca_only(String::new()),
            PeerIdentity::Client { name: "c".into() },
            "test",
        )
    }

    #[test]
    fn udp_buffer_is_bounded_and_zero_is_allowed() {
        let mut c = client_cfg();
        assert!(c.validate().is_ok());
        c.udp_buffer = 0;
        assert!(c.validate().is_ok(), "0: the OS default");
        c.udp_buffer = MAX_UDP_BUFFER;
        assert!(c.validate().is_ok());
        c.udp_buffer = MAX_UDP_BUFFER + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("udp_buffer"), "{err}");
    }

    #[test]
    fn lanes_out_of_range_are_refused() {
        for lanes in [0, MAX_LANES + 1] {
            let mut c = client_cfg();
            c.lanes = lanes;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("lanes"), "{err}");
        }
    }
}
