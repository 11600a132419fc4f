//! Cortex Rust client SDK and the `cortex` CLI.
//!
//! A [`Client`] connects over QUIC (mutual TLS or a token) to any node, learns the cluster
//! topology the nodes push, and sends every request straight to the owner of its actor id,
//! computed with the same placement ring the nodes use: one hop, no forwarding. When it has
//! no view or the owner cannot be reached, it sends to any live node, which forwards.
//! Connections open lazily, reconnect with backoff and fail over when a node dies; each node
//! has a circuit breaker; asks may retry under an idempotency key the owner deduplicates.
//!
//! Messages are the same user types the host registers (`cortex_runtime::message!`), so
//! share them in a crate (or module) used by both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use cortex_client::{AskOptions, Client};
//! use cortex_transport::TlsMaterial;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Deposit(u64);
//! cortex_runtime::message!(Deposit => u64, "bank.Deposit");
//!
//! let tls = TlsMaterial::load(
//!     ".cortex/dev-ca/ca.crt".as_ref(),
//!     ".cortex/dev-ca/app.crt".as_ref(),
//!     ".cortex/dev-ca/app.key".as_ref(),
//! )?;
//! let client = Client::builder().seeds(["127.0.0.1:7400"]).tls(tls).connect().await?;
//! let id = "account/alice".parse()?;
//! let balance = client
//!     .ask_with(&id, Deposit(10), AskOptions::new(Duration::from_secs(2)).retries(3))
//!     .await?;
//! println!("balance {balance}");
//! client.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - [`Client`], [`ClientBuilder`], [`AskOptions`]: the SDK.
//! - [`ClientError`]: typed failures mirroring the wire error codes.
//! - [`admin`]: the node's admin HTTP endpoint (members, ring, activations, metrics, JSON).
//! - [`cli`]: the `cortex` command line.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
mod calls;
pub mod cli;
mod client;
mod config;
mod error;
mod handler;
mod pubsub;
mod topology;

pub use calls::RawReply;
pub use client::{Client, ClientStats};
pub use config::{AskOptions, ClientBuilder};
pub use error::ClientError;
pub use pubsub::{RawMessage, RawSubscription, Subscription};
pub use topology::TopologyView;
