//! Typed client errors. They mirror the node's wire [`ErrorCode`]s, so a failure reads the
//! same whether it happened in the client, on the node it talked to, or on the owner.

use std::time::Duration;

use cortex_protocol::{ErrorCode, RemoteError};
use cortex_runtime::ActorError;
use cortex_transport::{TlsError, TransportError};

/// Why a client call failed.
///
/// Each variant says who is at fault and whether the request may have run:
/// [`ClientError::Unreachable`] and [`ClientError::Timeout`] carry a `maybe_ran` flag
/// (a connection died or a deadline passed with the request in flight); everything else is
/// either a refusal before any handler ran or the handler's own outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A builder setting or call argument cannot work (caller's mistake).
    #[error("invalid client setting: {0}")]
    Config(String),
    /// Certificate material could not be read or used.
    #[error("TLS material unusable: {0}")]
    Tls(String),
    /// The cluster refused this client: wrong CA, missing or unaccepted client certificate,
    /// wrong token or wrong cluster name.
    #[error("refused by the cluster: {detail}")]
    Unauthorized {
        /// What the node (or the TLS layer) said.
        detail: String,
    },
    /// No node (or no route to the owner) could be reached before the deadline.
    #[error("unreachable: {detail}{}", if *maybe_ran { " (the request was in flight and may have run)" } else { "" })]
    Unreachable {
        /// What failed last.
        detail: String,
        /// True when a connection died with the request in flight: retry only with an
        /// idempotency key (`AskOptions::retries`).
        maybe_ran: bool,
    },
    /// The deadline passed before a reply arrived. The request may have run.
    #[error("no reply within {after:?}: {detail}")]
    Timeout {
        /// The deadline the caller set.
        after: Duration,
        /// What was being waited for.
        detail: String,
    },
    /// The actor kind is not registered on the owner.
    #[error("unknown actor kind: {detail}; register the kind on every node")]
    UnknownKind {
        /// The node's detail.
        detail: String,
    },
    /// The message name is not registered for the actor's kind.
    #[error("unknown message: {detail}; check the message name and the kind's handlers")]
    UnknownMessage {
        /// The node's detail.
        detail: String,
    },
    /// The owner refused the request before a handler ran (mailbox full, shutting down,
    /// ring not settled). Safe to retry.
    #[error("rejected: {detail}")]
    Rejected {
        /// The node's detail.
        detail: String,
    },
    /// The handler failed (panicked or returned an error).
    #[error("the actor failed: {detail}")]
    ActorFailed {
        /// The node's detail.
        detail: String,
    },
    /// The actor stopped before answering.
    #[error("the actor stopped before answering: {detail}")]
    ActorStopped {
        /// The node's detail.
        detail: String,
    },
    /// A payload did not decode: the request on the owner, or the reply or a delivery here.
    /// Usually a message type that differs between the caller and the host.
    #[error("decode failed: {detail}; make sure the client and the host share the message types")]
    Decode {
        /// What the codec said.
        detail: String,
    },
    /// The request could not be encoded (a value serde cannot represent, or too large).
    #[error("cannot encode the request: {detail}")]
    Encode {
        /// What the codec said.
        detail: String,
    },
    /// Forwarding between nodes looped: the cluster's views disagree. Retried internally
    /// while the deadline allows.
    #[error("hop limit reached: {detail}")]
    HopLimit {
        /// The node's detail.
        detail: String,
    },
    /// The node speaks no protocol version this client speaks; upgrade the older side.
    #[error("protocol version mismatch: {detail}")]
    VersionMismatch {
        /// The node's detail.
        detail: String,
    },
    /// The node broke the protocol, or this client did (a bug).
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What went wrong.
        detail: String,
    },
    /// The client was shut down; build a new one.
    #[error("the client is shut down")]
    Closed,
}

