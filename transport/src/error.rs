//! Typed errors. Each message says who is at fault and what to do about it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cortex_protocol::{ErrorCode, NodeId, VersionRange};

/// Why certificate material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen refused to build a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A name cannot go into a certificate.
    #[error("{name:?} cannot be used as a certificate name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}; check the path and its permissions", path.display())]
    Io {
        /// What was being done ("read", "write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM input held nothing usable.
    #[error("{what} is not valid PEM or holds no {expected}: {detail}")]
    Pem {
        /// Which input (a path or a description).
        what: String,
        /// What was expected in it.
        expected: &'static str,
        /// Parser detail.
        detail: String,
    },
    /// rustls refused the material (for example a key that does not match the certificate).
    #[error(
        "TLS configuration failed: {0}; check that the certificate, its key and the CA belong together"
    )]
    Config(String),
}

/// Everything the transport can report to its caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The configuration cannot work.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// Certificate material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC endpoint to {addr}: {source}; pick a free port or use port 0")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (wrong CA, missing client certificate, wrong name ...).
    #[error("TLS handshake with {peer} failed: {reason}")]
    TlsHandshake {
        /// The remote address.
        peer: SocketAddr,
        /// What went wrong, with advice.
        reason: String,
    },
    /// The peer answered the protocol handshake with a refusal.
    #[error("peer {peer} refused: {detail}")]
    Refused {
        /// The remote address.
        peer: SocketAddr,
        /// The code the peer sent.
        code: ErrorCode,
        /// The peer's explanation.
        detail: String,
    },
    /// The two sides share no protocol version.
    #[error(
        "no common protocol version: we speak {}..={}, peer {peer} speaks {}..={}; upgrade the older side",
        ours.min, ours.max, theirs.min, theirs.max
    )]
    VersionMismatch {
        /// The remote address.
        peer: SocketAddr,
        /// What this side offered.
        ours: VersionRange,
        /// What the peer speaks.
        theirs: VersionRange,
    },
    /// The peer claims a node name its certificate does not carry.
    #[error(
        "peer {peer} claims to be node '{claimed}' but its certificate names {names:?}; issue it a certificate for that name"
    )]
    IdentityMismatch {
        /// The remote address.
        peer: SocketAddr,
        /// The claimed node name.
        claimed: String,
        /// The names in its certificate (CN and SANs).
        names: Vec<String>,
    },
    /// A different node (or incarnation) answered than the one asked for.
    #[error("expected node {expected} at {peer} but {got} answered; refresh the membership view")]
    UnexpectedPeer {
        /// The remote address.
        peer: SocketAddr,
        /// The node asked for.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// The peer broke the protocol during the handshake.
    #[error("peer {peer} broke the protocol: {reason}")]
    Protocol {
        /// The remote address.
        peer: SocketAddr,
        /// What it did.
        reason: String,
    },
    /// Dialing or the handshake did not finish in time.
    #[error("{what} with {peer} timed out after {after:?}; is the peer running and reachable?")]
    Timeout {
        /// The remote address.
        peer: SocketAddr,
        /// What timed out.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The peer could not be reached at the QUIC level.
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// The remote address.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A recent dial to this peer failed; the next attempt waits for the backoff window.
    #[error("not dialing {peer} for another {retry_in:?} after a failed attempt: {last_error}")]
    Backoff {
        /// The peer (node name or address).
        peer: String,
        /// Time until the next attempt is allowed.
        retry_in: Duration,
        /// The failure that started the window.
        last_error: String,
    },
    /// The connection closed (or was closed) while the operation was in progress.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: String,
        /// Why it closed.
        reason: String,
    },
    /// No reply arrived before the ask's deadline.
    #[error("ask {request} to {peer} got no reply within {after:?}")]
    AskTimeout {
        /// The peer.
        peer: String,
        /// The request id.
        request: u64,
        /// The deadline.
        after: Duration,
    },
    /// Too many asks are waiting for replies on this connection.
    #[error(
        "{limit} asks to {peer} are already waiting for replies; slow down or raise max_pending_asks"
    )]
    TooManyPendingAsks {
        /// The peer.
        peer: String,
        /// The configured limit.
        limit: usize,
    },
    /// The envelope could not be encoded (for example it exceeds max_frame).
    #[error("cannot send to {peer}: {reason}")]
    Encode {
        /// The peer.
        peer: String,
        /// The encoder's complaint.
        reason: String,
    },
    /// Handshake envelopes are managed by the transport and cannot be sent by callers.
    #[error("{0} envelopes are managed by the transport; send tells, asks and the like")]
    NotSendable(&'static str),
    /// The operation needs an endpoint that accepts connections.
    #[error("this endpoint cannot {0}")]
    Unsupported(&'static str),
    /// The endpoint is shut down.
    #[error("the endpoint is closed")]
    EndpointClosed,
}

/// A failed `try_send`: the envelope comes back (boxed, to keep `Result` small).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The lane's queue is full; retry later or use the async `send`.
    #[error("the lane queue is full; wait with send() or retry later")]
    Full(Box<cortex_protocol::Envelope>),
    /// The connection is gone.
    #[error("the connection is closed; dial again")]
    Closed(Box<cortex_protocol::Envelope>),
}

