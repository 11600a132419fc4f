//! System actors: the node's own services, run as actors inside the cluster.
//!
//! # The pattern
//! Every system actor (metrics today; the HTTP gateway, WebSocket rooms, gRPC, web3 and
//! WASM next) follows the same five rules, so that each new one is a copy of the last:
//!
//! 1. **An actor.** It implements [`cortex_runtime::Actor`] and handles typed messages
//!    registered with [`cortex_runtime::message!`] under the `system.<name>.` prefix, so
//!    other nodes, clients and the CLI can reach it by name with bincode or JSON.
//! 2. **Supervised.** It is spawned as a top-level actor of the node's
//!    [`cortex_runtime::System`], whose supervisor restarts it within limits when a handler
//!    panics; the node's graceful shutdown drains and stops it.
//! 3. **Started from config.** [`crate::config::NodeConfig::system_actors`] (flag
//!    `--system-actor`, env `CORTEX_SYSTEM_ACTORS`, TOML `system_actors`) lists the ones
//!    to start; [`start`] starts them, and an unknown name is a configuration error.
//! 4. **Addressable as `system/<name>` on its node.** [`start`] exposes it under its name,
//!    so a [`cortex_protocol::Target::System`] `{ node, name }` reaches it from anywhere
//!    in the cluster (the router forwards to `node`).
//! 5. **Its own metrics.** Its messages count under the metrics kind label `system`, and it
//!    may register families of its own on the node's registry.
//!
//! One system actor is not optional and not in [`KNOWN`]: `system/handover`
//! ([`handover`]), which takes the idempotency keys of actors that move to this node; every
//! node starts it, because handover correctness depends on it.
//!
//! # Adding one
//! Create `system/<name>/mod.rs` with the actor, its messages and a `spawn` function like
//! [`metrics::spawn`]; add the name to [`KNOWN`] and a match arm to [`start`]; document its
//! messages in its module docs.

pub mod handover;
pub mod metrics;

use cortex_runtime::System;

use crate::metrics::NodeMetrics;

/// Name of the metrics system actor.
pub const METRICS: &str = "metrics";

/// System actors this build can start.
pub const KNOWN: &[&str] = &[METRICS];

/// Starts the system actors named in `names` on `system`, each exposed as `system/<name>`.
/// Unknown names were already refused by the configuration.
pub fn start(system: &System, names: &[String], metrics: &NodeMetrics) {
    for name in names {
        match name.as_str() {
            METRICS => metrics::spawn(system, metrics.clone()),
            other => tracing::warn!(name = other, "unknown system actor not started"),
        }
        metrics.register_kind(crate::metrics::SYSTEM);
        tracing::debug!(name = %name, "system actor started");
    }
}