impl ClientError {
    /// The wire code this error corresponds to (none for purely local errors).
    ///
    /// ```
    /// use cortex_client::ClientError;
    /// use cortex_protocol::ErrorCode;
    /// let e = ClientError::Rejected { detail: "mailbox full".into() };
    /// assert_eq!(e.code(), Some(ErrorCode::Rejected));
    /// assert_eq!(ClientError::Closed.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            ClientError::Unauthorized { .. } => ErrorCode::Unauthorized,
            ClientError::Unreachable { .. } => ErrorCode::Unreachable,
            ClientError::Timeout { .. } => ErrorCode::Timeout,
            ClientError::UnknownKind { .. } => ErrorCode::UnknownKind,
            ClientError::UnknownMessage { .. } => ErrorCode::UnknownMessage,
            ClientError::Rejected { .. } => ErrorCode::Rejected,
            ClientError::ActorFailed { .. } => ErrorCode::ActorFailed,
            ClientError::ActorStopped { .. } => ErrorCode::ActorStopped,
            ClientError::Decode { .. } => ErrorCode::Decode,
            ClientError::HopLimit { .. } => ErrorCode::HopLimit,
            ClientError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            ClientError::Protocol { .. } => ErrorCode::ProtocolViolation,
            ClientError::Config(_)
            | ClientError::Tls(_)
            | ClientError::Encode { .. }
            | ClientError::Closed => return None,
        })
    }

    /// Maps an error that came back over the wire.
    pub fn from_remote(e: RemoteError, after: Duration) -> Self {
        let detail = e.detail;
        match e.code {
            ErrorCode::Timeout => ClientError::Timeout { after, detail },
            ErrorCode::Unreachable => ClientError::Unreachable {
                detail,
                maybe_ran: true,
            },
            ErrorCode::UnknownKind => ClientError::UnknownKind { detail },
            ErrorCode::UnknownMessage => ClientError::UnknownMessage { detail },
            ErrorCode::Rejected => ClientError::Rejected { detail },
            ErrorCode::ActorFailed => ClientError::ActorFailed { detail },
            ErrorCode::ActorStopped => ClientError::ActorStopped { detail },
            ErrorCode::Decode => ClientError::Decode { detail },
            ErrorCode::HopLimit => ClientError::HopLimit { detail },
            ErrorCode::VersionMismatch => ClientError::VersionMismatch { detail },
            ErrorCode::Unauthorized => ClientError::Unauthorized { detail },
            ErrorCode::StaleIncarnation => ClientError::Rejected {
                detail: format!("stale incarnation: {detail}"),
            },
            _ => ClientError::Protocol { detail },
        }
    }

    /// Maps a transport error seen while dialing (nothing was sent yet).
    pub(crate) fn from_dial(e: &TransportError) -> Self {
        match e {
            TransportError::Refused {
                code: ErrorCode::Unauthorized,
                detail,
                ..
            } => ClientError::Unauthorized {
                detail: detail.clone(),
            },
            TransportError::TlsHandshake { .. } | TransportError::IdentityMismatch { .. } => {
                ClientError::Unauthorized {
                    detail: e.to_string(),
                }
            }
            TransportError::VersionMismatch { .. } => ClientError::VersionMismatch {
                detail: e.to_string(),
            },
            TransportError::Tls(t) => ClientError::Tls(t.to_string()),
            TransportError::Config(c) => ClientError::Config(c.clone()),
            _ => ClientError::Unreachable {
                detail: e.to_string(),
                maybe_ran: false,
            },
        }
    }

    /// Maps a transport error seen after a request was handed to a connection.
    pub(crate) fn from_in_flight(e: &TransportError, after: Duration) -> Self {
        match e {
            TransportError::AskTimeout { .. } => ClientError::Timeout {
                after,
                detail: e.to_string(),
            },
            TransportError::Encode { reason, .. } => ClientError::Encode {
                detail: reason.clone(),
            },
            TransportError::TooManyPendingAsks { .. } => ClientError::Rejected {
                detail: e.to_string(),
            },
            _ => ClientError::Unreachable {
                detail: e.to_string(),
                maybe_ran: true,
            },
        }
    }

    /// True when the request certainly did not reach a handler, so sending it again
    /// (to any node) cannot duplicate it.
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            ClientError::Unreachable { maybe_ran, .. } => !maybe_ran,
            ClientError::Rejected { .. } | ClientError::HopLimit { .. } => true,
            _ => false,
        }
    }
}

