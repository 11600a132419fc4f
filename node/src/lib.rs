//! Cortex cluster node: membership, placement, routing, system actors.
pub mod certs_cmd;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod dev;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod placement;
pub mod routing;
pub mod telemetry;
pub mod node;

pub use node::{MAX_HOPS, Node, NodeBuilder, NodeError, Published, run_node};
