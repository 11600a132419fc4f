//! Cortex cluster node: membership, placement, routing, system actors.
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
