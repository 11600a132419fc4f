//! Cortex QUIC transport: mutual TLS against the cluster CA, the protocol handshake,
//! one connection per peer pair with ordered lanes and natural batching.
//!
//! Shared by `cortex-node` and `cortex-client`, so that the client never depends on the node.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod certs;
mod config;
mod error;
mod handshake;
pub mod tls;

pub use config::{BatchConfig, EndpointConfig, MAX_LANES, MIN_MAX_FRAME};
pub use error::{TlsError, TransportError, TrySendError};
pub use tls::TlsMaterial;
