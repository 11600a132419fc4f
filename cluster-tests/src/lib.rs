//! Tests that start real cortex-node processes.
