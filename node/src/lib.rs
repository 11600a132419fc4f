//! Cortex cluster node: membership, placement, routing, system actors.
