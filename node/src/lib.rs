//! Cortex cluster node: membership, placement, routing, system actors.
pub mod membership;
pub mod metrics;
pub mod placement;