/// A failed [`crate::Connection::try_queue`]; the caller still holds the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryQueueError {
    /// The lane's queue is full; retry later or use the async `send`.
    #[error("the lane queue is full; wait with send() or retry later")]
    Full,
    /// The connection is gone.
    #[error("the connection is closed; dial again")]
    Closed,
}

/// TLS alert numbers that can end a QUIC handshake (RFC 8446 §6).
fn alert_advice(alert: u8) -> String {
    match alert {
        42 | 48 | 46 | 43 => "certificate not signed by the cluster CA (check that both sides use the same ca.crt)".into(),
        45 => "certificate expired; issue a new one".into(),
        116 => "the node requires a client certificate; present one issued by the cluster CA or use a token the node accepts".into(),
        120 => "no common ALPN protocol (the peer is not a Cortex node speaking cortex/1)".into(),
        40 => "no common TLS parameters (Cortex needs TLS 1.3)".into(),
        112 => "the peer does not know the requested server name".into(),
        other => format!("TLS alert {other}"),
    }
}

fn tls_reason_local(reason: &str) -> String {
    if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
        format!(
            "certificate not signed by the cluster CA (check that both sides use the same ca.crt): {reason}"
        )
    } else if reason.contains("NotValidForName") {
        format!(
            "the peer's certificate does not carry the name we dialed (pass the node's name as server name, or add it as a SAN): {reason}"
        )
    } else if reason.contains("Expired") {
        format!("certificate expired; issue a new one: {reason}")
    } else {
        reason.to_string()
    }
}

/// Maps a quinn connection error seen while dialing or handshaking to a typed error.
pub(crate) fn from_connection_error(
    peer: SocketAddr,
    e: &quinn::ConnectionError,
) -> TransportError {
    use quinn::ConnectionError as C;
    let crypto = |code: u64| {
        (0x100..=0x1ff)
            .contains(&code)
            .then_some((code & 0xff) as u8)
    };
    match e {
        C::TransportError(t) => match crypto(u64::from(t.code)) {
            Some(_) => TransportError::TlsHandshake {
                peer,
                reason: tls_reason_local(&t.reason),
            },
            None => TransportError::Connect {
                peer,
                reason: t.to_string(),
            },
        },
        C::ConnectionClosed(c) => match crypto(u64::from(c.error_code)) {
            Some(alert) => TransportError::TlsHandshake {
                peer,
                reason: format!("the peer refused us: {}", alert_advice(alert)),
            },
            None => TransportError::Connect {
                peer,
                reason: c.to_string(),
            },
        },
        C::TimedOut => TransportError::Connect {
            peer,
            reason: "no answer before the idle timeout; is the peer running and reachable?".into(),
        },
        other => TransportError::ConnectionLost {
            peer: peer.to_string(),
            reason: other.to_string(),
        },
    }
}
