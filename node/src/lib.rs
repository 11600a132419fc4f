//! Cortex cluster node: membership, placement, routing, system actors.
pub mod membership;
pub mod placement;
