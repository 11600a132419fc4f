//! Cortex Rust client SDK and the cortex CLI.
