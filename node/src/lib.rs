//! Cortex cluster node: membership, placement, routing, system actors.
pub mod placement;
