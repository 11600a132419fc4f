//! `system/metrics`: the node's metrics as an actor.
//!
//! Messages:
//! - `system.metrics.Scrape` → `String`: the Prometheus text exposition (format 0.0.4) of
//!   this node, the same document `GET /metrics` serves.
//! - `system.metrics.LiveActors` → `Vec<(String, i64)>`: live actors per kind.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use cortex_node::metrics::NodeMetrics;
//! use cortex_node::system::metrics::{self, Scrape};
//! let system = cortex_runtime::System::new(Default::default());
//! metrics::spawn(&system, NodeMetrics::new("n1"));
//! let r = system.lookup("metrics").unwrap();
//! let name = cortex_protocol::MessageName::new("system.metrics.Scrape").unwrap();
//! let (_, text) = r.ask(&name, b"null", cortex_runtime::Codec::Json, Duration::from_secs(1)).await.unwrap();
//! assert!(String::from_utf8(text).unwrap().contains("cortex_build_info"));
//! # });
//! ```

use std::sync::Arc;

use cortex_runtime::{Actor, Context, ErasedRef, Handler, MessageTable, System};
use serde::{Deserialize, Serialize};

use crate::metrics::NodeMetrics;

/// Asks for the Prometheus text exposition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scrape;
cortex_runtime::message!(Scrape => String, "system.metrics.Scrape");

/// Asks for live actors per kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveActors;
cortex_runtime::message!(LiveActors => Vec<(String, i64)>, "system.metrics.LiveActors");

/// The actor: a handle on the node's registry.
#[derive(Debug)]
pub struct MetricsActor {
    metrics: NodeMetrics,
}

impl Actor for MetricsActor {}

impl Handler<Scrape> for MetricsActor {
    async fn handle(&mut self, _: Scrape, _: &mut Context<Self>) -> String {
        self.metrics.message_received(crate::metrics::SYSTEM, false);
        self.metrics.encode()
    }
}

impl Handler<LiveActors> for MetricsActor {
    async fn handle(&mut self, _: LiveActors, _: &mut Context<Self>) -> Vec<(String, i64)> {
        self.metrics.message_received(crate::metrics::SYSTEM, false);
        self.metrics.live_actors()
    }
}

/// Spawns the metrics actor under the system's root supervisor and exposes it as
/// `metrics` (reached as `system/metrics`).
pub fn spawn(system: &System, metrics: NodeMetrics) {
    let table = MessageTable::<MetricsActor>::new()
        .handles::<Scrape>()
        .handles::<LiveActors>();
    let r = system.spawn_factory(
        move || MetricsActor {
            metrics: metrics.clone(),
        },
        Default::default(),
    );
    system.expose(super::METRICS, ErasedRef::new(r, Arc::new(table)));
}
