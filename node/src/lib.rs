//! Cortex cluster node: membership, placement, routing, system actors.
pub mod dashboard;
pub mod membership;
pub mod metrics;
pub mod placement;
