//! Cortex QUIC transport: mutual TLS against the cluster CA, the protocol handshake,
//! one connection per peer pair with ordered lanes and natural batching.
//!
//! Shared by `cortex-node` and `cortex-client`, so that the client never depends on the node.
//!
//! - [`certs`] makes a cluster CA and node/client certificates; [`TlsMaterial`] loads them.
//! - [`Endpoint`] is the one QUIC endpoint of a process: it accepts (nodes) and dials, runs
//!   the `Hello`/`Welcome` handshake and keeps one [`Connection`] per peer.
//! - A [`Connection`] has N ordered lanes per direction; an envelope goes on lane
//!   `lane_key % N`, so order holds per actor while a slow actor blocks no other lane. One
//!   writer task per connection writes every lane at the end of the scheduler's turn, so a
//!   burst of envelopes leaves in as few datagrams as possible.
//! - Replies go on a reply lane of their own when both sides announce
//!   `FEATURE_REPLY_LANE` (the default): they never wait behind requests held for a slow
//!   actor, and a burst of them reaches the asker on one stream.
//! - Inbound traffic goes to your [`Handler`]; asks come with a [`Responder`], which can
//!   also answer with a future the lane's reader polls ([`Responder::send_later`]). Each lane's
//!   reader dispatches in arrival order and awaits any [`Delivery`] the handler returns
//!   before the lane's next envelope (replies and pings still pass), so order and
//!   backpressure hold without a task per message.
//!
//! QUIC close codes on the wire: 0 normal, 1 protocol violation, 2 handshake refused,
//! 3 duplicate connection (simultaneous dial), 4 superseded (newer incarnation),
//! 5 endpoint shutdown.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod certs;
mod config;
mod connection;
mod endpoint;
mod error;
mod handler;
mod handshake;
mod lane;
mod later;
mod outbox;
pub mod tls;
mod writer;

pub use config::{
    BatchConfig, DEFAULT_UDP_BUFFER, EndpointConfig, MAX_LANES, MAX_UDP_BUFFER, MIN_MAX_FRAME,
};
pub use connection::{Connection, ConnectionStats, lane_key};
pub use endpoint::{ClosedConnection, Endpoint, MAX_CLOSED_KEPT, SocketBuffers, bind_udp_socket};
pub use error::{TlsError, TransportError, TryQueueError, TrySendError};
pub use handler::{Delivery, Handler, Responder};
pub use tls::TlsMaterial;
