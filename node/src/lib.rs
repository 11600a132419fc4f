//! Cortex cluster node: a library and the `cortex-node` binary.
//!
//! A node joins the cluster by SWIM gossip ([`membership`]), admits members to its ring once
//! a mutually authenticated QUIC connection to them works, places every virtual actor on one
//! owner ([`placement`]), and routes tells and asks to it ([`routing`], [`node`]). Its own
//! services run as supervised system actors ([`system`]); operators see it through the admin
//! HTTP endpoint ([`http`]), [`metrics`], the [`dashboard`] and OTLP traces ([`trace`]).
//!
//! Embed it to host your own actor kinds with [`NodeBuilder`] or, keeping the whole command
//! line, [`main_with`]; see `node/examples/bank.rs`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
pub mod certs_cmd;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod dev;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod routing;
pub mod system;
pub mod telemetry;
pub mod trace;

pub use node::{
    MAX_HOPS, Node, NodeBuilder, NodeError, Published, main_with, run_builder, run_node,
};