impl From<TlsError> for ClientError {
    fn from(e: TlsError) -> Self {
        ClientError::Tls(e.to_string())
    }
}

impl From<ActorError> for ClientError {
    fn from(e: ActorError) -> Self {
        let detail = e.to_string();
        match e {
            ActorError::Timeout => ClientError::Timeout {
                after: Duration::ZERO,
                detail,
            },
            ActorError::MailboxFull | ActorError::Rejected { .. } => {
                ClientError::Rejected { detail }
            }
            ActorError::Stopped => ClientError::ActorStopped { detail },
            ActorError::Failed { .. } => ClientError::ActorFailed { detail },
            ActorError::UnknownMessage { .. } => ClientError::UnknownMessage { detail },
            ActorError::UnknownKind { .. } => ClientError::UnknownKind { detail },
            ActorError::Decode { reason } => ClientError::Decode { detail: reason },
            ActorError::Encode { reason } => ClientError::Encode { detail: reason },
            _ => ClientError::Protocol { detail },
        }
    }
}

/// Lets an actor that calls the cluster through a client use `?` into its own
/// [`ActorError`]-returning code: the same classes, with the detail kept.
impl From<ClientError> for ActorError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Timeout { .. } => ActorError::Timeout,
            ClientError::ActorStopped { .. } => ActorError::Stopped,
            ClientError::ActorFailed { detail } => ActorError::Failed { reason: detail },
            ClientError::UnknownMessage { detail } => ActorError::UnknownMessage { name: detail },
            ClientError::UnknownKind { detail } => ActorError::UnknownKind { kind: detail },
            ClientError::Decode { detail } => ActorError::Decode { reason: detail },
            ClientError::Encode { detail } => ActorError::Encode { reason: detail },
            other => ActorError::Rejected {
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_codes_round_trip() {
        for code in [
            ErrorCode::Timeout,
            ErrorCode::Unreachable,
            ErrorCode::UnknownKind,
            ErrorCode::UnknownMessage,
            ErrorCode::Rejected,
            ErrorCode::ActorFailed,
            ErrorCode::ActorStopped,
            ErrorCode::Decode,
            ErrorCode::HopLimit,
            ErrorCode::VersionMismatch,
            ErrorCode::Unauthorized,
        ] {
            let e = ClientError::from_remote(
                RemoteError {
                    code,
                    detail: "d".into(),
                },
                Duration::from_secs(1),
            );
            assert_eq!(e.code(), Some(code), "{e}");
        }
    }

    #[test]
    fn actor_error_conversions_keep_the_class() {
        let e: ClientError = ActorError::UnknownKind { kind: "x".into() }.into();
        assert_eq!(e.code(), Some(ErrorCode::UnknownKind));
        let back: ActorError = e.into();
        assert_eq!(back.code(), ErrorCode::UnknownKind);
        let t: ActorError = ClientError::Timeout {
            after: Duration::from_secs(1),
            detail: String::new(),
        }
        .into();
        assert_eq!(t, ActorError::Timeout);
    }

    #[test]
    fn retry_safety() {
        let lost = ClientError::Unreachable {
            detail: "x".into(),
            maybe_ran: true,
        };
        assert!(!lost.is_safe_to_retry());
        assert!(lost.to_string().contains("may have run"));
        let refused = ClientError::Unreachable {
            detail: "x".into(),
            maybe_ran: false,
        };
        assert!(refused.is_safe_to_retry());
        assert!(!ClientError::ActorFailed { detail: "x".into() }.is_safe_to_retry());
    }
}
